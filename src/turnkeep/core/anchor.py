"""Where the last answered request leaves a conversation: a digest of its messages plus the reply, and their size.

Two things build on it. Message threads continue from the reply only while the next request extends exactly
those messages. And forecasts are exact for the known part: `usage` gives the precise input size of the last
request, and its reply's `output_tokens` its size when sent back, so only the new messages are estimated
(calibrated per conversation from what the API then reports).

Prefixes are compared without `cache_control`, which moves from request to request.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anthropic.types import Message, MessageParam

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.memo import ByIdentity, LastByIdentity
from turnkeep.core.messages import THINKING_TYPES, as_blocks, compaction_start, reply_param
from turnkeep.core.pricing import context_counts, token_counts, usage_of
from turnkeep.core.rules import normalize
from turnkeep.core.tokens import estimate_block, estimate_message, estimate_request

__all__ = ["Anchor", "Sizes", "anchor_after", "extends", "input_forecast"]

# Newer tokenizer generations count about 30% more tokens for the same text (reference §5).
_TOKENIZER_FACTOR = 1.3


@dataclass(frozen=True, slots=True, eq=False)
class Anchor:
    """The last answered request: its reply's id, its messages plus the reply (normalised, as the next request
    repeats them), and their exact size as input tokens (system and tools included).

    The messages are the first `kept` of `sent`, the request's own message list (not copied: a request is never
    changed once sent), followed by `tail`, its last message and the reply as the next request carries them.
    They are the very message objects the request carried: a conversation never changes a message once it is in
    its path (a change is a new object), so the next request is compared with them mostly by identity, and only
    the few messages that are new objects (a moved breakpoint, the stored reply) are compared by content."""

    message_id: str
    sent: Sequence[Any]
    kept: int
    tail: tuple[Any, ...]
    model: str
    fixed: bytes
    tokenizer: int
    tokens: int

    @property
    def count(self) -> int:
        """How many messages the anchored request and its reply hold."""
        return self.kept + len(self.tail)


def _canonical(value: Any) -> Any:
    """`value` as the API reads it: without `cache_control` (it moves), and with string content (a message's or
    the system prompt's) as the single text block it stands for (placing a breakpoint turns one into the other)."""
    if isinstance(value, Mapping):
        return {
            key: [{"type": "text", "text": item}] if key == "content" and isinstance(item, str) else _canonical(item)
            for key, item in value.items()
            if key != "cache_control"
        }
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value


_SORTED = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> bytes:
    """A digest of JSON-ready `value` as the API reads it (see `_canonical`): 16 bytes of SHA-256, as many are held
    (one per message of a long history)."""
    text = _SORTED.encode(value)
    if '"cache_control"' in text or '"content":"' in text:  # only then does the API's reading differ from it
        text = _SORTED.encode(_canonical(value))
    return hashlib.sha256(text.encode()).digest()[:16]


message_digest = ByIdentity[object, bytes](digest)
"""`digest` of a message, remembered per message object: a message is serialised once in its life rather than
once per turn (the anchor's copy of the last messages and the path's are compared, and sizes are kept, by it)."""

_fixed = LastByIdentity[bytes]()
_reply = ByIdentity[Message, MessageParam](reply_param, limit=16)  # one object per reply: digested once


def fixed_digest(request: Mapping[str, Any]) -> bytes:
    """What every request of a conversation starts with: system and tools, remembered by the identity of the two
    values (the same objects turn after turn), so it is computed again only when one of them was replaced."""
    system, tools = request.get("system"), request.get("tools")
    known = _fixed.get(system, tools)
    if known is not None:
        return known
    value = digest([[{"type": "text", "text": system}] if isinstance(system, str) else system, tools])
    return _fixed.put(value, system, tools)


_NEXT_USER: MessageParam = {"role": "user", "content": "next"}


def anchor_after(request: Mapping[str, Any], message: Message, model: ModelInfo) -> Anchor:
    """The anchor once `message` answered the (full) `request`."""
    sent: Sequence[MessageParam] = request["messages"]
    # A validated request is already normal: only its last message and the reply can still merge. The reply is
    # normalised as the next request carries it, followed by a user message (so a trailing space stays).
    reply = _reply(message)
    tail = normalize([*sent[-1:], reply, _NEXT_USER])
    # (Unless the reply left nothing and the user messages merged: then without it.)
    tail = tail[:-1] if tail and tail[-1] == _NEXT_USER else normalize([*sent[-1:], reply])
    kept = len(sent) - 1 if sent else 0
    if sent and tail and tail[0] is sent[-1]:  # the last message stays as it was sent (the usual case)
        kept, tail = len(sent), tail[1:]
    counts = context_counts(usage_of(message))  # a compaction's reading left out
    # Earlier thinking is not counted as input when sent back (reference §5), though it was billed as output.
    thinking = sum(
        estimate_block(block, model) for block in as_blocks(message.content) if block["type"] in THINKING_TYPES
    )
    size = counts.total_input + max(counts.output - thinking, 0)
    return Anchor(
        message.id, sent, kept, tuple(tail), str(request["model"]), fixed_digest(request), model.tokenizer, size
    )


def _same_prefix(messages: Sequence[Any], anchor: Anchor) -> bool:
    """Whether `messages` starts with the anchored messages as the API reads them (see `_canonical`)."""
    if len(messages) < anchor.count:
        return False
    kept = anchor.kept
    return _same(messages[:kept], anchor.sent if len(anchor.sent) == kept else anchor.sent[:kept]) and _same(
        messages[kept : anchor.count], anchor.tail
    )


def _same(messages: Sequence[Any], anchored: Sequence[Any]) -> bool:
    """Whether two message sequences of one length are the same as the API reads them."""
    if type(messages) is not type(anchored):
        messages, anchored = list(messages), list(anchored)
    if messages == anchored:  # in C: identical or equal messages (the common case)
        return True
    # Else find the messages that are other objects and compare only those as the API reads them.
    differing = itertools.compress(range(len(anchored)), map(operator.is_not, messages, anchored))
    return all(
        messages[index] == anchored[index] or message_digest(messages[index]) == message_digest(anchored[index])
        for index in differing
    )


_extends = LastByIdentity[bool]()


def extends(request: Mapping[str, Any], anchor: Anchor | None, *, same_model: bool = True) -> bool:
    """Whether `request` is the anchored messages and reply followed by new messages, with the same system and
    tools (and model, unless `same_model` is False)."""
    if anchor is None or (same_model and anchor.model != request.get("model")):
        return False
    # Asked twice about the request a turn sent (to forecast it, then to learn from it): answered once.
    known = _extends.get(request, anchor)
    if known is not None:
        return known
    messages: Sequence[MessageParam] = request["messages"]
    answer = len(messages) > anchor.count and anchor.fixed == fixed_digest(request) and _same_prefix(messages, anchor)
    return _extends.put(answer, request, anchor)


@dataclass
class Sizes:
    """Exact input sizes learned from usage, per message (by digest) and for the fixed part (system, tools)."""

    messages: dict[bytes, int]
    base: int | None = None
    digests: ByIdentity[object, bytes] = field(default=message_digest, repr=False, compare=False)

    def learn(
        self,
        request: Mapping[str, Any],
        anchor: Anchor | None,
        message: Message,
        model: ModelInfo,
        *,
        calibration: float,
    ) -> None:
        """Record what answering `request` (sent with `anchor` as the previous state) measured."""
        counts = token_counts(usage_of(message))
        messages = request["messages"]
        if extends(request, anchor, same_model=False) and anchor is not None and anchor.tokenizer == model.tokenizer:
            new = list(messages[anchor.count :])
            if len(new) == 1:
                self.messages[self.digests(new[0])] = counts.total_input - anchor.tokens
        else:
            found = [self.messages.get(self.digests(m)) for m in messages]
            known = sum(size for size in found if size is not None)
            unknown = [m for m, size in zip(messages, found, strict=True) if size is None]
            estimated = round(sum(estimate_message(m, model) for m in unknown) * calibration)
            self.base = max(counts.total_input - known - estimated, 0)
        reply = _reply(message)
        thinking = sum(
            estimate_block(block, model) for block in as_blocks(reply["content"]) if block["type"] in THINKING_TYPES
        )
        self.messages[self.digests(reply)] = max(counts.output - thinking, 0)


def input_forecast(
    request: Mapping[str, Any],
    anchor: Anchor | None,
    model: ModelInfo,
    *,
    calibration: float = 1.0,
    sizes: Sizes | None = None,
) -> tuple[int, int]:
    """(predicted input tokens, of which estimated) for `request`: exact for an anchored prefix and for every
    message whose size usage has measured, calibrated estimates for the rest. After a switch to a model with
    another tokenizer the anchored size is rescaled (newer tokenizers count ~30% more) and counts as estimated."""
    messages = request["messages"]
    compacted = compaction_start(messages)
    if compacted and anchor is not None and compacted >= anchor.count - 1:
        # The anchored reply brought the compaction block: its measured size counts what the API now drops.
        anchor = None
    if extends(request, anchor, same_model=False):
        assert anchor is not None
        new = round(sum(estimate_message(m, model) for m in request["messages"][anchor.count :]) * calibration)
        if anchor.tokenizer == model.tokenizer:
            return anchor.tokens + new, new
        rescaled = round(anchor.tokens * _TOKENIZER_FACTOR ** (model.tokenizer - anchor.tokenizer))
        return rescaled + new, rescaled + new
    if compacted:
        # The API drops everything before a compaction block (reference §7): only the rest is billed.
        request = {**request, "messages": messages[compacted:]}
    if sizes is not None and sizes.base is not None and (anchor is None or anchor.tokenizer == model.tokenizer):
        # A changed prefix (a window step, a new summary): add up what is known message by message.
        known = 0
        estimated = 0
        for message in request["messages"]:
            size = sizes.messages.get(sizes.digests(message))
            if size is None:
                estimated += round(estimate_message(message, model) * calibration)
            else:
                known += size
        return sizes.base + known + estimated, estimated
    estimated = round(estimate_request(request, model) * calibration)
    return estimated, estimated
