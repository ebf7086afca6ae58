"""What the emulator works out about each message of a request, remembered from one request to the next.

The API is stateless: every request resends the whole conversation, and the server reads all of it again — it
checks each message, measures how deeply it nests, counts its tokens and fingerprints its blocks. For a chat of
200 turns that is 40,000 message readings where 400 would do, since all but the newest messages were in the
previous request too. What the emulator finds out about a message depends on that message and its position
alone, so `analyse(body)` takes the facts of the messages it shares with a recent request (the longest common
prefix among the last `RECENT` requests analysed) and works out only what is new.

Reuse is sound by construction. Each fact is worked out from the message once, and a private copy of it (its
snapshot) is kept beside the facts, so nothing a caller later does to its own objects can make them stale. A
message takes the facts of the message at the same position of an earlier request only when that one is *plain*
(objects, lists, strings and nulls only) and equal to its snapshot: then they are the same JSON. Numbers and
booleans are left out because Python calls `1`, `1.0` and `true` equal although they count and fingerprint
differently; a message holding any is worked out anew each time (tool inputs with numbers are rare and short).
Facts are only ever reused with the same facts before them, so they also carry running totals over the messages up
to theirs (all simple so far, deepest nesting, breakpoint TTLs, input tokens per tokenizer generation).

The facts serve every per-request pass that used to walk the whole history: the depth limit (`nests_deeper_than`),
validation (`MessageFacts.simple` says a message passes every per-message rule wherever it stands, so
`turnkeep.emulator.validation` only checks what spans messages), compaction detection and the segments the
prompt cache and the bill are computed from (`Analysis.segments`, the same `Segment` objects as long as a message
recurs, so the cache's prefix digests and diagnostics are not recomputed either). `tests/emulator/test_history.py`
checks each against the pass it replaces.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from turnkeep.emulator import tokenizer, validation
from turnkeep.emulator.errors import ApiError
from turnkeep.emulator.tokenizer import Segment
from turnkeep.emulator.validation import TOOL_ID

__all__ = ["RECENT", "Analysis", "History", "MessageFacts"]

#: How many recent requests' analyses are kept to match new requests against.
RECENT = 8

_LEAVES = frozenset({str, int, float, bool, type(None)})
_PLAIN_LEAVES = frozenset({str, type(None)})
_THINKING = ("thinking", "redacted_thinking")
# A request that shares all but this many of another's messages continues it: the last few messages of a
# conversation change from one request to the next as its cache breakpoints move on.
_TAIL = 8
# A request may set 4 breakpoints: the TTLs of the first 5 are enough to tell the rules apart.
_TTLS_KEPT = 5


def _snapshot(value: Any) -> tuple[Any, int, bool, bool]:
    """(copy, height, plain, json) of `value`: a private copy of its dicts and lists (None when it holds anything
    but JSON types), how deep the deepest container inside it sits (`value` itself at 0; -1 when it is no
    container) as the app's depth pass judges it, whether it holds only dicts, lists, strings and nulls, and
    whether it holds only JSON types. Iterative: a message may nest deeper than the interpreter's recursion."""
    kind = type(value)
    if not isinstance(value, Mapping | list | tuple):
        return (value if kind in _LEAVES else None), -1, kind in _PLAIN_LEAVES, kind in _LEAVES
    plain = is_json = kind is dict or kind is list
    height = 0
    top: Any = {} if isinstance(value, Mapping) else []
    stack: list[tuple[Any, Any, int]] = [(value, top, 0)]
    while stack:
        item, copy, depth = stack.pop()
        if depth > height:
            height = depth
        mapping = type(item) is dict or isinstance(item, Mapping)
        for key, child in item.items() if mapping else enumerate(item):
            kind = type(child)
            if kind in _LEAVES:
                if kind not in _PLAIN_LEAVES:
                    plain = False
                inner: Any = child
            elif kind is dict or kind is list:
                inner = {} if kind is dict else []
                stack.append((child, inner, depth + 1))
            else:
                plain = is_json = False
                inner = None
                if isinstance(child, Mapping | list | tuple):
                    stack.append((child, {} if isinstance(child, Mapping) else [], depth + 1))
            if type(copy) is dict:
                copy[key] = inner
            else:
                copy.append(inner)
    return (top if is_json else None), height, plain and is_json, is_json


def _text_ok(text: str) -> bool:
    return validation.text_problem(text) is None


