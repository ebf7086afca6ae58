"""The turn planner: everything a turn will do, decided from values before anything changes.

`plan_turn` takes what the conversation holds (its committed history, the ledger's facts, the policy and its
state, the settings) and the turn's new content, and returns a `TurnDecision`: the turn state machine with its
first request validated, the plan, the model the turn runs on (a budget may degrade it), and the store writes
that make the turn pending, as data. It reads no clock and touches no store: the edge applies the writes only
when `plan_turn` returned, so a turn refused for any reason (an invalid request, a budget, a prefill the
degraded model refuses, a request larger than the context window) leaves the conversation exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal, cast

from anthropic.types import MessageParam

from turnkeep.core import budget as budget_core
from turnkeep.core import rules
from turnkeep.core.anchor import Anchor, Sizes, input_forecast
from turnkeep.core.catalog import ModelInfo
from turnkeep.core.policies.base import Plan, Policy, RequestSettings, Shrinks, absorbs_summary, can_shrink
from turnkeep.core.pricing import TokenCounts, usage_cost
from turnkeep.core.records import Node
from turnkeep.core.tokens import apply_calibration, estimate_message
from turnkeep.core.turn import Turn
from turnkeep.core.writes import Append, UpdateSettings, Write
from turnkeep.errors import BudgetExceeded, ContextWindowExceeded

__all__ = ["Estimates", "TurnDecision", "TurnInput", "forecast_plan", "plan_turn"]

PrefillMode = Literal["native", "instruct"]

COMPACTION_SUMMARY_TOKENS = 1_024
"""The length a server-side compaction's summary is forecast at (a guess: it is not known before it exists)."""


@dataclass(frozen=True, slots=True)
class Estimates:
    """What answered requests taught about sizes: exact up to the last answered request (`anchor`), the fixed
    part's learned size (`sizes`), and the calibration of estimates beyond them."""

    anchor: Anchor | None = None
    sizes: Sizes = field(default_factory=lambda: Sizes({}))
    calibration: float = 1.0


@dataclass(frozen=True, slots=True)
class TurnInput:
    """What a turn is planned from. Functions in it are pure views of the conversation's values (the history as
    a given model may read it; the settings and fixed-part check for a given model), so a budget's degrade can
    plan the same turn again for the cheaper model without the conversation changing."""

    conversation_id: str
    branch: str
    head: str | None
    """The branch head the pending nodes go under (the store refuses them if another writer moved it)."""
    model: ModelInfo
    history: Callable[[ModelInfo], list[MessageParam]]
    """The committed messages before the turn, as a request for that model carries them."""
    new_nodes: Sequence[Node]
    """The turn's own messages (pending), to be written; empty for a retry, whose nodes are stored already."""
    turn_messages: Sequence[MessageParam]
    """The turn's messages as sent (for a retry: the stored pending ones)."""
    policy: Policy
    policy_state: Mapping[str, Any]
    settings: Callable[[ModelInfo], RequestSettings]
    check_fixed_part: Callable[[ModelInfo], None]
    lookup: Callable[[str], ModelInfo]
    budget: budget_core.Budget | None
    spent: budget_core.Spent
    estimates: Estimates
    prefill: str | None = None
    prefill_mode: PrefillMode | None = None
    auto_continue: int = 0
    max_resumes: int = 5
    refusal_retry: bool = False
    checkpoint: rules.Checkpoint | None = None


@dataclass(frozen=True, slots=True)
class TurnDecision:
    """What the turn will do: run `turn` (first request validated) on `model`, and make it pending with `writes`
    (the new nodes; the model switch a budget's degrade made, stored only with them)."""

    turn: Turn
    plan: Plan
    model: ModelInfo
    writes: list[Write]

    @property
    def model_changed(self) -> bool:
        return bool(self.writes) and isinstance(self.writes[-1], UpdateSettings)


def plan_turn(given: TurnInput) -> TurnDecision:
    """Plan a turn (see the module docstring). Raises what refuses it: `UsageError` and its kinds,
    `BudgetExceeded`, `ContextWindowExceeded`; nothing has changed when it does."""
    # Hostile values in what is new are refused before any planning walks them (indices count from it).
    rules.check_values({"messages": list(given.turn_messages)})
    model = given.model
    # No policy drops the turn's own messages: when they alone cannot fit, nothing is planned (or uploaded).
    alone = estimate_messages(given.turn_messages, model, calibration=given.estimates.calibration)
    if alone > model.context_window * _WINDOW_MARGIN:
        raise ContextWindowExceeded(model.id, _too_large(alone, model))
    turn, plan = _plan_for(given, model)
    if given.budget is not None:
        try:
            given.budget.check(given.spent, _forecast(given, plan, model))
        except BudgetExceeded:
            # Degrade to the cheaper model if allowed, and plan the same turn again for it; else refuse.
            degrade = given.budget.degrade_to
            if degrade is None or degrade == model.id or given.budget.max_cost_usd is None:
                raise
            model = given.lookup(degrade)
            given.check_fixed_part(model)
            turn, plan = _plan_for(given, model)
            given.budget.check(given.spent, _forecast(given, plan, model))
    writes: list[Write] = []
    if given.new_nodes:
        writes.append(Append(given.conversation_id, given.branch, given.head, nodes=tuple(given.new_nodes)))
    if model.id != given.model.id:
        writes.append(UpdateSettings(given.conversation_id, {"model": model.id}))
    return TurnDecision(turn, plan, model, writes)


