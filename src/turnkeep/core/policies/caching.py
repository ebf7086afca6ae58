"""Prompt caching inside every policy: where breakpoints go, which TTL, and what the next request will cost.

The API caches a request's prefix (`tools` → `system` → `messages`) up to each `cache_control` breakpoint; a
later request reads an entry when its prefix up to there is byte-identical, looking back at most 20 blocks from
each of its own breakpoints (reference §4). At most 4 breakpoints; a 1h breakpoint may not follow a 5m one.

- `place_breakpoints`: a moving breakpoint at the end of the request (or the API's automatic one), an
  intermediate one when the previous request's end is more than 20 blocks back, and one on the tools/system
  prefix when it is large enough to be cached on its own (so it survives when the messages change).
- `choose_ttl`: 5m or 1h, by expected cost over the conversation's observed gaps between requests.
- `forecast` / `remember`: predict the cache read / write / uncached split of a request from a compact
  fingerprint of the previous one (kept in the policy state under `"cache"`), and record that fingerprint.

All pure: time comes in through `RequestSettings.now` and `last_request_at`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.memo import ByIdentity, LastByIdentity
from turnkeep.core.messages import block_view as _view
from turnkeep.core.messages import compaction_start
from turnkeep.core.pricing import TokenCounts, usage_cost
from turnkeep.core.rules import is_prefill
from turnkeep.core.tokens import _COMPACT_JSON as _JSON
from turnkeep.core.tokens import (
    MESSAGE_OVERHEAD,
    apply_calibration,
    current_turn_thinking,
    estimate_block,
    estimate_message,
    estimate_prefix,
)
from turnkeep.errors import InvalidValue

if TYPE_CHECKING:
    from turnkeep.core.policies.base import RequestSettings

__all__ = [
    "LOOKBACK_BLOCKS",
    "MAX_BREAKPOINTS",
    "TTL_SECONDS",
    "Gaps",
    "choose_ttl",
    "forecast",
    "place_breakpoints",
    "remember",
    "ttl_seconds",
]

MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
TTL_SECONDS: Mapping[str, float] = {"5m": 300.0, "1h": 3600.0}
MIN_OBSERVED_GAPS = 3
"""`choose_ttl("auto")` keeps 5m until this many gaps between requests have been observed."""


@dataclass(frozen=True, slots=True)
class Gaps:
    """The seconds between a conversation's consecutive requests, as the TTL choice reads them: how many there
    were and how many of them each cache TTL would have survived. Running counts, so a turn adds its one gap
    instead of rescanning every gap the conversation ever had."""

    count: int = 0
    within: tuple[int, ...] = (0,) * len(TTL_SECONDS)
    """Per TTL of `TTL_SECONDS`, in its order: the gaps no longer than it."""

    @classmethod
    def of(cls, gaps: Sequence[float] | Gaps) -> Gaps:
        if isinstance(gaps, Gaps):
            return gaps
        result = cls()
        for gap in gaps:
            result = result.add(gap)
        return result

    def add(self, gap: float) -> Gaps:
        within = tuple(n + (gap <= ttl) for n, ttl in zip(self.within, TTL_SECONDS.values(), strict=True))
        return Gaps(self.count + 1, within)

    def share_within(self, ttl: str) -> float:
        """The share of the gaps no longer than `ttl` ("5m" or "1h")."""
        return self.within[list(TTL_SECONDS).index(ttl)] / self.count if self.count else 0.0

    def __len__(self) -> int:
        return self.count


# Blocks that may carry cache_control (reference §4); thinking blocks never may.
_CACHEABLE = frozenset({"text", "image", "document", "search_result", "tool_use", "tool_result", "compaction"})

# A breakpoint's place in prefix order: (section, index, block); sections 0 tools, 1 system, 2 messages,
# 3 the top-level (automatic) cache_control, which the API resolves to the last cacheable block.
_Key = tuple[int, int, int]
_TOP: _Key = (3, 0, 0)


def ttl_seconds(ttl: str) -> float:
    """Seconds a cache entry written with `ttl` ("5m" or "1h") lives without being read."""
    return TTL_SECONDS.get(ttl, TTL_SECONDS["5m"])


def _control(ttl: str) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def _ttl_of(control: object) -> str | None:
    if isinstance(control, Mapping):
        ttl = control.get("ttl")
        return ttl if isinstance(ttl, str) else "5m"
    return None


def _blocks(message: object) -> list[Any]:
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list | tuple):
        return list(content)
    return []


def _block_count(message: object) -> int:
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return 1
    if isinstance(content, list | tuple):
        return len(content)
    return 0


def _block_ttls(block: object) -> list[str]:
    """TTLs of the breakpoints on `block` and on the blocks nested in its content (a tool_result's), in order."""
    view = _view(block)
    if view is None:
        return []
    ttls = []
    nested = view.get("content")
    if isinstance(nested, list | tuple):
        for inner in nested:
            inner_view = _view(inner)
            ttl = _ttl_of(inner_view.get("cache_control")) if inner_view is not None else None
            if ttl is not None:
                ttls.append(ttl)
    ttl = _ttl_of(view.get("cache_control"))
    if ttl is not None:
        ttls.append(ttl)
    return ttls


def _existing(request: Mapping[str, Any], messages: Sequence[Any], clean_before: int) -> list[tuple[_Key, str]]:
    """Breakpoints already in the request, in prefix order: (key, ttl). Messages before `clean_before` are known
    to carry none and are not scanned."""
    found: list[tuple[_Key, str]] = []
    tools = request.get("tools")
    if isinstance(tools, list | tuple):
        for index, tool in enumerate(tools):
            ttl = _ttl_of((_view(tool) or {}).get("cache_control"))
            if ttl is not None:
                found.append(((0, index, 0), ttl))
    system = request.get("system")
    if isinstance(system, list | tuple):
        for index, block in enumerate(system):
            ttl = _ttl_of((_view(block) or {}).get("cache_control"))
            if ttl is not None:
                found.append(((1, index, 0), ttl))
    for index in range(clean_before, len(messages)):
        content = messages[index].get("content") if isinstance(messages[index], Mapping) else None
        if not isinstance(content, list | tuple):
            continue
        for block_index, block in enumerate(content):
            if isinstance(block, Mapping) and "cache_control" not in block and block.get("type") != "tool_result":
                continue
            # Each breakpoint counts, also those on blocks nested in a tool_result (they mark its end).
            found.extend(((2, index, block_index), ttl) for ttl in _block_ttls(block))
    top = _ttl_of(request.get("cache_control"))
    if top is not None:
        found.append((_TOP, top))
    return found


def _last_cacheable(messages: Sequence[Any], index: int) -> int | None:
    """Index of the last block of `messages[index]` that may carry a breakpoint, or None."""
    blocks = _blocks(messages[index])
    for block_index in range(len(blocks) - 1, -1, -1):
        view = _view(blocks[block_index])
        if view is not None and view.get("type") in _CACHEABLE:
            return block_index
    return None


def _end_target(messages: Sequence[Any]) -> tuple[int, int] | None:
    """Where the moving breakpoint goes: the last cacheable block of the last message. A final prefill is
    skipped (the reply replaces it, so caching it would be wasted)."""
    last = len(messages) - 1
    if last > 0 and is_prefill(cast(Any, messages)):
        last -= 1
    for index in range(last, max(last - 3, -1), -1):
        block_index = _last_cacheable(messages, index)
        if block_index is not None:
            return index, block_index
    return None


def _previous_end(messages: Sequence[Any], target: tuple[int, int]) -> tuple[int, int] | None:
    """Where the previous request most likely ended: the last message before the latest assistant reply."""
    index = target[0]
    while index > 0 and not (isinstance(messages[index], Mapping) and messages[index].get("role") == "assistant"):
        index -= 1
    if index <= 0:
        return None
    block_index = _last_cacheable(messages, index - 1)
    return None if block_index is None else (index - 1, block_index)


def _distance(messages: Sequence[Any], start: tuple[int, int], end: tuple[int, int], limit: int) -> int:
    """Blocks from `start` to `end` (message positions), or `limit + 1` as soon as it exceeds `limit`."""
    (i1, j1), (i2, j2) = start, end
    if i1 == i2:
        return j2 - j1
    distance = _block_count(messages[i1]) - j1
    for index in range(i1 + 1, i2):
        distance += _block_count(messages[index])
        if distance > limit:
            return limit + 1
    return distance + j2


def _resolve_ttl(key: _Key, ttl: str, existing: Sequence[tuple[_Key, str]]) -> str:
    """The TTL a new breakpoint at `key` must have so that no 1h breakpoint follows a 5m one."""
    if any(other > key and other_ttl == "1h" for other, other_ttl in existing):
        return "1h"
    if any(other < key and other_ttl != "1h" for other, other_ttl in existing):
        return "5m"
    return ttl


def _with_control(block: object, ttl: str) -> dict[str, Any]:
    view = _view(block)
    return {**(view or {}), "cache_control": _control(ttl)}


def _mark_message(message: Mapping[str, Any], block_index: int, ttl: str) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, str):
        # A string cannot carry cache_control: the same string always becomes the same single text block.
        return {**message, "content": [{"type": "text", "text": content, "cache_control": _control(ttl)}]}
    blocks = list(cast(Sequence[Any], content))
    blocks[block_index] = _with_control(blocks[block_index], ttl)
    return {**message, "content": blocks}


