"""`Summarize`: old turns are folded into a running summary by a model call; recent turns stay verbatim.

How it works, per turn:
- The request is the summary (as leading text of the first kept user message, marked as a summary) followed by
  the turns since the summary, planned for caching by an inner policy (FullHistory, or a TokenBudget as a safety
  net). Between summaries the request only grows at the end, so the prompt cache keeps working.
- When the estimated request passes `trigger` tokens, the plan carries a `SummaryJob`: fold the turns that leave
  (all but the last `keep_last`) into the summary, incrementally (the new summary is written from the old one plus
  the leaving turns, never from the whole history again). The conversation runs the job as its own request (with
  its own ledger entry, on `model` if given: a cheaper model may write summaries) and hands the text back through
  `absorb_summary`; the summary is then stored in the policy state and reused on every later turn.
- If the summary call fails, the turn is sent with the plan's fallback request, which keeps everything that still
  fits the model's window (and drops the oldest turns only when it does not): the turn is never lost, and the
  summary is tried again on the next turn.
- On models that bind thinking blocks to their prefix, once a summary replaces the start of the conversation the
  thinking of every message produced before it is stripped (those blocks would no longer verify), and the thinking
  of the messages produced after it is kept (the state's `thinking_from` says where they begin). A summary that
  falls due inside a tool loop waits for the next user turn, so that the loop keeps its thinking, unless the
  request would not fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from turnkeep.core.messages import as_blocks, without_thinking
from turnkeep.core.policies.base import Plan, Policy, RequestSettings, Shrinks, SummaryJob, check_settings
from turnkeep.core.policies.caching import message_digest
from turnkeep.core.policies.turns import in_tool_loop, is_turn_start, keep_last_cut, turn_starts
from turnkeep.core.policies.window import FullHistory
from turnkeep.core.tokens import estimate_request

if TYPE_CHECKING:
    from anthropic.types import MessageParam

__all__ = [
    "SUMMARY_MARKER",
    "Summarize",
    "lead_with",
    "render_transcript",
    "strip_retained_thinking",
    "thinking_from",
    "with_summary",
]

SUMMARY_MARKER = "[Summary of the earlier conversation]"
_SUMMARY_END = "[End of summary; the conversation continues below.]"

SUMMARY_SYSTEM = (
    "You maintain a running summary of a conversation between a user and an assistant, for the assistant's own "
    "later use. Keep every fact, name, number, decision, open question and commitment; drop pleasantries. "
    "Write plain prose, in the third person, no preamble."
)


@dataclass(frozen=True, slots=True)
class Summarize:
    """Summarise turns that leave the window; keep the last `keep_last` turns verbatim.

    `trigger`: estimated input tokens of a request above which old turns are summarised. `model`: the model that
    writes summaries (None: the conversation's). `inner`: the policy that plans the summarised transcript (caching,
    and a token budget as a safety net if it is a TokenBudget); turns it leaves out (a window's step) are
    summarised too, whatever the trigger, so nothing leaves the context without entering the summary.
    """

    trigger: int = 50_000
    keep_last: int = 6
    model: str | None = None
    max_summary_tokens: int = 2_048
    inner: Policy = field(default_factory=FullHistory)
    name: str = "summarize"

    def __post_init__(self) -> None:
        check_settings(self, trigger=1, keep_last=1, max_summary_tokens=1)

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        start, summary = _valid(state, transcript)
        inner_state = state.get("inner", {}) if start == state.get("start", 0) else {}
        fresh = thinking_from(state, start, transcript)
        plan = self._planned(transcript, start, summary, inner_state, settings, fresh_from=fresh)
        estimated = int(
            plan.explanation.get("estimated_input_tokens") or estimate_request(plan.request, settings.model)
        )
        cut = self._cut(transcript)
        if estimated <= self.trigger or cut is None or cut <= start:
            cut = None
        # Turns an inner window left out are summarised too, so that they are not simply lost.
        left_out = max((end for _, end in plan.explanation.get("dropped") or []), default=start)
        if start < left_out < len(transcript) and is_turn_start(transcript[left_out]):
            cut = max(cut or start, left_out)
        if cut is None:
            return plan
        room = settings.model.context_window - settings.max_tokens
        if estimated <= room and settings.model.thinking_binding and in_tool_loop(transcript):
            return plan  # the loop's thinking is bound to this prefix: summarise at the next user turn
        return self._summary_due(
            transcript, start, summary, cut, plan, settings, fits=estimated <= room, inner_state=inner_state
        )

    def shrink(
        self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings
    ) -> Plan | None:
        """The request did not fit the model's window: summarise now (then send the rest; if the summary call
        fails, only the turns a summary would have kept), or, with nothing left to summarise, let the inner policy
        drop turns. None when neither can make the request smaller."""
        start, summary = _valid(state, transcript)
        inner_state = state.get("inner", {}) if start == state.get("start", 0) else {}
        fresh = thinking_from(state, start, transcript)
        cut = self._cut(transcript)
        if cut is not None and cut > start:
            plan = self._planned(transcript, start, summary, inner_state, settings, fresh_from=fresh)
            return self._summary_due(
                transcript, start, summary, cut, plan, settings, fits=False, inner_state=inner_state
            )
        inner = self.inner
        if not isinstance(inner, Shrinks):
            return None
        messages = self._messages(transcript, start, summary, settings, fresh_from=fresh)
        smaller = inner.shrink(messages, inner_state, settings)
        return self._wrapped(smaller, transcript, start, summary, None, fresh) if smaller is not None else None

    def _cut(self, transcript: Sequence[MessageParam]) -> int | None:
        """Where the kept turns begin once a summary is written (None: not enough turns to summarise any)."""
        return keep_last_cut(transcript, self.keep_last)

    def _summary_due(
        self,
        transcript: Sequence[MessageParam],
        start: int,
        summary: str | None,
        cut: int,
        plan: Plan,
        settings: RequestSettings,
        *,
        fits: bool,
        inner_state: Mapping[str, Any],
    ) -> Plan:
        """`plan` with the summary call of `transcript[start:cut]` to make first, and the request to send if that
        fails: `plan`'s own when it `fits` the model's window, else only the turns from `cut` on. `inner_state`:
        the inner policy's state before this plan (its cache fingerprint prices the request after the summary)."""
        # For forecasts: the request after the summary, with the old summary (or a stand-in of half the allowed
        # length) where the new one will go.
        stand_in = summary or "summary " * (self.max_summary_tokens // 2)
        # A new start: every message so far was produced under another prefix.
        everything = len(transcript)
        preview = self._planned(transcript, cut, stand_in, cache_only(inner_state), settings, fresh_from=everything)
        job = SummaryJob(
            self._summary_request(transcript[start:cut], summary, settings),
            (start, cut),
            {"anchor": message_digest(transcript[cut - 1]), "length": everything},
            preview.request,
            preview_explanation=preview.explanation,
        )
        if not fits:
            note = "summary failed: window fallback"
            fallback = self._planned(transcript, cut, summary, {}, settings, note=note, fresh_from=everything)
            explanation = {**fallback.explanation, "summary_due": [start, cut]}
            return Plan(fallback.request, plan.state, explanation, summary=job)
        return Plan(plan.request, plan.state, {**plan.explanation, "summary_due": [start, cut]}, summary=job)

    def absorb_summary(self, state: Mapping[str, Any], job: SummaryJob, text: str) -> dict[str, Any]:
        """The state after the summary call answered `text` for `job`."""
        return {
            "start": job.covers[1],
            "summary": text.strip(),
            "summaries": int(state.get("summaries", 0)) + 1,
            "anchor": job.context.get("anchor"),
            "thinking_from": job.context.get("length"),
        }

    def _planned(
        self,
        transcript: Sequence[MessageParam],
        start: int,
        summary: str | None,
        inner_state: Mapping[str, Any],
        settings: RequestSettings,
        *,
        note: str | None = None,
        fresh_from: int | None = None,
    ) -> Plan:
        messages = self._messages(transcript, start, summary, settings, fresh_from=fresh_from)
        inner = self.inner.plan(messages, inner_state, settings)
        return self._wrapped(inner, transcript, start, summary, note, fresh_from)

    def _messages(
        self,
        transcript: Sequence[MessageParam],
        start: int,
        summary: str | None,
        settings: RequestSettings,
        *,
        fresh_from: int | None,
    ) -> list[MessageParam]:
        """What the inner policy plans: the turns from `start` on, led by the summary. On models that bind thinking
        to its prefix, messages before `fresh_from` lose their thinking (None: all but the tool loop's)."""
        kept = list(transcript[start:])
        if start > 0 and settings.model.thinking_binding:
            before = fresh_from - start if fresh_from is not None else None
            kept = strip_retained_thinking(kept, before=before)
        return with_summary(summary, kept) if summary else kept

    def _wrapped(
        self,
        inner: Plan,
        transcript: Sequence[MessageParam],
        start: int,
        summary: str | None,
        note: str | None,
        fresh_from: int | None,
    ) -> Plan:
        """The inner policy's plan as this policy's: its state kept inside ours, its ranges in transcript indices."""
        state: dict[str, Any] = {"start": start, "summary": summary, "inner": dict(inner.state)}
        if start > 0:
            state["anchor"] = message_digest(transcript[start - 1])
        if fresh_from is not None:
            state["thinking_from"] = fresh_from
        explanation = {
            **inner.explanation,
            "policy": self.name,
            "inner": inner.explanation.get("policy"),
            "summarized": [[0, start]] if summary else [],
            **in_transcript(inner.explanation, start),
        }
        if note:
            explanation["note"] = note
        return Plan(inner.request, state, explanation)

    def _summary_request(
        self, leaving: Sequence[MessageParam], previous: str | None, settings: RequestSettings
    ) -> dict[str, Any]:
        parts = []
        if previous:
            parts.append(f"The summary so far:\n{previous}\n")
        parts.append(f"Conversation to fold into the summary:\n{render_transcript(leaving)}\n")
        parts.append("Summarise the conversation above into one updated summary.")
        return {
            "model": self.model or settings.model.id,
            "max_tokens": self.max_summary_tokens,
            "system": SUMMARY_SYSTEM,
            "messages": [{"role": "user", "content": "\n".join(parts)}],
        }


def with_summary(summary: str, kept: Sequence[MessageParam]) -> list[MessageParam]:
    """`kept` (starting with a user turn) with the summary as leading, marked text of its first message."""
    return lead_with({"type": "text", "text": f"{SUMMARY_MARKER}\n{summary}\n{_SUMMARY_END}"}, kept)


def lead_with(block: Mapping[str, Any], kept: Sequence[MessageParam]) -> list[MessageParam]:
    """`kept` (starting with a user turn) with `block` first in its first message: where what replaces the
    dropped turns (a summary, a compaction block) goes."""
    first = kept[0]
    merged = cast("MessageParam", {"role": "user", "content": [dict(block), *as_blocks(first["content"])]})
    return [merged, *kept[1:]]


def cache_only(state: Mapping[str, Any]) -> dict[str, Any]:
    """Only the cache fingerprint of a policy's state: what a plan over another start may still compare with
    (the system prefix stays cached when the messages change)."""
    cache = state.get("cache") if isinstance(state, Mapping) else None
    return {"cache": cache} if isinstance(cache, Mapping) else {}


def in_transcript(explanation: Mapping[str, Any], start: int) -> dict[str, Any]:
    """An inner plan's `kept`, `dropped` and `step`, planned over `transcript[start:]` (led by what replaces the
    turns before `start`: the same number of messages), as indices of the whole transcript."""
    out: dict[str, Any] = {}
    kept = explanation.get("kept")
    if isinstance(kept, list | tuple) and len(kept) == 2:
        out["kept"] = [start + kept[0], start + kept[1]]
    out["dropped"] = [[start + first, start + end] for first, end in explanation.get("dropped") or []]
    step = explanation.get("step")
    if isinstance(step, Mapping):
        out["step"] = {**step, "from": start + step["from"], "to": start + step["to"]}
    return out


def render_transcript(messages: Sequence[MessageParam]) -> str:
    """Messages as plain text for a summary request: one line per block, deterministic."""
    lines = []
    for message in messages:
        role = str(message["role"]).capitalize()
        for block in as_blocks(message["content"]):
            kind = block["type"]
            if kind == "text":
                lines.append(f"{role}: {block['text']}")
            elif kind == "tool_use":
                arguments = json.dumps(block.get("input", {}), ensure_ascii=False, sort_keys=True)
                lines.append(f"{role} called tool {block.get('name')}({arguments})")
            elif kind == "tool_result":
                content = block.get("content", "")
                text = (
                    content
                    if isinstance(content, str)
                    else " ".join(b.get("text", "") for b in content if isinstance(b, Mapping))
                )
                error = " (error)" if block.get("is_error") else ""
                lines.append(f"Tool result{error}: {text}")
            elif kind == "compaction" and block.get("content"):
                lines.append(f"Earlier summary: {block['content']}")
    return "\n".join(lines)


def _valid(state: Mapping[str, Any], transcript: Sequence[MessageParam]) -> tuple[int, str | None]:
    """The summarised prefix the state describes, if it still matches the transcript (undo, fork, branches)."""
    start = state.get("start", 0)
    summary = state.get("summary")
    if not isinstance(start, int) or start <= 0 or not summary:
        return 0, None
    if start >= len(transcript) or not is_turn_start(transcript[start]):
        return 0, None
    if state.get("anchor") != message_digest(transcript[start - 1]):
        return 0, None
    return start, str(summary)


def strip_retained_thinking(messages: Sequence[MessageParam], *, before: int | None = None) -> list[MessageParam]:
    """Drop the thinking of assistant messages whose prefix changed: those before index `before` (the ones that
    existed when the prefix last changed), or with `before=None`, every one before the last turn start (the tool
    loop in progress keeps its own)."""
    if before is None:
        starts = turn_starts(messages)
        before = starts[-1] if starts else 0
    return [
        cast("MessageParam", without_thinking(message))
        if message["role"] == "assistant" and index < before
        else message
        for index, message in enumerate(messages)
    ]


def thinking_from(state: Mapping[str, Any], start: int, transcript: Sequence[MessageParam]) -> int | None:
    """Where the messages produced under the state's prefix (its summary or compaction block at `start`) begin:
    the ones before lost their thinking's prefix. None when the state does not say (kept from before it did)."""
    value = state.get("thinking_from")
    if start > 0 and start == state.get("start") and isinstance(value, int) and start <= value <= len(transcript):
        return value
    return None