def _plan_for(given: TurnInput, model: ModelInfo) -> tuple[Turn, Plan]:
    settings = given.settings(model)
    transcript = given.history(model)
    transcript += list(given.turn_messages)
    if given.prefill_mode == "native" and given.prefill is not None:
        transcript.append(cast(MessageParam, {"role": "assistant", "content": given.prefill}))
    state = given.policy_state
    policy = given.policy
    plan = policy.plan(transcript, state, settings)

    def replan(current: Plan, summary: str | dict[str, Any] | None) -> Plan:
        # A failed summary call: send the plan's fallback (the turn is never lost); try again next turn.
        if summary is None or current.summary is None or not absorbs_summary(policy):
            return replace(current, summary=None)
        return policy.plan(transcript, policy.absorb_summary(state, current.summary, summary), settings)

    shrink: Callable[[Plan], Plan | None] | None = None
    if can_shrink(policy):
        shrinking: Shrinks = policy

        def shrink(current: Plan) -> Plan | None:
            return shrinking.shrink(transcript, current.state, settings)

    # A request far larger than the window is never uploaded: it takes the overflow path now (the policy makes
    # it smaller, or the turn is refused), as the API's own "prompt is too long" would, without the upload.
    over = _exceeds_window(plan.request, model, given.estimates)
    if over is not None:
        smaller = shrink(plan) if shrink is not None else None
        if smaller is None or _exceeds_window(smaller.request, model, given.estimates) is not None:
            raise ContextWindowExceeded(model.id, _too_large(over, model))
        plan = smaller
    turn = Turn(
        plan,
        model,
        prefill=given.prefill,
        prefill_mode=given.prefill_mode,
        auto_continue=given.auto_continue,
        max_resumes=given.max_resumes,
        replan=replan,
        shrink=shrink,
        lookup=given.lookup,
        refusal_retry=given.refusal_retry,
        checkpoint=given.checkpoint,
    )
    turn.start()  # validates the first request now, before anything is stored or sent
    return turn, plan


_WINDOW_MARGIN = 1.1
"""How far over the window an estimate must be before a request is stopped unsent: estimates are rough (each
model's tokenizer differs), so a request near the limit is left to the API to judge."""


def _exceeds_window(request: Mapping[str, Any], model: ModelInfo, estimates: Estimates) -> int | None:
    """The request's forecast input tokens when they pass the model's context window (None: it may fit). Exact up
    to the last answered request, so this costs what is new."""
    total, _ = input_forecast(
        request, estimates.anchor, model, calibration=estimates.calibration, sizes=estimates.sizes
    )
    return total if total > model.context_window * _WINDOW_MARGIN else None


def _too_large(tokens: int, model: ModelInfo) -> str:
    return (
        f"the request is estimated at {tokens:,} input tokens, more than the model's context window of "
        f"{model.context_window:,}; nothing was sent"
    )


def estimate_messages(messages: Sequence[MessageParam], model: ModelInfo, *, calibration: float = 1.0) -> int:
    """Estimated tokens of `messages` alone."""
    return apply_calibration(sum(estimate_message(message, model) for message in messages), calibration)


def _forecast(given: TurnInput, plan: Plan, model: ModelInfo) -> budget_core.Forecast:
    return forecast_plan(
        plan,
        model,
        int(plan.request["max_tokens"]),
        given.spent,
        given.estimates,
        given.lookup,
    )


def forecast_plan(
    plan: Plan,
    model: ModelInfo,
    max_tokens: int,
    spent: budget_core.Spent,
    estimates: Estimates,
    lookup: Callable[[str], ModelInfo],
    *,
    exact_input_tokens: int | None = None,
) -> budget_core.Forecast:
    """What sending `plan.request` will cost: exact up to the last answered request, estimated beyond."""
    # With a summary due, the turn sends the summary call and then the shorter request it makes possible.
    request = plan.summary.preview if plan.summary and plan.summary.preview else plan.request
    explanation = plan.explanation
    if plan.summary is not None and plan.summary.preview is not None and plan.summary.preview_explanation:
        explanation = plan.summary.preview_explanation
    prelude, prelude_tokens = Decimal(0), 0
    if plan.summary is not None:
        job = plan.summary.request
        summarizer = lookup(str(job["model"]))
        prelude_tokens, _ = input_forecast(job, None, summarizer, calibration=estimates.calibration)
        counts = TokenCounts(input=prelude_tokens, output=int(job["max_tokens"]) // 2)
        prelude = usage_cost(counts, summarizer).total
    if exact_input_tokens is not None:
        total, known = exact_input_tokens, exact_input_tokens
    else:
        total, estimated = input_forecast(
            request, estimates.anchor, model, calibration=estimates.calibration, sizes=estimates.sizes
        )
        known = total - estimated
    compaction = explanation.get("server_compaction")
    if isinstance(compaction, Mapping) and compaction.get("expected"):
        # The API compacts first: a call that reads the whole input uncached and writes a summary (its length
        # is a guess until it exists). The reply after it reads less; its forecast stays on the safe side.
        counts = TokenCounts(input=total, output=COMPACTION_SUMMARY_TOKENS)
        prelude += usage_cost(counts, model).total
        prelude_tokens += total
    return budget_core.forecast(
        explanation,
        model,
        max_tokens,
        spent,
        input_tokens=total,
        exact_input_tokens=known,
        prelude_usd=prelude,
        prelude_input_tokens=prelude_tokens,
    )
