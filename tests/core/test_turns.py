"""Turn starts: the only places a policy may cut a transcript."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from strategies import histories

from turnkeep.core.catalog import default_catalog
from turnkeep.core.policies.turns import in_tool_loop, is_turn_start, keep_last_cut, last_turn_start, turn_starts
from turnkeep.core.rules import unanswered_tool_calls, validate

MODEL = default_catalog().get("claude-opus-5")  # accepts role 'system' messages


def _result(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "done"}


LOOP: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "system", "content": "Answer briefly."},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}]},
    {"role": "user", "content": [_result("toolu_1")]},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "w", "input": {}}]},
    {"role": "user", "content": [_result("toolu_2"), {"type": "text", "text": "also Bergen"}]},
    {"role": "assistant", "content": "Sunny."},
    {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
]


def test_turns_start_at_user_messages_that_carry_no_tool_results() -> None:
    assert turn_starts(LOOP) == [0, 7]


def test_tool_result_carriers_system_and_assistant_messages_never_start_a_turn() -> None:
    assert not is_turn_start(LOOP[1])
    assert not is_turn_start(LOOP[2])
    assert not is_turn_start(LOOP[3])
    assert not is_turn_start(LOOP[5])  # results plus text still answer a call
    assert not is_turn_start({"role": "user", "content": []})
    assert is_turn_start({"role": "user", "content": "plain"})


def test_last_turn_start_looks_backwards() -> None:
    assert last_turn_start(LOOP) == 7
    assert last_turn_start(LOOP, before=6) == 0
    assert last_turn_start([]) is None
    assert last_turn_start(LOOP[2:4]) is None


@settings(max_examples=150, deadline=None)
@given(histories(system_messages=True, max_turns=6))
def test_a_history_cut_at_any_turn_start_is_a_valid_request(history: list[dict[str, Any]]) -> None:
    for start in turn_starts(history):
        validate({"model": MODEL.id, "max_tokens": 100, "messages": history[start:]}, MODEL)
        if start:
            # Every call made before the cut was answered before it: no tool loop is split.
            assert unanswered_tool_calls(history[:start]) == []


def test_a_tool_loop_is_an_answered_assistant_message_after_the_last_turn_start_not_a_prefill() -> None:
    call = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]}
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]}
    question = {"role": "user", "content": "Go."}
    assert in_tool_loop([question, call, result])
    assert not in_tool_loop([question])
    assert not in_tool_loop([question, {"role": "assistant", "content": "Sure:"}])  # a prefill
    assert in_tool_loop([question, call, result, {"role": "assistant", "content": "Sure:"}])  # a prefill in a loop


def test_the_cut_that_keeps_the_last_turns_walks_back_only_over_them() -> None:
    import random

    rng = random.Random(3)
    for _ in range(300):
        messages: list[dict[str, Any]] = []
        for _ in range(rng.randint(0, 12)):
            messages.append({"role": "user", "content": "q"})
            for step in range(rng.randint(0, 2)):
                call = {"type": "tool_use", "id": f"t{step}", "name": "f", "input": {}}
                messages.append({"role": "assistant", "content": [call]})
                result = {"type": "tool_result", "tool_use_id": f"t{step}", "content": "r"}
                messages.append({"role": "user", "content": [result]})
            messages.append({"role": "assistant", "content": "a"})
        keep = rng.randint(1, 5)
        starts = turn_starts(messages)
        assert keep_last_cut(messages, keep) == (starts[-keep] if len(starts) > keep else None)
