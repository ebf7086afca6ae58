"""The logic `Conversation` and `AsyncConversation` share, below their drivers in `client.py`.

`ConversationCore` owns everything but the calls to the API: the message tree in the store, planning the next
request with the context policy, the turn state machine (`core.turn.Turn`), budgets, forecasts, the ledger and
committing a turn atomically. The drivers only send what it says and hand back responses or errors
(`answered` / `failed`), so the sync and async twins behave the same by construction.
"""

from __future__ import annotations

import itertools
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, cast

from anthropic.types import Message, MessageParam, ToolUseBlock
from anthropic.types.refusal_stop_details import RefusalStopDetails

from turnkeep import attempt_costs, config
from turnkeep.attempts import AttemptLog
from turnkeep.branch import BranchPath
from turnkeep.core import budget as budget_core
from turnkeep.core import rules
from turnkeep.core import threads as threads_core
from turnkeep.core.anchor import Anchor, Sizes, anchor_after, input_forecast
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
from turnkeep.core.policies import (
    AbsorbsSummary,
    FullHistory,
    Plan,
    Policy,
    RequestSettings,
    Shrinks,
    persisted_state,
    policy_from_settings,
    policy_settings,
    unknown_models,
)
from turnkeep.core.policies.caching import Gaps
from turnkeep.core.pricing import Cost, TokenCounts, token_counts, usage_cost
from turnkeep.core.signals import RefusalFallback, refusal_fallback, thread_history_ignored
from turnkeep.core.tokens import Calibrator
from turnkeep.core.turn import Call, Turn, TurnOutcome, prefill_instruction
from turnkeep.errors import (
    BudgetExceeded,
    ConflictError,
    ContextWindowExceeded,
    PrefillNotSupported,
    UnknownConversation,
    UsageError,
)
from turnkeep.sdk import error_request_id, request_parameters
from turnkeep.sdk import request_id as request_id_of
from turnkeep.store import LedgerEntry, MemoryStore, Node, NodeStatus, Store

if TYPE_CHECKING:
    pass


__all__ = [
    "ConversationCore",
    "LedgerFacts",
    "PendingTurn",
    "PrefillFallback",
    "PrefixAligner",
    "Reply",
    "partial_content",
    "stream_prefix",
]

PrefillFallback = Literal["error", "instruct"]

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
    attempts: AttemptLog = field(default_factory=AttemptLog)
    """Every HTTP attempt of the turn's calls (the SDK's retries included), for the ledger (`attempt_costs`)."""


@dataclass
class LedgerFacts:
    """What a conversation's ledger tells the planning of its next request."""

    spent: budget_core.Spent
    request_times: list[float]
    """When it sent its answered requests on its own prefix (not summary calls, which have theirs): policies
    weigh the gaps (cache expiry, TTL choice)."""
    gaps: Gaps
    """The gaps between those requests, as running counts (see `record_request`)."""
    last_reply_id: str | None
    """The reply the next request's cache is compared with (cache diagnostics)."""
    calibrator: Calibrator
    """The token calibration, learned again from what each recorded request measured."""

    @classmethod
    def read(cls, ledger: Sequence[LedgerEntry]) -> LedgerFacts:
        answered = [entry for entry in ledger if entry.error is None]
        replies = [entry.message_id for entry in answered if entry.message_id and entry.purpose != "summary"]
        calibrator = Calibrator()
        for entry in answered:
            if entry.calibration is not None:
                calibrator.observe(*entry.calibration)
        times = [entry.at for entry in answered if entry.purpose != "summary"]
        gaps = Gaps.of([later - earlier for earlier, later in itertools.pairwise(times)])
        return cls(budget_core.spent(ledger), times, gaps, replies[-1] if replies else None, calibrator)

    def record_request(self, at: float) -> None:
        """An answered request on the conversation's own prefix was sent at `at`."""
        if self.request_times:
            self.gaps = self.gaps.add(at - self.request_times[-1])
        self.request_times.append(at)


