"""Prompt caching and cache diagnostics, as the Messages API bills them (reference §4).

A request is a sequence of `Segment`s (tools → system → messages), each with its token count and a fingerprint
of its content. The prefix up to segment `i` is identified by a chained hash of the fingerprints of segments
`0..i`, so two requests share a cache entry exactly when their prefixes are identical up to that point.

How `PromptCache.process` bills one request:

1. Breakpoints are the segments that carry `cache_control`, plus, with top-level (automatic) caching, the last
   cacheable segment (an explicit breakpoint already there keeps its own TTL).
2. A breakpoint whose prefix has fewer than `model.min_cache_tokens` tokens caches nothing (and is no error).
3. Every other breakpoint `b` looks for a live entry at `b`, else at `b-1 … b-20` (the 20-block lookback), and
   takes the latest it finds. Each entry found is refreshed (it lives another TTL, its own TTL: an entry written
   for 1 hour stays a 1-hour entry even when a 5-minute breakpoint reads it).
4. The furthest hit over all breakpoints ends the read portion: `cache_read` = tokens up to and including it.
5. From there to the last qualifying breakpoint everything is written, and an entry is created at each
   qualifying breakpoint on the way: the tokens between the previous boundary and breakpoint `b` are written
   with `b`'s TTL. Tokens after the last breakpoint are uncached `input_tokens`.

So `input_tokens + cache_creation_5m + cache_creation_1h + cache_read` is always the request's total input.
Entries are created only by writes: a breakpoint that lies inside the read portion refreshes an entry that is
there but does not create one for free.

Memory stays flat: entries live in a dict with a min-heap of expiry times beside it; each `process()` call pops
whatever has expired (amortised O(log n) per entry), and the heap is rebuilt when stale refresh records pile up.
Entries become readable as soon as `process()` returns; the API's "readable once the writing response starts
streaming" is the same thing for sequential requests (parallel identical requests are not modelled apart).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from turnkeep.core.catalog import ModelInfo
from turnkeep.emulator.clock import Clock
from turnkeep.emulator.tokenizer import Segment
from turnkeep.errors import InvalidValue

__all__ = ["LOOKBACK_BLOCKS", "TTL_SECONDS", "CacheUsage", "Diagnostics", "PromptCache", "ttl_seconds"]

TTL_SECONDS: Final[dict[str, float]] = {"5m": 300.0, "1h": 3600.0}
"""Lifetime of a cache entry per `cache_control.ttl`."""

LOOKBACK_BLOCKS: Final = 20
"""How many blocks before a breakpoint are searched for an earlier entry."""

_DIGEST_SIZE = 16
_EMPTY = b""
# API keys whose last request's prefix digests are kept (the most recently used ones).
_KNOWN_SCOPES = 16


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """How a request's input tokens split between uncached input, cache writes (by TTL) and cache reads."""

    input_tokens: int
    cache_creation_5m: int
    cache_creation_1h: int
    cache_read: int

    @property
    def cache_creation_input_tokens(self) -> int:
        """All cache writes, whatever their TTL."""
        return self.cache_creation_5m + self.cache_creation_1h

    @property
    def total_input_tokens(self) -> int:
        """The whole input of the request: uncached + written + read."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read

    def usage_fields(self) -> dict[str, Any]:
        """The input-side fields of a response's `usage`, in the API's shape."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
        }


def ttl_seconds(ttl: str) -> float:
    """Seconds an entry written with `ttl` ("5m" or "1h") lives."""
    try:
        return TTL_SECONDS[ttl]
    except KeyError:
        raise InvalidValue(f"unknown cache TTL {ttl!r}; expected one of {sorted(TTL_SECONDS)}") from None


def _prefix_digests(
    segments: Sequence[Segment], count: int, known: tuple[Sequence[Segment], Sequence[bytes]] = ((), ())
) -> list[bytes]:
    """Chained digests of the first `count` prefixes: digest `i` identifies segments `0..i` exactly.

    `known` is an earlier request's segments and their digests: as far as its segments are this request's (same
    section and fingerprint, position by position), its digests are taken as they are."""
    known_segments, known_digests = known
    shared = 0
    for old, new in zip(known_segments[: min(count, len(known_digests))], segments, strict=False):
        if old is not new and (old.fingerprint != new.fingerprint or old.section != new.section):
            break
        shared += 1
    digests: list[bytes] = list(known_digests[:shared])
    previous = digests[-1] if digests else _EMPTY
    for segment in segments[shared:count]:
        hasher = hashlib.blake2b(previous, digest_size=_DIGEST_SIZE)
        hasher.update(segment.section.encode())
        hasher.update(b"\x00")
        hasher.update(segment.fingerprint.encode())
        previous = hasher.digest()
        digests.append(previous)
    return digests


