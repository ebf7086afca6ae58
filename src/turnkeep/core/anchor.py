"""Where the last answered request leaves a conversation: a digest of its messages plus the reply, and their size.

Two things build on it. Message threads continue from the reply only while the next request extends exactly
those messages. And forecasts are exact for the known part: `usage` gives the precise input size of the last
request, and its reply's `output_tokens` its size when sent back, so only the new messages are estimated
(calibrated per conversation from what the API then reports).

Prefixes are compared without `cache_control`, which moves from request to request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anthropic.types import Message, MessageParam

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.messages import as_blocks, reply_param
from turnkeep.core.pricing import token_counts
from turnkeep.core.rules import normalize
from turnkeep.core.tokens import estimate_block, estimate_message, estimate_request

__all__ = ["Anchor", "anchor_after", "extends", "input_forecast"]

# Newer tokenizer generations count about 30% more tokens for the same text (reference §5).
_TOKENIZER_FACTOR = 1.3


@dataclass(frozen=True, slots=True)
class Anchor:
    """The last answered request: its reply's id, a digest of messages + reply, how many, and their exact size
    as input tokens (system and tools included)."""

    message_id: str
    digest: str
    count: int
    model: str
    fixed: str
    tokenizer: int
    tokens: int


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_cache_control(item) for key, item in value.items() if key != "cache_control"}
    if isinstance(value, list | tuple):
        return [_without_cache_control(item) for item in value]
    return value


def digest(value: Any) -> str:
    """A digest of JSON-ready `value`, blind to `cache_control`."""
    text = json.dumps(_without_cache_control(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def fixed_digest(request: Mapping[str, Any]) -> str:
    """What every request of a conversation starts with: system and tools."""
    return digest([request.get("system"), request.get("tools")])


def anchor_after(request: Mapping[str, Any], message: Message, model: ModelInfo) -> Anchor:
    """The anchor once `message` answered the (full) `request`."""
    messages = normalize([*request["messages"], reply_param(message)])
    counts = token_counts(message.usage.model_dump(exclude_none=True))
    # Earlier thinking is not counted as input when sent back (reference §5), though it was billed as output.
    thinking = sum(
        estimate_block(block, model)
        for block in as_blocks(message.content)
        if block["type"] in ("thinking", "redacted_thinking")
    )
    size = counts.total_input + max(counts.output - thinking, 0)
    model_id = str(request["model"])
    return Anchor(message.id, digest(messages), len(messages), model_id, fixed_digest(request), model.tokenizer, size)


def extends(request: Mapping[str, Any], anchor: Anchor | None, *, same_model: bool = True) -> bool:
    """Whether `request` is the anchored messages and reply followed by new messages, with the same system and
    tools (and model, unless `same_model` is False)."""
    messages: Sequence[MessageParam] = request["messages"]
    return (
        anchor is not None
        and (not same_model or anchor.model == request.get("model"))
        and anchor.fixed == fixed_digest(request)
        and len(messages) > anchor.count
        and digest(list(messages[: anchor.count])) == anchor.digest
    )


def input_forecast(
    request: Mapping[str, Any], anchor: Anchor | None, model: ModelInfo, *, calibration: float = 1.0
) -> tuple[int, int]:
    """(predicted input tokens, of which estimated) for `request`: exact for an anchored prefix, calibrated
    estimates for the rest. Without an anchor the whole request is estimated. After a switch to a model with
    another tokenizer the anchored size is rescaled (newer tokenizers count ~30% more) and counts as estimated."""
    if extends(request, anchor, same_model=False):
        assert anchor is not None
        new = round(sum(estimate_message(m, model) for m in request["messages"][anchor.count :]) * calibration)
        if anchor.tokenizer == model.tokenizer:
            return anchor.tokens + new, new
        rescaled = round(anchor.tokens * _TOKENIZER_FACTOR ** (model.tokenizer - anchor.tokenizer))
        return rescaled + new, rescaled + new
    estimated = round(estimate_request(request, model) * calibration)
    return estimated, estimated
