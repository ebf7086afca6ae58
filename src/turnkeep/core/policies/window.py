"""Window policies: send only the latest whole turns, and move the window start rarely, so the cache holds.

`Window(turns=N)` (or `messages=N`) and `TokenBudget(...)` keep whole turns only (the request starts with a
user turn; a `tool_use` and its `tool_result` are never split: see `turns`). They are **cache-stable**: the
window start (a message index, `state["start"]`) stays put while the kept part grows, so every request extends the
previous one byte for byte and reads it from the prompt cache; only when the kept part crosses the **high-water**
mark does the start jump forward, to the **low-water** mark, and the kept turns are written to the cache once
again (the step's `rewrite_tokens`). When the cache is cold anyway (the gap since the last request exceeded the
TTL) the window steps to the low-water mark at once: the rewrite is paid regardless, and the next step comes later.

Why the low water is half the high water by default: a step rewrites the `low` turns kept, once every
`high - low + 1` turns, while every turn reads the kept prefix. Per turn that is about
`read * (high + low) / 2 + write * low / (high - low)` turns' worth of tokens, which falls as `low` falls, while
the context kept after a step is `low` turns. Half is the middle ground. `Window(messages=20)`, the cache-stable
form of the seeds' `history[-20:]` (the same size in the same unit), costs 0.38x what `history[-20:]` without
caching costs in a 200-turn chat replayed against the emulator's cache with requests seconds apart, while
`Window(turns=20)` keeps twice the context (10 to 20 turns, 20 to 40 messages) for 0.44x (`benchmarks/
bench_policies.py`). With human gaps (a quarter over 5 minutes) every policy pays more rewrites; `ttl="auto"` and
the cold-cache step help there.

Models that bind thinking blocks to their prefix (`ModelInfo.thinking_binding`, reference §1): once something
was dropped, the thinking blocks of the turns retained across the step are stripped (their signatures cover
the dropped part). The turns that begin after the step keep theirs: they were produced with this very prefix,
which stays byte-identical until the next step. A forced step in the middle of a tool loop (overflow) strips
the thinking of the loop too, since it was bound to the old prefix; other steps wait for the next user turn.

`SlidingWindow` is the seeds' recipe (`history[-20:]` on every request) for comparison, fixed only so that it
starts on a user turn; `FullHistory` (in `turnkeep.core.policies`) uses the same machinery without a window.

State (JSON-ready; unknown keys are kept): `start`, `thinking_from` (assistant messages between `start` and it
lose their thinking), `length` (the transcript length planned last), `memo` (per-message estimates, turn starts
and caller breakpoints of the transcript from `memo.offset`, plus how far it is known to be normalised, so that
a turn costs work proportional to what is new) and `cache` (the fingerprint for `caching.forecast`). Token
estimates are multiplied by `settings.calibration`, which the conversation learns from usage.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import TYPE_CHECKING, Any, cast

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.messages import THINKING_TYPES, without_thinking
from turnkeep.core.messages import block_view as _view
from turnkeep.core.policies.base import Plan, RequestSettings, check_settings
from turnkeep.core.policies.caching import (
    choose_ttl,
    forecast_and_remember,
    message_digest,
    place_breakpoints,
    ttl_seconds,
)
from turnkeep.core.policies.turns import in_tool_loop, is_turn_start
from turnkeep.core.rules import normalize
from turnkeep.core.tokens import (
    apply_calibration,
    current_turn_thinking,
    estimate_message,
    estimate_prefix,
)
from turnkeep.errors import ConfigError, ContextWindowExceeded

if TYPE_CHECKING:
    from anthropic.types import MessageParam

__all__ = ["FullHistory", "SlidingWindow", "TokenBudget", "Window", "plan_full_history"]


# --------------------------------------------------------------------------------------------------------------
# What is known about the transcript from earlier plans


def _has_breakpoint(message: object) -> bool:
    content = message.get("content") if isinstance(message, Mapping) else None
    if not isinstance(content, list | tuple):
        return False
    for block in content:
        view = _view(block)
        if view is None:
            continue
        if "cache_control" in view:
            return True
        nested = view.get("content")
        if isinstance(nested, list | tuple) and any(isinstance(b, Mapping) and "cache_control" in b for b in nested):
            return True
    return False


@dataclass
class _Memo:
    """Facts about `transcript[offset:count]`, trusted while `transcript[count - 1]` hashes to `check`:
    per-message estimates, turn starts and messages with caller breakpoints; and `normal` — that range is
    left unchanged by `normalize` (a fixed point), so only what follows it is normalised again."""

    offset: int = 0
    count: int = 0
    check: str = ""
    estimates: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, data: object, transcript: Sequence[Any], start: int) -> _Memo:
        """The stored memo if it still describes `transcript` from `start` on; else an empty one at `start`."""
        memo = None
        if isinstance(data, Mapping):
            lists = [data.get(key) for key in ("estimates", "starts", "marks")]
            numbers = [data.get(key) for key in ("offset", "count")]
            # Element types are not re-checked (that would cost a pass over the transcript): the memo is our own.
            if all(isinstance(value, list) for value in lists) and all(type(value) is int for value in numbers):
                memo = cls(
                    cast(int, numbers[0]),
                    cast(int, numbers[1]),
                    str(data.get("check")),
                    *cast(list[list[int]], lists),
                )
            if (
                memo is not None
                and memo.offset <= start < memo.count <= len(transcript)
                and len(memo.estimates) == memo.count - memo.offset
                and message_digest(transcript[memo.count - 1]) == memo.check
            ):
                return memo.trimmed(start)
        return cls(offset=start, count=start)

    def trimmed(self, start: int) -> _Memo:
        """The memo without what lies before `start` (which no later request can include again)."""
        if start <= self.offset:
            return self
        return _Memo(
            start,
            self.count,
            self.check,
            self.estimates[start - self.offset :],
            self.starts[bisect.bisect_left(self.starts, start) :],
            self.marks[bisect.bisect_left(self.marks, start) :],
        )

    def dump(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "count": self.count,
            "check": self.check,
            "estimates": self.estimates,
            "starts": self.starts,
            "marks": self.marks,
        }


@dataclass
class _View:
    """The transcript from `offset` on as the window logic sees it: raw per-message estimates and turn starts."""

    transcript: Sequence[Any]
    offset: int
    estimates: list[int]  # aligned with transcript[offset:]
    starts: list[int]  # absolute indices of turn starts >= offset
    marks: list[int]
    memo: _Memo
    model: ModelInfo
    _sums: list[int] | None = None
    _fixed: int | None = None

    def fixed(self, settings: RequestSettings) -> int:
        """Estimated tokens of what every request carries besides the kept messages: tools, system, and the
        thinking of the turn in progress."""
        if self._fixed is None:
            self._fixed = estimate_prefix({"tools": settings.tools, "system": settings.system}, self.model)
            self._fixed += current_turn_thinking(self.transcript, self.model)
        return self._fixed

    @classmethod
    def build(cls, transcript: Sequence[Any], memo: _Memo, model: ModelInfo) -> _View:
        offset, count = memo.offset, max(memo.count, memo.offset)
        estimates = memo.estimates[: count - offset]
        starts = list(memo.starts)
        marks = list(memo.marks)
        for index in range(count, len(transcript)):
            message = transcript[index]
            estimates.append(estimate_message(message, model) if isinstance(message, Mapping) else 0)
            if is_turn_start(message):
                starts.append(index)
            if _has_breakpoint(message):
                marks.append(index)
        return cls(transcript, offset, estimates, starts, marks, memo, model)

    def tokens_from(self, index: int) -> int:
        """Estimated tokens of transcript[index:] (uncalibrated, messages only)."""
        if self._sums is None:
            self._sums = [0, *accumulate(self.estimates)]
        return self._sums[-1] - self._sums[index - self.offset]

    def starts_from(self, index: int) -> list[int]:
        return self.starts[bisect.bisect_left(self.starts, index) :]


def _valid_start(state: Mapping[str, Any], transcript: Sequence[Any]) -> tuple[int, bool]:
    """The stored window start if it is still a turn start of `transcript`; else the nearest turn start before it
    (another branch), or 0 when the transcript is now shorter than the one planned last (undone; the usual
    high-water rule then applies); and whether it had to be recomputed."""
    stored = state.get("start", 0)
    start = stored if isinstance(stored, int) and not isinstance(stored, bool) and stored >= 0 else 0
    if start == 0:
        return 0, stored not in (0, None)
    if start >= len(transcript) or len(transcript) < _int(state, "length", 0):
        return 0, True  # undone (shorter than what was planned last): decide again from the whole transcript
    if is_turn_start(transcript[start]):
        return start, False
    index = start
    while index > 0 and not is_turn_start(transcript[index]):
        index -= 1
    return max(index, 0), True


# --------------------------------------------------------------------------------------------------------------
# Building the request for a decided start


def _thinking_blocks(messages: Sequence[Any]) -> int:
    """How many thinking blocks `messages` hold (for the explanation: whether stripping removed any)."""
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list | tuple)
        for block in message["content"]
        if (_view(block) or {}).get("type") in THINKING_TYPES
    )


def _messages_for(
    transcript: Sequence[Any],
    start: int,
    view: _View,
    *,
    strip_before_turns: int | None,
) -> tuple[list[Any], list[int], _Memo, int]:
    """(request messages for transcript[start:], their estimates, the updated memo, how many leading request
    messages are known to carry no caller breakpoint).

    `strip_before_turns`: when not None, assistant messages before the last that-many turns lose their thinking.
    """
    memo = view.memo
    verified = memo.count - 1 if memo.count - 1 >= start and memo.count > memo.offset else start
    head = transcript[start:verified]
    messages: list[Any] = head if isinstance(head, list) else list(head)  # one copy of a long history, not two
    tail_source = transcript[verified:]
    tail = normalize(cast("Sequence[MessageParam]", tail_source))
    same = 0
    for before, after in zip(tail_source, tail, strict=False):
        if before != after:
            break
        same += 1
    messages.extend(tail)
    if same == len(tail) == len(tail_source):  # nothing merged: the view's raw estimates are the request's
        estimates = _span(view.estimates, start - view.offset, len(view.estimates))
    else:
        estimates = view.estimates[start - view.offset : verified - view.offset]
        estimates += [estimate_message(m, view.model) for m in tail]
    # What is now known to be a fixed point of normalize, with its facts (drawn from the view, raw = normal there).
    new_count = verified + same
    if new_count > start:
        new_memo = _Memo(
            start,
            new_count,
            message_digest(transcript[new_count - 1]),
            _span(view.estimates, start - view.offset, new_count - view.offset),
            _span(view.starts, bisect.bisect_left(view.starts, start), bisect.bisect_left(view.starts, new_count)),
            _span(view.marks, bisect.bisect_left(view.marks, start), bisect.bisect_left(view.marks, new_count)),
        )
    else:
        new_memo = _Memo(offset=start, count=start)
    first_mark = bisect.bisect_left(view.marks, start)
    clean_before = verified - start
    if first_mark < len(view.marks) and view.marks[first_mark] < verified:
        clean_before = view.marks[first_mark] - start
    if strip_before_turns is not None:
        if strip_before_turns <= 0:
            zone = len(messages)
        else:
            starts = [index for index, message in enumerate(messages) if is_turn_start(message)]
            zone = starts[-strip_before_turns] if len(starts) >= strip_before_turns else 0
        emptied = False
        for index in range(zone):
            message = messages[index]
            if isinstance(message, Mapping) and message.get("role") == "assistant":
                stripped = without_thinking(message)
                if stripped is not message:
                    messages[index] = stripped
                    emptied = emptied or not stripped.get("content")
        if emptied:  # a reply that held only thinking: drop it and merge what is left around it
            messages = list(normalize(cast("Sequence[MessageParam]", messages)))
            estimates = [estimate_message(m, view.model) for m in messages]
            clean_before = 0
    return messages, estimates, new_memo, clean_before


def _span(values: list[int], start: int, stop: int) -> list[int]:
    """`values[start:stop]`, without a copy when that is all of it: the view's lists are made for one plan and
    never changed after it, so its request and its memo can share them (a long history's lists are not copied
    twice more each turn)."""
    return values if start == 0 and stop == len(values) else values[start:stop]


@dataclass(frozen=True, slots=True)
class _Caching:
    enabled: bool
    ttl: str
    automatic: bool


def _finish(
    name: str,
    transcript: Sequence[Any],
    state: Mapping[str, Any],
    settings: RequestSettings,
    *,
    view: _View,
    start: int,
    thinking_from: int,
    step: dict[str, Any] | None,
    caching: _Caching,
    extra: Mapping[str, Any],
) -> Plan:
    """Build the request for `start`, place breakpoints, forecast, and assemble the plan."""
    model = settings.model
    n = len(transcript)
    strip: int | None = None
    if model.thinking_binding and start > 0:
        strip = len(view.starts_from(thinking_from)) if thinking_from < n else 0
    messages, estimates, memo, clean_before = _messages_for(transcript, start, view, strip_before_turns=strip)
    request = settings.base_request(messages, owned=True)
    calibration = settings.calibration
    placed: list[dict[str, Any]] = []
    ttl = caching.ttl
    if caching.enabled:
        previous = state.get("cache")
        previous_tokens = int(previous.get("tokens", 0)) if isinstance(previous, Mapping) else 0
        # Calibrated like the previous request's size in the cache fingerprint, so their difference is what is new.
        total = apply_calibration(estimate_prefix(request, model) + sum(estimates), settings.calibration)
        ttl = choose_ttl(
            settings.gaps, model, min(previous_tokens, total), caching.ttl, new_tokens=max(total - previous_tokens, 0)
        )
        request, placed = place_breakpoints(
            request, model, ttl=ttl, automatic=caching.automatic, clean_before=clean_before
        )
    base_state = {key: value for key, value in state.items() if key not in ("memo", "cache")}
    if isinstance(state.get("cache"), Mapping):
        base_state["cache"] = state["cache"]
    clean = min([clean_before, *(item["message"] for item in placed if "message" in item)])
    predicted, new_state = forecast_and_remember(request, base_state, settings, estimates=estimates, clean_before=clean)
    new_state.update(start=start, thinking_from=thinking_from, length=n, memo=memo.dump())
    if step is not None:
        rewrite = view.tokens_from(step["to"]) - view.tokens_from(min(max(_int(state, "length", n), step["to"]), n))
        if not any(item["kind"] == "prefix" for item in placed):
            rewrite += estimate_prefix(request, model)
        # Never more than this request writes at all (nothing, when it is too small to be cached), and nothing is
        # written again when nothing was cached before (the first request of a conversation).
        written = int(predicted["cache_write_5m"]) + int(predicted["cache_write_1h"])
        if not isinstance(state.get("cache"), Mapping):
            written = 0
        step["rewrite_tokens"] = min(apply_calibration(rewrite, calibration), written)
        # What the rewrite costs beyond reading the same tokens from the cache (write price minus read price).
        prices = model.prices_for(predicted["input_tokens"])
        write = prices.cache_write_1h if ttl == "1h" else prices.cache_write_5m
        extra_cost = step["rewrite_tokens"] * (write - prices.cache_read) / Decimal(1_000_000)
        step["rewrite_usd"] = str(extra_cost.quantize(Decimal("0.000001")))
    explanation: dict[str, Any] = {
        "policy": name,
        "kept": [start, n],
        "dropped": [[0, start]] if start > 0 else [],
        "step": step,
        "estimated_input_tokens": predicted["input_tokens"],
        "cache": ("automatic" if caching.automatic else "explicit") if caching.enabled else "off",
        "ttl": ttl if caching.enabled else None,
        "breakpoints": placed,
        "forecast": predicted,
        "thinking_stripped": strip is not None and _thinking_blocks(transcript[start:]) != _thinking_blocks(messages),
        **extra,
    }
    return Plan(request=request, state=new_state, explanation=explanation)


def _int(state: Mapping[str, Any], key: str, default: int) -> int:
    value = state.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _cold(state: Mapping[str, Any], settings: RequestSettings, ttl: str) -> bool:
    """The gap since the last request exceeded the TTL the cache was written with: nothing is left to read."""
    if settings.now is None or settings.last_request_at is None:
        return False
    previous = state.get("cache")
    used = previous.get("ttl") if isinstance(previous, Mapping) else None
    if not isinstance(used, str):
        used = "1h" if ttl == "1h" else "5m"
    return settings.now - settings.last_request_at > ttl_seconds(used)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What a stepping decision looks at."""

    view: _View
    settings: RequestSettings
    calibration: float