class _Entry:
    __slots__ = ("expires_at", "ttl")

    def __init__(self, ttl: float, expires_at: float) -> None:
        self.ttl = ttl
        self.expires_at = expires_at


_Key = tuple[str, str, bytes]  # (scope, model id, prefix digest)
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _ExpiringStore(Generic[_K, _V]):
    """A dict whose values carry an expiry time, with a heap that frees them once expired.

    Callers hold their own lock. A refresh pushes a new heap record; the old one is recognised as stale when it
    surfaces (the value's current expiry no longer matches) and skipped.
    """

    def __init__(self, expiry_of: Callable[[_V], float]) -> None:
        self.items: dict[_K, _V] = {}
        self._heap: list[tuple[float, int, _K]] = []
        self._sequence = itertools.count()
        self._expiry_of = expiry_of

    def schedule(self, key: _K, expires_at: float) -> None:
        heapq.heappush(self._heap, (expires_at, next(self._sequence), key))
        if len(self._heap) > 4 * len(self.items) + 64:
            self._rebuild()

    def purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, key = heapq.heappop(heap)
            value = self.items.get(key)
            if value is not None and self._expiry_of(value) <= now:
                del self.items[key]

    def clear(self) -> None:
        self.items.clear()
        self._heap.clear()

    def _rebuild(self) -> None:
        self._heap = [(self._expiry_of(value), next(self._sequence), key) for key, value in self.items.items()]
        heapq.heapify(self._heap)


class PromptCache:
    """The prompt cache of the whole emulator: entries keyed by (API key, model, prefix), with TTLs.

    Thread-safe: requests served concurrently share one instance.
    """

    def __init__(self, clock: Clock, *, lookback: int = LOOKBACK_BLOCKS, memo: bool = True) -> None:
        self._clock = clock
        self._lookback = lookback
        self._lock = threading.Lock()
        self._store: _ExpiringStore[_Key, _Entry] = _ExpiringStore(lambda entry: entry.expires_at)
        # Per API key, the last request's segments and prefix digests: the next request of a conversation shares
        # most of its prefix, whose digests need not be hashed again (`memo=False`: always hash them all).
        self._memo = memo
        self._known: dict[str, tuple[Sequence[Segment], Sequence[bytes]]] = {}

    def process(
        self,
        *,
        scope: str,
        model: ModelInfo,
        segments: Sequence[Segment],
        automatic_ttl: str | None,
    ) -> CacheUsage:
        """Bill one request against the cache and update the cache with what it wrote and read.

        `scope` is the API key (caches are not shared between keys); `automatic_ttl` is the TTL of the request's
        top-level `cache_control`, or None when it has none.
        """
        cumulative = list(itertools.accumulate(segment.tokens for segment in segments))
        total = cumulative[-1] if cumulative else 0
        qualifying = [
            (position, ttl_seconds(ttl))
            for position, ttl in _breakpoints(segments, automatic_ttl)
            if cumulative[position] >= model.min_cache_tokens
        ]
        if not qualifying:
            with self._lock:
                self._store.purge(self._clock.now())
            return CacheUsage(total, 0, 0, 0)
        count = qualifying[-1][0] + 1
        if self._memo:
            digests = _prefix_digests(segments, count, self._known.get(scope, ((), ())))
            with self._lock:
                self._known.pop(scope, None)
                self._known[scope] = (segments[:count], digests)
                while len(self._known) > _KNOWN_SCOPES:
                    del self._known[next(iter(self._known))]
        else:
            digests = _prefix_digests(segments, count)
        entries = self._store.items
        with self._lock:
            now = self._clock.now()
            self._store.purge(now)
            hit = -1
            for position, _ in qualifying:
                for candidate in range(position, max(position - self._lookback, 0) - 1, -1):
                    key: _Key = (scope, model.id, digests[candidate])
                    entry = entries.get(key)
                    if entry is not None and entry.expires_at > now:
                        entry.expires_at = now + entry.ttl  # refreshed on each hit, with its own TTL
                        self._store.schedule(key, entry.expires_at)
                        hit = max(hit, candidate)
                        break
            read = cumulative[hit] if hit >= 0 else 0
            written = {TTL_SECONDS["5m"]: 0, TTL_SECONDS["1h"]: 0}
            boundary = read
            for position, ttl in qualifying:
                if position <= hit:
                    continue
                written[ttl] += cumulative[position] - boundary
                boundary = cumulative[position]
                key = (scope, model.id, digests[position])
                entries[key] = _Entry(ttl, now + ttl)
                self._store.schedule(key, now + ttl)
        write_5m, write_1h = written[TTL_SECONDS["5m"]], written[TTL_SECONDS["1h"]]
        return CacheUsage(total - read - write_5m - write_1h, write_5m, write_1h, read)

    def entry_count(self) -> int:
        """Entries held in memory (expired ones are freed by the next `process()` call)."""
        with self._lock:
            return len(self._store.items)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._store.clear()
            self._known.clear()