def _breakpoint_ttl(kind: Any, control: Any) -> str | None:
    """The TTL of a valid breakpoint on a block of type `kind`, or None when `validation` would refuse it."""
    try:
        return validation.breakpoint_ttl("", kind, control)
    except ApiError:
        return None


@dataclass(frozen=True, slots=True)
class _Content:
    """What `validation` needs of one simple message: its tool ids and its breakpoints' TTLs, in order."""

    tool_uses: tuple[str, ...] = ()
    tool_results: tuple[str, ...] = ()
    cache_ttls: tuple[str, ...] = ()


def _simple_content(message: Any) -> _Content | None:
    """`_Content` when `message` passes every rule `validation` applies to one message, wherever it stands (and
    holds only text, tool_use and tool_result blocks, no citations); None for anything else, which is then
    validated the long way. Mirrors `check_shape`, `check_message_content`, `check_versioned_content` and the
    per-breakpoint part of `check_cache_control`; no system message, compaction or thinking block is simple."""
    if type(message) is not dict:
        return None
    role = message.get("role")
    if role not in ("user", "assistant") or "content" not in message:
        return None
    content = message["content"]
    if isinstance(content, str):
        # A string is one text block: user text must have non-blank text, assistant text must not be empty.
        return _Content() if (_text_ok(content) if role == "user" else content != "") else None
    if not isinstance(content, list) or not content:
        return None
    tool_uses: list[str] = []
    tool_results: list[str] = []
    ttls: list[str] = []
    other_content = False
    for block in content:
        if type(block) is not dict:
            return None
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str) or block.get("citations"):
                return None
            if not (_text_ok(text) if role == "user" else text != ""):
                return None
            other_content = True
        elif kind == "tool_use":
            tool_id, name = block.get("id"), block.get("name")
            if role != "assistant" or not isinstance(tool_id, str) or not TOOL_ID.match(tool_id):
                return None
            if not isinstance(name, str) or not name or not isinstance(block.get("input"), Mapping):
                return None
            tool_uses.append(tool_id)
            other_content = True
        elif kind == "tool_result":
            tool_use_id = block.get("tool_use_id")
            if role != "user" or not isinstance(tool_use_id, str) or other_content:
                return None
            tool_results.append(tool_use_id)
        else:
            return None
        # Breakpoints in `validation._cache_points` order: those inside the block's content, then its own.
        nested = block.get("content")
        if isinstance(nested, list):
            for inner in nested:
                if isinstance(inner, Mapping) and inner.get("cache_control") is not None:
                    ttl = _breakpoint_ttl(inner.get("type"), inner["cache_control"])
                    if ttl is None:
                        return None
                    ttls.append(ttl)
        if block.get("cache_control") is not None:
            ttl = _breakpoint_ttl(kind, block["cache_control"])
            if ttl is None:
                return None
            ttls.append(ttl)
    return _Content(tuple(tool_uses), tuple(tool_results), tuple(ttls))


def _has_compaction(message: Any) -> bool:
    content = message.get("content") if isinstance(message, Mapping) else None
    return isinstance(content, list) and any(
        isinstance(block, Mapping) and block.get("type") == "compaction" for block in content
    )


