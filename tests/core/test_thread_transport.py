"""Threads as a transport: continue while the history only grows, create when its prefix changes."""

from __future__ import annotations

from typing import Any

from anthropic.types import Message

from turnkeep.core.anchor import anchor_after
from turnkeep.core.catalog import default_catalog
from turnkeep.core.threads import THREADS_BETA, lost, unsupported, wire_request

OPUS = default_catalog().get("claude-opus-5")


def advance(request: dict[str, Any], message: Message) -> Any:
    return anchor_after(request, message, OPUS)


def reply(message_id: str, text: str) -> Message:
    return Message.model_validate(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-5",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )


def request(*messages: dict[str, Any], system: str = "S") -> dict[str, Any]:
    return {"model": "claude-opus-5", "max_tokens": 100, "system": system, "messages": list(messages)}


FIRST = {"role": "user", "content": "one"}
ANSWER = {"role": "assistant", "content": [{"type": "text", "text": "uno"}]}
SECOND = {"role": "user", "content": [{"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}]}


def test_the_first_request_creates_a_thread_with_everything() -> None:
    wire, continued = wire_request(request(FIRST), None)
    assert not continued
    assert wire["thread"] == {"type": "create"}
    assert wire["system"] == "S"
    assert THREADS_BETA in wire["betas"]


def test_a_grown_history_continues_with_only_the_new_messages() -> None:
    position = advance(request(FIRST), reply("msg_1", "uno"))
    wire, continued = wire_request(request(FIRST, ANSWER, SECOND), position)
    assert continued
    assert wire["thread"] == {"type": "continue", "previous_message_id": "msg_1"}
    assert wire["messages"] == [SECOND]
    assert "system" not in wire


def test_moving_cache_breakpoints_do_not_break_the_thread() -> None:
    cached_first = {
        "role": "user",
        "content": [{"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}}],
    }
    position = advance(request(cached_first), reply("msg_1", "uno"))
    _, continued = wire_request(
        request({"role": "user", "content": [{"type": "text", "text": "one"}]}, ANSWER, SECOND), position
    )
    assert continued


def test_a_changed_prefix_or_system_creates_a_new_thread() -> None:
    position = advance(request(FIRST), reply("msg_1", "uno"))
    other = {"role": "user", "content": "uno bis"}
    assert wire_request(request(other, ANSWER, SECOND), position)[1] is False
    assert wire_request(request(FIRST, ANSWER, SECOND, system="T"), position)[1] is False


class _Error(Exception):
    def __init__(self, code: str) -> None:
        self.error_code = code


def test_which_errors_mean_resend_whole_or_unthreaded() -> None:
    assert lost(_Error("thread_not_found"))
    assert not lost(_Error("invalid_request"))
    assert unsupported(_Error("thread_unsupported_request"))
