"""The anchor: what the last answered request leaves, and which next requests extend it (as the API reads them)."""

from __future__ import annotations

import copy
from typing import Any

from anthropic.types import Message

from turnkeep.core.anchor import anchor_after, extends, input_forecast
from turnkeep.core.catalog import default_catalog

MODEL = default_catalog().get("claude-sonnet-4-6")


def reply(text: str, *, input_tokens: int = 100, output_tokens: int = 7) -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL.id,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def request(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": MODEL.id, "max_tokens": 100, "system": "Be brief.", "messages": list(messages)}


HISTORY = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
    {"role": "user", "content": "And of Italy?"},
]
ANSWER = {"role": "assistant", "content": [{"type": "text", "text": "Rome."}]}
NEXT = {"role": "user", "content": "And of Spain?"}


def test_the_next_request_with_the_same_messages_and_the_reply_extends_the_anchor() -> None:
    anchor = anchor_after(request(*HISTORY), reply("Rome."), MODEL)
    assert anchor.count == len(HISTORY) + 1
    assert extends(request(*HISTORY, ANSWER, NEXT), anchor)


def test_equal_copies_of_the_messages_extend_it_too() -> None:
    anchor = anchor_after(request(*HISTORY), reply("Rome."), MODEL)
    assert extends(request(*copy.deepcopy([*HISTORY, ANSWER, NEXT])), anchor)


def test_a_moved_cache_breakpoint_is_read_as_the_api_reads_it() -> None:
    anchor = anchor_after(request(*HISTORY), reply("Rome."), MODEL)
    marked = {
        "role": "user",
        "content": [{"type": "text", "text": "And of Italy?", "cache_control": {"type": "ephemeral"}}],
    }
    assert extends(request(*HISTORY[:2], marked, ANSWER, NEXT), anchor)


def test_a_changed_earlier_message_or_a_dropped_one_does_not_extend_it() -> None:
    anchor = anchor_after(request(*HISTORY), reply("Rome."), MODEL)
    changed = {"role": "user", "content": "What is the capital of Germany?"}
    assert not extends(request(changed, *HISTORY[1:], ANSWER, NEXT), anchor)
    assert not extends(request(*HISTORY[2:], ANSWER, NEXT), anchor)
    assert not extends(request(*HISTORY, ANSWER), anchor)  # nothing new


def test_a_reply_that_continues_a_prefill_is_anchored_merged_with_it() -> None:
    prefill = {"role": "assistant", "content": "The capital is"}
    anchor = anchor_after(request(*HISTORY, prefill), reply(" Rome."), MODEL)
    merged = {
        "role": "assistant",
        "content": [{"type": "text", "text": "The capital is"}, {"type": "text", "text": " Rome."}],
    }
    assert anchor.count == len(HISTORY) + 1
    assert extends(request(*HISTORY, merged, NEXT), anchor)


def test_the_forecast_of_an_extending_request_is_exact_but_for_what_is_new() -> None:
    anchor = anchor_after(request(*HISTORY), reply("Rome.", input_tokens=100, output_tokens=7), MODEL)
    total, estimated = input_forecast(request(*HISTORY, ANSWER, NEXT), anchor, MODEL)
    assert total == 107 + estimated
    assert 0 < estimated < 20
