"""A streamed turn's events folded into what the caller sees, without I/O.

`StreamFold` takes the server-sent events of each call of a turn (as the SDK's stream yields them) and returns
the text to show: the prefill first, then the model's text (and, with `thinking.display: "updates"`, what it
writes between tool calls), with the model's own copy of an instructed prefill left out, so the text shown is the
text stored. It also keeps the usage seen so far in the current call (`message_start`, then each
`message_delta`), what a ledger records for a stream that stops early. The sync and async drivers only loop over
their stream and call `feed`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from turnkeep.core.signals import asks_thinking_updates, thinking_update_text

__all__ = ["PrefixAligner", "StreamFold"]


class PrefixAligner:
    """For `prefill_fallback="instruct"` streams: yield the prefill first, then the model's text without its own
    copy of the prefill, matching what `Turn.outcome()` stores."""

    def __init__(self, prefill: str | None) -> None:
        self.prefill = prefill
        self._buffer = ""
        self._decided = prefill is None

    def start(self) -> str:
        return self.prefill or ""

    def feed(self, text: str) -> str:
        if self._decided:
            return text
        assert self.prefill is not None
        self._buffer += text
        stripped = self._buffer.lstrip()
        if len(stripped) < len(self.prefill) and self.prefill.startswith(stripped):
            return ""  # cannot tell yet
        self._decided = True
        out, self._buffer = self._buffer, ""
        return stripped[len(self.prefill) :] if stripped.startswith(self.prefill) else out

    def flush(self) -> str:
        out, self._buffer, self._decided = self._buffer, "", True
        return "" if out.strip() == (self.prefill or "").strip() else out


class StreamFold:
    """The text a streamed turn shows, call by call (see the module docstring)."""

    def __init__(self, prefill: str | None, prefill_mode: Literal["native", "instruct"] | None) -> None:
        native = prefill_mode == "native" and bool(prefill)
        self.prefix = (prefill or "") if native else ""
        self._aligner = PrefixAligner(prefill if prefill_mode == "instruct" else None)
        if prefill_mode == "instruct":
            self.prefix = self._aligner.start()
        self.shown = False
        """Whether any of the model's text reached the caller (then a call is never silently sent again)."""
        self.usage: dict[str, Any] = {}
        """The usage reported so far by the current call's events."""
        self._request: Mapping[str, Any] = {}
        self._shows_text = True
        self._updates = False  # the request asks for thinking updates: asked once per call, not per event

    def begin(self, request: Mapping[str, Any], *, shows_text: bool) -> None:
        """A new call of the turn starts streaming (`shows_text`: False for a summary call)."""
        self._request = request
        self._shows_text = shows_text
        self._updates = asks_thinking_updates(request)
        self.usage = {}

    def feed(self, event: Any) -> str:
        """The text `event` brings the caller ("" for none)."""
        kind = getattr(event, "type", None)
        if kind == "message_start":
            self.usage = _usage(event.message.usage)
        elif kind == "message_delta":
            self.usage = {**self.usage, **_usage(event.usage)}
        if not self._shows_text:
            return ""
        # Asked for with thinking.display "updates": what the model writes between tool calls arrives as thinking.
        update = thinking_update_text(self._request, event) if self._updates else None
        if update:
            self.shown = True
            return update
        if kind == "content_block_delta" and event.delta.type == "text_delta":
            out = self._aligner.feed(event.delta.text)
            self.shown = self.shown or bool(out)
            return out
        return ""

    def finish(self) -> str:
        """The last text held back while the prefill could not be told apart yet."""
        return self._aligner.flush()


def _usage(usage: Any) -> dict[str, Any]:
    dump = getattr(usage, "model_dump", None)
    found = dump(exclude_none=True) if dump is not None else usage
    return {key: value for key, value in dict(found or {}).items() if value is not None}