def _breakpoints(segments: Sequence[Segment], automatic_ttl: str | None) -> list[tuple[int, str]]:
    """(position, ttl) of every breakpoint, in order; the automatic one sits on the last cacheable segment."""
    points = [
        (position, segment.cache_ttl)
        for position, segment in enumerate(segments)
        if segment.cache_ttl is not None and segment.cacheable
    ]
    if automatic_ttl is not None:
        last = next((p for p in range(len(segments) - 1, -1, -1) if segments[p].cacheable), None)
        if last is not None and segments[last].cache_ttl is None:
            points.append((last, automatic_ttl))
    return points


# --- cache diagnostics -------------------------------------------------------------------------------------------

_Unit = tuple[bytes, int]  # (digest, tokens) of one tool, one system block, or one whole message


@dataclass(frozen=True, slots=True)
class _Fingerprint:
    scope: str
    model: str
    tools: tuple[_Unit, ...]
    system: tuple[_Unit, ...]
    messages: tuple[_Unit, ...]
    expires_at: float

    @property
    def total_tokens(self) -> int:
        return sum(tokens for _, tokens in (*self.tools, *self.system, *self.messages))


class Diagnostics:
    """Cache diagnostics (`diagnostics.previous_message_id` → `diagnostics.cache_miss_reason`).

    `record()` keeps a fingerprint of each request under the id of its reply: the model, a digest and token
    count per tool, per system block and per message. `diagnose()` compares a new request with the fingerprint
    named by `previous_message_id` and reports the first point of divergence, in prefix order: model, tools,
    system, messages.

    `cache_missed_input_tokens` is the number of tokens of the *previous* request from the first diverging unit
    (tool, system block or message) to its end: what the new request could have read from the cache had its
    prefix matched. For `model_changed` that is the whole previous request. A new request that repeats the
    previous one, extends it (only appends messages) or is a prefix of it has no divergence: the result is None,
    as the API's `diagnostics` is null then. The `unavailable` reason (other prompt-affecting parameters such as
    `thinking` or `tool_choice` changed) cannot be told from segments and is not produced; a caller that wants
    `speed` to count as a model change passes e.g. `"<model>|<speed>"` as `model`.

    Fingerprints expire `retention` seconds of clock time after they were recorded (then the answer is
    `previous_message_not_found`), so memory stays flat. Fingerprints are scoped by API key. Thread-safe.
    """

    def __init__(self, clock: Clock | None = None, *, retention: float = 3600.0, memo: bool = True) -> None:
        self._clock = clock if clock is not None else Clock("real")
        self._retention = retention
        self._lock = threading.Lock()
        self._store: _ExpiringStore[str, _Fingerprint] = _ExpiringStore(lambda fingerprint: fingerprint.expires_at)
        # The last request's segments and units per API key (as `PromptCache` keeps its prefixes): the next
        # request of a conversation shares most of them.
        self._memo = memo
        self._known: dict[str, _KnownUnits] = {}

    def _units(self, segments: Sequence[Segment], scope: str) -> _Units:
        if not self._memo:
            return _units(segments)[0]
        units, ends = _units(segments, self._known.get(scope))
        with self._lock:
            self._known.pop(scope, None)
            self._known[scope] = (segments, units, ends)
            while len(self._known) > _KNOWN_SCOPES:
                del self._known[next(iter(self._known))]
        return units

    def record(self, message_id: str, *, scope: str, model: str, segments: Sequence[Segment]) -> None:
        """Remember the fingerprint of the request that produced reply `message_id`."""
        tools, system, messages = self._units(segments, scope)
        with self._lock:
            now = self._clock.now()
            self._store.purge(now)
            fingerprint = _Fingerprint(scope, model, tools, system, messages, now + self._retention)
            self._store.items[message_id] = fingerprint
            self._store.schedule(message_id, fingerprint.expires_at)

    def diagnose(
        self,
        previous_message_id: str | None,
        *,
        scope: str,
        model: str,
        segments: Sequence[Segment],
    ) -> dict[str, Any] | None:
        """The response's `diagnostics` object for a request naming `previous_message_id`, or None.

        None when no previous id was given (the opt-in first turn) or when nothing diverged.
        """
        if previous_message_id is None:
            return None
        with self._lock:
            now = self._clock.now()
            self._store.purge(now)
            previous = self._store.items.get(previous_message_id)
        if previous is None or previous.expires_at <= now or previous.scope != scope:
            return {"cache_miss_reason": {"type": "previous_message_not_found"}}
        if model != previous.model:
            return _changed("model_changed", previous.total_tokens)
        tools, system, messages = self._units(segments, scope)
        sections = (
            ("tools_changed", previous.tools, tools),
            ("system_changed", previous.system, system),
            ("messages_changed", previous.messages, messages),
        )
        matched = 0  # tokens of the previous request before the point of divergence
        for reason, old, new in sections:
            diverged = _first_difference(old, new, allow_growth=reason == "messages_changed")
            if diverged is not None:
                matched += sum(tokens for _, tokens in old[:diverged])
                return _changed(reason, previous.total_tokens - matched)
            matched += sum(tokens for _, tokens in old)
        return None

    def entry_count(self) -> int:
        """Fingerprints held in memory (expired ones are freed by the next call)."""
        with self._lock:
            return len(self._store.items)

    def clear(self) -> None:
        """Forget every fingerprint."""
        with self._lock:
            self._store.clear()
            self._known.clear()


