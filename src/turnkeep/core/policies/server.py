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
from dataclasses import dataclass, field
from typing import Any

from anthropic.types import MessageParam

from turnkeep.core.policies import FullHistory, Plan, Policy, RequestSettings
from turnkeep.core.policies.summarize import Summarize
from turnkeep.errors import ConfigError

__all__ = ["COMPACTION_BETA", "CONTEXT_EDITING_BETA", "ClearToolUses", "ServerCompaction"]

COMPACTION_BETA = "compact-2026-01-12"
CONTEXT_EDITING_BETA = "context-management-2025-06-27"
_MIN_COMPACTION_TRIGGER = 50_000


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
    """Anthropic's server-side compaction where the model supports it; `fallback` elsewhere."""

    trigger: int = 150_000
    pause_after_compaction: bool = False
    instructions: str | None = None
    inner: Policy = field(default_factory=FullHistory)
    fallback: Policy = field(default_factory=Summarize)
    name: str = "server-compaction"

    def __post_init__(self) -> None:
        if self.trigger < _MIN_COMPACTION_TRIGGER:
            raise ConfigError(
                f"ServerCompaction trigger must be at least {_MIN_COMPACTION_TRIGGER:,} tokens (the API's)"
            )

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        if not settings.model.compaction:
            plan = self.fallback.plan(transcript, state.get("fallback", {}), settings)
            explanation = {**plan.explanation, "policy": self.name, "fallback": plan.explanation.get("policy")}
            return Plan(plan.request, {"fallback": dict(plan.state)}, explanation, summary=plan.summary)
        inner = self.inner.plan(transcript, state.get("inner", {}), settings)
        edit: dict[str, Any] = {
            "type": "compact_20260112",
            "trigger": {"type": "input_tokens", "value": self.trigger},
        }
        if self.instructions:
            edit["instructions"] = self.instructions
        if self.pause_after_compaction:
            edit["pause_after_compaction"] = True
        request = _with_edit(inner.request, edit, COMPACTION_BETA)
        explanation = {**inner.explanation, "policy": self.name, "server_compaction": {"trigger": self.trigger}}
        return Plan(request, {"inner": dict(inner.state)}, explanation)

    def absorb_summary(self, state: Mapping[str, Any], job: Any, text: str) -> dict[str, Any]:
        """Summaries come only from the fallback policy."""
        absorb = getattr(self.fallback, "absorb_summary")  # noqa: B009 - the fallback's optional method
        return {"fallback": absorb(state.get("fallback", {}), job, text)}


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

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        inner = self.inner.plan(transcript, state.get("inner", {}), settings)
        new_state = {"inner": dict(inner.state)}
        if not settings.model.context_editing:
            note = f"{settings.model.id} has no context editing: full history sent"
            return Plan(inner.request, new_state, {**inner.explanation, "policy": self.name, "note": note})
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
        return Plan(request, new_state, {**inner.explanation, "policy": self.name, "context_editing": edit})