@dataclass(frozen=True, slots=True, eq=False)
class MessageFacts:
    """What one message of a request is, and what the messages up to it are, as every pass needs them.

    `snapshot` is a private copy of the message (None unless it holds only JSON types), so that no later change
    to the caller's objects can make the facts stale; `key` its canonical JSON when it holds numbers or booleans
    (which `==` would confuse: `1 == 1.0 == True`), so that it is still matched exactly; `height` is the depth
    of its deepest container (see `_snapshot`); `content` is set when the message is simple (`_simple_content`);
    `compaction` when it holds a compaction block; `tools` when it holds a tool_use or a tool_result. The
    `*_so_far` fields fold the facts of every message up to this one: facts are only ever reused with the same
    messages before them.
    """

    index: int
    snapshot: Any
    plain: bool
    key: str | None
    height: int
    role: Any
    content: _Content | None
    compaction: bool
    plain_so_far: bool
    simple_so_far: bool
    compaction_so_far: bool
    height_so_far: int
    tools_so_far: bool
    ttls_so_far: tuple[str, ...]  # the TTLs of the first breakpoints (of simple messages), at most `_TTLS_KEPT`
    breakpoints_so_far: int
    _segments: dict[int, tuple[Segment, ...]] = field(default_factory=dict)
    _tokens_so_far: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, index: int, message: Any, previous: MessageFacts | None) -> MessageFacts:
        snapshot, height, plain, _ = _snapshot(message)
        key = None if plain or snapshot is None else tokenizer.canonical_json(snapshot)
        role = message.get("role") if isinstance(message, Mapping) else None
        content = _simple_content(message)
        compaction = _has_compaction(message)
        tools = content is not None and bool(content.tool_uses or content.tool_results)
        ttls = content.cache_ttls if content is not None else ()
        if previous is None:
            return cls(
                index, snapshot, plain, key, height, role, content, compaction,
                plain, content is not None, compaction, height, tools, ttls[:_TTLS_KEPT], len(ttls),
            )  # fmt: skip
        kept = previous.ttls_so_far
        return cls(
            index,
            snapshot,
            plain,
            key,
            height,
            role,
            content,
            compaction,
            previous.plain_so_far and plain,
            previous.simple_so_far and content is not None,
            previous.compaction_so_far or compaction,
            max(previous.height_so_far, height),
            previous.tools_so_far or tools,
            (kept + ttls)[:_TTLS_KEPT] if ttls and len(kept) < _TTLS_KEPT else kept,
            previous.breakpoints_so_far + len(ttls),
        )

    def matches(self, message: Any) -> bool:
        """Whether `message`, at this position, is the same JSON as the one these facts are about: compared as
        objects when it holds no number or boolean (nothing `==` could confuse), else as canonical JSON."""
        if self.plain:
            return bool(self.snapshot == message)
        if self.key is None:
            return False
        try:
            return tokenizer.canonical_json(message) == self.key
        except (TypeError, ValueError):  # not JSON (the facts' message was)
            return False

    def segments(self, generation: int, message: Any) -> tuple[Segment, ...]:
        """`tokenizer.message_segments` of the message (`message`: the request's own, used only when it could not
        be copied), computed once per tokenizer generation."""
        cut = self._segments.get(generation)
        if cut is None:
            source = self.snapshot if self.snapshot is not None else message
            cut = tuple(tokenizer.message_segments(self.index, source, generation))
            if self.snapshot is not None:
                self._segments[generation] = cut
        return cut


