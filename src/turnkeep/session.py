"""The logic `Conversation` and `AsyncConversation` share, below their drivers in `client.py`.

`ConversationCore` holds one branch of a conversation and decides everything but the calls to the API, as values:
the branch's message path (`branch.BranchPath`), the ledger's facts and what answered requests taught
(`ledger.Ledger`), the settings and the policy's state. A turn is planned by `core.planner.plan_turn`; every
store write is a `Change` (writes as data, `core.writes`, and the in-memory mirror to run once they are stored),
which the driver applies to a `Store` or awaits on an `AsyncStore`. A turn runs as `flow`, a generator that
yields the calls to send and the changes to store, so the sync and async drivers only loop over it and behave
the same by construction.
"""

from __future__ import annotations

import functools
import time
import uuid
import warnings
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NoReturn, cast

from anthropic.types import Message, MessageParam, ToolUseBlock
from anthropic.types.refusal_stop_details import RefusalStopDetails

from turnkeep import attempt_costs, config
from turnkeep.attempts import AttemptLog
from turnkeep.branch import BranchPath
from turnkeep.core import budget as budget_core
from turnkeep.core import rules
from turnkeep.core import threads as threads_core
from turnkeep.core.budget import Budget
from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.messages import (
    Block,
    as_blocks,
    merge_assistant_content,
    text_of,
    tool_result_block,
    user_content,
)
from turnkeep.core.planner import TurnDecision, TurnInput, plan_turn
from turnkeep.core.planner import forecast_plan as planned_forecast
from turnkeep.core.policies import (
    FullHistory,
    Plan,
    Policy,
    RequestSettings,
    persisted_state,
    policy_from_settings,
    policy_settings,
    unknown_models,
)
from turnkeep.core.pricing import Cost, TokenCounts, message_cost, token_counts, usage_of
from turnkeep.core.signals import RefusalFallback, refusal_fallback, thread_history_ignored
from turnkeep.core.turn import Call, Turn, TurnOutcome, prefill_instruction
from turnkeep.core.writes import Append, Create, Discard, MoveHead, Record, UpdateSettings, Write
from turnkeep.errors import (
    ConflictError,
    ContextWindowExceeded,
    PrefillNotSupported,
    UnknownConversation,
    UsageError,
)
from turnkeep.ledger import Ledger, LedgerFacts
from turnkeep.sdk import is_transport_failure, request_parameters, transport_error
from turnkeep.store import LedgerEntry, MemoryStore, Node, NodeStatus, Store

__all__ = [
    "Change",
    "ConversationCore",
    "LedgerFacts",
    "PendingTurn",
    "PrefillFallback",
    "Reply",
    "Sent",
    "partial_content",
    "raise_ours",
]

PrefillFallback = Literal["error", "instruct"]

_UNSET: Any = object()

# Request options turnkeep decides itself; passing them per turn would bypass the conversation's history.
_RESERVED = frozenset({"messages", "model", "stream"})


@dataclass(frozen=True)
class Reply:
    """The assistant's answer to one turn (continuations and resumes merged into one message)."""

    content: list[Block]
    message: Message
    responses: list[Message]
    usage: TokenCounts
    cost: Cost
    stop_reason: str
    partial: bool = False
    fell_back: bool = False
    """The first answer was a refusal and this reply came from the model it recommended (`refusal_retry`)."""

    @property
    def text(self) -> str:
        """The reply's text (a prefill included)."""
        return text_of(self.content)

    @property
    def truncated(self) -> bool:
        """The reply stopped at `max_tokens` (after any automatic continuations)."""
        return self.stop_reason == "max_tokens"

    @property
    def refused(self) -> bool:
        return self.stop_reason == "refusal"

    @property
    def refusal(self) -> RefusalStopDetails | None:
        """Category and explanation of a refusal, when the API gave them."""
        return self.message.stop_details if self.refused else None

    @property
    def fallback(self) -> RefusalFallback | None:
        """A refusal's fallback details (credit token, recommended model, prefill claim), when the API gave them."""
        return refusal_fallback(self.message.stop_details) if self.refused else None

    @property
    def tool_calls(self) -> list[ToolUseBlock]:
        """The tools the model asked to call; answer them with `send_tool_results`."""
        return [ToolUseBlock.model_validate(b) for b in self.content if b["type"] == "tool_use"]


