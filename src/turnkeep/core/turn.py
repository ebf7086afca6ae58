"""One turn as a sans-IO state machine: it says which request to send next and folds in each response.

A driver (sync or async, streaming or not) does only this::

    call = turn.start()
    while call is not None:
        call = turn.receive(send(call.request))
    outcome = turn.outcome()

Everything else is decided here, without I/O: continuing a reply cut by `max_tokens` (`auto_continue`),
resuming a `pause_turn`, merging the pieces into one assistant message, prefill (native or by instruction),
and validating every request before it is emitted.

How a truncated reply is continued depends on the model. Where prefill is accepted (and thinking is off), the
partial reply is sent back as the final assistant message and the model continues it verbatim. Elsewhere a
final assistant message would be rejected, so the partial reply is sent as a complete assistant turn followed
by a short user message asking to continue; the stored result is still one merged assistant message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from anthropic.types import Message, MessageParam

from turnkeep.core import rules
from turnkeep.core.catalog import ModelInfo
from turnkeep.core.messages import Block, as_blocks, merge_assistant_content, text_of
from turnkeep.core.policies.base import Plan
from turnkeep.core.signals import fallback_retry, refusal_fallback
from turnkeep.errors import TurnkeepError, TurnOrderError

__all__ = ["CONTINUE_PROMPT", "Call", "Turn", "TurnOutcome", "is_prompt_too_long", "prefill_instruction"]

CONTINUE_PROMPT = (
    "Your previous reply was cut off by the output limit. Continue it exactly where it stopped, "
    "without repeating anything and without any preamble."
)

Purpose = Literal["summary", "reply", "continue", "resume", "overflow", "fallback"]

# The API reports an over-long prompt as a plain 400 with no error code; its message is the only signal.
_PROMPT_TOO_LONG = "prompt is too long"


@dataclass(frozen=True, slots=True)
class Call:
    """A request the driver must send: keyword arguments for `messages.create` / `messages.stream`."""

    purpose: Purpose
    request: dict[str, Any]

    @property
    def shows_text(self) -> bool:
        """Whether a streaming driver shows this call's text to the user (a summary call's is not the reply)."""
        return self.purpose != "summary"


@dataclass(slots=True)
class TurnOutcome:
    """What a finished turn produced."""

    content: list[Block]
    responses: list[Message]
    stop_reason: str
    continuations: int = 0
    resumes: int = 0
    fell_back: bool = False
    """The first reply was a refusal and the turn was answered again on the model the refusal recommended."""

    @property
    def message(self) -> Message:
        return self.responses[-1]

    @property
    def refused(self) -> bool:
        return self.stop_reason == "refusal"

    @property
    def truncated(self) -> bool:
        return self.stop_reason == "max_tokens"


def prefill_instruction(prefill: str) -> Block:
    """The text block that asks a model without prefill support to begin its reply with `prefill`."""
    return {
        "type": "text",
        "text": f"Begin your reply with exactly the following text, then continue it:\n{prefill}",
    }


def is_prompt_too_long(error: BaseException) -> bool:
    """Whether an API error says the prompt did not fit the model's context window."""
    return getattr(error, "status_code", None) == 400 and _PROMPT_TOO_LONG in str(error)


