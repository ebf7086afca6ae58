"""Ledger entries for every HTTP attempt of a call, so the ledger adds up to the bill under faults.

A call ends answered or failed (`ConversationCore.answered` / `.failed`); by then `turnkeep.attempts` has seen
each HTTP attempt the SDK made for it. Each becomes one entry:

| the attempt                                           | its entry                                             |
|-------------------------------------------------------|-------------------------------------------------------|
| never reached the server (connect error, pool timeout) | $0, `error` says it was not sent                      |
| answered with an error status (429, 5xx, 4xx)          | $0, `error` names the status: errors are not billed   |
| whole reply read (JSON body, or SSE to `message_stop`) | the API's usage, exact                                |
| stream cut after `message_start` (server `error`      | input exact (from `message_start`), output as read so |
| event, dropped connection, the caller stopped)         | far: `estimated=True`                                 |
| reply lost (timeout, drop, truncated JSON body)        | estimated: `estimated=True`                           |

The answered attempt itself is recorded by the caller from the returned message, as before; this module adds
the attempts before it (the SDK's own retries), and, for a failed call, replaces the entry of the last attempt
by what the attempt showed.

Estimates, in order of what is known: the input of a cut stream is `message_start`'s, exactly; otherwise the
input's total is that of an attempt of the same call that was answered (the SDK resent the same body), or the
conversation's own forecast of the request; the split into uncached, cache writes and reads follows the
forecast of the turn's plan (a reply call; other calls are priced as uncached input). The output of a stream
that had begun is what its deltas carried (estimated from their text: the server stops generating when the
stream is cut, and what it generated after the last delta read is unknown); the output of a reply lost whole
is what an answered twin produced, else the conversation's mean reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from turnkeep.attempts import Attempt
from turnkeep.core import budget as budget_core
from turnkeep.core.anchor import input_forecast
from turnkeep.core.pricing import TokenCounts, token_counts, usage_cost
from turnkeep.core.records import LedgerEntry
from turnkeep.core.tokens import estimate_text

if TYPE_CHECKING:
    from turnkeep.core.turn import Call
    from turnkeep.session import ConversationCore, PendingTurn

__all__ = ["settle_answered", "settle_failed"]


def settle_answered(core: ConversationCore, pending: PendingTurn, call: Call) -> list[LedgerEntry]:
    """Entries for the attempts the SDK made before the one that answered `call` (call before recording it)."""
    attempts = pending.attempts.take()
    if len(attempts) < 2:
        return []
    answered = attempts[-1]
    entries = [_entry(core, pending, call, attempt, twin=answered) for attempt in attempts[:-1]]
    _count(core, entries, [])
    return entries


def settle_failed(core: ConversationCore, pending: PendingTurn, call: Call, recorded: LedgerEntry) -> list[LedgerEntry]:
    """Entries for every attempt of a failed `call`; `recorded` (the entry made from the SDK's error) is kept
    when nothing was observed, else it lends its error, latency and cache facts to the last attempt's entry."""
    attempts = pending.attempts.take()
    if not attempts:
        return [recorded]
    entries = [_entry(core, pending, call, attempt, twin=None) for attempt in attempts[:-1]]
    last = _entry(core, pending, call, attempts[-1], twin=None, error=recorded.error)
    entries.append(
        replace(
            last,
            latency_ms=recorded.latency_ms,
            request_id=last.request_id or recorded.request_id,
            message_id=last.message_id or recorded.message_id,
            cache_miss_reason=recorded.cache_miss_reason,
        )
    )
    _count(core, entries, [recorded])
    return entries


def _count(core: ConversationCore, added: Sequence[LedgerEntry], removed: Sequence[LedgerEntry]) -> None:
    """Keep the conversation's running totals (its budget's) in step with the entries that replace others."""
    plus, minus = budget_core.spent(added), budget_core.spent(removed)
    now = core.ledger.facts.spent + plus
    core.ledger.facts.spent = budget_core.Spent(
        **{f.name: getattr(now, f.name) - getattr(minus, f.name) for f in fields(budget_core.Spent)}
    )


def _entry(
    core: ConversationCore,
    pending: PendingTurn,
    call: Call,
    attempt: Attempt,
    *,
    twin: Attempt | None,
    error: str | None = None,
) -> LedgerEntry:
    """One attempt's entry; `error` (what the caller was told) names the failure, else the attempt's own."""
    model_id = str(call.request["model"])
    catalog = core._catalog
    model = catalog.get(model_id)
    base = LedgerEntry(
        purpose=call.purpose,
        model=model_id,
        request_id=attempt.request_id,
        message_id=attempt.message_id,
        stop_reason=None,
        usage={},
        cost_usd="0",
        latency_ms=round(attempt.latency * 1000, 3),
        at=core.clock(),
    )
    what = error or attempt.failure
    if not attempt.sent:
        return replace(base, error=f"{what}: not sent, not billed")
    if attempt.answered_with_error:
        return replace(base, error=f"{what or f'HTTP {attempt.status} {attempt.error_type}'}: not billed")
    if attempt.finished and attempt.usage is not None:
        cost = usage_cost(attempt.usage, model, model_prices=catalog.get).total
        return replace(base, usage=dict(attempt.usage), cost_usd=str(cost), stop_reason=attempt.stop_reason, error=what)
    usage = _estimate(core, pending, call, attempt, twin)
    cost = usage_cost(usage, model, model_prices=catalog.get).total
    what = what or (f"stream error event ({attempt.error_type})" if attempt.error_type else "cut off")
    return replace(base, usage=usage, cost_usd=str(cost), estimated=True, error=f"{what}; usage estimated")


def _estimate(
    core: ConversationCore, pending: PendingTurn, call: Call, attempt: Attempt, twin: Attempt | None
) -> dict[str, Any]:
    """The usage of an attempt whose reply was lost or cut (see the module docstring)."""
    model = core._catalog.get(str(call.request["model"]))
    max_tokens = int(call.request.get("max_tokens") or 0)
    texts = attempt.output_text  # decoded from the deltas on each read: read once
    seen = estimate_text("".join(texts), model) if texts else 0
    twin_usage = twin.usage if twin is not None and twin.finished else None
    if attempt.streamed and attempt.status is not None:
        # The stream had begun: generation stops when it is cut, so its output is what its deltas carried.
        output = max(seen, 1)
    elif twin_usage is not None:
        output = token_counts(twin_usage).output
    else:
        output = _forecast(core, pending, call, None).output
    output = min(output, max_tokens) if max_tokens else output
    if attempt.usage is not None:  # message_start: the input side is the API's own
        return {**attempt.usage, "output_tokens": max(output, int(attempt.usage.get("output_tokens") or 0))}
    total = token_counts(twin_usage).total_input if twin_usage is not None else None
    counts = _forecast(core, pending, call, total)
    return _usage(replace(counts, output=output))


def _forecast(core: ConversationCore, pending: PendingTurn, call: Call, total: int | None) -> TokenCounts:
    """The tokens `call` was expected to bill: the turn plan's cache split for a reply call, scaled to `total`
    when the total is known; other calls as uncached input."""
    model = core._catalog.get(str(call.request["model"]))
    max_tokens = int(call.request.get("max_tokens") or 0)
    if call.purpose == "reply":
        try:
            return core.forecast_plan(pending.turn.plan, max_tokens, exact_input_tokens=total).tokens
        except Exception:  # an estimate must never lose the entry: fall back to uncached input
            pass
    if total is None:
        total, _ = input_forecast(call.request, None, model)
    spent = core.ledger.facts.spent
    output = spent.output_tokens // spent.replies if spent.replies else max_tokens // 4
    return TokenCounts(input=total, output=min(output, max_tokens))


def _usage(counts: TokenCounts) -> dict[str, Any]:
    """Token counts in the API's usage shape (what the ledger and the pricing read)."""
    return {
        "input_tokens": counts.input,
        "cache_creation_input_tokens": counts.cache_write,
        "cache_read_input_tokens": counts.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": counts.cache_write_5m,
            "ephemeral_1h_input_tokens": counts.cache_write_1h,
        },
        "output_tokens": counts.output,
    }