_COMPACTION_SUMMARY_TOKENS = 1_024
"""The length a server-side compaction's summary is forecast at (a guess: it is not known before it exists)."""


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
        # The last answered request: threads continue from it, forecasts are exact up to it.
        self._anchor: Anchor | None = None
        self._checkpoint: rules.Checkpoint | None = None  # what validating the last request settled
        self._sizes = Sizes({})
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
            self.store.create(self.id, self._settings())
        else:
            self.id = conversation_id
        # What the ledger says (spending, request times, the last reply), read when first needed: opening a long
        # conversation to look at it should not pay for reading every request it ever sent.
        self._facts: LedgerFacts | None = None
        self.path = BranchPath(self.store.path(self.id, self.store.branches(self.id).get(branch)))
        self._policy_state: dict[str, Any] | None = None  # read when first needed, then kept by commits

    def _warn_lifecycle(self) -> None:
        """Warn once per conversation that its model is deprecated (with the date and the replacement)."""
        notice = rules.lifecycle_warning(self.model_info)
        if notice is not None and self.model_info.id not in self._lifecycle_warned:
            self._lifecycle_warned.add(self.model_info.id)
            warnings.warn(notice, UserWarning, stacklevel=4)

    def _check_fixed_part(self) -> None:
        """The system prompt and tools, validated as every request will carry them (so a bad one fails now)."""
        system = self.system
        if system is not None and not (isinstance(system, str) and system.strip()) and not isinstance(system, list):
            raise UsageError("system must be a non-empty string or a list of text blocks")
        rules.validate(self._settings_obj({}).base_request([{"role": "user", "content": "x"}]), self.model_info)

    def refresh(self) -> None:
        """Read this branch again from the store (after another writer moved its head)."""
        self.path = BranchPath(self.store.path(self.id, self.store.branches(self.id).get(self.branch)))
        self._policy_state = None
        self._facts = None
        self._anchor = None
        self._checkpoint = None

    def policy_state(self) -> dict[str, Any]:
        """The context policy's state, as the last committed turn left it."""
        if self._policy_state is None:
            self._policy_state = self.store.policy_state(self.id, self.branch)
        return self._policy_state

    # -- settings and views ------------------------------------------------------------------------------------

    @property
    def facts(self) -> LedgerFacts:
        """What the ledger says, read once and then kept current as requests are recorded."""
        if self._facts is None:
            self._facts = LedgerFacts.read(self.store.ledger(self.id))
        return self._facts

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

    def _ok_messages(self, before: int | None = None) -> list[MessageParam]:
        """The messages later requests carry, without the thinking the current model cannot read (after a model
        switch: `set_model`, a budget's degrade, `-m` on `--continue`); unchanged messages are the same objects."""
        messages = self.path.ok_messages(before)
        if self.path.written_only_by(self.model_info.id):
            return messages
        return rules.strip_unreadable_thinking(
            messages, self.path.ok_models(before), self.model_info, self._catalog.get
        )

    @property
    def messages(self) -> list[MessageParam]:
        """Exactly the messages the next request will carry before the new user message."""
        plan = self.policy.plan(self._ok_messages(), self.policy_state(), self._request_settings({}, now=None))
        return cast(list[MessageParam], plan.request["messages"])

    @property
    def pending(self) -> bool:
        """A user message is waiting for its reply (the last call failed or was cut off)."""
        return self.path.pending_index() is not None

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
    ) -> PendingTurn:
        """Plan the turn, validate it, then store the pending user message. Nothing is stored if it is invalid."""
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
        stored_model = self.model_info
        turn, plan = self._plan_turn(len(self.path), new_nodes, prefill, prefill_mode, overrides)
        try:
            self.store.append(self.id, self.branch, expected_head=self.path.head, nodes=new_nodes)
        except BaseException as err:
            self.model_info = stored_model
            self.threads = self.threads_requested and self.model_info.threads
            if isinstance(err, ConflictError):
                self.refresh()  # another writer moved the head: the next call starts from where it left it
            raise
        self.path.advance(new_nodes)
        self._accept_model(stored_model)
        self._queued_instructions.clear()
        return PendingTurn(turn, plan, [n.id for n in new_nodes])

    def begin_retry(self, overrides: Mapping[str, Any]) -> PendingTurn:
        """Plan the resend of the pending user message."""
        index = self.path.pending_index()
        if index is None:
            raise UsageError("there is no pending turn to retry")
        pending = [n for n in self.path.nodes[index:] if n.status == "pending"]
        meta = pending[0].meta
        prefill = meta.get("prefill")
        stored_model = self.model_info
        turn, plan = self._plan_turn(index, pending, prefill, meta.get("prefill_mode"), overrides)
        self._accept_model(stored_model)
        return PendingTurn(turn, plan, [n.id for n in pending])

    def _accept_model(self, stored: ModelInfo) -> None:
        """The turn was accepted: store the model a budget degraded it to, if it did."""
        if self.model_info.id != stored.id:
            self.store.update_settings(self.id, {"model": self.model_info.id})

    def _plan_turn(
        self,
        before: int,
        new_nodes: Sequence[Node],
        prefill: str | None,
        prefill_mode: Literal["native", "instruct"] | None,
        overrides: Mapping[str, Any],
    ) -> tuple[Turn, Plan]:
        # Hostile values in what is new are refused before any planning walks them (indices count from it).
        rules.check_values({"messages": [node.message for node in new_nodes]})
        settings = self._request_settings(overrides, now=self.clock())
        # The committed messages before the turn, then the turn's own (pending) ones.
        transcript = self._ok_messages(before)
        transcript += [cast(MessageParam, n.message) for n in new_nodes]
        if prefill_mode == "native" and prefill is not None:
            transcript.append(cast(MessageParam, {"role": "assistant", "content": prefill}))
        state = self.policy_state()
        plan = self.policy.plan(transcript, state, settings)
        if self.budget is not None:
            try:
                self._check_budget(plan, settings)
            except BudgetExceeded:
                # Degrade to the cheaper model if allowed, and plan again for it; else refuse before any I/O.
                degrade = self.budget.degrade_to
                if degrade is None or degrade == self.model_info.id or self.budget.max_cost_usd is None:
                    raise
                # Planned for the cheaper model in memory only: the switch is stored once the turn is accepted
                # (`_accept_model`); a turn refused for any reason leaves the conversation as it was.
                previous = (self.model_info, self.threads)
                self.model_info = self._catalog.get(config.model(degrade))
                self.threads = self.threads_requested and self.model_info.threads
                try:
                    self._check_fixed_part()
                    return self._plan_turn(before, new_nodes, prefill, prefill_mode, overrides)
                except BaseException:
                    self.model_info, self.threads = previous
                    raise
        policy = self.policy

        def replan(current: Plan, summary: str | dict[str, Any] | None) -> Plan:
            # A failed summary call: send the plan's fallback (the turn is never lost); try again next turn.
            if summary is None or current.summary is None or not isinstance(policy, AbsorbsSummary):
                return replace(current, summary=None)
            return policy.plan(transcript, policy.absorb_summary(state, current.summary, summary), settings)

        def shrink(current: Plan) -> Plan | None:
            assert isinstance(policy, Shrinks)
            return policy.shrink(transcript, current.state, settings)

        turn = Turn(
            plan,
            self.model_info,
            prefill=prefill,
            prefill_mode=prefill_mode,
            auto_continue=self.auto_continue,
            max_resumes=self.max_resumes,
            replan=replan,
            shrink=shrink if isinstance(policy, Shrinks) else None,
            lookup=self._catalog.get,
            refusal_retry=self.refusal_retry,
            checkpoint=self._checkpoint,
        )
        turn.start()  # validates the first request now, before anything is stored or sent
        return turn, plan

    def explain(self, content: object | None, overrides: Mapping[str, Any]) -> Plan:
        """The plan of the next request (with `content` as its new user message, if given), sending nothing."""
        ok = self._ok_messages()
        if content is not None:
            ok.append(cast(MessageParam, {"role": "user", "content": user_content(content)}))
        plan = self.policy.plan(ok, self.policy_state(), self._request_settings(overrides, now=self.clock()))
        if content is not None:
            rules.validate(plan.request, self.model_info)
        return plan

    def update(self, *, model: str | None = None, system: str | list[dict[str, Any]] | None = None) -> None:
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
            return
        previous = (self.model_info, self.system)
        if "model" in changes:
            self.model_info = self._catalog.get(changes["model"])
            self.threads = self.threads_requested and self.model_info.threads
        if "system" in changes:
            self.system = changes["system"]
        try:
            self._check_fixed_part()
        except UsageError:
            self.model_info, self.system = previous
            self.threads = self.threads_requested and self.model_info.threads
            raise
        self._warn_lifecycle()
        self.store.update_settings(self.id, changes)

    def _check_budget(self, plan: Plan, settings: RequestSettings) -> None:
        assert self.budget is not None
        self.budget.check(self.facts.spent, self.forecast_plan(plan, settings.max_tokens))

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
        # With a summary due, the turn sends the summary call and then the shorter request it makes possible.
        request = plan.summary.preview if plan.summary and plan.summary.preview else plan.request
        explanation = plan.explanation
        if plan.summary is not None and plan.summary.preview is not None and plan.summary.preview_explanation:
            explanation = plan.summary.preview_explanation
        prelude, prelude_tokens = Decimal(0), 0
        if plan.summary is not None:
            job = plan.summary.request
            summarizer = self._catalog.get(str(job["model"]))
            prelude_tokens, _ = input_forecast(job, None, summarizer, calibration=self.facts.calibrator.factor)
            counts = TokenCounts(input=prelude_tokens, output=int(job["max_tokens"]) // 2)
            prelude = usage_cost(counts, summarizer).total
        if exact_input_tokens is not None:
            total, known = exact_input_tokens, exact_input_tokens
        else:
            total, estimated = input_forecast(
                request, self._anchor, self.model_info, calibration=self.facts.calibrator.factor, sizes=self._sizes
            )
            known = total - estimated
        compaction = explanation.get("server_compaction")
        if isinstance(compaction, Mapping) and compaction.get("expected"):
            # The API compacts first: a call that reads the whole input uncached and writes a summary (its length
            # is a guess until it exists). The reply after it reads less; its forecast stays on the safe side.
            counts = TokenCounts(input=total, output=_COMPACTION_SUMMARY_TOKENS)
            prelude += usage_cost(counts, self.model_info).total
            prelude_tokens += total
        return budget_core.forecast(
            explanation,
            self.model_info,
            max_tokens,
            self.facts.spent,
            input_tokens=total,
            exact_input_tokens=known,
            prelude_usd=prelude,
            prelude_input_tokens=prelude_tokens,
        )

    @property
    def spent(self) -> budget_core.Spent:
        """What this conversation has used so far (every request in its ledger)."""
        return self.facts.spent

    def _request_settings(self, overrides: Mapping[str, Any], *, now: float | None) -> RequestSettings:
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
        times = self.facts.request_times
        return RequestSettings(
            self.model_info,
            options.pop("max_tokens", self.max_tokens),
            options.pop("system", self.system),
            options.pop("tools", self.tools),
            options,
            now=now,
            last_request_at=times[-1] if times else None,
            gaps=self.facts.gaps,
            calibration=self.facts.calibrator.factor,
        )

    def _node(
        self, message: Mapping[str, Any], status: NodeStatus, meta: Mapping[str, Any], parent: str | None = None
    ) -> Node:
        parent_id = parent if parent is not None else self.path.head
        return Node(uuid.uuid4().hex, parent_id, dict(message), status, dict(meta))

    # -- responses, commit, failure ----------------------------------------------------------------------------

    def entry(
        self,
        call: Call,
        message: Message | None,
        latency: float,
        error: BaseException | None,
        *,
        request_id: str | None = None,
    ) -> LedgerEntry:
        """A ledger entry for one request (`request_id` when the message does not carry it, as in streams)."""
        usage = message.usage.model_dump(exclude_none=True) if message is not None else {}
        model = self._catalog.get(str(call.request["model"]))
        cost = usage_cost(usage, model, model_prices=self._catalog.get).total if usage else Decimal(0)
        miss = None
        if message is not None and message.diagnostics and message.diagnostics.cache_miss_reason:
            miss = message.diagnostics.cache_miss_reason.type
        at = self.clock()
        if error is None and call.purpose != "summary":
            self.facts.record_request(at)
        entry = LedgerEntry(
            purpose=call.purpose,
            model=str(call.request["model"]),
            request_id=request_id
            or (request_id_of(message) if message is not None else None)
            or error_request_id(error),
            message_id=message.id if message is not None else None,
            stop_reason=message.stop_reason if message is not None and error is None else None,
            usage=usage,
            cost_usd=str(cost),
            latency_ms=round(latency * 1000, 3),
            at=at,
            error=f"{type(error).__name__}: {error}" if error is not None else None,
            cache_miss_reason=miss,
        )
        self.facts.spent = self.facts.spent + budget_core.spent([entry])
        return entry

    def answered(
        self,
        pending: PendingTurn,
        call: Call,
        message: Message,
        latency: float,
        *,
        request_id: str | None = None,
        may_resend: bool = True,
    ) -> Call | None:
        """A call was answered: record it, and return the turn's next call (None: the turn is over).
        `may_resend` is False once its text reached the caller (an overflow is then not sent again smaller)."""
        pending.ledger.extend(attempt_costs.settle_answered(self, pending, call))  # the SDK's retries before it
        entry = self.entry(call, message, latency, None, request_id=request_id)
        pending.ledger.append(replace(entry, calibration=self.sent(call, message)))
        try:
            return pending.turn.receive(message, may_resend=may_resend)
        except Exception:
            # The turn ends here (e.g. an overflow nothing more can be dropped for): what was billed is recorded.
            self.fail(pending, partial=[dict(b) for b in as_blocks(message.content)] or None)
            raise

    def failed(
        self,
        pending: PendingTurn,
        call: Call,
        error: BaseException,
        latency: float,
        *,
        received: Message | None = None,
        request_id: str | None = None,
        may_resend: bool = True,
    ) -> Call | None:
        """A call raised: record it (with what a stream had `received`), and return the call to send instead —
        the same one when only its thread was lost, the turn's fallback otherwise — or None when the error ends
        the turn. `may_resend` is False once text reached the caller (a resend would repeat it)."""
        recorded = self.entry(call, received, latency, error, request_id=request_id)
        pending.ledger.extend(attempt_costs.settle_failed(self, pending, call, recorded))  # each attempt, billed
        if not (may_resend and isinstance(error, Exception)):
            return None
        if self.thread_failed(error):
            return call
        try:
            return pending.turn.failed(error)
        except Exception:
            self.fail(pending)  # the fallback could not be planned: record the failed call before raising
            raise

    def commit(self, pending: PendingTurn, outcome: TurnOutcome) -> Reply:
        """Store the reply and settle the pending messages, in one write."""
        self._checkpoint = pending.turn.checkpoint
        if outcome.stop_reason == "model_context_window_exceeded":
            self.fail(pending, partial=outcome.content)
            raise ContextWindowExceeded(
                self.model_info.id, "the model stopped because the conversation filled its context window"
            )
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
        try:
            self.store.append(
                self.id,
                self.branch,
                expected_head=self.path.head,
                nodes=[reply_node],
                settle=settle,
                ledger=[replace(entry, node_id=reply_node.id) for entry in pending.ledger],  # the reply they led to
                policy_state=persisted_state(pending.turn.plan.state),
            )
        except ConflictError:
            # Another writer moved the head during the call: the requests were still paid for.
            self.store.record(self.id, pending.ledger)
            pending.ledger = []
            self.refresh()
            raise
        self._policy_state = dict(pending.turn.plan.state)
        self.path.advance([reply_node], settle)
        usage, cost = self._totals(outcome.responses)
        return Reply(
            outcome.content,
            outcome.message,
            outcome.responses,
            usage,
            cost,
            outcome.stop_reason,
            fell_back=outcome.fell_back,
        )

    def wire(self, call: Call) -> dict[str, Any]:
        """The request to send for `call`: threaded when threads are on and the call continues the conversation,
        and asking the API why the cache missed, if it did, compared with the last reply (cache diagnostics)."""
        if call.purpose == "summary" or call.request.get("model") != self.model_info.id:
            return dict(call.request)
        wire = threads_core.wire_request(call.request, self._anchor)[0] if self.threads else dict(call.request)
        last_reply = self.facts.last_reply_id
        if last_reply is not None and "diagnostics" not in wire:
            wire["diagnostics"] = {"previous_message_id": last_reply}
        return wire

    def sent(self, call: Call, message: Message) -> tuple[int, int] | None:
        """A call was answered: calibrate the estimates on what it really measured, and anchor on it. Returns
        what the calibration learned, (estimated, measured) tokens, for the ledger (None: nothing)."""
        if call.purpose == "summary" or call.request.get("model") != self.model_info.id:
            return None
        predicted, estimated = input_forecast(call.request, self._anchor, self.model_info, sizes=self._sizes)
        actual = token_counts(message.usage.model_dump(exclude_none=True)).total_input
        observation = None
        compacted = any(block["type"] == "compaction" for block in as_blocks(message.content))
        if estimated > 0 and not compacted:  # a compaction replaced what was estimated: nothing to compare
            # Only the estimated part carries error; the anchored part is exact. Observations are weighed by their
            # size (a decayed ratio of sums), so a run of one-line questions, where per-message overhead
            # dominates, does not skew the estimate of the next pasted document.
            observation = (estimated, max(actual - (predicted - estimated), 0))
            self.facts.calibrator.observe(*observation)
        # After calibrating: what is learned from this request (the fixed part's size) uses what it taught.
        self._sizes.learn(
            call.request, self._anchor, message, self.model_info, calibration=self.facts.calibrator.factor
        )
        if self.threads and threads_core.continues(call.request, self._anchor):
            self._check_thread_applied(message)
        self._anchor = anchor_after(call.request, message, self.model_info)
        self.facts.last_reply_id = message.id
        return observation

    def _check_thread_applied(self, message: Message) -> None:
        """A server that ignores `thread` answers a continue from its new messages alone: send full requests for
        the rest of this conversation, and say so once."""
        assert self._anchor is not None
        if thread_history_ignored(self._anchor.tokens, message.usage.model_dump(exclude_none=True)):
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
        if threads_core.lost(error) and self._anchor is not None:
            self._anchor = None  # resend the whole request as a new thread (once: a create has no thread to lose)
            return True
        return False

    def _answered_by(self, message: Message) -> ModelInfo:
        """The catalog's facts of the model that wrote `message` (the conversation's own when it is not known)."""
        info = self._catalog.get(message.model)
        return info if info.known else self.model_info

    def _totals(self, responses: Sequence[Message]) -> tuple[TokenCounts, Cost]:
        usages = [m.usage.model_dump(exclude_none=True) for m in responses]
        counts = sum((token_counts(u) for u in usages), TokenCounts())
        # Each response on the model that answered it (a summary or refusal fallback may use another one).
        cost = sum(
            (
                usage_cost(u, self._answered_by(m), model_prices=self._catalog.get)
                for u, m in zip(usages, responses, strict=True)
            ),
            Cost(),
        )
        return counts, cost

    def fail(self, pending: PendingTurn, *, partial: Sequence[Block] | None = None) -> None:
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
        if nodes or state is not None:
            try:
                self.store.append(
                    self.id,
                    self.branch,
                    expected_head=self.path.head,
                    nodes=nodes,
                    ledger=pending.ledger,
                    policy_state=persisted_state(state) if state is not None else None,
                )
            except ConflictError:
                # Another writer moved the head (it answered this turn first): the requests were still paid for.
                self.store.record(self.id, pending.ledger)
                pending.ledger = []
                self.refresh()
                raise
            self.path.advance(nodes)
            if state is not None:
                self._policy_state = state
        elif pending.ledger:
            self.store.record(self.id, pending.ledger)
        pending.ledger = []

    def partial_reply(self, pending: PendingTurn, content: Sequence[Block], snapshot: Message | None) -> Reply | None:
        """A `Reply` for a stream that stopped early (marked partial), after storing it as partial."""
        self.fail(pending, partial=content)
        responses = [*pending.turn.responses, *([snapshot] if snapshot is not None else [])]
        if not responses:
            return None
        usage, cost = self._totals(responses)
        return Reply(list(content), responses[-1], responses, usage, cost, "partial", partial=True)

    # -- history operations --------------------------------------------------------------------------------------

    def add(self, role: Literal["user", "assistant"], content: object) -> None:
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
        self.store.append(self.id, self.branch, expected_head=self.path.head, nodes=[node])
        self.path.advance([node])
        self.path.appended_history(history, checkpoint)

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

    def rollback(self) -> None:
        """Drop the pending user message (and any partial reply to it)."""
        index = self.path.pending_index()
        if index is None:
            raise UsageError("there is no pending turn to roll back")
        dropped = [n.id for n in self.path.nodes[index:]]
        self.store.discard(self.id, self.branch, expected_head=self.path.head, node_ids=dropped)
        self.path.cut(index)

    def undo(self) -> None:
        """Move the head back before the last user turn. Nothing is deleted: the turn stays in the tree."""
        for index in range(len(self.path) - 1, -1, -1):
            node = self.path.nodes[index]
            if node.message["role"] == "user" and node.meta.get("kind") != "tool_results":
                self.store.move_head(self.id, self.branch, expected_head=self.path.head, new_head=node.parent_id)
                self.path.cut(index)
                return
        raise UsageError("nothing to undo")

    def fork(self, name: str | None) -> ConversationCore:
        """A core bound to a new branch at the current head."""
        return self.on_branch(self.new_branch(name))

    def on_branch(self, branch: str) -> ConversationCore:
        """A core for the same conversation on another branch, sharing store, policy and catalog."""
        return ConversationCore.open(
            self.store, self.id, branch=branch, policy=self.policy, catalog=self._catalog, clock=self.clock
        )

    def new_branch(self, name: str | None) -> str:
        """Create a branch at the current head and return its name."""
        existing = self.store.branches(self.id)
        if name is None:
            number = len(existing)
            while f"branch-{number}" in existing:
                number += 1
            name = f"branch-{number}"
        elif name in existing:
            raise UsageError(f"branch {name!r} already exists")
        self.store.move_head(self.id, name, expected_head=None, new_head=self.path.head)
        # The new branch starts from this one's policy state: it describes the same turns.
        self.store.append(
            self.id, name, expected_head=self.path.head, policy_state=persisted_state(self.policy_state())
        )
        return name

    @property
    def ledger(self) -> list[LedgerEntry]:
        return self.store.ledger(self.id)


class PrefixAligner:
    """For `prefill_fallback="instruct"` streams: yield the prefill first, then the model's text without its own
    copy of the prefill, matching what `Turn.outcome()` stores."""

    def __init__(self, prefill: str | None) -> None:
        self.prefill = prefill
        self._buffer = ""
        self._decided = prefill is None

    def start(self) -> str:
        return self.prefill or ""

    def feed(self, text: str) -> str:
        if self._decided:
            return text
        assert self.prefill is not None
        self._buffer += text
        stripped = self._buffer.lstrip()
        if len(stripped) < len(self.prefill) and self.prefill.startswith(stripped):
            return ""  # cannot tell yet
        self._decided = True
        out, self._buffer = self._buffer, ""
        return stripped[len(self.prefill) :] if stripped.startswith(self.prefill) else out

    def flush(self) -> str:
        out, self._buffer, self._decided = self._buffer, "", True
        return "" if out.strip() == (self.prefill or "").strip() else out


def stream_prefix(pending: PendingTurn) -> tuple[str, PrefixAligner]:
    turn = pending.turn
    if turn.prefill_mode == "native" and turn.prefill:
        return turn.prefill, PrefixAligner(None)
    if turn.prefill_mode == "instruct":
        aligner = PrefixAligner(turn.prefill)
        return aligner.start(), aligner
    return "", PrefixAligner(None)


def partial_content(turn: Turn, snapshot: Message | None) -> list[Block]:
    content = list(turn.content) if turn.responses else []
    if snapshot is None:
        return content
    received = [b for b in as_blocks(snapshot.content) if b["type"] != "text" or b["text"]]
    return merge_assistant_content(content, received, keep_thinking=False)
