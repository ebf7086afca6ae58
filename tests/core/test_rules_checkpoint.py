"""Validation resumes where the previous request of a conversation left off, and agrees with a full walk."""

from __future__ import annotations

from typing import Any

import pytest

from turnkeep.core import rules
from turnkeep.core.catalog import default_catalog
from turnkeep.errors import HistoryError

MODEL = default_catalog().get("claude-sonnet-4-6")


def chat(turns: int, *, breakpoint_on_last: bool = False) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for number in range(turns):
        messages.append({"role": "user", "content": f"question {number}"})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {number}"}]})
    last: dict[str, Any] = {"type": "text", "text": "next"}
    if breakpoint_on_last:
        last["cache_control"] = {"type": "ephemeral"}
    messages.append({"role": "user", "content": [last]})
    return {"model": MODEL.id, "max_tokens": 100, "messages": messages}


def test_a_grown_request_resumes_after_the_settled_prefix() -> None:
    checkpoint = rules.validate(chat(10), MODEL)
    assert checkpoint is not None
    assert checkpoint.count == 21  # every message: nothing carries a breakpoint
    following = chat(11)
    following["messages"][20] = chat(10)["messages"][20]
    assert rules.validate(following, MODEL, since=checkpoint) is not None


def test_messages_from_the_first_breakpoint_on_are_not_settled() -> None:
    checkpoint = rules.validate(chat(10, breakpoint_on_last=True), MODEL)
    assert checkpoint is not None
    assert checkpoint.count == 20  # the last message's breakpoint will move


def test_an_error_in_the_new_part_is_caught_when_resuming() -> None:
    checkpoint = rules.validate(chat(3), MODEL)
    broken = chat(3)
    broken["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "fine"}]},
        {"role": "user", "content": "   "},
    ]
    with pytest.raises(HistoryError) as info:
        rules.validate(broken, MODEL, since=checkpoint)
    assert (info.value.rule, info.value.message_index) == ("user_text_empty", 8)


def test_a_changed_prefix_is_walked_in_full() -> None:
    checkpoint = rules.validate(chat(3), MODEL)
    changed = chat(3)
    changed["messages"][0] = {"role": "user", "content": "   "}  # the first message differs: no resuming
    with pytest.raises(HistoryError) as info:
        rules.validate(changed, MODEL, since=checkpoint)
    assert info.value.message_index == 0


def test_tool_ids_seen_in_the_settled_prefix_still_count() -> None:
    request = chat(0)
    request["messages"] = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
    ]
    checkpoint = rules.validate(request, MODEL)
    request["messages"] = [
        *request["messages"],
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "again"}]},
    ]
    with pytest.raises(HistoryError) as info:
        rules.validate(request, MODEL, since=checkpoint)
    assert info.value.rule == "tool_use_id_duplicate"
