"""The pricing recommender: which model, context policy and cache TTL to use for a workload, at a volume.

`recommend(workload, conversations_per_month=...)` simulates every candidate (model × strategy, TTLs included)
with `simulate`, scales each run's cost to a month, and chooses the cheapest candidate that keeps as many of the
workload's planted facts as the best candidate does (context that is lost is an answer that is wrong) and whose
peak context fits the model's window. Every alternative is listed with what it trades: monthly cost against facts
kept and peak context.

What it does not judge: how well each model answers. The emulator answers every model alike, so the choice is
about cost and retained context only; pick the set of `models` you would accept on quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from turnkeep.core.catalog import Catalog, default_catalog
from turnkeep.core.policies import FullHistory, Policy, Summarize, TokenBudget, Window
from turnkeep.errors import UsageError
from turnkeep.sim.simulator import Progress, Row, simulate
from turnkeep.sim.workloads import Workload

__all__ = ["DEFAULT_MODELS", "Candidate", "Recommendation", "default_strategies", "recommend"]

DEFAULT_MODELS = ("claude-haiku-4-5", "claude-haiku-5-5", "claude-sonnet-4-6", "claude-sonnet-5-5")


def default_strategies() -> list[Policy]:
    """Full history with each TTL choice, a cache-stable window, a token budget and summaries."""
    return [
        FullHistory(ttl="auto"),
        FullHistory(ttl="5m"),
        FullHistory(ttl="1h"),
        Window(turns=20),
        TokenBudget(max_input_tokens=50_000),
        Summarize(trigger=50_000),
    ]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One simulated (model, strategy) with its monthly cost."""

    row: Row
    monthly_usd: Decimal
    fits: bool

    @property
    def facts(self) -> str:
        return f"{self.row.facts_retained}/{len(self.row.facts)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.row.model,
            "strategy": self.row.strategy,
            "monthly_usd": str(self.monthly_usd),
            "cost_per_conversation_usd": str(self.row.cost_usd),
            "facts_retained": self.row.facts_retained,
            "facts": len(self.row.facts),
            "peak_context": self.row.peak_context,
            "cache_read_share": round(self.row.cache_read_share, 4),
            "fits_context_window": self.fits,
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The chosen candidate, every alternative (cheapest first), and the reasoning in numbers."""

    workload: str
    conversations_per_month: int
    choice: Candidate
    candidates: tuple[Candidate, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "conversations_per_month": self.conversations_per_month,
            "choice": self.choice.to_dict(),
            "reasons": list(self.reasons),
            "candidates": [candidate.to_dict() for candidate in self.candidates],
        }


def recommend(
    workload: Workload,
    *,
    conversations_per_month: int,
    models: Sequence[str] = DEFAULT_MODELS,
    strategies: Sequence[Policy | str] | None = None,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
    jobs: int | None = None,
) -> Recommendation:
    """Simulate every candidate on `workload` and recommend one for `conversations_per_month` conversations.

    `jobs`: runs played at once in worker processes (see `simulate`; None: one per CPU for a big simulation).
    Each model is simulated, not re-priced from another model's run: its facts steer what its conversation
    sends (the tokenizer generation moves when a budget or a summary triggers, the minimum cacheable prefix
    decides whether the system prompt gets its own breakpoint, price ratios steer the automatic TTL, the context
    window bounds a window), so another model's requests priced anew would not be what it really costs."""
    if conversations_per_month < 1:
        raise UsageError("conversations_per_month must be at least 1")
    if not models:
        raise UsageError("recommend needs at least one model")
    catalog = catalog or default_catalog()
    result = simulate(
        workload, list(strategies or default_strategies()), list(models), progress=progress, catalog=catalog, jobs=jobs
    )
    volume = Decimal(conversations_per_month)
    candidates = sorted(
        (
            Candidate(row, row.cost_usd * volume, row.peak_context <= catalog.get(row.model).context_window)
            for row in result.rows
        ),
        key=lambda c: (c.monthly_usd, c.row.model, c.row.strategy),
    )
    usable = [c for c in candidates if c.fits]
    if not usable:
        raise UsageError("no candidate fits its model's context window; add a windowed or summarising strategy")
    best_facts = max(c.row.facts_retained for c in usable)
    keeping = [c for c in usable if c.row.facts_retained == best_facts]
    choice = keeping[0]
    reasons = [
        f"{choice.row.model} with {choice.row.strategy}: ${choice.monthly_usd:,.2f} a month for "
        f"{conversations_per_month:,} conversations (${choice.row.cost_usd:.4f} each), keeps {choice.facts} facts, "
        f"{choice.row.cache_read_share:.0%} of input read from the cache, peak context {choice.row.peak_context:,}.",
    ]
    cheaper = [c for c in usable if c.monthly_usd < choice.monthly_usd]
    if cheaper:
        cheapest = cheaper[0]
        reasons.append(
            f"Cheaper: {cheapest.row.model} with {cheapest.row.strategy} at ${cheapest.monthly_usd:,.2f} "
            f"({1 - cheapest.monthly_usd / choice.monthly_usd:.0%} less), but it keeps only {cheapest.facts} facts."
        )
    runner_up = next((c for c in keeping[1:]), None)
    if runner_up is not None:
        reasons.append(
            f"Next with as much context: {runner_up.row.model} with {runner_up.row.strategy} at "
            f"${runner_up.monthly_usd:,.2f} (+{runner_up.monthly_usd / choice.monthly_usd - 1:.0%})."
        )
    too_big = [c for c in candidates if not c.fits]
    if too_big:
        reasons.append(f"{len(too_big)} candidate(s) left out: their peak context exceeds the model's window.")
    return Recommendation(workload.name, conversations_per_month, choice, tuple(candidates), tuple(reasons))
