"""Server-side context management (reference §7): compaction, context editing and the extractive summariser.

Three request features change what the model sees without the client changing its history:

- **Compaction blocks in `messages`.** A `compaction` block with `content` stands for everything before it: the
  model sees the conversation from the message that holds the block on (blocks before it are not allowed in that
  message). This holds with or without `context_management`. A block with `content: null` is a failed compaction
  and a no-op. At most one block may have content (`compaction_block_ambiguous`); a block must be the first block of
  its message and never in a `system` message (`compaction_block_misplaced`).
- **`context_management.edits`** (beta `context-management-2025-06-27` / `compact-2026-01-12`), applied in the
  order listed to the visible conversation:
  - `clear_thinking_20251015` (`keep`: `{"type": "thinking_turns", "value": N}` (default 1) or `"all"`): thinking
    blocks of all but the last N assistant messages that have any are removed. Must be the first edit, and needs
    thinking on (`enabled` or `adaptive`).
  - `clear_tool_uses_20250919`: once `trigger` is reached (`input_tokens`, default 100,000, or `tool_uses`), the
    results of all tool uses but the `keep` most recent (default 3) are replaced by `CLEARED_TOOL_RESULT`; tools in
    `exclude_tools` are never cleared; `clear_tool_inputs` (`true` or a list of tool names) also empties the
    `input` of the cleared `tool_use` blocks; if fewer than `clear_at_least` input tokens would be cleared, nothing is.
  - `compact_20260112`: once the visible input reaches `trigger` (input tokens, default 150,000, at least 50,000),
    the visible conversation is summarised into a new compaction block that comes FIRST in the reply; with
    `pause_after_compaction` the reply is the block alone with `stop_reason: "compaction"`. A conversation whose
    last turn is an assistant turn with an unanswered `tool_use` / `server_tool_use` cannot be compacted
    (400 `compaction_incomplete_turn`).
  `context_management.applied_edits` reports the two clearing edits that changed something (the SDK's
  `AppliedEdit` has no compaction entry: a compaction shows as its block and its usage iteration).
- **Explicit compaction** (beta `compact-2026-09-04`): top-level `compaction: {"type": "summarize",
  "instructions"?}` makes the request a compaction request whose reply is the block alone (`stop_reason
  "compaction"`); the client sends it back first in `messages` in place of what it summarises. It cannot be combined
  with `context_management`, `stop_sequences`, `output_config.format` or a forced `tool_choice` (the SDK's tool
  runner strips these, "the API rejects the params that only shape a reply"), nor can a block it returned be sent
  with a `compact_20260112` edit (the SDK checks this before sending). A conversation with nothing but the block it
  would adopt gets that block back re-signed; one with no content at all → 400 `compaction_nothing_to_summarize`.

**Blocks and signatures.** A block is `{"type": "compaction", "content", "encrypted_content", "signature",
"tool_changes"}` (SDK `BetaCompactionBlock`). `encrypted_content` is the URL-safe base64 of a small JSON record
(version, kind `auto`/`explicit`, SHA-256 of `content` and of the canonical `tool_changes`), and `signature` is the
URL-safe base64 HMAC-SHA256 of `encrypted_content` under the fixed, public emulator key `SIGNING_KEY` (this is an
emulator: the key only makes tampering detectable, it is no secret). A block sent back is checked in this order:
bad or missing signature → `compaction_signature_invalid`; `content` edited → `compaction_content_mismatch`;
`tool_changes` edited → `compaction_tool_changes_mismatch` (absent and `null` count as `[]`). `tool_changes` of a
new block are the previous block's followed by the `tool_addition` / `tool_removal` blocks of the compacted range,
in order, without `cache_control` (not reduced to a net change).

**Usage.** A compaction is its own model call. Its `usage.iterations` entry is
`{"type": "compaction", "input_tokens": <visible input that was summarised + instructions>, "output_tokens":
<summary tokens>, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "cache_creation":
{"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}}` — the compaction call's own cost, not the size
compacted away. After it comes a `{"type": "message", ...}` entry for the sampling (absent when paused), and the
top-level usage fields are those of the sampling only (SDK `BetaUsage.iterations`: "A `compaction` entry's tokens
are not included in the top-level `usage` fields"), so a bill must add the compaction entries to the top level.
The explicit compaction request is the compaction call itself: `explicit_compaction_usage` gives its top level
equal to its one `compaction` iteration.

**Approximations.** The summary is extractive (`summarize`), so `instructions` only steer which sentences are kept.
An assistant message is one "turn" for `clear_thinking`. `compaction_too_many_tool_references` and the transient
529 `compaction_unavailable` are not produced here (the latter is a fault SERVER may inject).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from turnkeep.emulator.errors import ApiError, invalid_request
from turnkeep.emulator.tokenizer import input_tokens, text_tokens
from turnkeep.errors import InvalidValue

__all__ = [
    "CLEARED_TOOL_RESULT",
    "CLEAR_THINKING_EDIT",
    "CLEAR_TOOL_USES_EDIT",
    "COMPACT_EDIT",
    "DEFAULT_CLEAR_TOOL_USES_KEEP",
    "DEFAULT_CLEAR_TOOL_USES_TRIGGER",
    "DEFAULT_COMPACT_TRIGGER",
    "MIN_COMPACT_TRIGGER",
    "SIGNING_KEY",
    "ContextOutcome",
    "apply_context_management",
    "compaction_block_error",
    "compaction_block_valid",
    "compaction_iteration",
    "explicit_compaction",
    "explicit_compaction_usage",
    "summarize",
]

COMPACT_EDIT: Final = "compact_20260112"
CLEAR_TOOL_USES_EDIT: Final = "clear_tool_uses_20250919"
CLEAR_THINKING_EDIT: Final = "clear_thinking_20251015"

DEFAULT_COMPACT_TRIGGER: Final = 150_000
MIN_COMPACT_TRIGGER: Final = 50_000
DEFAULT_CLEAR_TOOL_USES_TRIGGER: Final = 100_000
DEFAULT_CLEAR_TOOL_USES_KEEP: Final = 3
DEFAULT_CLEAR_THINKING_KEEP: Final = 1

CLEARED_TOOL_RESULT: Final = "[tool result cleared to save context]"
"""What a cleared `tool_result`'s content is replaced with."""