class _Stepper:
    """The shared decision of Window and TokenBudget; subclasses say how big a kept part is."""

    __slots__ = ()
    # Fields of the dataclasses built on it.
    name: str
    cache: bool
    ttl: str
    automatic: bool

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """The next request: the kept turns, the start moved only at the high-water mark or on a cold cache."""
        return self._decide(self.name, transcript, state, settings, self._caching(), forced=False)

    def shrink(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """Step now (the request did not fit): at least one more turn dropped, the new user turn kept. Raises
        `ContextWindowExceeded` when only the current turn is left."""
        return self._decide(self.name, transcript, state, settings, self._caching(), forced=True)

    def _caching(self) -> _Caching:
        return _Caching(self.cache, self.ttl, self.automatic)

    def _over(self, ctx: _Ctx, start: int) -> bool:
        raise NotImplementedError

    def _low_target(self, ctx: _Ctx, start: int) -> int:
        raise NotImplementedError

    def _hard_over(self, ctx: _Ctx, start: int) -> bool:
        """Over what may be sent at all (not just the high-water mark): a step cannot wait for the next turn."""
        del ctx, start  # no hard limit unless a subclass knows one
        return False

    def _extra(self, ctx: _Ctx, start: int) -> dict[str, Any]:
        """Policy-specific facts for the explanation."""
        return {"turns_kept": len(ctx.view.starts_from(start))}

    def _step(
        self,
        view: _View,
        start: int,
        state: Mapping[str, Any],
        settings: RequestSettings,
        caching: _Caching,
        *,
        forced: bool,
    ) -> tuple[dict[str, Any] | None, int | None, bool] | None:
        """(the step to take or None, the last turn start, whether a tool loop is in progress); None when the
        view's turn starts turn out not to be turn starts of this transcript."""
        transcript = view.transcript
        ctx = _Ctx(view, settings, settings.calibration)
        starts = view.starts_from(start)
        last_start = starts[-1] if starts else None
        if last_start is not None and not is_turn_start(transcript[last_start]):
            return None
        mid_loop = last_start is not None and in_tool_loop(transcript, last_start)
        if last_start is None:
            return None, None, mid_loop
        target = min(self._low_target(ctx, start), last_start)
        reason: str | None = None
        if forced:
            later = [s for s in starts if s > start]
            if not later:
                raise ContextWindowExceeded(
                    settings.model.id, "the current turn alone does not fit; nothing more can be dropped"
                )
            target = max(target, later[0])
            reason = "overflow"
        elif self._hard_over(ctx, start) or (self._over(ctx, start) and not mid_loop):
            reason = "high_water"
        elif target > start and not mid_loop and _cold(state, settings, caching.ttl):
            reason = "cold_cache"
        if reason is None or target <= start:
            return None, last_start, mid_loop
        if not is_turn_start(transcript[target]):
            return None
        return {"from": start, "to": target, "reason": reason}, last_start, mid_loop

    def _decide(
        self,
        name: str,
        transcript: Sequence[MessageParam],
        state: Mapping[str, Any],
        settings: RequestSettings,
        caching: _Caching,
        *,
        forced: bool,
    ) -> Plan:
        n = len(transcript)
        start, recomputed = _valid_start(state, transcript) if n else (0, False)
        memo = _Memo.load(state.get("memo"), transcript, start)
        view = _View.build(transcript, memo, settings.model)
        decided = self._step(view, start, state, settings, caching, forced=forced)
        if decided is None:
            # The memo describes another branch (a fork that its cheap checks missed): rebuild it and decide again.
            view = _View.build(transcript, _Memo(offset=start, count=start), settings.model)
            decided = self._step(view, start, state, settings, caching, forced=forced)
            assert decided is not None  # a fresh view only lists real turn starts
        step, last_start, mid_loop = decided
        thinking_from = _int(state, "thinking_from", n)
        if recomputed or not start <= thinking_from <= n:
            thinking_from = n if start > 0 else 0
        if step is not None:
            thinking_from = n if mid_loop or last_start is None else last_start
            start = step["to"]
        ctx = _Ctx(view, settings, settings.calibration)
        extra = {"recomputed": recomputed, **self._extra(ctx, start)}
        return _finish(
            name,
            transcript,
            state,
            settings,
            view=view,
            start=start,
            thinking_from=thinking_from,
            step=step,
            caching=caching,
            extra=extra,
        )


@dataclass(frozen=True, slots=True)
class Window(_Stepper):
    """Keep the latest whole turns: at most `high_water` (default: the size), cut back to `low_water` (default:
    half the high water, at least 1) in one step when that is exceeded — or earlier, when the cache has gone cold.

    The size is counted in `turns` (default 20) or, instead, in `messages`: `Window(messages=20)` is the
    cache-stable form of the common `history[-20:]` — at most 20 messages, cut back to 10 — while
    `Window(turns=20)` keeps 10 to 20 whole turns, which in a chat is 20 to 40 messages and in an agent's tool
    loops many more. Either way the window starts on a turn start, so a request carries more than the high water
    when the current turn alone is longer, or while a tool loop is in progress (the step waits for the next user
    turn, so as not to strip or rewrite the loop's prefix mid-way).

    A turn is a user message (not a tool-result carrier) and everything up to the next one. Caching: explicit
    moving breakpoints by default (`automatic=True` uses the API's top-level one), `ttl` "5m", "1h" or "auto"
    (by the conversation's gaps, see `caching.choose_ttl`); `cache=False` places none.
    """

    turns: int | None = None
    messages: int | None = None
    high_water: int | None = None
    low_water: int | None = None
    ttl: str = "auto"
    automatic: bool = False
    cache: bool = True
    name: str = "window"

    def __post_init__(self) -> None:
        check_settings(self, high_water=1, low_water=1)
        if self.turns is not None and self.messages is not None:
            raise ConfigError(
                f"Window(turns={self.turns}, messages={self.messages}): give the size in turns or in messages, not both"
            )
        if self.turns is None and self.messages is None:
            object.__setattr__(self, "turns", 20)  # frozen; Window() and Window(turns=20) are the same policy
        unit, size = self._unit()
        if size < 1:
            raise ConfigError(f"Window({unit}={size}): keep at least one {unit[:-1]}")
        if self._low() >= self._high() and self._high() > 1:
            raise ConfigError(f"Window: low_water ({self._low()}) must be below high_water ({self._high()})")

    def _unit(self) -> tuple[str, int]:
        """("turns" or "messages", the size in that unit)."""
        return ("messages", self.messages) if self.messages is not None else ("turns", self.turns or 0)

    def _high(self) -> int:
        return self.high_water if self.high_water is not None else self._unit()[1]

    def _low(self) -> int:
        return max(1, self.low_water if self.low_water is not None else self._high() // 2)

    def _kept(self, ctx: _Ctx, start: int) -> int:
        """The size of the kept part from `start` on, in this window's unit."""
        if self.messages is not None:
            return len(ctx.view.transcript) - start
        return len(ctx.view.starts_from(start))

    def _over(self, ctx: _Ctx, start: int) -> bool:
        return self._kept(ctx, start) > self._high()

    def _low_target(self, ctx: _Ctx, start: int) -> int:
        starts = ctx.view.starts_from(start)
        low = min(self._low(), self._high())
        if self.messages is not None:
            # The earliest turn start that leaves at most `low` messages; the current turn when none does.
            first = bisect.bisect_left(starts, len(ctx.view.transcript) - low)
            return starts[first] if first < len(starts) else (starts[-1] if starts else start)
        return starts[-low] if len(starts) >= low else start

    def _extra(self, ctx: _Ctx, start: int) -> dict[str, Any]:
        return {
            "turns_kept": len(ctx.view.starts_from(start)),
            "messages_kept": len(ctx.view.transcript) - start,
            "unit": self._unit()[0],
            "high_water": self._high(),
            "low_water": self._low(),
        }


@dataclass(frozen=True, slots=True)
class TokenBudget(_Stepper):
    """Keep the latest whole turns within a token budget, cache-stable.

    The budget is `max_input_tokens`, capped by (and by default equal to) the model's context window minus
    `reserve_output` (default: the request's `max_tokens`). While the estimated input (tools, system, kept
    messages; times `settings.calibration`) stays at or below `high_water` x budget, the start stays put;
    above it, the start jumps to the earliest turn that brings the input to `low_water` x budget or less. Inside
    a tool loop the step waits for the next user turn unless the request would not fit at all. If even the
    current turn alone is over the budget, it is sent anyway and the explanation says `fits: False`.
    """

    max_input_tokens: int | None = None
    reserve_output: int | None = None
    high_water: float = 0.9
    low_water: float = 0.6
    ttl: str = "auto"
    automatic: bool = False
    cache: bool = True
    name: str = "token-budget"

    def __post_init__(self) -> None:
        check_settings(self, max_input_tokens=1, reserve_output=0)
        if not 0 < self.low_water < self.high_water <= 1:
            raise ConfigError("TokenBudget: need 0 < low_water < high_water <= 1")

    def budget(self, settings: RequestSettings) -> int:
        """The input tokens a request may hold for these settings."""
        reserve = self.reserve_output if self.reserve_output is not None else settings.max_tokens
        window = max(settings.model.context_window - reserve, 1)
        return window if self.max_input_tokens is None else min(self.max_input_tokens, window)

    def _size(self, ctx: _Ctx, start: int) -> int:
        return apply_calibration(ctx.view.fixed(ctx.settings) + ctx.view.tokens_from(start), ctx.calibration)

    def _over(self, ctx: _Ctx, start: int) -> bool:
        return self._size(ctx, start) > self.high_water * self.budget(ctx.settings)

    def _hard_over(self, ctx: _Ctx, start: int) -> bool:
        return self._size(ctx, start) > self.budget(ctx.settings)

    def _low_target(self, ctx: _Ctx, start: int) -> int:
        limit = self.low_water * self.budget(ctx.settings)
        starts = ctx.view.starts_from(start)
        # The first turn start whose size is within the limit: sizes only shrink as the start moves later, so it
        # is found by bisection (a window of hundreds of turns is not summed once per candidate).
        low, high = 0, len(starts)
        while low < high:
            middle = (low + high) // 2
            if self._size(ctx, starts[middle]) <= limit:
                high = middle
            else:
                low = middle + 1
        if low < len(starts):
            return starts[low]
        return starts[-1] if starts else start

    def _extra(self, ctx: _Ctx, start: int) -> dict[str, Any]:
        size = self._size(ctx, start)
        budget = self.budget(ctx.settings)
        return {"budget": budget, "fits": size <= budget}


@dataclass(frozen=True, slots=True)
class SlidingWindow:
    """The seeds' recipe, for comparison: the last `messages` messages on every request (`history[-20:]`).

    The naive recipe can start on an orphan `tool_result` or an assistant message, which the API rejects; this
    only fixes that, by starting at the first turn start within the last `messages` messages (or, when a single
    turn is longer, at the current turn's start). Everything else is kept naive: the start moves on every turn,
    so the cache is rewritten every turn. On models that bind thinking to its prefix, every retained thinking
    block is stripped once something was dropped (the prefix changes on every request).
    """

    messages: int = 20
    cache: bool = True
    ttl: str = "5m"
    name: str = "sliding-window"

    def __post_init__(self) -> None:
        check_settings(self, messages=1)

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """The next request: the last `messages` messages, from a turn start."""
        n = len(transcript)
        start, _ = _valid_start(state, transcript) if n else (0, False)
        memo = _Memo.load(state.get("memo"), transcript, start)
        view = _View.build(transcript, memo, settings.model)
        starts = view.starts_from(start)
        cut = max(n - self.messages, 0)
        later = [s for s in starts if s >= cut]
        earlier = [s for s in starts if s < cut]
        new_start = later[0] if later else (earlier[-1] if earlier else start)
        new_start = max(new_start, start)
        step = None
        if new_start > start:
            step = {"from": start, "to": new_start, "reason": "high_water"}
        return _finish(
            self.name,
            transcript,
            state,
            settings,
            view=view,
            start=new_start,
            thinking_from=n,
            step=step,
            caching=_Caching(self.cache, self.ttl, False),
            extra={},
        )


def plan_full_history(
    name: str,
    transcript: Sequence[MessageParam],
    state: Mapping[str, Any],
    settings: RequestSettings,
    *,
    cache: bool,
    ttl: str,
    automatic: bool,
) -> Plan:
    """FullHistory's plan: everything, append-only, with the incremental machinery of the windows."""
    memo = _Memo.load(state.get("memo"), transcript, 0)
    view = _View.build(transcript, memo, settings.model)
    return _finish(
        name,
        transcript,
        state,
        settings,
        view=view,
        start=0,
        thinking_from=0,
        step=None,
        caching=_Caching(cache, ttl, automatic),
        extra={},
    )


@dataclass(frozen=True, slots=True)
class FullHistory:
    """Send everything, append-only, so the prompt cache is never broken.

    Caching (`cache=True`): by default the API's automatic breakpoint (top-level `cache_control`), which sits on
    the last cacheable block and moves with the conversation, so each request reads what the previous one
    wrote; `automatic=False` places the moving breakpoint explicitly. Either way a large tools/system prefix
    gets its own breakpoint and a long tool loop an intermediate one (`caching.place_breakpoints`). `ttl` is
    "5m", "1h" or "auto" (chosen from the conversation's gaps, `caching.choose_ttl`). `cache=False` adds no
    breakpoint at all (the caller's own stay).
    """

    ttl: str = "auto"
    name: str = "full-history"
    cache: bool = True
    automatic: bool = True

    def __post_init__(self) -> None:
        check_settings(self)

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """The next request: the whole transcript, normalised, with breakpoints."""
        return plan_full_history(
            self.name, transcript, state, settings, cache=self.cache, ttl=self.ttl, automatic=self.automatic
        )
