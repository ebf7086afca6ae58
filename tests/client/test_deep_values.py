"""Nothing wedges: a reply or an input nested without bound is either handled or refused up front, and the
conversation can always take another turn."""

from __future__ import annotations

from typing import Any

import pytest

from turnkeep import Conversation
from turnkeep.core.values import MAX_DEPTH
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import HistoryError
from turnkeep.store import SQLiteStore

TOOL = {"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {}}}
SCRIPTED = {"x-emulator-responder": "scripted"}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    inner = value
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return value


def test_a_committed_tool_input_at_the_depth_limit_can_be_answered_and_followed(
    turnkeep_emulator: EmulatorServer, tmp_path: Any
) -> None:
    turnkeep_emulator.script({"tool_use": [{"name": "lookup", "input": nested(MAX_DEPTH)}]}, {"text": "Done."})
    chat = Conversation(
        "claude-sonnet-4-6", client=turnkeep_emulator.client(), tools=[TOOL], store=SQLiteStore(tmp_path / "t.db")
    )
    calls = chat.send("Look it up", extra_headers=SCRIPTED).tool_calls
    assert len(calls) == 1
    assert chat.send_tool_results({calls[0].id: "found"}, extra_headers=SCRIPTED).text == "Done."
    assert chat.send("Thanks").text


def test_a_10000_deep_tool_input_is_refused_by_the_emulator_and_the_conversation_goes_on(
    turnkeep_emulator: EmulatorServer,
) -> None:
    with pytest.raises(Exception, match=r"replies\[0\]\.tool_use\[0\]\.input.*nested more than"):
        turnkeep_emulator.script({"tool_use": [{"name": "lookup", "input": nested(10_000)}]})
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), tools=[TOOL])
    assert chat.send("My name is Ada.").text
    assert "Ada" in chat.send("What is my name?").text


def test_a_10000_deep_tool_input_sent_by_the_caller_is_a_usage_error_naming_the_path(
    turnkeep_emulator: EmulatorServer,
) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), tools=[TOOL])
    deep_block = {"type": "text", "text": "hi", "citations": None, "extra": nested(10_000)}
    with pytest.raises(HistoryError, match=r"messages\[0\]\.content\[0\]\.extra.*nested more than") as raised:
        chat.send([deep_block])
    assert raised.value.rule == "value_too_deep"
    assert turnkeep_emulator.bill()["requests"] == 0
    assert chat.send("My name is Ada.").text  # nothing pending wedges the next turn
