"""A conversation's ledger as planning sees it: the facts its entries say, and what answered requests taught.

`Ledger` reads the stored entries once, when first needed (opening a long conversation to look at it should not
pay for reading every request it ever sent), and keeps the facts current as entries are made: what was spent,
when requests went out (their gaps weigh cache expiry and the TTL choice), the last reply (cache diagnostics
compare with it), and the token calibration. It also holds the anchor, the last answered request (forecasts are
exact up to it, threads continue from it), and the sizes learned from usage. It writes nothing: the entries it
makes reach the store in the writes of the turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from anthropic.types import Message

from turnkeep.core import budget as budget_core
from turnkeep.core.anchor import Anchor, Sizes, anchor_after, input_forecast
from turnkeep.core.catalog import ModelInfo
from turnkeep.core.messages import as_blocks
from turnkeep.core.planner import Estimates
from turnkeep.core.policies.caching import Gaps
from turnkeep.core.pricing import message_cost, token_counts, usage_of
from turnkeep.core.records import LedgerEntry
from turnkeep.core.tokens import Calibrator
from turnkeep.core.turn import Call
from turnkeep.sdk import error_request_id
from turnkeep.sdk import request_id as request_id_of

__all__ = ["Ledger", "LedgerFacts"]


@dataclass
class LedgerFacts:
    """What a conversation's ledger tells the planning of its next request."""

    spent: budget_core.Spent
    request_times: list[float]
    """When it sent its answered requests on its own prefix (not summary calls, which have theirs): policies
    weigh the gaps (cache expiry, TTL choice)."""
    gaps: Gaps
    """The gaps between those requests, as running counts (see `record_request`)."""
    last_reply_id: str | None
    """The reply the next request's cache is compared with (cache diagnostics)."""
    calibrator: Calibrator
    """The token calibration, learned again from what each recorded request measured."""

    @classmethod
    def read(cls, ledger: Sequence[LedgerEntry]) -> LedgerFacts:
        answered = [entry for entry in ledger if entry.error is None]
        replies = [entry.message_id for entry in answered if entry.message_id and entry.purpose != "summary"]
        calibrator = Calibrator()
        for entry in answered:
            if entry.calibration is not None:
                calibrator.observe(*entry.calibration)
        times = [entry.at for entry in answered if entry.purpose != "summary"]
        gaps = Gaps.of([later - earlier for earlier, later in itertools.pairwise(times)])
        return cls(budget_core.spent(ledger), times, gaps, replies[-1] if replies else None, calibrator)

    def record_request(self, at: float) -> None:
        """An answered request on the conversation's own prefix was sent at `at`."""
        if self.request_times:
            self.gaps = self.gaps.add(at - self.request_times[-1])
        self.request_times.append(at)


class Ledger:
    """The facts of a conversation's ledger (read lazily from `read`) and what its answered requests taught."""

    def __init__(
        self,
        read: Callable[[], Sequence[LedgerEntry]],
        lookup: Callable[[str], ModelInfo],
        clock: Callable[[], float],
    ) -> None:
        self._read = read
        self._lookup = lookup
        self._clock = clock
        self._facts: LedgerFacts | None = None
        self.anchor: Anchor | None = None
        """The last answered request: threads continue from it, forecasts are exact up to it."""
        self.sizes = Sizes({})

    @property
    def facts(self) -> LedgerFacts:
        """What the ledger says, read once and then kept current as entries are made."""
        if self._facts is None:
            self._facts = LedgerFacts.read(self._read())
        return self._facts

    def entries(self) -> list[LedgerEntry]:
        """Every recorded request, as stored."""
        return list(self._read())

    def forget(self) -> None:
        """Another writer changed the conversation: read the facts again when next needed, anchor afresh."""
        self._facts = None
        self.anchor = None

    @property
    def estimates(self) -> Estimates:
        """What answered requests taught about sizes, for forecasts."""
        return Estimates(self.anchor, self.sizes, self.facts.calibrator.factor)

    def entry(
        self,
        call: Call,
        message: Message | None,
        latency: float,
        error: BaseException | None,
        *,
        request_id: str | None = None,
    ) -> LedgerEntry:
        """A ledger entry for one request (`request_id` when the message does not carry it, as in streams)."""
        usage = dict(usage_of(message)) if message is not None else {}
        model = self._lookup(str(call.request["model"]))
        cost = message_cost(message, model, model_prices=self._lookup).total if message is not None else Decimal(0)
        miss = None
        if message is not None and message.diagnostics and message.diagnostics.cache_miss_reason:
            miss = message.diagnostics.cache_miss_reason.type
        at = self._clock()
        if error is None and call.purpose != "summary":
            self.facts.record_request(at)
        entry = LedgerEntry(
            purpose=call.purpose,
            model=str(call.request["model"]),
            request_id=request_id
            or (request_id_of(message) if message is not None else None)
            or error_request_id(error),
            message_id=message.id if message is not None else None,
            stop_reason=message.stop_reason if message is not None and error is None else None,
            usage=usage,
            cost_usd=str(cost),
            latency_ms=round(latency * 1000, 3),
            at=at,
            error=f"{type(error).__name__}: {error}" if error is not None else None,
            cache_miss_reason=miss,
        )
        self.facts.spent = self.facts.spent + budget_core.spent([entry])
        return entry

    def learn(self, request: Mapping[str, Any], message: Message, model: ModelInfo) -> tuple[int, int] | None:
        """Calibrate the estimates on what an answered request on the conversation's own prefix measured, and
        learn its fixed part's size. Returns the calibration's observation, (estimated, measured) tokens, for the
        ledger entry (None: nothing to compare)."""
        predicted, estimated = input_forecast(request, self.anchor, model, sizes=self.sizes)
        actual = token_counts(usage_of(message)).total_input
        observation = None
        compacted = any(block["type"] == "compaction" for block in as_blocks(message.content))
        if estimated > 0 and not compacted:  # a compaction replaced what was estimated: nothing to compare
            # Only the estimated part carries error; the anchored part is exact. Observations are weighed by their
            # size (a decayed ratio of sums), so a run of one-line questions, where per-message overhead
            # dominates, does not skew the estimate of the next pasted document.
            observation = (estimated, max(actual - (predicted - estimated), 0))
            self.facts.calibrator.observe(*observation)
        # After calibrating: what is learned from this request (the fixed part's size) uses what it taught.
        self.sizes.learn(request, self.anchor, message, model, calibration=self.facts.calibrator.factor)
        return observation

    def anchor_on(self, request: Mapping[str, Any], message: Message, model: ModelInfo) -> None:
        """The conversation's next requests are forecast (and threaded) from this answered one."""
        self.anchor = anchor_after(request, message, model)
        self.facts.last_reply_id = message.id