def _changed(reason: str, missed: int) -> dict[str, Any]:
    return {"cache_miss_reason": {"type": reason, "cache_missed_input_tokens": missed}}


def _first_difference(old: Sequence[_Unit], new: Sequence[_Unit], *, allow_growth: bool) -> int | None:
    """Index of the first unit where `old` and `new` differ; with `allow_growth`, appending or cutting the tail
    is no difference (the common prefix is still readable). Tools and system must match in full: anything
    after them moves otherwise."""
    for index, (before, after) in enumerate(zip(old, new, strict=False)):
        if before[0] != after[0]:
            return index
    if allow_growth or len(old) == len(new):
        return None
    return min(len(old), len(new))


_Units = tuple[tuple[_Unit, ...], tuple[_Unit, ...], tuple[_Unit, ...]]
_KnownUnits = tuple[Sequence[Segment], _Units, tuple[int, ...]]


def _units(segments: Sequence[Segment], known: _KnownUnits | None = None) -> tuple[_Units, tuple[int, ...]]:
    """Per-tool, per-system-block and per-message digests with their token counts, and where each message's
    segments end. `known` is an earlier call's segments and answer: the units of the messages that lie wholly
    in the segments the two share (position by position) are taken from it."""
    tools: list[_Unit] = []
    system: list[_Unit] = []
    messages: list[_Unit] = []
    ends: list[int] = []
    start = 0
    if known is not None:
        old, (old_tools, old_system, old_messages), old_ends = known
        shared = 0
        for before, after in zip(old, segments, strict=False):
            if before is not after and before != after:
                break
            shared += 1
        reusable = 0
        for end in old_ends:
            # A message whose segments end inside the shared part; at its very end, the next segment must start
            # another message here too.
            if end > shared or (end == shared < len(segments) and _continues(segments, end)):
                break
            reusable += 1
        heads = len(old_tools) + len(old_system)
        if heads <= shared and (not old_messages or reusable):
            tools, system = list(old_tools), list(old_system)
            messages, ends = list(old_messages[:reusable]), list(old_ends[:reusable])
            start = ends[-1] if ends else heads
    current_index: int | None = None
    hasher: Any = None
    tokens = 0
    for position in range(start, len(segments)):
        segment = segments[position]
        if segment.section != "messages":
            unit = (_digest(segment.fingerprint), segment.tokens)
            (tools if segment.section == "tools" else system).append(unit)
            continue
        if hasher is None or segment.message_index is None or segment.message_index != current_index:
            if hasher is not None:
                messages.append((hasher.digest(), tokens))
                ends.append(position)
            hasher, tokens, current_index = hashlib.blake2b(digest_size=_DIGEST_SIZE), 0, segment.message_index
        hasher.update(segment.fingerprint.encode())
        hasher.update(b"\x00")
        tokens += segment.tokens
    if hasher is not None:
        messages.append((hasher.digest(), tokens))
        ends.append(len(segments))
    return (tuple(tools), tuple(system), tuple(messages)), tuple(ends)


def _continues(segments: Sequence[Segment], position: int) -> bool:
    """Whether the segment at `position` belongs to the same message as the one before it."""
    before, segment = segments[position - 1], segments[position]
    return (
        segment.section == "messages"
        and segment.message_index is not None
        and segment.message_index == before.message_index
    )


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=_DIGEST_SIZE).digest()
