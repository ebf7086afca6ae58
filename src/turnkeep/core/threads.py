"""Message threads (beta) as a transport: send only what is new while the history only grows.

A thread is created with the whole request (`thread: {"type": "create"}`); while each later request extends the
previous request and its reply (`core.anchor`), with the same model, system prompt and tools (fixed at create),
only the new messages are sent (`thread: {"type": "continue", "previous_message_id": ...}`). When the prefix
changes (a window step, a new summary, an edit) the next request creates a new thread. Threads are best effort:
on `thread_not_found` (expiry after 5 minutes) and the other thread errors the full request is sent again as a
new thread, and on `thread_unsupported_request` the request goes unthreaded. The conversation's own history stays
the source of truth, so nothing depends on the server keeping a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from turnkeep.core.anchor import Anchor, extends

__all__ = ["THREADS_BETA", "continues", "lost", "unsupported", "wire_request"]

THREADS_BETA = "message-threads-2026-08-12"
# Errors after which the same request, sent whole as a new thread, succeeds.
_LOST = frozenset(
    {"thread_not_found", "thread_already_continued", "thread_continue_in_flight", "thread_fingerprint_mismatch"}
)


def _with_beta(request: Mapping[str, Any]) -> dict[str, Any]:
    betas = list(request.get("betas") or [])
    if THREADS_BETA not in betas:
        betas.append(THREADS_BETA)
    return {**request, "betas": betas}


def wire_request(request: Mapping[str, Any], anchor: Anchor | None) -> tuple[dict[str, Any], bool]:
    """The request to put on the wire, and whether it continues a thread (False: it creates one)."""
    if extends(request, anchor):
        assert anchor is not None
        wire = {key: value for key, value in request.items() if key not in ("system", "tools")}
        wire["messages"] = list(request["messages"][anchor.count :])
        wire["thread"] = {"type": "continue", "previous_message_id": anchor.message_id}
        return _with_beta(wire), True
    return _with_beta({**request, "thread": {"type": "create"}}), False


def continues(request: Mapping[str, Any], anchor: Anchor | None) -> bool:
    """Whether `wire_request` sends `request` as a thread continue."""
    return extends(request, anchor)


def lost(error: BaseException) -> bool:
    """The server no longer has (or cannot continue) the thread: send the whole request as a new one."""
    return getattr(error, "error_code", None) in _LOST


def unsupported(error: BaseException) -> bool:
    """The server cannot thread this request at all: send it, and later ones, unthreaded."""
    return getattr(error, "error_code", None) == "thread_unsupported_request"