SIGNING_KEY: Final = b"turnkeep-emulator/compaction-signing-key/v1"
"""The fixed, public HMAC key of compaction block signatures (tamper detection only, not a secret)."""

SUMMARY_HEADER: Final = "Summary of the conversation so far:"

_THINKING_TYPES: Final = frozenset({"thinking", "redacted_thinking"})
_TOOL_CHANGE_TYPES: Final = frozenset({"tool_addition", "tool_removal"})
_KNOWN_EDITS: Final = (COMPACT_EDIT, CLEAR_TOOL_USES_EDIT, CLEAR_THINKING_EDIT)


# --------------------------------------------------------------------------------------------------- summariser

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_SUMMARY_LINE = re.compile(r"^- (User|Assistant): (.+)$")
_FACT_PATTERNS: Final = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\b(my|our|his|her|their|the|your)\s+[\w-]+(\s+[\w-]+)?\s+(is|are|was|were)\b",
        r"\b(i am|i'm|i was|we are|call me|i live|i work|i have|i like|i love|i prefer|born)\b",
        r"\b(remember|note that|important|always|never|deadline|password|code is|called|named)\b",
    )
)
# Any of them, in one pass (for scoring, where only whether one matches counts).
_ANY_FACT: Final = re.compile("|".join(f"(?:{pattern.pattern})" for pattern in _FACT_PATTERNS), re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z][\w'-]*")
_ASCII_DIGIT = re.compile(r"[0-9]")  # the only ASCII characters `str.isdigit` accepts


@dataclass(frozen=True, slots=True)
class _Sentence:
    index: int
    role: str
    text: str
    from_summary: bool


def summarize(messages: Sequence[Mapping[str, Any]], *, max_words: int = 200, focus: str | None = None) -> str:
    """A deterministic extractive summary of `messages`: the sentences that state facts, in their original order.

    Sentences are taken from text blocks, string contents, tool results and earlier compaction summaries (not from
    thinking or tool inputs). Each is scored: a fact pattern ("My name is Ada", "I live in …", "remember …") +3,
    a digit +2, capitalised words inside the sentence +1 each (at most 3), a user's sentence +1, a sentence of an
    earlier summary +3, a question −3, and +2 per word it shares with `focus` (compaction `instructions`).
    The best sentences are kept (ties: the earlier) while they fit in `max_words`, duplicates once, and listed in
    conversation order as `- User: …` / `- Assistant: …` lines under `SUMMARY_HEADER`, so summarising a summary
    keeps the same lines. Same input, same output.
    """
    if max_words < 1:
        raise InvalidValue(f"max_words must be at least 1, not {max_words}")
    sentences = _sentences(messages)
    focus_words = {word.lower() for word in _WORD.findall(focus or "") if len(word) > 3}
    seen: set[str] = set()
    unique: list[_Sentence] = []
    for sentence in sentences:
        key = " ".join(sentence.text.lower().split())
        if key not in seen:
            seen.add(key)
            unique.append(sentence)
    ranked = sorted(unique, key=lambda s: (-_score(s, focus_words), s.index))
    kept: list[_Sentence] = []
    budget = max_words
    for sentence in ranked:
        words = len(sentence.text.split())
        if words <= budget:
            kept.append(sentence)
            budget -= words
        if budget == 0:
            break
    if not kept and ranked:
        first = ranked[0]
        kept = [_Sentence(first.index, first.role, " ".join(first.text.split()[:max_words]), first.from_summary)]
    lines = [f"- {s.role.capitalize()}: {s.text}" for s in sorted(kept, key=lambda s: s.index)]
    return "\n".join([SUMMARY_HEADER, *lines]) if lines else SUMMARY_HEADER + " (nothing to summarise)"


def _sentences(messages: Sequence[Mapping[str, Any]]) -> list[_Sentence]:
    found: list[_Sentence] = []
    for message in messages:
        role = "assistant" if message.get("role") == "assistant" else "user"
        for text, from_summary in _texts(message.get("content")):
            for line in text.splitlines():
                parsed = _SUMMARY_LINE.match(line.strip()) if from_summary else None
                line_role = parsed.group(1).lower() if parsed else role
                body = parsed.group(2) if parsed else line
                if from_summary and not parsed:
                    continue  # the header of an earlier summary
                for piece in _SENTENCE_END.split(body):
                    piece = piece.strip()
                    if _WORD.search(piece):
                        found.append(_Sentence(len(found), line_role, piece, from_summary))
    return found


def _texts(content: Any) -> list[tuple[str, bool]]:
    if isinstance(content, str):
        return [(content, False)]
    texts: list[tuple[str, bool]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append((block["text"], False))
        elif kind == "compaction" and isinstance(block.get("content"), str):
            texts.append((block["content"], True))
        elif kind == "tool_result":
            texts.extend((text, False) for text, _ in _texts(block.get("content")))
    return texts


def _score(sentence: _Sentence, focus_words: set[str]) -> int:
    score, words = _text_score(sentence.text)
    if sentence.role == "user":
        score += 1
    if sentence.from_summary:
        score += 3
    return score + 2 * len(focus_words & words) if focus_words else score


@lru_cache(maxsize=16_384)
def _text_score(text: str) -> tuple[int, frozenset[str]]:
    """The part of a sentence's score that depends on its text alone, and its words in lower case (a history is
    summarised again and again as it grows: each sentence is scored once)."""
    score = 0
    if _ANY_FACT.search(text):
        score += 3
    if _ASCII_DIGIT.search(text) if text.isascii() else any(map(str.isdigit, text)):
        score += 2
    words = _WORD.findall(text)
    inner_capitals = sum(1 for word in words[1:] if word[0].isupper() and word != "I")
    score += min(inner_capitals, 3)
    if text.rstrip().endswith("?"):
        score -= 3
    return score, frozenset(word.lower() for word in words)


# --------------------------------------------------------------------------------------------------- blocks


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _sign(encrypted_content: str) -> str:
    return _b64(hmac.new(SIGNING_KEY, encrypted_content.encode("ascii"), hashlib.sha256).digest())


def _make_block(content: str, tool_changes: list[dict[str, Any]], *, kind: str) -> dict[str, Any]:
    record = {"v": 1, "kind": kind, "content": _digest(content), "tool_changes": _digest(tool_changes)}
    encrypted = _b64(json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return {
        "type": "compaction",
        "content": content,
        "encrypted_content": encrypted,
        "signature": _sign(encrypted),
        "tool_changes": tool_changes,
    }


def _record(block: Mapping[str, Any]) -> dict[str, Any] | None:
    """The signed record of a block, or None when its signature does not verify."""
    encrypted = block.get("encrypted_content")
    signature = block.get("signature")
    if not isinstance(encrypted, str) or not isinstance(signature, str) or not encrypted.isascii():
        return None
    if not hmac.compare_digest(_sign(encrypted), signature):
        return None
    try:
        record = json.loads(_unb64(encrypted))
    except (binascii.Error, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("v") == 1 else None


def compaction_block_error(block: Mapping[str, Any]) -> str | None:
    """The `error_code` a compaction block sent back earns, or None when it is intact (or has `content: null`)."""
    if block.get("content") is None:
        return None
    record = _record(block)
    if record is None:
        return "compaction_signature_invalid"
    if record.get("content") != _digest(block.get("content")):
        return "compaction_content_mismatch"
    if record.get("tool_changes") != _digest(_canonical_tool_changes(block.get("tool_changes"))):
        return "compaction_tool_changes_mismatch"
    return None


def compaction_block_valid(block: Mapping[str, Any]) -> bool:
    """Whether a compaction block the client sent back is as the emulator returned it (signature, content,
    tool changes). A block with `content: null` is a no-op and always valid."""
    return compaction_block_error(block) is None


def _canonical_tool_changes(tool_changes: Any) -> list[Any]:
    if tool_changes is None:
        return []
    if not isinstance(tool_changes, list):
        return [tool_changes]
    return [_without_cache_control(change) for change in tool_changes]


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_cache_control(item) for key, item in value.items() if key != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(item) for item in value]
    return value


_BLOCK_ERRORS: Final = {
    "compaction_signature_invalid": "The `compaction` block's `signature` does not verify.",
    "compaction_content_mismatch": "The `compaction` block's `content` differs from the text its `signature` recorded.",
    "compaction_tool_changes_mismatch": (
        "The `compaction` block's `tool_changes` differs from what was returned with the block."
    ),
}


@dataclass(frozen=True, slots=True)
class _Anchor:
    """The compaction block with content that the visible conversation starts from."""

    message_index: int
    block: Mapping[str, Any]
    kind: str


def _find_anchor(messages: Sequence[Mapping[str, Any]]) -> _Anchor | None:
    """Check every compaction block of `messages` and return the one with content, if any."""
    anchors: list[_Anchor] = []
    for mi, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for bi, block in enumerate(content):
            if not isinstance(block, Mapping) or block.get("type") != "compaction":
                continue
            if message.get("role") == "system":
                raise invalid_request(
                    f"messages.{mi}.content.{bi}: a `compaction` block cannot be in a `system` message.",
                    error_code="compaction_block_misplaced",
                )
            if block.get("content") is None:
                continue  # a failed compaction: a no-op wherever it sits
            if bi != 0:
                raise invalid_request(
                    f"messages.{mi}.content.{bi}: a `compaction` block must be the first block of its message; "
                    "the conversation it summarises comes before it.",
                    error_code="compaction_block_misplaced",
                )
            code = compaction_block_error(block)
            if code is not None:
                raise invalid_request(f"messages.{mi}.content.{bi}: {_BLOCK_ERRORS[code]}", error_code=code)
            record = _record(block)
            anchors.append(_Anchor(mi, block, str(record.get("kind")) if record else "auto"))
    if len(anchors) > 1:
        raise invalid_request(
            "`messages` holds more than one `compaction` block with content. Send only the block the conversation "
            "returned last, and the messages after it.",
            error_code="compaction_block_ambiguous",
        )
    return anchors[0] if anchors else None


def _visible_messages(messages: Sequence[Mapping[str, Any]], anchor: _Anchor | None) -> list[dict[str, Any]]:
    start = anchor.message_index if anchor is not None else 0
    return [copy.deepcopy(dict(message)) for message in messages[start:]]


def _ends_mid_turn(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the last message is an assistant turn waiting for tool results (client or server tools)."""
    if not messages or messages[-1].get("role") != "assistant":
        return False
    content = messages[-1].get("content")
    blocks = [block for block in content if isinstance(block, Mapping)] if isinstance(content, list) else []
    if any(block.get("type") == "tool_use" for block in blocks):
        return True
    answered = {block.get("tool_use_id") for block in blocks if str(block.get("type", "")).endswith("_tool_result")}
    return any(block.get("type") == "server_tool_use" and block.get("id") not in answered for block in blocks)


def _tool_changes(messages: Sequence[Mapping[str, Any]], anchor: _Anchor | None) -> list[dict[str, Any]]:
    changes: list[dict[str, Any]] = []
    if anchor is not None:
        changes.extend(_canonical_tool_changes(anchor.block.get("tool_changes")))
    for message in messages:
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, Mapping) and block.get("type") in _TOOL_CHANGE_TYPES:
                changes.append(_without_cache_control(block))
    return changes


def _has_content(messages: Sequence[Mapping[str, Any]]) -> bool:
    for message in messages:
        if message.get("role") not in ("user", "assistant"):
            continue
        content = message.get("content")
        if isinstance(content, str) and content.strip():
            return True
        for block in content if isinstance(content, list) else []:
            if isinstance(block, Mapping) and (block.get("type") != "compaction" or block.get("content") is not None):
                return True
    return False


def compaction_iteration(
    summarised: Mapping[str, Any], summary: str, *, generation: int, instructions: str | None = None
) -> dict[str, Any]:
    """The `usage.iterations` entry of a compaction call that read the request `summarised` and wrote `summary`."""
    read = input_tokens(summarised, generation) + (text_tokens(instructions, generation) if instructions else 0)
    return {
        "type": "compaction",
        "input_tokens": read,
        "output_tokens": text_tokens(summary, generation),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }


# --------------------------------------------------------------------------------------------------- edits


@dataclass
class ContextOutcome:
    """What context management made of a request.

    `body` is what the model sees (messages from the compaction block on, cleared tool results and thinking, no
    `context_management`); `compaction_block` a new block to put FIRST in the reply content; `pause` says the reply
    is that block alone with `stop_reason: "compaction"`; `applied_edits` goes to the response's
    `context_management.applied_edits`; `iterations` holds the compaction call's `usage.iterations` entry, if any.
    """

    body: dict[str, Any]
    compaction_block: dict[str, Any] | None = None
    pause: bool = False
    applied_edits: list[dict[str, Any]] = field(default_factory=list)
    iterations: list[dict[str, Any]] = field(default_factory=list)


def apply_context_management(body: Mapping[str, Any], *, generation: int, compact: bool = True) -> ContextOutcome:
    """Apply the compaction blocks of `messages` and the `context_management.edits` of `body` (module docstring).

    `generation` is the model's tokenizer generation (1 or 2), used for triggers and token counts. With
    `compact=False` (for `count_tokens`) a `compact_20260112` edit is checked but never run. Raises
    `ApiError` 400: malformed edits, a compaction trigger below 50,000, `compaction_block_*` and
    `compaction_signature_invalid` / `compaction_content_mismatch` / `compaction_tool_changes_mismatch` for the
    blocks sent, `compaction_incomplete_turn` when a due compaction meets an unfinished turn.
    """
    edits = _parse_edits(body)
    if body.get("compaction") is not None and "context_management" in body:
        raise _combined_with_context_management()
    messages = list(body.get("messages") or [])
    anchor = _find_anchor(messages)
    if anchor is not None and anchor.kind == "explicit" and any(edit["type"] == COMPACT_EDIT for edit in edits):
        raise invalid_request(
            f"messages.{anchor.message_index}.content.0: a `compaction` block from a compaction request cannot be "
            f"sent together with a `{COMPACT_EDIT}` edit. Remove the edit, or send the conversation without the block."
        )
    _check_thinking_edit(edits, body)
    if not edits and anchor is None:
        # Nothing to change: the model sees the request as sent (a shallow copy; the outcome is not mutated).
        return ContextOutcome(body={key: value for key, value in body.items() if key != "context_management"})
    view = {key: copy.deepcopy(value) for key, value in body.items() if key != "context_management"}
    view["messages"] = _visible_messages(messages, anchor)
    outcome = ContextOutcome(body=view)
    for edit in edits:
        if edit["type"] == CLEAR_THINKING_EDIT:
            _clear_thinking(outcome, edit, generation)
        elif edit["type"] == CLEAR_TOOL_USES_EDIT:
            _clear_tool_uses(outcome, edit, generation)
        elif compact:
            _compact(outcome, edit, anchor, generation)
    return outcome


def _parse_edits(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    config = body.get("context_management")
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise invalid_request("context_management: Input should be an object")
    edits = config.get("edits")
    if edits is None:
        return []
    if not isinstance(edits, list):
        raise invalid_request("context_management.edits: Input should be a list")
    seen: set[str] = set()
    for i, edit in enumerate(edits):
        where = f"context_management.edits.{i}"
        if not isinstance(edit, Mapping) or edit.get("type") not in _KNOWN_EDITS:
            kind = edit.get("type") if isinstance(edit, Mapping) else edit
            raise invalid_request(f"{where}.type: Input should be one of {', '.join(_KNOWN_EDITS)}, not {kind!r}")
        if edit["type"] in seen:
            raise invalid_request(f"{where}: each edit type may appear only once, {edit['type']!r} repeats")
        seen.add(edit["type"])
        if edit["type"] == COMPACT_EDIT:
            _check_compact_edit(edit, where)
        elif edit["type"] == CLEAR_TOOL_USES_EDIT:
            _check_clear_tool_uses_edit(edit, where)
        else:
            _check_clear_thinking_edit(edit, where, first=i == 0)
    return list(edits)


def _int_value(spec: Any, where: str, types: tuple[str, ...]) -> tuple[str, int]:
    if not isinstance(spec, Mapping) or spec.get("type") not in types:
        raise invalid_request(f"{where}: Input should be an object with `type` one of {', '.join(types)}")
    value = spec.get("value")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid_request(f"{where}.value: Input should be a non-negative integer")
    return str(spec["type"]), value


def _check_compact_edit(edit: Mapping[str, Any], where: str) -> None:
    trigger = edit.get("trigger")
    if trigger is not None:
        _, value = _int_value(trigger, f"{where}.trigger", ("input_tokens",))
        if value < MIN_COMPACT_TRIGGER:
            raise invalid_request(
                f"{where}.trigger.value: the compaction trigger must be at least {MIN_COMPACT_TRIGGER:,} input "
                f"tokens, got {value:,}"
            )
    if edit.get("instructions") is not None and not isinstance(edit["instructions"], str):
        raise invalid_request(f"{where}.instructions: Input should be a string")
    if not isinstance(edit.get("pause_after_compaction", False), bool):
        raise invalid_request(f"{where}.pause_after_compaction: Input should be a boolean")


def _check_clear_tool_uses_edit(edit: Mapping[str, Any], where: str) -> None:
    if edit.get("trigger") is not None:
        _int_value(edit["trigger"], f"{where}.trigger", ("input_tokens", "tool_uses"))
    if edit.get("keep") is not None:
        _int_value(edit["keep"], f"{where}.keep", ("tool_uses",))
    if edit.get("clear_at_least") is not None:
        _int_value(edit["clear_at_least"], f"{where}.clear_at_least", ("input_tokens",))
    exclude = edit.get("exclude_tools")
    if exclude is not None and not (isinstance(exclude, list) and all(isinstance(name, str) for name in exclude)):
        raise invalid_request(f"{where}.exclude_tools: Input should be a list of tool names")
    inputs = edit.get("clear_tool_inputs")
    names = isinstance(inputs, list) and all(isinstance(name, str) for name in inputs)
    if inputs is not None and not isinstance(inputs, bool) and not names:
        raise invalid_request(f"{where}.clear_tool_inputs: Input should be a boolean or a list of tool names")


def _check_clear_thinking_edit(edit: Mapping[str, Any], where: str, *, first: bool) -> None:
    if not first:
        raise invalid_request(f"{where}: `{CLEAR_THINKING_EDIT}` must be the first edit in `context_management.edits`")
    keep = edit.get("keep")
    if keep is None or keep == "all" or (isinstance(keep, Mapping) and keep.get("type") == "all"):
        return
    _int_value(keep, f"{where}.keep", ("thinking_turns",))


def _check_thinking_edit(edits: Sequence[Mapping[str, Any]], body: Mapping[str, Any]) -> None:
    if not any(edit["type"] == CLEAR_THINKING_EDIT for edit in edits):
        return
    thinking = body.get("thinking")
    if not (isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")):
        raise invalid_request(
            f"context_management.edits.0: `{CLEAR_THINKING_EDIT}` requires thinking to be enabled "
            '(`thinking.type` "enabled" or "adaptive")'
        )


def _clear_thinking(outcome: ContextOutcome, edit: Mapping[str, Any], generation: int) -> None:
    keep_spec = edit.get("keep")
    if keep_spec == "all" or (isinstance(keep_spec, Mapping) and keep_spec.get("type") == "all"):
        return
    keep = keep_spec["value"] if isinstance(keep_spec, Mapping) else DEFAULT_CLEAR_THINKING_KEEP
    messages: list[dict[str, Any]] = outcome.body["messages"]
    with_thinking = [
        i
        for i, message in enumerate(messages)
        if message.get("role") == "assistant"
        and isinstance(message.get("content"), list)
        and any(isinstance(b, Mapping) and b.get("type") in _THINKING_TYPES for b in message["content"])
    ]
    to_clear = with_thinking[: max(len(with_thinking) - keep, 0)]
    if not to_clear:
        return
    before = input_tokens(outcome.body, generation)
    for i in to_clear:
        messages[i]["content"] = [b for b in messages[i]["content"] if b.get("type") not in _THINKING_TYPES]
    outcome.body["messages"] = [m for m in messages if m.get("content") not in ([], "")]
    outcome.applied_edits.append(
        {
            "type": CLEAR_THINKING_EDIT,
            "cleared_thinking_turns": len(to_clear),
            "cleared_input_tokens": max(before - input_tokens(outcome.body, generation), 0),
        }
    )


def _clear_tool_uses(outcome: ContextOutcome, edit: Mapping[str, Any], generation: int) -> None:
    messages: list[dict[str, Any]] = outcome.body["messages"]
    uses: list[dict[str, Any]] = [
        block
        for message in messages
        if message.get("role") == "assistant" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use"
    ]
    trigger_type, trigger_value = "input_tokens", DEFAULT_CLEAR_TOOL_USES_TRIGGER
    if edit.get("trigger") is not None:
        trigger_type, trigger_value = edit["trigger"]["type"], edit["trigger"]["value"]
    before = input_tokens(outcome.body, generation)
    reached = len(uses) >= trigger_value if trigger_type == "tool_uses" else before >= trigger_value
    if not reached:
        return
    keep = edit["keep"]["value"] if edit.get("keep") is not None else DEFAULT_CLEAR_TOOL_USES_KEEP
    excluded = set(edit.get("exclude_tools") or ())
    clear_inputs = edit.get("clear_tool_inputs") or False
    candidates = [use for use in uses[: max(len(uses) - keep, 0)] if use.get("name") not in excluded]
    results = {
        block.get("tool_use_id"): block
        for message in messages
        if message.get("role") == "user" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    }
    snapshot = copy.deepcopy(messages)
    cleared = 0
    for use in candidates:
        result = results.get(use.get("id"))
        wipe_input = clear_inputs is True or (isinstance(clear_inputs, list) and use.get("name") in clear_inputs)
        changed = False
        if result is not None and result.get("content") != CLEARED_TOOL_RESULT:
            result["content"] = CLEARED_TOOL_RESULT
            changed = True
        if wipe_input and use.get("input") != {}:
            use["input"] = {}
            changed = True
        cleared += changed
    if not cleared:
        return
    cleared_tokens = max(before - input_tokens(outcome.body, generation), 0)
    at_least = edit["clear_at_least"]["value"] if edit.get("clear_at_least") is not None else 0
    if cleared_tokens < at_least:
        outcome.body["messages"] = snapshot  # clearing less than asked for would break the cache for too little
        return
    outcome.applied_edits.append(
        {"type": CLEAR_TOOL_USES_EDIT, "cleared_tool_uses": cleared, "cleared_input_tokens": cleared_tokens}
    )


def _compact(outcome: ContextOutcome, edit: Mapping[str, Any], anchor: _Anchor | None, generation: int) -> None:
    trigger = edit["trigger"]["value"] if edit.get("trigger") is not None else DEFAULT_COMPACT_TRIGGER
    if input_tokens(outcome.body, generation) < trigger:
        return
    messages: list[dict[str, Any]] = outcome.body["messages"]
    if _ends_mid_turn(messages):
        raise invalid_request(
            "The conversation cannot be compacted: its last turn is an assistant turn with tool calls that have no "
            "results yet. Send the tool results first.",
            error_code="compaction_incomplete_turn",
        )
    instructions = _instructions(edit.get("instructions"))
    summary = summarize(messages, focus=instructions)
    block = _make_block(summary, _tool_changes(messages, anchor), kind="auto")
    outcome.iterations.append(
        compaction_iteration(outcome.body, summary, generation=generation, instructions=instructions)
    )
    # The sampling sees the summary and then the question being answered (its text; results are summarised).
    last = messages[-1] if messages else None
    question: list[Any] = []
    if last is not None and last.get("role") == "user":
        content = last.get("content")
        if isinstance(content, str):
            question = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            question = [b for b in content if isinstance(b, Mapping) and b.get("type") == "text"]
    outcome.body["messages"] = [{"role": "user", "content": [copy.deepcopy(block), *question]}]
    outcome.compaction_block = block
    outcome.pause = bool(edit.get("pause_after_compaction", False))


def _instructions(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _combined_with_context_management() -> ApiError:
    return invalid_request("compaction: a compaction request cannot be combined with `context_management`")


# --------------------------------------------------------------------------------------------------- explicit


def explicit_compaction(body: Mapping[str, Any], *, generation: int) -> dict[str, Any]:  # noqa: ARG001
    """The reply content block of a compaction request (top-level `compaction`, beta `compact-2026-09-04`).

    The reply is this block alone with `stop_reason: "compaction"`; `explicit_compaction_usage` gives its usage.
    Raises `ApiError` 400 for a malformed `compaction`, a combination the API rejects (module docstring), the
    `compaction_block_*` / signature errors of blocks sent back, `compaction_incomplete_turn` and
    `compaction_nothing_to_summarize`.
    """
    config = body.get("compaction")
    if not isinstance(config, Mapping) or config.get("type") != "summarize":
        raise invalid_request('compaction.type: Input should be "summarize"')
    extra = sorted(set(config) - {"type", "instructions"})
    if extra:
        raise invalid_request(f"compaction.{extra[0]}: Extra inputs are not permitted")
    if config.get("instructions") is not None and not isinstance(config["instructions"], str):
        raise invalid_request("compaction.instructions: Input should be a string")
    if body.get("context_management") is not None:
        raise _combined_with_context_management()
    if body.get("stop_sequences"):
        raise invalid_request("stop_sequences: a compaction request returns no reply to stop; remove `stop_sequences`")
    output_config = body.get("output_config")
    if isinstance(output_config, Mapping) and output_config.get("format") is not None:
        raise invalid_request("output_config.format: a compaction request returns no reply to format")
    tool_choice = body.get("tool_choice")
    if isinstance(tool_choice, Mapping) and tool_choice.get("type") in ("any", "tool"):
        raise invalid_request("tool_choice: a compaction request cannot force a tool call")
    messages = list(body.get("messages") or [])
    anchor = _find_anchor(messages)
    visible = _visible_messages(messages, anchor)
    if not _has_content(visible):
        raise invalid_request(
            "`messages` holds no `user` or `assistant` content to summarize or adopt.",
            error_code="compaction_nothing_to_summarize",
        )
    if _ends_mid_turn(visible):
        raise invalid_request(
            "The compaction request ends on an `assistant` turn that is not finished (tool calls without results).",
            error_code="compaction_incomplete_turn",
        )
    if anchor is not None and len(visible) == 1 and len(visible[0]["content"]) == 1:
        # Only an earlier summary: adopt it as this request's block.
        return _make_block(str(anchor.block["content"]), _tool_changes([], anchor), kind="explicit")
    summary = summarize(visible, focus=_instructions(config.get("instructions")))
    return _make_block(summary, _tool_changes(visible, anchor), kind="explicit")


def explicit_compaction_usage(body: Mapping[str, Any], block: Mapping[str, Any], *, generation: int) -> dict[str, Any]:
    """The `usage` of a compaction request whose reply is `block`: top level = its one `compaction` iteration."""
    messages = list(body.get("messages") or [])
    summarised = {key: value for key, value in body.items() if key not in ("compaction", "messages")}
    summarised["messages"] = _visible_messages(messages, _find_anchor(messages))
    config = body.get("compaction")
    instructions = _instructions(config.get("instructions")) if isinstance(config, Mapping) else None
    iteration = compaction_iteration(
        summarised, str(block.get("content") or ""), generation=generation, instructions=instructions
    )
    top = {key: copy.deepcopy(value) for key, value in iteration.items() if key != "type"}
    return {**top, "iterations": [iteration]}
