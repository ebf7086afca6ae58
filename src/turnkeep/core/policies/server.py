"""Policies that let the API manage the context: server-side compaction and context editing (betas).

`ServerCompaction` sends the whole history with Anthropic's `compact_20260112` edit: once the input passes the
trigger, the API summarises the conversation itself and returns a `compaction` block first in its reply. The block
is stored with the reply like any content and sent back as it is; the API then ignores everything before it. On a
model without compaction support it falls back to a client-side policy (`Summarize` by default).

`ClearToolUses` passes the `clear_tool_uses_20250919` edit: the API clears old tool results from what the model
sees while the client keeps (and keeps sending) the full history, so nothing is lost. On a model without context
editing it plans with its inner policy alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from turnkeep.core.messages import block_view, compaction_start
from turnkeep.core.policies.base import (
    AbsorbsSummary,
    Plan,
    Policy,
    RequestSettings,
    Shrinks,
    SummaryJob,
    check_settings,
)
from turnkeep.core.policies.caching import message_digest
from turnkeep.core.policies.summarize import (
    Summarize,
    cache_only,
    in_transcript,
    lead_with,
    strip_retained_thinking,
    thinking_from,
    with_summary,
)
from turnkeep.core.policies.turns import in_tool_loop, is_turn_start, keep_last_cut, last_turn_start
from turnkeep.core.policies.window import FullHistory
from turnkeep.core.rules import normalize
from turnkeep.errors import ConfigError, TurnOrderError

if TYPE_CHECKING:
    from anthropic.types import MessageParam

__all__ = [
    "COMPACTION_BETA",
    "CONTEXT_EDITING_BETA",
    "EXPLICIT_COMPACTION_BETA",
    "ClearToolUses",
    "ServerCompaction",
]

COMPACTION_BETA = "compact-2026-01-12"
EXPLICIT_COMPACTION_BETA = "compact-2026-09-04"
CONTEXT_EDITING_BETA = "context-management-2025-06-27"
_MIN_COMPACTION_TRIGGER = 50_000


_ROUTE = "route"  # a summary job's context key: which nested policies it came through, innermost first


def _routed(job: SummaryJob | None, hop: str) -> SummaryJob | None:
    """A nested policy's summary job, marked as having come through this wrapper's `hop` field."""
    if job is None:
        return None
    return replace(job, context={**job.context, _ROUTE: [*job.context.get(_ROUTE, []), hop]})


def _absorb_nested(nested: Policy, hop: str, state: Mapping[str, Any], job: SummaryJob, result: Any) -> dict[str, Any]:
    """The wrapper's state after `nested`, the policy in its `hop` field, absorbed `result` for `job`."""
    route = list(job.context.get(_ROUTE, []))
    route.pop()
    context = {key: value for key, value in job.context.items() if key != _ROUTE}
    if route:
        context[_ROUTE] = route
    if not isinstance(nested, AbsorbsSummary):  # a job is routed only through policies that made one
        raise TurnOrderError(f"a summary job was routed through {hop} policy {nested.name!r}, which makes none")
    return {**state, hop: nested.absorb_summary(state.get(hop, {}), replace(job, context=context), result)}


def _with_edit(request: Mapping[str, Any], edit: Mapping[str, Any], beta: str) -> dict[str, Any]:
    """`request` with one more context-management edit and the beta it needs."""
    management = dict(request.get("context_management") or {})
    management["edits"] = [*management.get("edits", []), dict(edit)]
    betas = list(request.get("betas") or [])
    if beta not in betas:
        betas.append(beta)
    return {**request, "context_management": management, "betas": betas}


