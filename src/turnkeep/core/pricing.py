"""What a request costs, from its `usage` and the model's prices in the catalog.

`usage.input_tokens` is only the uncached remainder of the input; the exact size of what was sent is
`input_tokens + cache_creation_input_tokens + cache_read_input_tokens` (`TokenCounts.total_input`). Long-context
price bands are chosen by that total and apply to the whole request. Cache writes are split by TTL from
`usage.cache_creation`; when a response gives only the total, it is billed as 5-minute writes (the default TTL).

With `usage.iterations` (beta: server-side compaction, tool loops, fallbacks) the bill is the sum over the
iterations, each priced on its own (its own long-context band): the top-level fields add up only the `message`
iterations, and a compaction iteration's cost is not in them. An iteration that names another model is priced
with `model_prices` when given (see `usage_cost`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.memo import LastByIdentity

if TYPE_CHECKING:
    from anthropic.types import Message, Usage

__all__ = [
    "Cost",
    "TokenCounts",
    "context_counts",
    "credit_redeemed",
    "message_cost",
    "token_counts",
    "usage_cost",
    "usage_of",
]

_MILLION = Decimal(1_000_000)
_usages = LastByIdentity[dict[str, Any]]()
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """The billable token counts of one or more requests."""

    input: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0
    output: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total_input(self) -> int:
        """Every input token of the request(s): uncached + written + read."""
        return self.input + self.cache_write + self.cache_read

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input + other.input,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.cache_read + other.cache_read,
            self.output + other.output,
        )


@dataclass(frozen=True, slots=True)
class Cost:
    """USD, split by what was paid for."""

    input: Decimal = _ZERO
    cache_write_5m: Decimal = _ZERO
    cache_write_1h: Decimal = _ZERO
    cache_read: Decimal = _ZERO
    output: Decimal = _ZERO

    @property
    def total(self) -> Decimal:
        return self.input + self.cache_write_5m + self.cache_write_1h + self.cache_read + self.output

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.input + other.input,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.cache_read + other.cache_read,
            self.output + other.output,
        )

    def __float__(self) -> float:
        return float(self.total)


def usage_of(message: Message) -> dict[str, Any]:
    """`message.usage` as its JSON dict (unset fields left out). A turn reads one reply's usage several times (its
    ledger entry, the calibration, the anchor, the totals): the dict for the last finished message asked about is
    kept by the message's identity and shared, so callers read it and never change it. A stream's snapshot is
    read afresh until it has its stop reason: its usage grows in place until then, never after."""
    if message.stop_reason is None:
        return message.usage.model_dump(exclude_none=True)
    known = _usages.get(message)
    if known is not None:
        return known
    return _usages.put(message.usage.model_dump(exclude_none=True), message)


_costs = LastByIdentity[Cost]()


def message_cost(message: Message, model: ModelInfo, *, model_prices: Callable[[str], ModelInfo] | None = None) -> Cost:
    """`usage_cost` of a response's usage on `model`, remembered for the last (usage, model) asked about: a turn
    prices its reply for the ledger entry and again for the reply's totals."""
    usage = usage_of(message)
    known = _costs.get(usage, model)
    if known is not None:
        return known
    return _costs.put(usage_cost(usage, model, model_prices=model_prices), usage, model)


def token_counts(usage: Usage | Mapping[str, Any]) -> TokenCounts:
    """Billable counts from an SDK `Usage` or its JSON dict (summed over `iterations` when present)."""
    data: Mapping[str, Any] = usage if isinstance(usage, Mapping) else usage.model_dump()
    iterations = data.get("iterations")
    if iterations:
        return sum((token_counts(item) for item in iterations), TokenCounts())
    written = int(data.get("cache_creation_input_tokens") or 0)
    split = data.get("cache_creation") or {}
    write_1h = int(split.get("ephemeral_1h_input_tokens") or 0)
    write_5m = int(split.get("ephemeral_5m_input_tokens") or 0)
    if write_1h + write_5m != written:
        # Only the total was reported (or it disagrees): bill the unexplained rest at the default 5m TTL.
        write_5m = max(written - write_1h, 0)
    return TokenCounts(
        input=int(data.get("input_tokens") or 0),
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        cache_read=int(data.get("cache_read_input_tokens") or 0),
        output=int(data.get("output_tokens") or 0),
    )


def context_counts(usage: Usage | Mapping[str, Any]) -> TokenCounts:
    """The counts of the model's own reading and writing: a server-side compaction's iteration left out. It is
    billed (see `token_counts`), but what it read is what the conversation no longer carries."""
    data: Mapping[str, Any] = usage if isinstance(usage, Mapping) else usage.model_dump()
    iterations = data.get("iterations")
    if iterations:
        kept = [item for item in iterations if isinstance(item, Mapping) and item.get("type") != "compaction"]
        return sum((token_counts(item) for item in kept), TokenCounts())
    return token_counts(data)


def usage_cost(
    usage: Usage | Mapping[str, Any] | TokenCounts,
    model: ModelInfo,
    *,
    batch: bool = False,
    model_prices: Callable[[str], ModelInfo] | None = None,
) -> Cost:
    """The cost of one request's usage on `model` (the Batch API discount when `batch`).

    `model_prices(model_id)` looks up the model of an iteration that names another model (a fallback or
    advisor); without it, every iteration is priced as `model`.
    """
    if not isinstance(usage, TokenCounts):
        data: Mapping[str, Any] = usage if isinstance(usage, Mapping) else usage.model_dump()
        iterations = data.get("iterations")
        if iterations:
            total = Cost()
            for item in iterations:
                item_model = model
                named = item.get("model")
                if named and model_prices is not None and named != model.id:
                    item_model = model_prices(str(named))
                total = total + _priced(token_counts(item), item_model, batch)
            return total
        return _priced(token_counts(data), model, batch, writes_as_reads=credit_redeemed(data))
    return _priced(usage, model, batch)


def credit_redeemed(usage: Mapping[str, Any]) -> bool:
    """Whether a retry redeemed a refusal's fallback credit (`usage.fallback_credit.status.type == "redeemed"`):
    its cache writes, all of the prefix that was warm on the refused model, are billed at the cache-read rate."""
    credit = usage.get("fallback_credit")
    status = credit.get("status") if isinstance(credit, Mapping) else None
    return isinstance(status, Mapping) and status.get("type") == "redeemed"


def _priced(counts: TokenCounts, model: ModelInfo, batch: bool, *, writes_as_reads: bool = False) -> Cost:
    prices = model.prices_for(counts.total_input)
    if writes_as_reads:
        return _priced(
            TokenCounts(counts.input, 0, 0, counts.cache_read + counts.cache_write, counts.output), model, batch
        )
    factor = (1 - model.batch_discount) if batch else Decimal(1)

    def priced(tokens: int, per_million: Decimal) -> Decimal:
        return tokens * per_million * factor / _MILLION

    return Cost(
        input=priced(counts.input, prices.input),
        cache_write_5m=priced(counts.cache_write_5m, prices.cache_write_5m),
        cache_write_1h=priced(counts.cache_write_1h, prices.cache_write_1h),
        cache_read=priced(counts.cache_read, prices.cache_read),
        output=priced(counts.output, prices.output),
    )
