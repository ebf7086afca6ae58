"""Fast token estimates for requests, and their calibration against observed usage.

There is no local tokenizer for current Claude models (reference §5), so turnkeep estimates: about 4 characters
per token for the older tokenizer (`ModelInfo.tokenizer == 1`) and 30% more for the newer one (generation 2).
Characters outside ASCII weigh more (a UTF-8 byte beyond the first counts as two more characters), so CJK text
and emoji are not under-counted. On top of the text: a per-message overhead, fixed overheads for tool calls and
results, a flat size for images and PDF pages. Thinking blocks of earlier turns count 0 (the API does not count
them as input); in `estimate_request`, the thinking of the turn in progress (its tool loop) is counted, on the
safe side.

The estimate errs high rather than low, since it decides what fits a context window. `calibrate` folds the exact
sizes the API reports (`input + cache_creation + cache_read`) into a per-model correction factor that callers
pass back as `calibration`.

Everything here is pure and cheap: a text's estimate is `len()` (plus one UTF-8 encoding for non-ASCII text);
block walks are shallow. Policies still estimate incrementally (per message, cached in their state), because a
10,000-turn transcript is too long to walk on every turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.messages import block_view as _view

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "PDF_PAGE_TOKENS",
    "TOOL_RESULT_OVERHEAD",
    "TOOL_USE_OVERHEAD",
    "Calibrator",
    "estimate_block",
    "estimate_message",
    "estimate_request",
    "estimate_text",
]

CHARS_PER_TOKEN = 4
"""Characters per token of the generation-1 tokenizer (English prose)."""
MESSAGE_OVERHEAD = 4
"""Tokens each message adds (role markers, turn separators)."""
TOOL_USE_OVERHEAD = 8
TOOL_RESULT_OVERHEAD = 6
TOOL_DEFINITION_OVERHEAD = 8
IMAGE_TOKENS = 1600
"""Tokens of one image (the API scales images to at most ~1.15 megapixels, about 1,600 tokens)."""
PDF_PAGE_TOKENS = 1500
"""Tokens of one PDF page (text plus the page image)."""
_PDF_BYTES_PER_PAGE = 50_000
_CALIBRATION_BOUNDS = (0.25, 4.0)

_THINKING = frozenset({"thinking", "redacted_thinking"})
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _units(text: str) -> int:
    """Generation-1 characters of `text`: its length, plus two per UTF-8 byte beyond the first of a character."""
    if text.isascii():
        return len(text)
    return 2 * len(text.encode("utf-8", "surrogatepass")) - len(text)


def _tokens(units: int, model: ModelInfo) -> int:
    """Tokens for `units` characters under the model's tokenizer, rounded up."""
    base = -(-units // CHARS_PER_TOKEN)
    if model.tokenizer >= 2:
        return -(-base * 13 // 10)
    return base


def estimate_text(text: str, model: ModelInfo) -> int:
    """Estimated tokens of a plain text for `model` (about 4 characters per token; generation 2: x1.3)."""
    return _tokens(_units(text), model)


def _json_units(value: Any) -> int:
    return _units(_COMPACT_JSON.encode(value))


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _content_units(content: object, model: ModelInfo) -> int:
    """Units of nested content (a string or blocks), images and documents converted from their token sizes."""
    if isinstance(content, str):
        return _units(content)
    if isinstance(content, list | tuple):
        return sum(_block_units(block, model) for block in content)
    return 0


def _document_units(view: Mapping[str, Any], model: ModelInfo) -> int:
    units = _units(_str(view.get("title"))) + _units(_str(view.get("context")))
    source = view.get("source")
    if isinstance(source, Mapping):
        kind = source.get("type")
        if kind == "text":
            return units + _units(_str(source.get("data")))
        if kind == "content":
            return units + _content_units(source.get("content"), model)
        if kind == "base64" and source.get("media_type") != "application/pdf":
            return units + _units(_str(source.get("data")))
        if kind == "base64":
            pages = max(1, len(_str(source.get("data"))) * 3 // 4 // _PDF_BYTES_PER_PAGE)
            return units + pages * PDF_PAGE_TOKENS * CHARS_PER_TOKEN
    return units + PDF_PAGE_TOKENS * CHARS_PER_TOKEN


def _block_units(block: object, model: ModelInfo) -> int:
    """Generation-1 characters of one block (fixed overheads included as characters)."""
    view = _view(block)
    if view is None:
        return 0
    kind = view.get("type")
    if kind == "text":
        units = _units(_str(view.get("text")))
        citations = view.get("citations")
        return units + (_json_units(citations) if citations else 0)
    if kind in _THINKING:
        return 0
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return TOOL_USE_OVERHEAD * CHARS_PER_TOKEN + _units(_str(view.get("name"))) + _json_units(view.get("input"))
    if kind in ("tool_result", "mcp_tool_result"):
        return TOOL_RESULT_OVERHEAD * CHARS_PER_TOKEN + _content_units(view.get("content"), model)
    if kind == "image":
        return IMAGE_TOKENS * CHARS_PER_TOKEN
    if kind == "document":
        return _document_units(view, model)
    if kind == "compaction":
        return _units(_str(view.get("content")))
    if kind == "search_result":
        return (
            _units(_str(view.get("title")))
            + _units(_str(view.get("source")))
            + _content_units(view.get("content"), model)
        )
    return _json_units({key: value for key, value in view.items() if key != "cache_control"})


def estimate_block(block: object, model: ModelInfo) -> int:
    """Estimated input tokens of one content block (thinking: 0), without the per-message overhead."""
    return _tokens(_block_units(block, model), model)


def estimate_message(message: Mapping[str, Any], model: ModelInfo) -> int:
    """Estimated input tokens of one message: its blocks plus `MESSAGE_OVERHEAD` (thinking counts 0)."""
    content = message.get("content")
    if isinstance(content, str):
        return MESSAGE_OVERHEAD + _tokens(_units(content), model)
    if isinstance(content, list | tuple):
        return MESSAGE_OVERHEAD + _tokens(sum(_block_units(block, model) for block in content), model)
    return MESSAGE_OVERHEAD


def estimate_prefix(request: Mapping[str, Any], model: ModelInfo) -> int:
    """Estimated tokens of the request's `tools` and `system`: the part before the messages."""
    units = 0
    tools = request.get("tools")
    if isinstance(tools, list | tuple):
        for tool in tools:
            view = _view(tool)
            if view is not None:
                units += TOOL_DEFINITION_OVERHEAD * CHARS_PER_TOKEN + _json_units(
                    {key: value for key, value in view.items() if key != "cache_control"}
                )
    system = request.get("system")
    if isinstance(system, str):
        units += _units(system)
    elif isinstance(system, list | tuple):
        units += sum(_block_units(block, model) for block in system)
    return _tokens(units, model)


def current_turn_thinking(messages: Sequence[Any], model: ModelInfo) -> int:
    """Estimated tokens of the thinking in the turn in progress (assistant messages after the last user message
    that is not a tool-result carrier): the API counts those, unlike the thinking of earlier turns."""
    units = 0
    for message in reversed(messages):
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        blocks = content if isinstance(content, list | tuple) else []
        role = message.get("role")
        if role == "user" and not any(_str((_view(b) or {}).get("type")) == "tool_result" for b in blocks):
            break
        if role == "assistant":
            for block in blocks:
                view = _view(block)
                if view is not None and view.get("type") == "thinking":
                    units += _units(_str(view.get("thinking")))
                elif view is not None and view.get("type") == "redacted_thinking":
                    units += _units(_str(view.get("data")))
    return _tokens(units, model)


def estimate_request(request: Mapping[str, Any], model: ModelInfo, *, calibration: float = 1.0) -> int:
    """Estimated input tokens of a whole `messages.create` request, times `calibration` (rounded up)."""
    messages = request.get("messages")
    total = estimate_prefix(request, model)
    if isinstance(messages, list | tuple):
        total += sum(estimate_message(m, model) for m in messages if isinstance(m, Mapping))
        total += current_turn_thinking(messages, model)
    return apply_calibration(total, calibration)


def apply_calibration(tokens: int, calibration: float) -> int:
    """`tokens` times the calibration factor, rounded up (an uncalibrated estimate is returned as is)."""
    if calibration == 1.0:
        return tokens
    return int(-(-tokens * calibration // 1))


class Calibrator:
    """The ratio of observed to estimated tokens, weighted by size and decaying so it follows drift.

    `observe(estimated, observed)` folds in one measurement (`observed`: the exact size usage reported for what
    was estimated) and returns the current factor: the ratio of the decayed sums, so a 3,000-token message counts
    for a thousand times more than a 3-token one. Each ratio is clamped to [0.25, 4] first, so one odd response
    cannot wreck it; an empty observation (either count 0) changes nothing."""

    def __init__(self, decay: float = 0.97) -> None:
        self.decay = decay
        self._estimated = 0.0
        self._observed = 0.0

    @property
    def factor(self) -> float:
        return self._observed / self._estimated if self._estimated else 1.0

    def observe(self, estimated: int, observed: int) -> float:
        if estimated > 0 and observed > 0:
            low, high = _CALIBRATION_BOUNDS
            self._estimated = self._estimated * self.decay + estimated
            self._observed = self._observed * self.decay + min(max(observed, estimated * low), estimated * high)
        return self.factor