@dataclass(frozen=True, slots=True)
class ServerCompaction:
    """Anthropic's server-side compaction where the model supports it; `fallback` elsewhere.

    By default the `compact_20260112` edit: the API compacts by itself once a request passes `trigger`, and the
    reply carries the block. With `explicit=True` turnkeep asks instead, with the explicit compaction request
    (beta `compact-2026-09-04`), when a request would pass `trigger`: the turns that leave (all but the last
    `keep_last`) are compacted by a call of their own (its own ledger entry), and the block it returns leads the
    first kept user message of every later request, in place of what it summarises. If that call fails, the turn
    is sent whole and compaction is tried again on the next one.
    """

    trigger: int = 150_000
    pause_after_compaction: bool = False
    instructions: str | None = None
    explicit: bool = False
    keep_last: int = 2
    inner: Policy = field(default_factory=FullHistory)
    fallback: Policy = field(default_factory=Summarize)
    name: str = "server-compaction"

    def __post_init__(self) -> None:
        check_settings(self, keep_last=1)
        if self.trigger < _MIN_COMPACTION_TRIGGER:
            raise ConfigError(
                f"ServerCompaction trigger must be at least {_MIN_COMPACTION_TRIGGER:,} tokens (the API's)"
            )

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        if not settings.model.compaction:
            return self._from_fallback(self.fallback.plan(transcript, state.get("fallback", {}), settings))
        if self.explicit:
            return self._explicit(transcript, state, settings)
        cut, fresh, inner_state = self._edit_start(transcript, state)
        messages = self._edit_messages(transcript, cut, fresh, settings)
        return self._with_edit(self.inner.plan(messages, inner_state, settings), cut, fresh, len(transcript))

    def shrink(
        self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings
    ) -> Plan | None:
        """The request did not fit the model's window: with `explicit=True`, compact now (if that call fails, send
        only the turns it would have kept); otherwise, or with nothing left to compact, let the inner policy (the
        fallback on a model without compaction) drop turns. None when none of that can make it smaller."""
        if not settings.model.compaction:
            fallback = self.fallback
            smaller = (
                fallback.shrink(transcript, state.get("fallback", {}), settings)
                if isinstance(fallback, Shrinks)
                else None
            )
            return self._from_fallback(smaller) if smaller is not None else None
        if self.explicit:
            start, block = _compacted(state, transcript)
            fresh = thinking_from(state, start, transcript)
            inner_state = _inner_state(state, start)
            cut = self._cut(transcript)
            if cut is not None and cut > start:
                plan = self._lead_with(transcript, start, block, inner_state, settings, fresh_from=fresh)
                return self._compaction_due(
                    transcript, start, block, cut, plan, settings, fits=False, inner_state=inner_state, fresh=fresh
                )
            inner = self.inner
            if not isinstance(inner, Shrinks):
                return None
            messages = self._messages(transcript, start, block, settings, fresh_from=fresh)
            smaller = inner.shrink(messages, inner_state, settings)
            return self._wrapped(smaller, transcript, start, block, fresh) if smaller is not None else None
        inner = self.inner
        cut, fresh, inner_state = self._edit_start(transcript, state)
        messages = self._edit_messages(transcript, cut, fresh, settings)
        smaller = inner.shrink(messages, inner_state, settings) if isinstance(inner, Shrinks) else None
        return self._with_edit(smaller, cut, fresh, len(transcript)) if smaller is not None else None

    def _edit_start(
        self, transcript: Sequence[MessageParam], state: Mapping[str, Any]
    ) -> tuple[int, int, Mapping[str, Any]]:
        """With the compaction edit: (where requests start, where the messages produced since they start there
        begin, the inner policy's state if it planned from the same start)."""
        cut = _since_latest_compaction(transcript, state.get("cut", 0), state.get("scanned"))
        if cut != state.get("cut", 0):
            return cut, len(transcript), {}  # a new compaction: every message so far was made before the cut
        fresh = state.get("thinking_from")
        if not (isinstance(fresh, int) and cut <= fresh <= len(transcript)):
            fresh = len(transcript)
        return cut, fresh, state.get("inner", {})

    def _edit_messages(
        self, transcript: Sequence[MessageParam], cut: int, fresh: int, settings: RequestSettings
    ) -> list[MessageParam]:
        """The transcript from `cut`; on models that bind thinking to its prefix, the messages made before the cut
        lose their thinking (it was bound to what the cut left out)."""
        kept = list(transcript[cut:])
        if cut and settings.model.thinking_binding:
            kept = strip_retained_thinking(kept, before=fresh - cut)
        return kept

    def _from_fallback(self, plan: Plan) -> Plan:
        explanation = {**plan.explanation, "policy": self.name, "fallback": plan.explanation.get("policy")}
        return Plan(
            plan.request, {"fallback": dict(plan.state)}, explanation, summary=_routed(plan.summary, "fallback")
        )

    def _with_edit(self, inner: Plan, cut: int, fresh: int, scanned: int) -> Plan:
        """The inner plan (of the transcript from `cut` on, `scanned` messages long) with the compaction edit."""
        edit: dict[str, Any] = {
            "type": "compact_20260112",
            "trigger": {"type": "input_tokens", "value": self.trigger},
        }
        if self.instructions:
            edit["instructions"] = self.instructions
        if self.pause_after_compaction:
            edit["pause_after_compaction"] = True
        request = _with_edit(inner.request, edit, COMPACTION_BETA)
        # Whether the API will compact within this request (its input reaches the trigger): a call of its own,
        # billed on top of the reply (`usage.iterations`), which forecasts and budgets must count.
        estimated = int(inner.explanation.get("estimated_input_tokens") or 0)
        compaction = {"trigger": self.trigger, "expected": estimated >= self.trigger}
        explanation = {
            **inner.explanation,
            "policy": self.name,
            "server_compaction": compaction,
            **in_transcript(inner.explanation, cut),
        }
        state: dict[str, Any] = {"inner": dict(inner.state), "scanned": scanned}
        if cut:
            state.update(cut=cut, thinking_from=fresh)
        return Plan(request, state, explanation, summary=_routed(inner.summary, "inner"))

    def absorb_summary(self, state: Mapping[str, Any], job: SummaryJob, result: Any) -> dict[str, Any]:
        """A compaction block from the explicit request, or a summary from the inner or fallback policy."""
        route = job.context.get(_ROUTE)
        if route:
            hop = route[-1]
            return _absorb_nested(self.inner if hop == "inner" else self.fallback, hop, state, job, result)
        return {
            "block": dict(result),
            "start": job.covers[1],
            "anchor": job.context.get("anchor"),
            "thinking_from": job.context.get("length"),
        }

    def _cut(self, transcript: Sequence[MessageParam]) -> int | None:
        """Where the kept turns begin once compacted (None: not enough turns to compact any)."""
        return keep_last_cut(transcript, self.keep_last)

    def _explicit(
        self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings
    ) -> Plan:
        start, block = _compacted(state, transcript)
        fresh = thinking_from(state, start, transcript)
        inner_state = _inner_state(state, start)
        plan = self._lead_with(transcript, start, block, inner_state, settings, fresh_from=fresh)
        estimated = int(plan.explanation.get("estimated_input_tokens") or 0)
        cut = self._cut(transcript)
        if estimated <= self.trigger or cut is None or cut <= start:
            return plan
        room = settings.model.context_window - settings.max_tokens
        if estimated <= room and settings.model.thinking_binding and in_tool_loop(transcript):
            return plan  # the loop's thinking is bound to this prefix: compact at the next user turn
        return self._compaction_due(
            transcript, start, block, cut, plan, settings, fits=estimated <= room, inner_state=inner_state, fresh=fresh
        )

    def _compaction_due(
        self,
        transcript: Sequence[MessageParam],
        start: int,
        block: Mapping[str, Any] | None,
        cut: int,
        plan: Plan,
        settings: RequestSettings,
        *,
        fits: bool,
        inner_state: Mapping[str, Any],
        fresh: int | None,
    ) -> Plan:
        """`plan` with the explicit compaction request of `transcript[start:cut]` to make first, and the request to
        send if that fails: `plan`'s own when it `fits` the model's window, else the turns from `cut` on. `fresh`:
        where the messages produced under the current block begin (see `thinking_from`)."""
        leaving = self._messages(transcript[:cut], start, None, settings, fresh_from=fresh if fresh else cut)
        compaction: dict[str, Any] = {"type": "summarize"}
        if self.instructions:
            compaction["instructions"] = self.instructions
        request = settings.base_request(normalize(lead_with(block, leaving) if block else leaving))
        everything = len(transcript)  # a new start: every message so far was produced under another prefix
        request.update({"compaction": compaction, "betas": [EXPLICIT_COMPACTION_BETA]})
        # For forecasts: the request after compaction, with a text stand-in of the expected length for the block.
        preview = self.inner.plan(with_summary("summary " * 1_000, transcript[cut:]), cache_only(inner_state), settings)
        job = SummaryJob(
            request,
            (start, cut),
            {"anchor": message_digest(transcript[cut - 1]), "length": everything},
            preview.request,
            "compaction",
            preview_explanation=preview.explanation,
        )
        if not fits:
            fallback = self._lead_with(transcript, cut, None, {}, settings, fresh_from=everything)
            explanation = {**fallback.explanation, "compaction_due": [start, cut], "note": "compaction failed: cut"}
            return Plan(fallback.request, plan.state, explanation, summary=job)
        return Plan(plan.request, plan.state, {**plan.explanation, "compaction_due": [start, cut]}, summary=job)

    def _lead_with(
        self,
        transcript: Sequence[MessageParam],
        start: int,
        block: Mapping[str, Any] | None,
        inner_state: Mapping[str, Any],
        settings: RequestSettings,
        *,
        fresh_from: int | None,
    ) -> Plan:
        messages = self._messages(transcript, start, block, settings, fresh_from=fresh_from)
        inner = self.inner.plan(messages, inner_state, settings)
        return self._wrapped(inner, transcript, start, block, fresh_from)

    def _messages(
        self,
        transcript: Sequence[MessageParam],
        start: int,
        block: Mapping[str, Any] | None,
        settings: RequestSettings,
        *,
        fresh_from: int | None,
    ) -> list[MessageParam]:
        """The turns from `start` on, led by `block`. On models that bind thinking to its prefix, messages before
        `fresh_from` lose their thinking (None: all but the tool loop's), once anything before `start` is gone."""
        kept = list(transcript[start:])
        if start > 0 and settings.model.thinking_binding:
            kept = strip_retained_thinking(kept, before=fresh_from - start if fresh_from is not None else None)
        return lead_with(block, kept) if block else kept

    def _wrapped(
        self,
        inner: Plan,
        transcript: Sequence[MessageParam],
        start: int,
        block: Mapping[str, Any] | None,
        fresh_from: int | None,
    ) -> Plan:
        """The inner policy's plan over the turns from `start` (led by `block`) as this policy's."""
        new_state: dict[str, Any] = {"inner": dict(inner.state)}
        if block:
            new_state.update(block=dict(block), start=start, anchor=message_digest(transcript[start - 1]))
            if fresh_from is not None:
                new_state["thinking_from"] = fresh_from
        explanation = {
            **inner.explanation,
            "policy": self.name,
            "compacted": [[0, start]] if block else [],
            **in_transcript(inner.explanation, start),
        }
        return Plan(inner.request, new_state, explanation, summary=_routed(inner.summary, "inner"))