@dataclass
class PendingTurn:
    """A turn between its pending write and its commit."""

    turn: Turn
    plan: Plan
    pending_ids: list[str]
    ledger: list[LedgerEntry] = field(default_factory=list)
    reply: Reply | None = None
    """The partial reply kept when the turn stopped early."""
    attempts: AttemptLog = field(default_factory=AttemptLog)
    """Every HTTP attempt of the turn's calls (the SDK's retries included), for the ledger (`attempt_costs`)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What happened to a call, as a driver reports it back to the turn: the message (for a failed stream, what
    had arrived), or the error, with its latency and request id. `may_resend` is False once text reached the
    caller (a resend would repeat it)."""

    message: Message | None
    latency: float
    error: BaseException | None = None
    request_id: str | None = None
    may_resend: bool = True


def raise_ours(error: BaseException) -> NoReturn:
    """Re-raise a call's error; a raw transport failure the SDK let through becomes `TransportError`."""
    if is_transport_failure(error):
        raise transport_error(error) from error
    raise error


def _nothing() -> None:
    return None


@dataclass
class Change:
    """Store writes a conversation decided on, as data, and what it does in memory once they are stored.

    The driver applies `writes` in order (to a `Store`, or awaited on an `AsyncStore`), then calls `done`. When
    the store says another writer moved the head (`ConflictError`), it applies `on_conflict` instead (requests
    that were paid for are recorded all the same), reads the conversation again and raises."""

    writes: list[Write] = field(default_factory=list)
    done: Callable[[], None] = _nothing
    on_conflict: list[Write] = field(default_factory=list)