@dataclass(frozen=True, slots=True, eq=False)
class _Head:
    """A request's `tools` and `system` (the prefix before its messages), and their segments per generation."""

    snapshot: dict[str, Any] | None
    plain: bool
    _segments: dict[int, tuple[Segment, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> _Head:
        snapshot, _, plain, _ = _snapshot({"tools": body.get("tools"), "system": body.get("system")})
        return cls(snapshot, plain)

    def matches(self, body: Mapping[str, Any]) -> bool:
        return (
            self.plain
            and self.snapshot is not None
            and self.snapshot["tools"] == body.get("tools")
            and self.snapshot["system"] == body.get("system")
        )

    def segments(self, generation: int, body: Mapping[str, Any]) -> tuple[Segment, ...]:
        cut = self._segments.get(generation)
        if cut is None:
            cut = tuple(tokenizer.head_segments(self.snapshot if self.snapshot is not None else body, generation))
            if self.snapshot is not None:
                self._segments[generation] = cut
        return cut


@dataclass(frozen=True, slots=True, eq=False)
class Analysis:
    """The facts of one request body: its head and, when `messages` is a list, one `MessageFacts` per message.

    Made by `analyse(body)` for one request and used while that request is answered (`body` is kept for what
    could not be copied); later requests reuse its facts, never its `body`."""

    body: Mapping[str, Any]
    head: _Head
    messages: tuple[MessageFacts, ...]
    messages_is_list: bool
    snapshots: list[Any]  # each message's snapshot, to compare a whole run of them at once
    _segments: dict[int, tuple[Segment, ...]] = field(default_factory=dict)

    @property
    def simple(self) -> bool:
        """Every message passes every per-message rule (see `_simple_content`), and there is at least one."""
        return self.messages_is_list and bool(self.messages) and self.messages[-1].simple_so_far

    @property
    def compaction(self) -> bool:
        """Some message holds a compaction block (as `app._has_compaction_block` tells)."""
        return bool(self.messages) and self.messages[-1].compaction_so_far

    @property
    def tools(self) -> bool:
        """Some simple message holds a tool_use or tool_result block."""
        return bool(self.messages) and self.messages[-1].tools_so_far

    def segments(self, generation: int) -> list[Segment]:
        """`tokenizer.request_segments` of the body: the same segments, most of them remembered."""
        cut = self._segments.get(generation)
        if cut is None:
            segments = list(self.head.segments(generation, self.body))
            messages = self.body.get("messages")
            for facts in self.messages:
                segments += facts.segments(generation, messages[facts.index] if isinstance(messages, list) else None)
            cut = self._segments[generation] = tuple(segments)
        return list(cut)

    def input_tokens(self, generation: int) -> int:
        """`tokenizer.input_tokens` of the body (the sum of its segments), from running totals per message."""
        head = sum(segment.tokens for segment in self.head.segments(generation, self.body))
        if not self.messages:
            return head
        # The running totals end where they were last computed (the shared prefix): carry them on from there.
        start = len(self.messages)
        while start > 0 and generation not in self.messages[start - 1]._tokens_so_far:
            start -= 1
        total = self.messages[start - 1]._tokens_so_far[generation] if start else 0
        messages = self.body.get("messages")
        for facts in self.messages[start:]:
            message = messages[facts.index] if isinstance(messages, list) else None
            total += sum(segment.tokens for segment in facts.segments(generation, message))
            if facts.snapshot is not None:
                facts._tokens_so_far[generation] = total
        return head + total

    def nests_deeper_than(self, limit: int, quick_pass: Any) -> bool:
        """`quick_pass(body, limit)` (the app's depth pass, top at depth 0) with the messages judged by their
        remembered heights: `body.messages` sits at depth 1, each message at depth 2."""
        body = self.body
        rest = {key: value for key, value in body.items() if key != "messages"}
        if quick_pass(rest, limit):
            return True
        if not self.messages_is_list:
            return bool(quick_pass(body, limit))
        deepest = self.messages[-1].height_so_far if self.messages else -1
        return limit < 1 or (deepest >= 0 and 2 + deepest > limit)


def _common_prefix(candidate: Analysis, new: list[Any]) -> int:
    """How many messages `new` starts with that are `candidate`'s."""
    old = candidate.messages
    end = min(len(old), len(new))
    # All but the last few in one comparison (in C): a conversation resends its history whole, and its tail
    # changes as breakpoints move. Sound where every earlier message is plain (`MessageFacts.matches`).
    start = end - _TAIL
    if not (start > 0 and old[start - 1].plain_so_far and candidate.snapshots[:start] == new[:start]):
        start = 0
    count = start
    for facts, message in zip(old[start:end], new[start:end], strict=True):
        if not facts.matches(message):
            break
        count += 1
    return count


class History:
    """The analyses of the last `RECENT` requests one owner (an emulator, a bounds tracker) was sent, to match its
    next requests against. Thread-safe."""

    def __init__(self) -> None:
        self._recent: list[Analysis] = []  # most recent first, without their bodies
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop every remembered analysis (the next requests are worked out in full)."""
        with self._lock:
            self._recent.clear()

    def analyse(self, body: Mapping[str, Any]) -> Analysis:
        """The facts of `body` (a decoded JSON request object), reusing those of the recent request that shares
        the longest prefix of messages with it, and remembered for the next requests."""
        messages = body.get("messages")
        listed = isinstance(messages, list)
        new: list[Any] = messages if isinstance(messages, list) else []
        with self._lock:
            recent = list(self._recent)
        best: Analysis | None = None
        shared = 0
        for candidate in recent:
            if not (candidate.messages and new and candidate.messages[0].matches(new[0])):
                continue
            count = _common_prefix(candidate, new)
            if count > shared:
                best, shared = candidate, count
            if count + _TAIL >= min(len(candidate.messages), len(new)):
                break  # this request continues that one: another could share a few messages more at best
        facts = list(best.messages[:shared]) if best is not None else []
        snapshots = best.snapshots[:shared] if best is not None else []
        for index in range(shared, len(new)):
            facts.append(MessageFacts.of(index, new[index], facts[-1] if facts else None))
            snapshots.append(facts[-1].snapshot)
        head = next((c.head for c in recent if c.head.matches(body)), None) or _Head.of(body)
        analysis = Analysis(body, head, tuple(facts), listed, snapshots)
        # Later requests reuse the facts, never the body: it is not kept beyond this request.
        remembered = Analysis(_NO_BODY, head, analysis.messages, listed, snapshots)
        with self._lock:
            if best is not None and shared + _TAIL >= len(best.messages) and best in self._recent:
                self._recent.remove(best)  # this request continues that one: keep the newer only
            self._recent.insert(0, remembered)
            del self._recent[RECENT:]
        return analysis


_NO_BODY: Mapping[str, Any] = {}