def _since_latest_compaction(transcript: Sequence[MessageParam], previous: object = 0, scanned: object = None) -> int:
    """Where requests start once the API compacted: the turn holding the latest compaction block. Each compaction
    comes back in its reply; the API takes one block with content per request and drops everything before it
    anyway, so what precedes that turn is left out of the request (a cut at a turn start, like a window's).

    `previous` is the cut planned last and `scanned` how many messages that plan had seen: a newer block can only
    be in a later message, so only those are searched (the whole transcript when they no longer fit it: another
    branch, an undo). This runs on every turn."""
    n = len(transcript)
    valid = (
        isinstance(previous, int)
        and isinstance(scanned, int)
        and 0 <= previous < n
        and 0 < scanned <= n
        and (previous == 0 or (is_turn_start(transcript[previous]) and bool(compaction_start(transcript[previous:]))))
    )
    lower = max(cast(int, scanned) - 1, cast(int, previous) + 1, 1) if valid else 1
    for index in range(n - 1, lower - 1, -1):
        if _holds_compaction(transcript[index]):
            start = last_turn_start(transcript, before=index)
            return start if start is not None else 0
    return cast(int, previous) if valid else 0


def _holds_compaction(message: object) -> bool:
    content = message.get("content") if isinstance(message, Mapping) else None
    return isinstance(content, list | tuple) and any(
        (view := block_view(block)) is not None and view.get("type") == "compaction" and bool(view.get("content"))
        for block in content
    )