class ConversationCore:
    """The logic `Conversation` and `AsyncConversation` share. It calls the store but never the API."""

    def __init__(
        self,
        model: str | None,
        *,
        system: str | list[dict[str, Any]] | None,
        max_tokens: int,
        tools: Sequence[Mapping[str, Any]] | None,
        policy: Policy | None,
        store: Store | None,
        catalog: Catalog | None,
        auto_continue: int,
        max_resumes: int,
        keep_refusals: bool,
        conversation_id: str | None = None,
        refusal_retry: bool = False,
        branch: str = "main",
        clock: Callable[[], float] | None = None,
        threads: bool = False,
        budget: Budget | None = None,
    ) -> None:
        # The wall clock by default; a simulation passes its virtual clock so cache expiry is judged in its time.
        self.clock: Callable[[], float] = clock or time.time
        self._catalog = catalog or config.load_catalog()
        self.model_info: ModelInfo = self._catalog.get(config.model(model))
        if not self.model_info.known:
            config.warn_unknown_model(self.model_info.id)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise UsageError(f"max_tokens must be a positive integer, not {max_tokens!r}")
        if auto_continue < 0 or max_resumes < 0:
            raise UsageError("auto_continue and max_resumes must not be negative")
        self.system = system
        self.max_tokens = max_tokens
        self.tools = [dict(t) for t in tools] if tools else None
        self.policy: Policy = policy or FullHistory()
        self.store: Store = store if store is not None else MemoryStore()
        self.auto_continue = auto_continue
        self.max_resumes = max_resumes
        self.keep_refusals = keep_refusals
        self.refusal_retry = refusal_retry
        self.budget = budget
        self.branch = branch
        # Message threads carry only the new messages while the history grows: a transport choice, stored with the
        # conversation's settings and used on the models that have threads.
        self.threads_requested = threads
        self.threads = threads and self.model_info.threads
        self._checkpoint: rules.Checkpoint | None = None  # what validating the last request settled
        self._queued_instructions: list[str] = []
        self._lifecycle_warned: set[str] = set()
        self._warn_lifecycle()
        # Everything the settings can get wrong is found before anything is stored. A stored conversation on a
        # model retired since opens all the same, to be read or moved to another model; it cannot send.
        if conversation_id is None or self.model_info.lifecycle != "retired":
            self._check_fixed_part()
        if conversation_id is None:
            # A stored conversation opens as it is (to be read, exported or changed); a new one must be sound.
            unknown = unknown_models(self.policy, self._catalog)
            if unknown:
                raise UsageError(f"context policy {self.policy.name!r}: unknown model {unknown[0]!r} for its own calls")
            self.id = uuid.uuid4().hex
            # Written by the driver before anything else (`created`): the conversation exists once it is stored.
            self.created = Change([Create(self.id, self._settings())])
            self.path = BranchPath([])
        else:
            self.id = conversation_id
            self.created = Change()
            self.path = BranchPath(self.store.path(self.id, self.store.branches(self.id).get(branch)))
        # What the ledger says (spending, request times, the last reply), read when first needed: opening a long
        # conversation to look at it should not pay for reading every request it ever sent.
        self.ledger = Ledger(lambda: self.store.ledger(self.id), self._catalog.get, self.clock)
        self._policy_state: dict[str, Any] | None = None  # read when first needed, then kept by commits

    def _warn_lifecycle(self) -> None:
        """Warn once per conversation that its model is deprecated (with the date and the replacement)."""
        notice = rules.lifecycle_warning(self.model_info)
        if notice is not None and self.model_info.id not in self._lifecycle_warned:
            self._lifecycle_warned.add(self.model_info.id)
            warnings.warn(notice, UserWarning, stacklevel=4)

    def _check_fixed_part(self, model: ModelInfo | None = None, system: object = _UNSET) -> None:
        """The system prompt and tools, validated as every request will carry them (so a bad one fails now); for
        another model or system prompt when given (checked before the conversation changes to them)."""
        model = model or self.model_info
        system = self.system if system is _UNSET else system
        if system is not None and not (isinstance(system, str) and system.strip()) and not isinstance(system, list):
            raise UsageError("system must be a non-empty string or a list of text blocks")
        settings = RequestSettings(model, self.max_tokens, cast(Any, system), self.tools, {})
        rules.validate(settings.base_request([{"role": "user", "content": "x"}]), model)

    def refresh(self) -> None:
        """Read this branch again from the store (after another writer moved its head)."""
        self.path = BranchPath(self.store.path(self.id, self.store.branches(self.id).get(self.branch)))
        self._policy_state = None
        self.ledger.forget()
        self._checkpoint = None

    def policy_state(self) -> dict[str, Any]:
        """The context policy's state, as the last committed turn left it."""
        if self._policy_state is None:
            self._policy_state = self.store.policy_state(self.id, self.branch)
        return self._policy_state

    # -- settings and views ------------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        """What `open()` needs to rebuild this conversation (stored with it; never an API key)."""
        return {
            "model": self.model_info.id,
            "system": self.system,
            "max_tokens": self.max_tokens,
            "tools": self.tools,
            "policy": policy_settings(self.policy),
            "auto_continue": self.auto_continue,
            "max_resumes": self.max_resumes,
            "keep_refusals": self.keep_refusals,
            "refusal_retry": self.refusal_retry,
            "budget": self.budget.settings() if self.budget else None,
            "threads": self.threads_requested,
        }

    @classmethod
    def open(
        cls,
        store: Store,
        conversation_id: str,
        *,
        branch: str = "main",
        policy: Policy | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] | None = None,
        threads: bool | None = None,
    ) -> ConversationCore:
        """Rebuild a stored conversation, bound to `branch` (`policy` and `threads`: None keeps the stored ones)."""
        settings = store.settings(conversation_id)
        if branch not in store.branches(conversation_id):
            raise UnknownConversation(f"conversation {conversation_id!r} has no branch {branch!r}")
        return cls(
            settings["model"],
            system=settings.get("system"),
            max_tokens=settings["max_tokens"],
            tools=settings.get("tools"),
            policy=policy or policy_from_settings(settings.get("policy") or {}),
            store=store,
            catalog=catalog,
            auto_continue=settings.get("auto_continue", 0),
            max_resumes=settings.get("max_resumes", 5),
            keep_refusals=settings.get("keep_refusals", False),
            refusal_retry=bool(settings.get("refusal_retry", False)),
            budget=budget_core.Budget.from_settings(settings.get("budget")),
            conversation_id=conversation_id,
            branch=branch,
            clock=clock,
            threads=bool(settings.get("threads", False)) if threads is None else threads,
        )

    def _settings_obj(self, options: Mapping[str, Any]) -> RequestSettings:
        return RequestSettings(self.model_info, self.max_tokens, self.system, self.tools, options)

    @property
    def transcript(self) -> list[Node]:
        """Every node from the root to the head of this branch, refused and partial ones included."""
        return list(self.path.nodes)

    def _ok_messages(self, before: int | None = None, model: ModelInfo | None = None) -> list[MessageParam]:
        """The messages later requests carry, without the thinking the model (the current one by default) cannot
        read (after a model switch: `set_model`, a budget's degrade, `-m` on `--continue`); unchanged messages are
        the same objects."""
        model = model or self.model_info
        messages = self.path.ok_messages(before)
        if self.path.written_only_by(model.id):
            return messages
        return rules.strip_unreadable_thinking(messages, self.path.ok_models(before), model, self._catalog.get)

    @property
    def messages(self) -> list[MessageParam]:
        """Exactly the messages the next request will carry before the new user message."""
        plan = self.policy.plan(self._ok_messages(), self.policy_state(), self._request_settings({}, now=None))
        return cast(list[MessageParam], plan.request["messages"])

    @property
    def pending(self) -> bool:
        """A user message is waiting for its reply (the last call failed or was cut off)."""
        return self.path.pending_index() is not None

    def pending_ids(self) -> tuple[str, ...]:
        """The ids of the pending nodes at the end of the branch (none when no turn is pending)."""
        index = self.path.pending_index()
        return () if index is None else tuple(node.id for node in self.path.nodes[index:])

    def check_pending_seen(self, seen: tuple[str, ...]) -> None:
        """After reading the branch again: a pending turn other than the one this conversation knew of (`seen`) is
        another writer's, in flight: this writer lost the race for the branch."""
        now = self.pending_ids()
        if now and now != seen:
            raise ConflictError(
                f"another writer's turn on branch {self.branch!r} of conversation {self.id} is waiting for its "
                "reply; send again once it is answered"
            )

    def _check_idle(self) -> None:
        if self.pending:
            raise UsageError("the last turn has no reply yet: call retry() to resend it or rollback() to drop it")

    # -- building a turn ---------------------------------------------------------------------------------------

    def begin(
        self,
        content: object,
        *,
        prefill: str | None,
        prefill_fallback: PrefillFallback,
        overrides: Mapping[str, Any],
        kind: str = "turn",
    ) -> tuple[PendingTurn, Change]:
        """Plan the turn and validate it; the change stores the pending user message. Nothing changes, in memory
        or in the store, when the turn is refused."""
        self._check_idle()
        unanswered = self.path.unanswered()
        if unanswered and kind != "tool_results":
            raise UsageError(
                f"the last reply is waiting for tool results ({', '.join(unanswered)}): "
                "answer them with send_tool_results()"
            )
        message_content = user_content(content)
        prefill_mode: Literal["native", "instruct"] | None = None
        meta: dict[str, Any] = {"kind": kind}
        if prefill is not None:
            prefill = prefill.rstrip()  # the API rejects a final assistant message ending in whitespace
            if not prefill:
                prefill = None
        if prefill is not None:
            meta["prefill"] = prefill
            if self.model_info.prefill:
                prefill_mode = "native"
            elif prefill_fallback == "instruct":
                prefill_mode = "instruct"
                message_content = [*as_blocks(message_content), prefill_instruction(prefill)]
            else:
                raise PrefillNotSupported(self.model_info.id)
            meta["prefill_mode"] = prefill_mode
        new_nodes = [self._node({"role": "user", "content": message_content}, "pending", meta)]
        if self._queued_instructions:
            # One system message: the API rejects a system message followed by another.
            texts = self._queued_instructions
            instruction: str | list[Block] = (
                texts[0] if len(texts) == 1 else [{"type": "text", "text": text} for text in texts]
            )
            new_nodes.append(
                self._node(
                    {"role": "system", "content": instruction}, "pending", {"kind": "instruction"}, new_nodes[-1].id
                )
            )
        decision = self._plan_turn(len(self.path), new_nodes, new_nodes, prefill, prefill_mode, overrides)
        pending = PendingTurn(decision.turn, decision.plan, [n.id for n in new_nodes])

        def done() -> None:
            self.path.advance(new_nodes)
            self._switch_model(decision.model)
            self._queued_instructions.clear()

        return pending, Change(decision.writes, done)

    def begin_retry(self, overrides: Mapping[str, Any]) -> tuple[PendingTurn, Change]:
        """Plan the resend of the pending user message; the change stores a model a budget degraded it to."""
        index = self.path.pending_index()
        if index is None:
            raise UsageError("there is no pending turn to retry")
        pending = [n for n in self.path.nodes[index:] if n.status == "pending"]
        meta = pending[0].meta
        decision = self._plan_turn(index, (), pending, meta.get("prefill"), meta.get("prefill_mode"), overrides)
        turn = PendingTurn(decision.turn, decision.plan, [n.id for n in pending])
        return turn, Change(decision.writes, lambda: self._switch_model(decision.model))

    def _switch_model(self, model: ModelInfo) -> None:
        """Later turns run on `model` (a budget's degrade, once its turn was accepted and stored)."""
        if model.id != self.model_info.id:
            self.model_info = model
            self.threads = self.threads_requested and model.threads

    def _plan_turn(
        self,
        before: int,
        new_nodes: Sequence[Node],
        turn_nodes: Sequence[Node],
        prefill: str | None,
        prefill_mode: Literal["native", "instruct"] | None,
        overrides: Mapping[str, Any],
    ) -> TurnDecision:
        now = self.clock()
        self._request_settings(overrides, now=now)  # the options are refused before anything is planned
        return plan_turn(
            TurnInput(
                conversation_id=self.id,
                branch=self.branch,
                head=self.path.head,
                model=self.model_info,
                history=lambda model: self._ok_messages(before, model),
                new_nodes=tuple(new_nodes),
                turn_messages=[cast(MessageParam, n.message) for n in turn_nodes],
                policy=self.policy,
                policy_state=self.policy_state(),
                settings=lambda model: self._request_settings(overrides, now=now, model=model),
                check_fixed_part=self._check_fixed_part,
                lookup=self._catalog.get,
                budget=self.budget,
                spent=self.ledger.facts.spent,
                estimates=self.ledger.estimates,
                prefill=prefill,
                prefill_mode=prefill_mode,
                auto_continue=self.auto_continue,
                max_resumes=self.max_resumes,
                refusal_retry=self.refusal_retry,
                checkpoint=self._checkpoint,
            )
        )

    def explain(self, content: object | None, overrides: Mapping[str, Any]) -> Plan:
        """The plan of the next request (with `content` as its new user message, if given), sending nothing."""
        ok = self._ok_messages()
        if content is not None:
            ok.append(cast(MessageParam, {"role": "user", "content": user_content(content)}))
        plan = self.policy.plan(ok, self.policy_state(), self._request_settings(overrides, now=self.clock()))
        if content is not None:
            rules.validate(plan.request, self.model_info)
        return plan

    def update(self, *, model: str | None = None, system: str | list[dict[str, Any]] | None = None) -> Change:
        """Change the model or the system prompt for later turns (stored with the conversation)."""
        changes: dict[str, Any] = {}
        if model is not None:
            info = self._catalog.get(config.model(model))
            if not info.known:
                config.warn_unknown_model(info.id)
            changes["model"] = info.id
        if system is not None:
            changes["system"] = system
        if not changes:
            return Change()
        info = self._catalog.get(changes["model"]) if "model" in changes else self.model_info
        new_system = changes.get("system", self.system)
        self._check_fixed_part(info, new_system)

        def done() -> None:
            self._switch_model(info)
            self.system = new_system
            self._warn_lifecycle()

        return Change([UpdateSettings(self.id, changes)], done)

    def count_tokens_request(self, plan: Plan) -> dict[str, Any]:
        """The `count_tokens` arguments for a planned request (the same body, minus what it does not take)."""
        allowed = {
            "messages",
            "model",
            "cache_control",
            "output_config",
            "speed",
            "system",
            "thinking",
            "tool_choice",
            "tools",
            "extra_headers",
            "extra_query",
            "extra_body",
            "betas",
            "context_management",
        }
        request = plan.summary.preview if plan.summary and plan.summary.preview else plan.request
        return {key: value for key, value in request.items() if key in allowed}

    def forecast_plan(
        self, plan: Plan, max_tokens: int, *, exact_input_tokens: int | None = None
    ) -> budget_core.Forecast:
        """What sending `plan.request` will cost: exact up to the last answered request, estimated beyond."""
        return planned_forecast(
            plan,
            self.model_info,
            max_tokens,
            self.ledger.facts.spent,
            self.ledger.estimates,
            self._catalog.get,
            exact_input_tokens=exact_input_tokens,
        )

    @property
    def spent(self) -> budget_core.Spent:
        """What this conversation has used so far (every request in its ledger)."""
        return self.ledger.facts.spent

    def _request_settings(
        self, overrides: Mapping[str, Any], *, now: float | None, model: ModelInfo | None = None
    ) -> RequestSettings:
        """The planning settings for a turn with these per-turn overrides, and the clock facts of the edge."""
        reserved = _RESERVED & set(overrides)
        if reserved:
            raise UsageError(f"{', '.join(sorted(reserved))} cannot be overridden per turn")
        # (The removed sampling parameters are left to `rules.validate`, which says why they are refused.)
        unknown = sorted(set(overrides) - request_parameters() - set(rules.REMOVED_SAMPLING_PARAMS))
        if unknown:
            raise UsageError(
                f"unknown request option {unknown[0]}={overrides[unknown[0]]!r}: "
                "per-turn options are keyword arguments of messages.create"
            )
        options = dict(overrides)
        times = self.ledger.facts.request_times
        return RequestSettings(
            model or self.model_info,
            options.pop("max_tokens", self.max_tokens),
            options.pop("system", self.system),
            options.pop("tools", self.tools),
            options,
            now=now,
            last_request_at=times[-1] if times else None,
            gaps=self.ledger.facts.gaps,
            calibration=self.ledger.facts.calibrator.factor,
        )

    def _node(
        self, message: Mapping[str, Any], status: NodeStatus, meta: Mapping[str, Any], parent: str | None = None
    ) -> Node:
        parent_id = parent if parent is not None else self.path.head
        return Node(uuid.uuid4().hex, parent_id, dict(message), status, dict(meta))

    # -- responses, commit, failure ----------------------------------------------------------------------------

    def flow(self, pending: PendingTurn) -> Generator[Call | Change, Sent | None, Reply]:
        """One turn, sans I/O: yields each `Call` to send (the driver sends back what happened, as `Sent`) and each
        `Change` to store (the driver applies it and sends back None); returns the reply. An error that ends the
        turn is raised once what was billed and received is stored, a partial reply on `pending.reply`."""
        call: Call | None = pending.turn.start()
        while call is not None:
            sent = yield call
            assert sent is not None, "a driver answers every call with what happened"
            if sent.error is None:
                assert sent.message is not None
                call = yield from self._answered(pending, call, sent.message, sent)
            else:
                call = yield from self._failed(pending, call, sent.error, sent)
        outcome = pending.turn.outcome()
        self._checkpoint = pending.turn.checkpoint
        if outcome.stop_reason == "model_context_window_exceeded":
            yield self.fail(pending, partial=outcome.content)
            raise ContextWindowExceeded(
                self.model_info.id, "the model stopped because the conversation filled its context window"
            )
        change, reply = self.commit(pending, outcome)
        yield change
        return reply

    def _answered(
        self, pending: PendingTurn, call: Call, message: Message, sent: Sent
    ) -> Generator[Change, None, Call | None]:
        """A call was answered: record it; the turn's next call (None: the turn is over). Once its text reached
        the caller (`may_resend` False) an overflow is not sent again smaller."""
        pending.ledger.extend(attempt_costs.settle_answered(self, pending, call))  # the SDK's retries before it
        entry = self.ledger.entry(call, message, sent.latency, None, request_id=sent.request_id)
        pending.ledger.append(replace(entry, calibration=self.sent(call, message)))
        try:
            return pending.turn.receive(message, may_resend=sent.may_resend)
        except Exception:
            # The turn ends here (e.g. an overflow nothing more can be dropped for): what was billed is recorded.
            yield self.fail(pending, partial=[dict(b) for b in as_blocks(message.content)] or None)
            raise

    def _failed(
        self, pending: PendingTurn, call: Call, error: BaseException, sent: Sent
    ) -> Generator[Change, None, Call]:
        """A call raised: record it (with what a stream had received); the call to send instead — the same one
        when only its thread was lost, the turn's fallback otherwise. When the error ends the turn, what arrived is
        kept as a partial reply and the error is raised (a raw transport failure as `TransportError`)."""
        recorded = self.ledger.entry(call, sent.message, sent.latency, error, request_id=sent.request_id)
        pending.ledger.extend(attempt_costs.settle_failed(self, pending, call, recorded))  # each attempt, billed
        following: Call | None = None
        if sent.may_resend and isinstance(error, Exception):
            if self.thread_failed(error):
                return call
            try:
                following = pending.turn.failed(error)
            except Exception as refused:
                refused.__context__ = refused.__context__ or error  # raised while handling the call's error
                yield self.fail(pending)  # the fallback could not be planned: record the failed call first
                raise
        if following is None:
            change, pending.reply = self.abandon(pending, sent.message)
            yield change
            raise_ours(error)
        return following

    def commit(self, pending: PendingTurn, outcome: TurnOutcome) -> tuple[Change, Reply]:
        """The reply stored and the pending messages settled, in one write."""
        refused = outcome.refused and not self.keep_refusals
        status: NodeStatus = "refused" if refused else "ok"
        reply_meta = {
            "kind": "reply",
            "stop_reason": outcome.stop_reason,
            "message_ids": [m.id for m in outcome.responses],
            "model": outcome.message.model,
        }
        parent = pending.pending_ids[-1]
        reply_node = self._node({"role": "assistant", "content": outcome.content}, status, reply_meta, parent)
        settle: dict[str, NodeStatus] = {}
        for node_id in pending.pending_ids:
            message = self.path.find(node_id).message
            carries_results = any(b["type"] == "tool_result" for b in as_blocks(message["content"]))
            # A refused tool-result message stays: dropping it would orphan the tool calls it answers.
            settle[node_id] = "refused" if refused and not carries_results else "ok"
        ledger, pending.ledger = pending.ledger, []
        state = dict(pending.turn.plan.state)
        append = Append(
            self.id,
            self.branch,
            self.path.head,
            nodes=(reply_node,),
            settle=settle,
            ledger=tuple(replace(entry, node_id=reply_node.id) for entry in ledger),  # the reply they led to
            policy_state=persisted_state(state),
        )

        def done() -> None:
            self._policy_state = state
            self.path.advance([reply_node], settle)

        usage, cost = self._totals(outcome.responses)
        reply = Reply(
            outcome.content,
            outcome.message,
            outcome.responses,
            usage,
            cost,
            outcome.stop_reason,
            fell_back=outcome.fell_back,
        )
        # Another writer moved the head during the call: the requests were still paid for.
        return Change([append], done, on_conflict=[Record(self.id, ledger)] if ledger else []), reply

    def wire(self, call: Call) -> dict[str, Any]:
        """The request to send for `call`: threaded when threads are on and the call continues the conversation,
        and asking the API why the cache missed, if it did, compared with the last reply (cache diagnostics)."""
        if call.purpose == "summary" or call.request.get("model") != self.model_info.id:
            return dict(call.request)
        wire = threads_core.wire_request(call.request, self.ledger.anchor)[0] if self.threads else dict(call.request)
        last_reply = self.ledger.facts.last_reply_id
        if last_reply is not None and "diagnostics" not in wire:
            wire["diagnostics"] = {"previous_message_id": last_reply}
        return wire

    def sent(self, call: Call, message: Message) -> tuple[int, int] | None:
        """A call was answered: calibrate the estimates on what it really measured, and anchor on it. Returns
        what the calibration learned, (estimated, measured) tokens, for the ledger (None: nothing)."""
        if call.purpose == "summary" or call.request.get("model") != self.model_info.id:
            return None
        observation = self.ledger.learn(call.request, message, self.model_info)
        if self.threads and threads_core.continues(call.request, self.ledger.anchor):
            self._check_thread_applied(message)
        self.ledger.anchor_on(call.request, message, self.model_info)
        return observation

    def _check_thread_applied(self, message: Message) -> None:
        """A server that ignores `thread` answers a continue from its new messages alone: send full requests for
        the rest of this conversation, and say so once."""
        assert self.ledger.anchor is not None
        if thread_history_ignored(self.ledger.anchor.tokens, usage_of(message)):
            self.threads = self.threads_requested = False
            warnings.warn(
                f"the server answered a thread continue of conversation {self.id} without its history (input "
                "tokens too few): sending full requests from now on",
                UserWarning,
                stacklevel=2,
            )

    def thread_failed(self, error: BaseException) -> bool:
        """Whether a failed call should simply be sent again because only its thread was the problem."""
        if not self.threads:
            return False
        if threads_core.unsupported(error):
            self.threads = False  # this and later requests go unthreaded
            return True
        if threads_core.lost(error) and self.ledger.anchor is not None:
            self.ledger.anchor = None  # resend the whole request as a new thread (once: a create has no thread to lose)
            return True
        return False

    def _answered_by(self, message: Message) -> ModelInfo:
        """The catalog's facts of the model that wrote `message` (the conversation's own when it is not known)."""
        info = self._catalog.get(message.model)
        return info if info.known else self.model_info

    def _totals(self, responses: Sequence[Message]) -> tuple[TokenCounts, Cost]:
        counts = sum((token_counts(usage_of(m)) for m in responses), TokenCounts())
        # Each response on the model that answered it (a summary or refusal fallback may use another one).
        cost = sum((message_cost(m, self._answered_by(m), model_prices=self._catalog.get) for m in responses), Cost())
        return counts, cost

    def fail(self, pending: PendingTurn, *, partial: Sequence[Block] | None = None) -> Change:
        """The turn failed: record what was billed and keep a partial reply for display; the user message stays
        pending."""
        self._checkpoint = pending.turn.checkpoint
        nodes = []
        if partial:
            nodes.append(
                self._node(
                    {"role": "assistant", "content": list(partial)},
                    "partial",
                    {"kind": "partial"},
                    pending.pending_ids[-1],
                )
            )
        # A summary written during the turn is kept (it covers committed turns only); the retry reuses it.
        state = dict(pending.turn.plan.state) if pending.turn.summarized else None
        ledger, pending.ledger = pending.ledger, []
        if not nodes and state is None:
            return Change([Record(self.id, ledger)] if ledger else [])

        def done() -> None:
            self.path.advance(nodes)
            if state is not None:
                self._policy_state = state

        append = Append(
            self.id,
            self.branch,
            self.path.head,
            nodes=tuple(nodes),
            ledger=tuple(ledger),
            policy_state=persisted_state(state) if state is not None else None,
        )
        # Another writer moved the head (it answered this turn first): the requests were still paid for.
        return Change([append], done, on_conflict=[Record(self.id, ledger)] if ledger else [])

    def abandon(self, pending: PendingTurn, snapshot: Message | None) -> tuple[Change, Reply | None]:
        """A turn that stopped early (an error, or a stream left unfinished): what arrived is kept as a partial
        reply, never sent back, and returned marked partial (None when nothing was received)."""
        content = partial_content(pending.turn, snapshot)
        change = self.fail(pending, partial=content or None)
        responses = [*pending.turn.responses, *([snapshot] if snapshot is not None else [])]
        if not responses:
            return change, None
        usage, cost = self._totals(responses)
        return change, Reply(list(content), responses[-1], responses, usage, cost, "partial", partial=True)

    # -- history operations --------------------------------------------------------------------------------------

    def add(self, role: Literal["user", "assistant"], content: object) -> Change:
        """Append a synthetic message (no request), validated as part of the history."""
        self._check_idle()
        if role == "user":
            message_content: object = user_content(content)
        else:
            message_content = user_content(content, where="assistant content")
        node = self._node({"role": role, "content": message_content}, "ok", {"kind": f"synthetic_{role}"})
        # Validated as part of the history, walking only what is new (the history's checkpoint says what is not).
        _, checkpoint = self.path.history()
        history = self.path.extended_history(cast(MessageParam, node.message))
        request = self._settings_obj({}).base_request(history)
        checkpoint = rules.validate(request, self.model_info, complete=False, since=checkpoint)

        def done() -> None:
            self.path.advance([node])
            self.path.appended_history(history, checkpoint)

        return Change([Append(self.id, self.branch, self.path.head, nodes=(node,))], done)

    def instruct(self, text: str) -> None:
        """Queue a mid-conversation system message, sent right after the next user message."""
        if not self.model_info.system_messages:
            raise UsageError(
                f"model {self.model_info.id!r} does not accept mid-conversation system messages; "
                "change the top-level system prompt instead (it invalidates the prompt cache of the messages)"
            )
        if not isinstance(text, str) or not text.strip():
            raise UsageError("an instruction must be non-empty text")
        self._queued_instructions.append(text)

    def tool_results_content(self, results: Mapping[str, object], text: str | None) -> list[Block]:
        """The user content answering every pending tool call of the last reply, in call order."""
        unanswered = self.path.unanswered()
        if not unanswered:
            raise UsageError("the last reply made no tool calls that are waiting for results")
        unknown = [tool_id for tool_id in results if tool_id not in unanswered]
        if unknown:
            raise UsageError(f"no pending tool call with id {', '.join(map(repr, unknown))}")
        missing = [tool_id for tool_id in unanswered if tool_id not in results]
        if missing:
            raise UsageError(f"results missing for tool call(s) {', '.join(map(repr, missing))}: every call needs one")
        blocks = [tool_result_block(tool_id, results[tool_id]) for tool_id in unanswered]
        if text:
            blocks.append({"type": "text", "text": text})
        return blocks

    def rollback(self) -> Change:
        """Drop the pending user message (and any partial reply to it)."""
        index = self.path.pending_index()
        if index is None:
            raise UsageError("there is no pending turn to roll back")
        dropped = [n.id for n in self.path.nodes[index:]]
        return Change([Discard(self.id, self.branch, self.path.head, dropped)], lambda: self.path.cut(index))

    def undo(self) -> Change:
        """Move the head back before the last user turn. Nothing is deleted: the turn stays in the tree."""
        for index in range(len(self.path) - 1, -1, -1):
            node = self.path.nodes[index]
            if node.message["role"] == "user" and node.meta.get("kind") != "tool_results":
                move = MoveHead(self.id, self.branch, self.path.head, node.parent_id)
                return Change([move], functools.partial(self.path.cut, index))
        raise UsageError("nothing to undo")

    def on_branch(self, branch: str) -> ConversationCore:
        """A core for the same conversation on another branch, sharing store, policy and catalog."""
        return ConversationCore.open(
            self.store, self.id, branch=branch, policy=self.policy, catalog=self._catalog, clock=self.clock
        )

    def new_branch(self, name: str | None) -> tuple[str, Change]:
        """A branch at the current head: its name, and the change that creates it."""
        existing = self.store.branches(self.id)
        if name is None:
            number = len(existing)
            while f"branch-{number}" in existing:
                number += 1
            name = f"branch-{number}"
        elif name in existing:
            raise UsageError(f"branch {name!r} already exists")
        head = self.path.head
        # The new branch starts from this one's policy state: it describes the same turns.
        state = persisted_state(self.policy_state())
        return name, Change([MoveHead(self.id, name, None, head), Append(self.id, name, head, policy_state=state)])


def partial_content(turn: Turn, snapshot: Message | None) -> list[Block]:
    content = list(turn.content) if turn.responses else []
    if snapshot is None:
        return content
    received = [b for b in as_blocks(snapshot.content) if b["type"] != "text" or b["text"]]
    return merge_assistant_content(content, received, keep_thinking=False)
