"""Message threads (beta) as a transport: send only what is new while the history only grows.

A thread is created with the whole request (`thread: {"type": "create"}`); while each later request is the
previous request plus its reply plus new messages, with the same model, system prompt and tools (fixed at create),
only the new messages are sent (`thread: {"type": "continue", "previous_message_id": ...}`). When the prefix
changes (a window step, a new summary, an edit) the next request creates a new thread. Threads are best effort:
on `thread_not_found` (expiry after 5 minutes) and the other thread errors the full request is sent again as a
new thread, and on `thread_unsupported_request` the request goes unthreaded. The conversation's own history stays
the source of truth, so nothing depends on the server keeping a thread.

Prefixes are compared without `cache_control`, which moves from request to request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anthropic.types import Message, MessageParam

from turnkeep.core.messages import reply_param
from turnkeep.core.rules import normalize

__all__ = ["THREADS_BETA", "ThreadPosition", "advance", "lost", "unsupported", "wire_request"]

THREADS_BETA = "message-threads-2026-08-12"
# Errors after which the same request, sent whole as a new thread, succeeds.
_LOST = frozenset(
    {"thread_not_found", "thread_already_continued", "thread_continue_in_flight", "thread_fingerprint_mismatch"}
)


@dataclass(frozen=True, slots=True)
class ThreadPosition:
    """Where a thread stands: the reply to continue from and a digest of everything the thread holds."""

    previous_message_id: str
    messages_digest: str
    count: int
    fixed_digest: str


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_cache_control(item) for key, item in value.items() if key != "cache_control"}
    if isinstance(value, list | tuple):
        return [_without_cache_control(item) for item in value]
    return value


def _digest(value: Any) -> str:
    text = json.dumps(_without_cache_control(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _fixed(request: Mapping[str, Any]) -> str:
    return _digest([request.get("model"), request.get("system"), request.get("tools")])


def _with_beta(request: Mapping[str, Any]) -> dict[str, Any]:
    betas = list(request.get("betas") or [])
    if THREADS_BETA not in betas:
        betas.append(THREADS_BETA)
    return {**request, "betas": betas}


def wire_request(request: Mapping[str, Any], position: ThreadPosition | None) -> tuple[dict[str, Any], bool]:
    """The request to put on the wire, and whether it continues a thread (False: it creates one)."""
    messages: Sequence[MessageParam] = request["messages"]
    if (
        position is not None
        and position.fixed_digest == _fixed(request)
        and len(messages) > position.count
        and _digest(list(messages[: position.count])) == position.messages_digest
    ):
        wire = {key: value for key, value in request.items() if key not in ("system", "tools")}
        wire["messages"] = list(messages[position.count :])
        wire["thread"] = {"type": "continue", "previous_message_id": position.previous_message_id}
        return _with_beta(wire), True
    return _with_beta({**request, "thread": {"type": "create"}}), False


def advance(request: Mapping[str, Any], message: Message) -> ThreadPosition:
    """The thread's position after `message` answered the (full, unthreaded) `request`."""
    messages = normalize([*request["messages"], reply_param(message)])
    return ThreadPosition(message.id, _digest(messages), len(messages), _fixed(request))


def lost(error: BaseException) -> bool:
    """The server no longer has (or cannot continue) the thread: send the whole request as a new one."""
    return getattr(error, "error_code", None) in _LOST


def unsupported(error: BaseException) -> bool:
    """The server cannot thread this request at all: send it, and later ones, unthreaded."""
    return getattr(error, "error_code", None) == "thread_unsupported_request"