def _inner_state(state: Mapping[str, Any], start: int) -> Mapping[str, Any]:
    """The inner policy's state, when it was planned over the same start (not over another branch's block)."""
    inner = state.get("inner", {})
    return inner if start == state.get("start", 0) and isinstance(inner, Mapping) else {}


def _compacted(state: Mapping[str, Any], transcript: Sequence[MessageParam]) -> tuple[int, Mapping[str, Any] | None]:
    """The compacted prefix the state describes, if it still matches the transcript (undo, fork, branches)."""
    start, block = state.get("start", 0), state.get("block")
    if not isinstance(start, int) or start <= 0 or not isinstance(block, Mapping):
        return 0, None
    if start >= len(transcript) or not is_turn_start(transcript[start]):
        return 0, None
    if state.get("anchor") != message_digest(transcript[start - 1]):
        return 0, None
    return start, block


@dataclass(frozen=True, slots=True)
class ClearToolUses:
    """Anthropic's context editing: clear old tool results (and optionally their inputs) server-side."""

    trigger: int = 100_000
    keep: int = 3
    clear_at_least: int | None = None
    exclude_tools: tuple[str, ...] = ()
    clear_tool_inputs: bool = False
    inner: Policy = field(default_factory=FullHistory)
    name: str = "clear-tool-uses"

    def __post_init__(self) -> None:
        check_settings(self, trigger=1, keep=0, clear_at_least=0)

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        return self._with_edit(self.inner.plan(transcript, state.get("inner", {}), settings), settings)

    def shrink(
        self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings
    ) -> Plan | None:
        """The request did not fit: the inner policy drops turns, if it can (None otherwise)."""
        inner = self.inner
        smaller = inner.shrink(transcript, state.get("inner", {}), settings) if isinstance(inner, Shrinks) else None
        return self._with_edit(smaller, settings) if smaller is not None else None

    def _with_edit(self, inner: Plan, settings: RequestSettings) -> Plan:
        new_state = {"inner": dict(inner.state)}
        if not settings.model.context_editing:
            note = f"{settings.model.id} has no context editing: full history sent"
            explanation = {**inner.explanation, "policy": self.name, "note": note}
            return Plan(inner.request, new_state, explanation, summary=_routed(inner.summary, "inner"))
        edit: dict[str, Any] = {
            "type": "clear_tool_uses_20250919",
            "trigger": {"type": "input_tokens", "value": self.trigger},
            "keep": {"type": "tool_uses", "value": self.keep},
        }
        if self.clear_at_least is not None:
            edit["clear_at_least"] = {"type": "input_tokens", "value": self.clear_at_least}
        if self.exclude_tools:
            edit["exclude_tools"] = list(self.exclude_tools)
        if self.clear_tool_inputs:
            edit["clear_tool_inputs"] = True
        request = _with_edit(inner.request, edit, CONTEXT_EDITING_BETA)
        explanation = {**inner.explanation, "policy": self.name, "context_editing": edit}
        return Plan(request, new_state, explanation, summary=_routed(inner.summary, "inner"))

    def absorb_summary(self, state: Mapping[str, Any], job: SummaryJob, result: Any) -> dict[str, Any]:
        """A summary from the inner policy (a Summarize inside)."""
        return _absorb_nested(self.inner, "inner", state, job, result)