@dataclass
class Turn:
    """A turn in flight, from the policy's `plan` (already normalised).

    `prefill` is the text the reply must begin with: with `prefill_mode="native"` the request already ends with
    it as an assistant message; with `"instruct"` the user message asks for it and the outcome guarantees it.
    `replan(plan, summary_text_or_None)` is the policy's next plan once the summary call of `plan` answered
    (None: it failed, use the fallback); `shrink(plan)` is a smaller plan after the prompt did not fit (tried once;
    it may carry a summary call of its own to make first; None: the policy cannot shrink, the error stands).
    `lookup` gives the facts of another model (a summary call may use a cheaper one). `refusal_retry`: a refusal
    that names a recommended model is answered once more on that model, with the refusal's fallback credit (mode
    `best_effort`: served at the normal price if the credit cannot be redeemed) and, when the refusal grants a
    prefill claim, its partial reply to continue; skipped when that request is not valid for the recommended model.
    """

    plan: Plan
    model: ModelInfo
    prefill: str | None = None
    prefill_mode: Literal["native", "instruct"] | None = None
    auto_continue: int = 0
    max_resumes: int = 5
    replan: Callable[[Plan, str | dict[str, Any] | None], Plan] | None = None
    shrink: Callable[[Plan], Plan | None] | None = None
    lookup: Callable[[str], ModelInfo] | None = None
    refusal_retry: bool = False
    checkpoint: rules.Checkpoint | None = None
    """What validating the conversation's previous request settled (advanced as this turn's requests are
    validated), so each validation walks only what is new."""
    _responses: list[Message] = field(default_factory=list, init=False)
    _content: list[Block] = field(default_factory=list, init=False)
    _continuations: int = field(default=0, init=False)
    _resumes: int = field(default=0, init=False)
    _shrunk: bool = field(default=False, init=False)
    _done: bool = field(default=False, init=False)
    _last_purpose: Purpose = field(default="reply", init=False)
    _summarising: bool = field(default=False, init=False)
    _first: Call | None = field(default=None, init=False)
    _sent: dict[str, Any] | None = field(default=None, init=False)
    _fell_back: bool = field(default=False, init=False)
    summarized: bool = field(default=False, init=False)
    """A summary (or compaction) call of this turn answered, and its result is in `plan.state`: worth keeping
    even if the turn then fails, so a retry does not pay for it again."""

    def __post_init__(self) -> None:
        self._summarising = self.plan.summary is not None and self.replan is not None
        self._adopt(self.plan)

    @property
    def request(self) -> dict[str, Any]:
        """The turn's current main request (the plan's)."""
        return self.plan.request

    @property
    def responses(self) -> list[Message]:
        """The responses received so far (a summary call's included)."""
        return list(self._responses)

    @property
    def content(self) -> list[Block]:
        """The assistant content so far: prefill and every received piece, merged."""
        return [dict(b) for b in self._content]

    def start(self) -> Call:
        """The first request of the turn (validated once, however often it is asked for)."""
        if self._first is None:
            if self._summarising:
                assert self.plan.summary is not None
                self._first = self._emit("summary", self.plan.summary.request)
            else:
                self._first = self._emit("reply", self.request)
        return self._first

    def receive(self, message: Message, *, may_resend: bool = True) -> Call | None:
        """Fold in a response; return the next request to send, or None when the turn is over. `may_resend`:
        whether a reply cut by the context window may be replaced by a smaller request's (not once its text was
        shown: the caller would see both)."""
        if self._done:
            raise TurnOrderError("turn already finished")
        self._responses.append(message)
        if self._last_purpose == "summary":
            assert self.plan.summary is not None
            return self._after_summary(self.plan.summary.result(message))
        stop = message.stop_reason
        if stop == "refusal" and may_resend and self._can_fall_back():
            retry = self._fallback(message)
            if retry is not None:
                return retry
        if stop == "model_context_window_exceeded" and may_resend and self._can_shrink():
            smaller = self._overflow()
            if smaller is not None:
                return smaller
        new = [dict(b) for b in as_blocks(message.content)]
        # A continuation's thinking is bound to a request that is never sent again: drop it. A resumed turn's
        # content is the same turn going on, so it is kept whole.
        keep_thinking = self._last_purpose != "continue"
        self._content = merge_assistant_content(self._content, new, keep_thinking=keep_thinking)
        if self._last_purpose == "fallback":
            # Answered on another model: continuing or resuming would go back to the conversation's own model.
            self._done = True
            return None
        # `compaction` (pause_after_compaction) pauses like `pause_turn`: send the reply back to go on.
        if stop in ("pause_turn", "compaction") and self._resumes < self.max_resumes:
            self._resumes += 1
            return self._emit("resume", self._with_messages([*self._base, self._assistant()]))
        if stop == "max_tokens" and self._continuations < self.auto_continue and self._can_continue():
            self._continuations += 1
            return self._emit("continue", self._continuation_request())
        self._done = True
        return None

    def failed(self, error: BaseException) -> Call | None:
        """A request raised `error`: the next request to send instead, or None when the error ends the turn.

        A failed summary call falls back to the plan's own request (the turn is never lost); a prompt that did not
        fit is shrunk by the policy and sent once more."""
        if self._done:
            return None
        if self._last_purpose == "summary":
            return self._after_summary(None)
        if is_prompt_too_long(error) and self._can_shrink():
            return self._overflow()
        return None

    def outcome(self) -> TurnOutcome:
        """The merged result; only after `receive` returned None."""
        if not self._done:
            raise TurnOrderError("turn not finished")
        content = self._content
        if self.prefill_mode == "instruct" and self.prefill:
            content = _ensure_prefix(content, self.prefill)
        last = self._responses[-1]
        return TurnOutcome(
            content=content,
            responses=list(self._responses),
            stop_reason=str(last.stop_reason),
            continuations=self._continuations,
            resumes=self._resumes,
            fell_back=self._fell_back,
        )

    # -- internals ---------------------------------------------------------------------------------------------

    def _adopt(self, plan: Plan) -> None:
        self.plan = plan
        messages: Sequence[MessageParam] = plan.request["messages"]  # read, never changed: not copied
        # The conversation the turn extends, without a native prefill (which becomes part of the reply).
        self._base: Sequence[MessageParam] = messages[:-1] if self.prefill_mode == "native" else messages
        self._content = as_blocks(messages[-1]["content"]) if self.prefill_mode == "native" else []

    def _after_summary(self, result: str | dict[str, Any] | None) -> Call:
        assert self.replan is not None
        self._summarising = False
        self.summarized = self.summarized or result is not None
        self._adopt(self.replan(self.plan, result))
        return self._emit("reply", self.request)

    def _can_shrink(self) -> bool:
        # Only the first answer to the turn is retried smaller; a continuation has content worth keeping.
        return self.shrink is not None and not self._shrunk and self._continuations == 0 and self._resumes == 0

    def _overflow(self) -> Call | None:
        assert self.shrink is not None
        self._shrunk = True
        smaller = self.shrink(self.plan)
        if smaller is None:
            return None
        self._adopt(smaller)
        if smaller.summary is not None and self.replan is not None:
            # The policy compacts rather than drops: its summary call first, then the request it leads to.
            self._summarising = True
            return self._emit("summary", smaller.summary.request)
        return self._emit("overflow", self.request)

    def _emit(self, purpose: Purpose, request: dict[str, Any]) -> Call:
        model = self.model
        if request["model"] != model.id and self.lookup is not None:
            model = self.lookup(str(request["model"]))
        if model is self.model:
            self.checkpoint = rules.validate(request, model, since=self.checkpoint)
        else:
            rules.validate(request, model)  # a summary or fallback call on another model: not this prefix
        self._last_purpose = purpose
        self._sent = request
        return Call(purpose, request)

    def _can_fall_back(self) -> bool:
        # Only an answer to the turn's own request, once, and not after a continuation was already shown.
        return (
            self.refusal_retry
            and self.lookup is not None
            and not self._fell_back
            and self._last_purpose in ("reply", "overflow")
            and self._continuations == 0
            and self._resumes == 0
        )

    def _fallback(self, message: Message) -> Call | None:
        """The retry a refusal invites, or None (no recommended model, or no request valid on it)."""
        refusal = refusal_fallback(message.stop_details)
        if refusal is None or self._sent is None:
            return None
        partial = as_blocks(message.content)
        retry = fallback_retry(self._sent, refusal, partial, mode="best_effort")
        if retry is None:
            return None
        try:
            call = self._emit("fallback", retry)
        except TurnkeepError:
            return None  # e.g. the recommended model does not accept this thinking setting: the refusal stands
        self._fell_back = True
        # With a prefill claim the retry continues the partial reply (its last message); otherwise it starts over.
        continued = len(retry["messages"]) > len(self._base) and retry["messages"][-1]["role"] == "assistant"
        self._content = as_blocks(retry["messages"][-1]["content"]) if continued else []
        return call

    def _assistant(self) -> MessageParam:
        return cast(MessageParam, {"role": "assistant", "content": [dict(b) for b in self._content]})

    def _with_messages(self, messages: list[MessageParam]) -> dict[str, Any]:
        return {**self.request, "messages": rules.normalize(messages)}

    def _thinking_on(self) -> bool:
        thinking = self.request.get("thinking")
        return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")

    def _can_continue(self) -> bool:
        # Only text can be continued; a reply cut inside a tool call must be asked for again instead.
        return bool(self._content) and self._content[-1]["type"] == "text" and bool(text_of(self._content).strip())

    def _continuation_request(self) -> dict[str, Any]:
        if self.model.prefill and not self._thinking_on():
            # normalize() strips the prefill's trailing whitespace; keep our copy identical to what is sent.
            request = self._with_messages([*self._base, self._assistant()])
            self._content = as_blocks(request["messages"][-1]["content"])
            return request
        prompt = cast(MessageParam, {"role": "user", "content": CONTINUE_PROMPT})
        return self._with_messages([*self._base, self._assistant(), prompt])


def _ensure_prefix(content: list[Block], prefill: str) -> list[Block]:
    """Make the first text block start with `prefill` (the model was asked to, but may not have)."""
    blocks = [dict(b) for b in content]
    for block in blocks:
        if block["type"] == "text":
            text = block["text"]
            stripped = text.lstrip()
            if stripped.startswith(prefill):
                block["text"] = stripped
            else:
                block["text"] = prefill + text
            return blocks
    return [*blocks, {"type": "text", "text": prefill}]
