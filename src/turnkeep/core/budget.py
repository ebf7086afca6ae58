"""Per-conversation budgets, checked before each request against what was spent and what the request will cost.

The forecast of a request is its predicted input cost (the policy's cache forecast: reads, writes and uncached
tokens at the model's prices) plus its expected output: the mean output of this conversation's earlier replies,
or a quarter of `max_tokens` before there is any (an estimate, not the worst case: a budget is a guard against
running away, and pricing every reply at `max_tokens` would refuse most conversations long before their limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.pricing import Cost, TokenCounts, token_counts, usage_cost
from turnkeep.errors import BudgetExceeded, ConfigError

__all__ = ["Budget", "Forecast", "Spent", "forecast", "spent"]


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one conversation (None: no limit). `degrade_to`: a cheaper model to switch to, instead of
    refusing, when the next request would pass `max_cost_usd` on the current one."""

    max_cost_usd: Decimal | None = None
    max_input_tokens_total: int | None = None
    max_turns: int | None = None
    degrade_to: str | None = None

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None:
            object.__setattr__(self, "max_cost_usd", Decimal(str(self.max_cost_usd)))
            if self.max_cost_usd < 0:
                raise ConfigError("max_cost_usd must not be negative")
        for name in ("max_input_tokens_total", "max_turns"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"{name} must be a non-negative integer")

    def settings(self) -> dict[str, Any]:
        """JSON-ready (stored with the conversation)."""
        return {
            "max_cost_usd": None if self.max_cost_usd is None else str(self.max_cost_usd),
            "max_input_tokens_total": self.max_input_tokens_total,
            "max_turns": self.max_turns,
            "degrade_to": self.degrade_to,
        }

    @classmethod
    def from_settings(cls, data: Mapping[str, Any] | None) -> Budget | None:
        if not data:
            return None
        cost = data.get("max_cost_usd")
        return cls(
            max_cost_usd=None if cost is None else Decimal(str(cost)),
            max_input_tokens_total=data.get("max_input_tokens_total"),
            max_turns=data.get("max_turns"),
            degrade_to=data.get("degrade_to"),
        )

    def check(self, spent: Spent, next_request: Forecast) -> None:
        """Raise `BudgetExceeded` if sending the next request would pass a limit."""
        if self.max_turns is not None and spent.turns + 1 > self.max_turns:
            raise BudgetExceeded(f"turn budget reached: {spent.turns} of {self.max_turns} turns used")
        if self.max_input_tokens_total is not None:
            coming = next_request.input_tokens + next_request.prelude_input_tokens
            if spent.input_tokens + coming > self.max_input_tokens_total:
                raise BudgetExceeded(
                    f"input-token budget: spent {spent.input_tokens:,}, next request ~{coming:,}, "
                    f"limit {self.max_input_tokens_total:,}"
                )
        if self.max_cost_usd is not None and spent.usd + next_request.usd > self.max_cost_usd:
            raise BudgetExceeded(
                f"cost budget: spent ${spent.usd:.6f}, next request ~${next_request.usd:.6f}, "
                f"limit ${self.max_cost_usd:.6f}"
            )


@dataclass(frozen=True, slots=True)
class Spent:
    """What a conversation has used so far."""

    usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    turns: int = 0
    replies: int = 0

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.usd + other.usd,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.turns + other.turns,
            self.replies + other.replies,
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    """The predicted tokens of the next request, split as it will be billed, and their cost."""

    tokens: TokenCounts
    cost: Cost
    exact_input_tokens: int = 0
    """How much of the input is known exactly (from the last request's usage) rather than estimated."""
    prelude_usd: Decimal = Decimal(0)
    """What calls made before the request cost (a policy's summary call)."""
    prelude_input_tokens: int = 0
    """The input tokens those calls send."""

    @property
    def input_tokens(self) -> int:
        return self.tokens.total_input

    @property
    def output_tokens(self) -> int:
        return self.tokens.output

    @property
    def usd(self) -> Decimal:
        return self.cost.total + self.prelude_usd


def spent(entries: Sequence[Any]) -> Spent:
    """Totals over ledger entries (anything with `purpose`, `usage`, `cost_usd` and `error`)."""
    usd, tokens_in, tokens_out, turns, replies = Decimal(0), 0, 0, 0, 0
    for entry in entries:
        usd += Decimal(entry.cost_usd)
        counts = token_counts(entry.usage)
        tokens_in += counts.total_input
        # A turn counts once it is answered: by its reply, or by the smaller request sent after an overflow.
        answered = entry.error is None and getattr(entry, "stop_reason", None) != "model_context_window_exceeded"
        if entry.purpose in ("reply", "overflow") and answered:
            turns += 1
        if entry.purpose != "summary" and entry.error is None:
            tokens_out += counts.output
            replies += 1
    return Spent(usd, tokens_in, tokens_out, turns, replies)


def forecast(
    explanation: Mapping[str, Any],
    model: ModelInfo,
    max_tokens: int,
    so_far: Spent,
    *,
    input_tokens: int | None = None,
    exact_input_tokens: int = 0,
    prelude_usd: Decimal = Decimal(0),
    prelude_input_tokens: int = 0,
) -> Forecast:
    """The next request's forecast from a plan's explanation: its cache split (read / written / uncached), scaled
    to `input_tokens` when a better count of the total is known (the policy's split is an estimate; its
    proportions are kept, the total is the better count's), and the expected output."""
    predicted = explanation.get("forecast") or {}
    estimated = int(predicted.get("input_tokens") or explanation.get("estimated_input_tokens") or 0)
    total = estimated if input_tokens is None else input_tokens
    parts = [int(predicted.get(name) or 0) for name in ("uncached", "cache_write_5m", "cache_write_1h", "cache_read")]
    if sum(parts) == 0:
        parts = [total, 0, 0, 0]
    else:
        scale = total / sum(parts)
        parts = [round(part * scale) for part in parts]
        # Rounding remainder onto the largest part, so the parts add up to the total exactly.
        parts[parts.index(max(parts))] += total - sum(parts)
    uncached, write_5m, write_1h, read = parts
    output = so_far.output_tokens // so_far.replies if so_far.replies else max_tokens // 4
    tokens = TokenCounts(uncached, write_5m, write_1h, read, min(output, max_tokens))
    return Forecast(tokens, usage_cost(tokens, model), exact_input_tokens, prelude_usd, prelude_input_tokens)