def _location(key: _Key) -> str:
    section, index, block_index = key
    if section == 0:
        return "tools[-1]"
    if section == 1:
        return "system[-1]"
    if section == 2:
        return f"messages[{index}].content[{block_index}]"
    return "cache_control"


def place_breakpoints(
    request: Mapping[str, Any],
    model: ModelInfo,
    *,
    ttl: str = "5m",
    automatic: bool = False,
    estimate: Callable[[Mapping[str, Any]], int] | None = None,
    previous_end: tuple[int, int] | None = None,
    clean_before: int = 0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A new request with cache breakpoints added, and the list of those placed (`location`, `kind`, `ttl`).

    In order of value, while fewer than 4 breakpoints are in the request (the caller's own count and are never
    removed or moved):

    1. **moving**: on the last cacheable block of the last message (never a thinking block; a final prefill is
       skipped, its reply replaces it) — or, with `automatic`, the top-level `cache_control`, which the API puts
       there itself. Nothing when the caller already set a top-level `cache_control`.
    2. **intermediate**: when the previous request's end is more than 20 blocks before the moving breakpoint
       (a long tool loop), on that end, so the previous prefix is still found (the API looks back 20 blocks).
       `previous_end` is its (message, block) when known; by default, the last block of the message before the
       latest assistant reply.
    3. **prefix**: on the last system block (else the last tool) when tools + system are estimated at
       `model.min_cache_tokens` or more (`estimate`, default `tokens.estimate_prefix`): that entry outlives any
       change to the messages, such as a window step.

    Breakpoints get `ttl`, except where the caller's breakpoints force the order rule (a breakpoint before a
    caller's 1h one is 1h; one after a caller's 5m one is 5m). `clean_before`: messages before it are known to
    carry no breakpoint (skips scanning them). The input is not modified; the output is deterministic (a string
    content that gets a breakpoint becomes one text block) and shares the input's message list when no message
    gets a breakpoint (neither is changed afterwards: a request is built once).
    """
    out = dict(request)
    given: Sequence[Any] = request.get("messages") or []
    messages: Sequence[Any] = given  # copied only when a breakpoint goes on a message (the input is not modified)
    existing = _existing(request, messages, clean_before)
    slots = MAX_BREAKPOINTS - len(existing)
    occupied = {key for key, _ in existing}
    wanted: list[tuple[_Key, str]] = []  # (key, kind)

    target = _end_target(messages)
    if automatic:
        if _TOP not in occupied:
            wanted.append((_TOP, "automatic"))
    elif _TOP not in occupied and target is not None and (2, *target) not in occupied:
        wanted.append(((2, *target), "moving"))
    if target is not None:
        anchor = previous_end if previous_end is not None else _previous_end(messages, target)
        if (
            anchor is not None
            and anchor < target
            and anchor[0] < len(messages)
            and (2, *anchor) not in occupied
            and _distance(messages, anchor, target, LOOKBACK_BLOCKS) > LOOKBACK_BLOCKS
        ):
            wanted.append(((2, *anchor), "intermediate"))
    tools, system = request.get("tools"), request.get("system")
    if (tools or system) and not any(key[0] < 2 for key in occupied):
        size = (estimate or (lambda r: estimate_prefix(r, model)))({"tools": tools, "system": system})
        if size >= model.min_cache_tokens:
            wanted.append(((1, 0, 0) if system else (0, 0, 0), "prefix"))

    placed: list[dict[str, Any]] = []
    for key, kind in wanted[: max(slots, 0)]:
        chosen = _resolve_ttl(key, ttl, existing)
        section, index, block_index = key
        if section == 3:
            out["cache_control"] = _control(chosen)
        elif section == 2:
            marked = messages if messages is not given and isinstance(messages, list) else list(given)
            marked[index] = _mark_message(marked[index], block_index, chosen)
            messages = marked
        elif section == 1:
            if isinstance(system, str):
                out["system"] = [{"type": "text", "text": system, "cache_control": _control(chosen)}]
            else:
                blocks = list(cast(Sequence[Any], system))
                blocks[-1] = _with_control(blocks[-1], chosen)
                out["system"] = blocks
        else:
            tool_list = list(cast(Sequence[Any], tools))
            tool_list[-1] = _with_control(tool_list[-1], chosen)
            out["tools"] = tool_list
        item: dict[str, Any] = {"location": _location(key), "kind": kind, "ttl": chosen}
        if section == 2:
            item["message"] = index
        placed.append(item)
    if "messages" in request:
        out["messages"] = messages if isinstance(messages, list) else list(messages)
    order = {"prefix": 0, "intermediate": 1, "moving": 2, "automatic": 3}
    placed.sort(key=lambda item: order[item["kind"]])
    return out, placed


# --------------------------------------------------------------------------------------------------------------
# TTL


def choose_ttl(
    gaps: Sequence[float] | Gaps, model: ModelInfo, prefix_tokens: int, mode: str = "auto", *, new_tokens: int = 0
) -> str:
    """The cache TTL to use: `mode` itself when it is "5m" or "1h"; for "auto", the cheaper one in expectation.

    For a TTL `T` with write price `w_T` (5m: the model's 5-minute write price, 1.25x input on most models; 1h:
    its 1-hour price, 2x input) and the model's read price `r`, the expected cost of the next request's input,
    over the empirical distribution of the observed `gaps` (seconds between requests), is

        E[T] = P * (h_T * r + (1 - h_T) * w_T) + N * w_T

    where `P` = `prefix_tokens` (what the previous request cached), `h_T` = the share of gaps no longer than `T`
    (the entry is still alive and is read; a longer gap means the prefix is written again) and `N` =
    `new_tokens` (what each request adds; written at `w_T` either way). "1h" when `E[1h] < E[5m]`, else "5m".
    With fewer than 3 observed gaps the distribution is unknown and the answer is "5m".
    """
    if mode in TTL_SECONDS:
        return mode
    if mode != "auto":
        raise InvalidValue(f"cache ttl must be '5m', '1h' or 'auto', not {mode!r}")
    gaps = Gaps.of(gaps)
    if gaps.count < MIN_OBSERVED_GAPS:
        return "5m"
    prices = model.prices_for(prefix_tokens + new_tokens)
    read = float(prices.cache_read)

    def expected(ttl: str, write: Decimal) -> float:
        hit = gaps.share_within(ttl)
        return prefix_tokens * (hit * read + (1 - hit) * float(write)) + new_tokens * float(write)

    return "1h" if expected("1h", prices.cache_write_1h) < expected("5m", prices.cache_write_5m) else "5m"


# --------------------------------------------------------------------------------------------------------------
# Fingerprints and the forecast


def _strip_control(block: object) -> Any:
    view = _view(block)
    if view is None:
        return block
    stripped = {key: value for key, value in view.items() if key != "cache_control"}
    nested = stripped.get("content")
    if isinstance(nested, list | tuple):
        stripped["content"] = [_strip_control(inner) for inner in nested]
    return stripped


def _message_digest(message: object) -> str:
    role = message.get("role") if isinstance(message, Mapping) else None
    blocks = _blocks(message)
    text = _JSON.encode({"role": role, "content": [_view(block) or block for block in blocks]})
    if "cache_control" in text:  # rare: strip the breakpoints and encode again
        text = _JSON.encode({"role": role, "content": [_strip_control(block) for block in blocks]})
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


message_digest: Callable[[object], str] = ByIdentity(_message_digest, limit=256)
"""A short digest of a message as the cache compares it: role and blocks, without `cache_control` (a string
content is the same as one text block). Remembered per message object: a turn asks about the same few messages
(the first, each breakpoint's) several times, and the next turn again."""

_heads = LastByIdentity[str]()


def _head_digest(request: Mapping[str, Any]) -> str:
    model, tools, system = request.get("model"), request.get("tools"), request.get("system")
    known = _heads.get(model, tools, system)
    if known is not None:
        return known
    payload = {
        "model": model,
        "tools": [_strip_control(tool) for tool in tools] if isinstance(tools, list | tuple) else None,
        "system": [_strip_control(block) for block in _blocks({"content": system})],
    }
    return _heads.put(
        hashlib.blake2b(_JSON.encode(payload).encode("utf-8"), digest_size=12).hexdigest(), model, tools, system
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    """A request's breakpoints with the estimated tokens of the prefix up to each, and its total."""

    messages: Sequence[Any]
    breakpoints: list[tuple[_Key, str, int]]  # (key, ttl, cumulative tokens), prefix order
    total: int
    tools_count: int
    system_count: int


def _analyze(
    request: Mapping[str, Any],
    model: ModelInfo,
    estimates: Sequence[int] | None,
    calibration: float,
    clean_before: int = 0,
) -> _Layout:
    messages: Sequence[Any] = request.get("messages") or []
    if estimates is None or len(estimates) != len(messages):
        estimates = [estimate_message(m, model) if isinstance(m, Mapping) else 0 for m in messages]
    tools = request.get("tools")
    tools_list = list(tools) if isinstance(tools, list | tuple) else []
    system_blocks = _blocks({"content": request.get("system")})
    prefix = estimate_prefix(request, model)
    in_messages = sum(estimates)
    # The API drops what precedes a compaction block (reference §7): it is neither billed nor cached.
    dropped = compaction_start(messages)
    gone = sum(estimates[:dropped]) if dropped else 0
    total = prefix + in_messages - gone + current_turn_thinking(messages, model)

    def before(index: int) -> int:  # tokens of the kept messages before `index`, summing the shorter side
        if index <= dropped:
            return 0
        return (sum(estimates[:index]) if index < len(estimates) // 2 else in_messages - sum(estimates[index:])) - gone

    existing = _existing(request, messages, clean_before)
    resolved: list[tuple[_Key, str, int]] = []
    for key, ttl in existing:
        section, index, block_index = key
        if section == 3:
            target = _end_target(messages)
            if target is None or any(other == (2, *target) for other, _ in existing):
                continue  # the automatic breakpoint coincides with an explicit one, or has nowhere to go
            section, index, block_index = key = (2, *target)
        if section == 0:
            tokens = estimate_prefix({"tools": tools_list[: index + 1]}, model)
        elif section == 1:
            tokens = estimate_prefix({"tools": tools_list, "system": system_blocks[: index + 1]}, model)
        else:
            within = MESSAGE_OVERHEAD + sum(
                estimate_block(b, model) for b in _blocks(messages[index])[: block_index + 1]
            )
            tokens = prefix + before(index) + min(within, estimates[index])
        resolved.append((key, ttl, apply_calibration(tokens, calibration)))
    resolved.sort()
    return _Layout(messages, resolved, apply_calibration(total, calibration), len(tools_list), len(system_blocks))


def _reach(layout: _Layout, entry: _Key, breakpoint: _Key) -> bool:
    """Whether a breakpoint at `breakpoint` finds an entry at `entry` within the 20-block lookback."""
    if breakpoint < entry:
        return False
    if entry[0] == 2:
        return _distance(layout.messages, entry[1:], breakpoint[1:], LOOKBACK_BLOCKS) <= LOOKBACK_BLOCKS
    # An entry on tools/system: count the blocks after it up to the breakpoint.
    distance = (
        (layout.tools_count - entry[1] + layout.system_count) if entry[0] == 0 else layout.system_count - entry[1]
    )
    if breakpoint[0] < 2:
        return (breakpoint[1] if breakpoint[0] == 1 else 0) <= LOOKBACK_BLOCKS
    for index in range(breakpoint[1]):
        distance += _block_count(layout.messages[index])
        if distance > LOOKBACK_BLOCKS:
            return False
    return distance + breakpoint[2] <= LOOKBACK_BLOCKS


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.000001")))


def forecast(
    request: Mapping[str, Any],
    state: Mapping[str, Any],
    model: ModelInfo,
    settings: RequestSettings,
    *,
    estimates: Sequence[int] | None = None,
    clean_before: int = 0,
) -> dict[str, Any]:
    """The predicted split of `request`'s input: `cache_read`, `cache_write_5m`, `cache_write_1h`, `uncached`
    (tokens, estimated) and `usd` (per part and `input_total`; output not included), plus `cache`: "new" (nothing
    cached before), "warm", "expired" (the gap exceeded the entries' TTL), "changed" (no previous entry has an
    identical prefix), "too_small" (no breakpoint's prefix reaches the model's minimum: nothing is cached) or
    "off" (the request has no breakpoint).

    Mirrors how the API bills (reference §4): the previous request's entries (from `state["cache"]`, written
    by `remember`) are read when still alive (`settings.now - at` within their TTL), their prefix is unchanged
    and one of this request's breakpoints is at most 20 blocks after them; the furthest such entry ends the
    read part; tokens from there to the last breakpoint (whose prefix reaches `model.min_cache_tokens`) are
    written, each stretch at the TTL of the breakpoint that ends it; the rest is uncached. A prefix counts as
    unchanged when the model, tools and system are, and the first message and the entry's own message hash the
    same (the policies only cut whole turns at the front or append, so the ends are what can differ).
    `estimates`: per-message token estimates of `request["messages"]`, when the caller has them.
    """
    calibration = settings.calibration
    layout = _analyze(request, model, estimates, calibration, clean_before)
    return _forecast(layout, request, state, model, settings)


def _forecast(
    layout: _Layout,
    request: Mapping[str, Any],
    state: Mapping[str, Any],
    model: ModelInfo,
    settings: RequestSettings,
) -> dict[str, Any]:
    qualifying = [(key, ttl, tokens) for key, ttl, tokens in layout.breakpoints if tokens >= model.min_cache_tokens]
    previous = state.get("cache")
    read = 0
    status = "new"
    # Only entries whose prefix reached the minimum were written; the others never existed.
    entries = (
        [e for e in (previous.get("entries") or []) if int(e["tokens"]) >= model.min_cache_tokens]
        if isinstance(previous, Mapping)
        else []
    )
    if not layout.breakpoints:
        status = "off"
    elif not qualifying:
        status = "too_small"
    elif isinstance(previous, Mapping) and previous.get("head") and entries:
        status = "changed"
        messages = layout.messages
        same_head = previous.get("head") == _head_digest(request)
        same_first = bool(messages) and previous.get("first") == message_digest(messages[0])
        at = previous.get("at")
        dropped = compaction_start(messages)  # what the API drops before a compaction block is not read either
        for entry in entries:
            key = cast(_Key, tuple(entry["key"]))
            if not same_head or (key[0] == 2 and (not same_first or key[1] < dropped)):
                continue
            if key[0] == 2 and (
                key[1] >= len(messages)
                or key[2] >= _block_count(messages[key[1]])
                or message_digest(messages[key[1]]) != entry.get("digest")
            ):
                continue
            if settings.now is not None and at is not None and settings.now - at > ttl_seconds(entry["ttl"]):
                status = "expired"
                continue
            if any(_reach(layout, key, other) for other, _, _ in qualifying):
                status = "warm"
                read = max(read, int(entry["tokens"]))
    if read:
        status = "warm"
    written = {"5m": 0, "1h": 0}
    boundary = read
    for _, ttl, tokens in qualifying:
        if tokens > boundary:
            written[ttl if ttl in written else "5m"] += tokens - boundary
            boundary = tokens
    uncached = max(layout.total - boundary, 0)
    counts = TokenCounts(input=uncached, cache_write_5m=written["5m"], cache_write_1h=written["1h"], cache_read=read)
    cost = usage_cost(counts, model)
    return {
        "cache": status,
        "cache_read": read,
        "cache_write_5m": written["5m"],
        "cache_write_1h": written["1h"],
        "uncached": uncached,
        "input_tokens": layout.total,
        "usd": {
            "cache_read": _money(cost.cache_read),
            "cache_write": _money(cost.cache_write_5m + cost.cache_write_1h),
            "uncached": _money(cost.input),
            "input_total": _money(cost.total),
        },
    }


def _fingerprint(layout: _Layout, request: Mapping[str, Any], settings: RequestSettings, ttl: str) -> dict[str, Any]:
    messages = layout.messages
    entries = [
        {
            "key": list(key),
            "ttl": entry_ttl,
            "tokens": tokens,
            "digest": message_digest(messages[key[1]]) if key[0] == 2 else None,
        }
        for key, entry_ttl, tokens in layout.breakpoints
    ]
    return {
        "head": _head_digest(request),
        "first": message_digest(messages[0]) if messages else None,
        "count": len(messages),
        "entries": entries,
        "tokens": layout.total,
        "ttl": ttl,
        "at": settings.now,
    }


def remember(
    request: Mapping[str, Any],
    state: Mapping[str, Any],
    settings: RequestSettings,
    *,
    estimates: Sequence[int] | None = None,
    clean_before: int = 0,
) -> dict[str, Any]:
    """`state` with `"cache"` set to the fingerprint of `request` (its model/tools/system digest, the digests of
    its first message and of each breakpoint's message, each breakpoint's position, TTL and estimated prefix
    tokens, and `settings.now`): what `forecast` compares the next request with. Small and JSON-ready."""
    calibration = settings.calibration
    layout = _analyze(request, settings.model, estimates, calibration, clean_before)
    ttls = [ttl for _, ttl, _ in layout.breakpoints]
    return {**state, "cache": _fingerprint(layout, request, settings, ttls[-1] if ttls else "5m")}


def forecast_and_remember(
    request: Mapping[str, Any],
    state: Mapping[str, Any],
    settings: RequestSettings,
    *,
    estimates: Sequence[int] | None = None,
    clean_before: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`forecast` and `remember` in one pass over the request: (forecast, new state)."""
    calibration = settings.calibration
    layout = _analyze(request, settings.model, estimates, calibration, clean_before)
    predicted = _forecast(layout, request, state, settings.model, settings)
    ttls = [ttl for _, ttl, _ in layout.breakpoints]
    new_state = {**state, "cache": _fingerprint(layout, request, settings, ttls[-1] if ttls else "5m")}
    return predicted, new_state
