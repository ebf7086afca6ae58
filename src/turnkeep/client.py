"""`Conversation` and `AsyncConversation`: the public face of turnkeep.

Both are thin drivers around `turnkeep.session.ConversationCore`, which owns everything they share: the message
tree in the store, planning the next request with the context policy, the turn state machine (`core.turn.Turn`),
the ledger, and committing a turn atomically. The drivers differ only in how they call the SDK
(`client.messages.create` / `.stream` with or without `await`), so sync and async behave the same by construction.

A turn is atomic. The user message is stored as *pending* before the first request. Only a complete reply is
committed, in one store write with its ledger entries. If a call fails, the pending message stays: `retry()`
resends it and `rollback()` drops it. A stream cut off mid-way is kept as a *partial* reply for display and is
never sent back as if it were complete.

Configuration order (for each setting): explicit argument, then environment (`TURNKEEP_MODEL`,
`ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL` through the SDK, `TURNKEEP_HOME` for the user catalog file), then
defaults. Nothing is read at import time.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, cast

from anthropic.types import Message, MessageParam

from turnkeep.attempts import AttemptLog
from turnkeep.core.budget import Budget, Forecast, Spent
from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.policies import Plan, Policy
from turnkeep.core.streaming import StreamFold
from turnkeep.core.turn import Call
from turnkeep.core.writes import Write
from turnkeep.errors import ConfigError, ConflictError, UsageError
from turnkeep.sdk import messages_resource, split_betas, stream_snapshot
from turnkeep.session import Change, ConversationCore, PendingTurn, PrefillFallback, Reply, Sent
from turnkeep.store import AsyncStore, LedgerEntry, MemoryStore, Node, Store
from turnkeep.store.writes import apply, apply_async, is_async_store, load_replica

if TYPE_CHECKING:
    import anthropic


__all__ = ["AsyncConversation", "AsyncReplyStream", "Conversation", "Reply", "ReplyStream"]


def _betas(betas: list[str] | None) -> dict[str, Any]:
    return {"betas": betas} if betas else {}


ClientT = TypeVar("ClientT")
"""The SDK client a driver sends with: `anthropic.Anthropic` or `anthropic.AsyncAnthropic`."""
StoreT = TypeVar("StoreT")
"""What a driver's `store` may be: a `Store`, or for the async driver an `AsyncStore` too."""


class _Steps:
    """A turn's flow (`ConversationCore.flow`) as the drivers step it: iterate for each `Call` or `Change` to carry
    out; after a call, set `sent` to what happened. When the iteration ends, `reply` is the turn's reply; a flow
    that raised leaves its partial reply there."""

    def __init__(self, core: ConversationCore, pending: PendingTurn) -> None:
        self._flow = core.flow(pending)
        self._pending = pending
        self.sent: Sent | None = None
        self.reply: Reply | None = None
        self.finished = False

    def __iter__(self) -> Iterator[Call | Change]:
        while not self.finished:
            try:
                effect = self._flow.send(self.sent)
            except StopIteration as stop:
                self.finished, self.reply = True, cast(Reply, stop.value)
                return
            except BaseException:
                self.finished, self.reply = True, self._pending.reply
                raise
            self.sent = None
            yield effect


class _Facade(Generic[ClientT, StoreT]):
    """What both drivers share: construction, every method that needs no SDK call, and how a change the core
    decided reaches the store. The drivers add only the methods that call the SDK (with or without `await`)."""

    _core: ConversationCore
    _client: ClientT | None  # None until first needed
    _async_store: AsyncStore | None
    """With an `AsyncStore` (async driver only), the core reads a replica of the conversation kept in memory
    (`_core.store`); every write goes to the async store first, then to the replica."""
    _outbox: list[Write]
    """Writes of history edits (`add_user`, `undo`, `fork` ...) made without an `await` on a conversation whose
    store is async: already in the replica, written to the async store before its next request (or `flush()`)."""
    _takes_async_store: ClassVar[bool] = False

    def __init__(
        self,
        model: str | None = None,
        *,
        system: str | list[dict[str, Any]] | None = None,
        max_tokens: int = 1024,
        client: ClientT | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        policy: Policy | None = None,
        store: StoreT | None = None,
        catalog: Catalog | None = None,
        auto_continue: int = 0,
        max_resumes: int = 5,
        keep_refusals: bool = False,
        refusal_retry: bool = False,
        clock: Callable[[], float] | None = None,
        threads: bool = False,
        budget: Budget | None = None,
    ) -> None:
        async_store = self._async_store_of(store)
        core = ConversationCore(
            model,
            system=system,
            max_tokens=max_tokens,
            tools=tools,
            policy=policy,
            # An AsyncStore's conversation is created in a replica the core reads, then in the store itself.
            store=MemoryStore() if async_store is not None else cast("Store | None", store),
            catalog=catalog,
            auto_continue=auto_continue,
            max_resumes=max_resumes,
            keep_refusals=keep_refusals,
            refusal_retry=refusal_retry,
            clock=clock,
            threads=threads,
            budget=budget,
        )
        self._attach(core, client, async_store)

    @classmethod
    def _async_store_of(cls, store: object) -> AsyncStore | None:
        """`store` when it is an `AsyncStore` this driver can await (a sync driver refuses one)."""
        if not is_async_store(store):
            return None
        if not cls._takes_async_store:
            raise UsageError(f"{type(store).__name__} is an AsyncStore: use it with AsyncConversation")
        return cast(AsyncStore, store)

    @classmethod
    def open(
        cls,
        conversation_id: str,
        *,
        store: Store,
        client: ClientT | None = None,
        branch: str = "main",
        policy: Policy | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] | None = None,
        threads: bool | None = None,
    ) -> Self:
        """Reopen a stored conversation (on `branch`) to continue it; its next request repeats the stored
        history byte for byte, so the prompt cache still applies. `policy` and `threads` (None: as stored)
        change how it goes on. (An `AsyncStore`'s conversation is read with `await AsyncConversation.load(...)`.)"""
        if is_async_store(store):
            raise UsageError(f"{type(store).__name__} is an AsyncStore: use `await AsyncConversation.load(...)`")
        core = ConversationCore.open(
            store, conversation_id, branch=branch, policy=policy, catalog=catalog, clock=clock, threads=threads
        )
        return cls._bound(core, client)

    @classmethod
    def _bound(
        cls,
        core: ConversationCore,
        client: ClientT | None,
        like: _Facade[Any, Any] | None = None,
        *,
        async_store: AsyncStore | None = None,
    ) -> Self:
        """A driver over an existing core (another branch of the same conversation, `like`'s; a reopened one, on
        `async_store` when it was read from one)."""
        self = cls.__new__(cls)
        self._attach(core, client, like._async_store if like else async_store, like._outbox if like else None)
        return self

    def _attach(
        self,
        core: ConversationCore,
        client: ClientT | None,
        async_store: AsyncStore | None = None,
        outbox: list[Write] | None = None,
    ) -> None:
        """Drive `core` with `client`, or with the SDK client the environment configures."""
        self._core = core
        self._client = client
        self._async_store = async_store
        self._outbox = outbox if outbox is not None else []
        self._apply(core.created)

    def _apply(self, change: Change) -> None:
        """Store a change, then make it in memory. On a store whose head another writer moved, record what was
        paid for, read the conversation again, and raise `ConflictError`."""
        store = self._core.store
        if self._async_store is not None:
            apply(store, change.writes)  # the replica; the async store gets them with the next await
            self._outbox.extend(change.writes)
            change.done()
            return
        try:
            apply(store, change.writes)
        except ConflictError:
            apply(store, change.on_conflict)
            self._core.refresh()
            raise
        change.done()

    @property
    def client(self) -> ClientT:
        """The SDK client: the one given, else the SDK's own (`anthropic.Anthropic()`, or `AsyncAnthropic()` for
        `AsyncConversation`) configured from the environment, made on first use: a conversation that only plans
        (`explain`, `forecast`) needs no credentials."""
        return self._resolved_client()

    @client.setter
    def client(self, client: ClientT) -> None:
        self._client = client

    def _resolved_client(self) -> ClientT:
        if self._client is None:
            _require_credentials()
            self._client = self._default_client()
        return self._client

    def _default_client(self) -> ClientT:
        raise NotImplementedError

    def _sending(self, *, new_turn: bool = False) -> ConversationCore:
        """The core, once the client that will send is known: no turn begins that could not be sent. A new turn
        on a branch whose last turn is pending reads the branch again first: the pending turn may be another
        writer's, answered since (on an `AsyncStore`, `AsyncConversation` has read it again already)."""
        self._resolved_client()
        if new_turn and self._core.pending and self._async_store is None:
            seen = self._core.pending_ids()
            self._core.refresh()
            self._core.check_pending_seen(seen)
        return self._core

    def _begin(
        self, content: object, prefill: str | None, fallback: PrefillFallback, overrides: Mapping[str, Any]
    ) -> tuple[PendingTurn, Change]:
        """A new turn planned (see `ConversationCore.begin`), not yet stored."""
        return self._sending(new_turn=True).begin(
            content, prefill=prefill, prefill_fallback=fallback, overrides=overrides
        )

    def _begin_tool_results(
        self, results: Mapping[str, object], text: str | None, overrides: Mapping[str, Any]
    ) -> tuple[PendingTurn, Change]:
        """A turn answering the last reply's tool calls, planned, not yet stored."""
        content = self._core.tool_results_content(results, text)
        return self._sending(new_turn=True).begin(
            content, prefill=None, prefill_fallback="error", overrides=overrides, kind="tool_results"
        )

    def _begin_retry(self, overrides: Mapping[str, Any]) -> tuple[PendingTurn, Change]:
        """The resend of the pending turn, planned, not yet stored."""
        return self._sending().begin_retry(overrides)

    def _counting(self, plan: Plan) -> Callable[[], Any]:
        """The API's free `count_tokens` for `plan`'s request, to call (or await) for an exact forecast."""
        request, betas = split_betas(self._core.count_tokens_request(plan))
        return functools.partial(messages_resource(self.client, betas).count_tokens, **request, **_betas(betas))

    def _forecast(self, plan: Plan, counted: Any = None) -> Forecast:
        """The forecast of `plan`; `counted` is `count_tokens`' answer for an exact one."""
        exact = None if counted is None else counted.input_tokens
        return self._core.forecast_plan(plan, int(plan.request["max_tokens"]), exact_input_tokens=exact)

    def _creating(self, call: Call, attempts: AttemptLog) -> Callable[[], Any]:
        """The SDK's `messages.create` for `call`, to call (or await); each HTTP attempt observed for the ledger."""
        request, betas = split_betas(self._core.wire(call))
        request = attempts.tag(self.client, request)
        return functools.partial(messages_resource(self.client, betas).create, **request, **_betas(betas))

    @staticmethod
    def _timed(started: float, message: Any, error: BaseException | None) -> Sent:
        return Sent(cast("Message | None", message), time.monotonic() - started, error)

    def fork(self, name: str | None = None) -> Self:
        """A new branch at the current head, sharing this conversation's store and client."""
        branch, change = self._core.new_branch(name)
        self._apply(change)
        return self._bound(self._core.on_branch(branch), self._client, self)

    def switch(self, branch: str) -> Self:
        """The same conversation bound to another existing branch."""
        return self._bound(self._core.on_branch(branch), self._client, self)

    @property
    def id(self) -> str:
        return self._core.id

    @property
    def model(self) -> str:
        return self._core.model_info.id

    @property
    def model_info(self) -> ModelInfo:
        return self._core.model_info

    @property
    def branch(self) -> str:
        return self._core.branch

    @property
    def branches(self) -> dict[str, str | None]:
        return self._core.store.branches(self._core.id)

    @property
    def messages(self) -> list[MessageParam]:
        """Exactly what the next request will carry (before the new user message)."""
        return self._core.messages

    @property
    def transcript(self) -> list[Node]:
        """Everything on this branch, refused exchanges and partial replies included."""
        return self._core.transcript

    @property
    def pending(self) -> bool:
        return self._core.pending

    @property
    def ledger(self) -> list[LedgerEntry]:
        """Every request this conversation sent, with usage and cost."""
        return self._core.ledger.entries()

    @property
    def cost(self) -> Decimal:
        """Total USD of every request in the ledger."""
        return self._core.spent.usd

    @property
    def spent(self) -> Spent:
        """Everything used so far: USD, input and output tokens, turns."""
        return self._core.spent

    @property
    def budget(self) -> Budget | None:
        """The conversation's limits, checked before each request."""
        return self._core.budget

    @property
    def system(self) -> str | list[dict[str, Any]] | None:
        """The top-level system prompt."""
        return self._core.system

    def set_system(self, system: str | list[dict[str, Any]]) -> None:
        """Replace the system prompt for later turns. The prompt cache of the messages starts over."""
        self._apply(self._core.update(system=system))

    def set_model(self, model: str) -> None:
        """Switch later turns to another model. The prompt cache starts over (caches are per model)."""
        self._apply(self._core.update(model=model))

    def explain(self, content: object | None = None, **request_overrides: Any) -> Plan:
        """The plan of the next request, sent nowhere: what the context policy keeps, drops or summarises, the
        cache breakpoints and the predicted cost (`plan.explanation`), and the exact request (`plan.request`)."""
        return self._core.explain(content, request_overrides)

    def add_user(self, content: object) -> None:
        """Append a user message without sending it (merged with the next one when sent)."""
        self._apply(self._core.add("user", content))

    def add_assistant(self, content: object) -> None:
        """Append an assistant message without a request (e.g. few-shot examples or an imported history)."""
        self._apply(self._core.add("assistant", content))

    def instruct(self, text: str) -> None:
        """Add a mid-conversation system message (sent after the next user message) on models that accept it."""
        self._core.instruct(text)

    def rollback(self) -> None:
        """Drop the pending user message of a failed turn."""
        self._apply(self._core.rollback())

    def undo(self) -> None:
        """Step back one turn on this branch (the turn stays in the tree)."""
        self._apply(self._core.undo())


NO_CREDENTIALS = (
    "no client and no ANTHROPIC_API_KEY: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) to talk to Claude, or pass "
    "a client, e.g. client=EmulatorServer().start().client() with `from turnkeep.emulator import EmulatorServer` "
    "to work offline against the built-in emulator"
)


def _require_credentials() -> None:
    """Without credentials the SDK client fails only at the first request, with its own TypeError; say both ways
    forward when the conversation is made instead."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise ConfigError(NO_CREDENTIALS)


class Conversation(_Facade["anthropic.Anthropic", Store]):
    """A conversation with Claude whose history is correct by construction.

    >>> chat = Conversation("claude-sonnet-4-6", client=anthropic.Anthropic())  # doctest: +SKIP
    >>> chat.send("What is the capital of France?").text                       # doctest: +SKIP
    >>> chat.send("What is its population?").text                              # doctest: +SKIP

    `client` defaults to `anthropic.Anthropic()` (configured from the environment) only when none is given;
    retries and timeouts are the client's. `store` defaults to a `MemoryStore`. `policy` decides what each
    request carries (default `FullHistory`). `auto_continue=N` continues a reply cut by `max_tokens` up to N
    times; `pause_turn` replies are resumed up to `max_resumes` times. Refused exchanges are left out of later
    requests unless `keep_refusals`. `refusal_retry=True` answers a refusal that recommends another model once more
    on that model, with the refusal's fallback credit (both requests in the ledger; `Reply.fell_back`).
    """

    def _default_client(self) -> anthropic.Anthropic:
        import anthropic

        return anthropic.Anthropic()

    def send(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> Reply:
        """Send a user message and return the reply. `request_overrides` are extra `messages.create` arguments
        for this turn only (e.g. `thinking`, `tool_choice`, `stop_sequences`, `max_tokens`)."""
        return self._run(*self._begin(content, prefill, prefill_fallback, request_overrides))

    def send_tool_results(self, results: Mapping[str, object], *, text: str | None = None, **overrides: Any) -> Reply:
        """Answer every pending tool call of the last reply: `{tool_use_id: result}`; an exception as a result is
        sent as an error (`is_error`). `text` adds a user note after the results."""
        return self._run(*self._begin_tool_results(results, text, overrides))

    def retry(self, **request_overrides: Any) -> Reply:
        """Resend the pending user message of a failed or cut-off turn."""
        return self._run(*self._begin_retry(request_overrides))

    def stream(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> ReplyStream:
        """Like `send`, streaming: `with chat.stream("Hi") as s: for text in s: ...`, then `s.reply`."""
        return ReplyStream(self, *self._begin(content, prefill, prefill_fallback, request_overrides))

    def stream_retry(self, **request_overrides: Any) -> ReplyStream:
        """Like `retry`, streaming."""
        return ReplyStream(self, *self._begin_retry(request_overrides))

    def forecast(self, content: object | None = None, *, exact: bool = False, **request_overrides: Any) -> Forecast:
        """What the next request (with `content` as its new message) will cost, split as it will be billed.

        Exact for everything the last request already carried (its `usage` measured it); the new content is
        estimated and calibrated on this conversation's history. `exact=True` asks the API's free `count_tokens`
        endpoint for the total instead (one extra request, not billed)."""
        plan = self._core.explain(content, request_overrides)
        return self._forecast(plan, self._counting(plan)() if exact else None)

    def _run(self, pending: PendingTurn, change: Change) -> Reply:
        self._apply(change)
        steps = _Steps(self._core, pending)
        for effect in steps:
            if isinstance(effect, Change):
                self._apply(effect)
                continue
            started = time.monotonic()
            try:
                steps.sent = self._timed(started, self._creating(effect, pending.attempts)(), None)
            except BaseException as err:
                steps.sent = self._timed(started, None, err)
        return cast(Reply, steps.reply)


class _StreamedTurn:
    """What a streamed turn's sync and async drivers share: the turn's steps, the fold of its events, finishing
    and abandoning. The drivers only loop over the SDK's stream."""

    def __init__(self, conversation: _Facade[Any, Any], pending: PendingTurn | None) -> None:
        self._conversation = conversation
        self._core = conversation._core
        self._stream: Any = None
        self._steps: _Steps | None = None
        if pending is not None:
            self._start(pending)

    def _start(self, pending: PendingTurn) -> None:
        """The turn is planned: stream it."""
        self._pending = pending
        self._steps = _Steps(self._core, pending)
        self._fold = StreamFold(pending.turn.prefill, pending.turn.prefill_mode)

    @property
    def reply(self) -> Reply | None:
        """The turn's reply once the stream is done (left early or failed: what arrived, as a partial reply)."""
        return None if self._steps is None else self._steps.reply

    def _turn(self) -> _Steps:
        assert self._steps is not None, "a turn is planned before it streams"
        return self._steps

    def _open(self, call: Call) -> Any:
        """The SDK's stream manager for `call` (its events are folded as they arrive)."""
        self._fold.begin(call.request, shows_text=call.shows_text)
        request, betas = split_betas(self._core.wire(call))
        client = self._conversation.client
        request = self._pending.attempts.tag(client, request)  # each HTTP attempt observed for the ledger
        return messages_resource(client, betas).stream(**request, **_betas(betas))

    def _opened(self, stream: Any) -> Any:
        """Keep the SDK's stream (what it received is kept if the turn is left); the stream, to iterate."""
        self._stream = stream
        return stream

    def _done(self, started: float, message: Any, error: BaseException | None = None) -> None:
        """A streamed call ended (a failed one with what had arrived): tell the turn."""
        stream, self._stream = self._stream, None
        if error is not None:
            message = stream_snapshot(stream)
        request_id = getattr(stream, "request_id", None)
        self._turn().sent = Sent(
            cast("Message | None", message),
            time.monotonic() - started,
            error,
            request_id=request_id if isinstance(request_id, str) else None,
            may_resend=not self._fold.shown,
        )

    def _abandon_change(self) -> Change | None:
        """Leaving unfinished: what arrived is kept as a partial reply (never sent back); the message stays pending."""
        if self._steps is None or self._steps.finished:
            return None
        self._steps.finished = True
        change, self._steps.reply = self._core.abandon(self._pending, stream_snapshot(self._stream))
        self._stream = None
        return change


class ReplyStream(_StreamedTurn):
    """A streamed turn: iterate for text as it arrives; `reply` once the stream is done.

    Leaving the `with` block early, or an error mid-stream, keeps the text received so far as a partial reply
    (`reply.partial`), never sent back; the user message stays pending for `retry()`.
    """

    _conversation: Conversation

    def __init__(self, conversation: Conversation, pending: PendingTurn, begin: Change) -> None:
        conversation._apply(begin)
        super().__init__(conversation, pending)
        self._iterator: Generator[str, None, None] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._iterator is not None:
            self._iterator.close()  # an unfinished turn stores what it had (its flow ends it)
        if change := self._abandon_change():
            self._conversation._apply(change)

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._text_stream()
        return self._iterator

    def _text_stream(self) -> Generator[str, None, None]:
        if self._fold.prefix:
            yield self._fold.prefix
        for effect in self._turn():
            if isinstance(effect, Change):
                self._conversation._apply(effect)
                continue
            started = time.monotonic()
            try:
                with self._open(effect) as stream:
                    for event in self._opened(stream):
                        if out := self._fold.feed(event):
                            yield out
                    self._done(started, stream.get_final_message())
            except BaseException as err:
                self._done(started, None, err)
        if tail := self._fold.finish():
            yield tail

    def until_done(self) -> Reply:
        """Consume the stream and return the reply."""
        for _ in self:
            pass
        return cast(Reply, self.reply)


class AsyncConversation(_Facade["anthropic.AsyncAnthropic", "Store | AsyncStore"]):
    """The `asyncio`/`anyio` twin of `Conversation`: the same behaviour with `await`.

    `store` may be a `Store` (called as it is) or an `AsyncStore` such as `AsyncPostgresStore`, whose writes are
    awaited, never run on the event loop's thread. On an `AsyncStore` the conversation reads a copy of itself kept
    in memory (loaded by `await AsyncConversation.load(...)`, kept current by its own writes); history edits made
    without `await` (`add_user`, `undo`, `fork` ...) reach the store before the next request, or at
    `await conversation.flush()`.
    """

    _takes_async_store = True

    def _default_client(self) -> anthropic.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic()

    async def _apply_now(self, change: Change) -> None:
        """Store a change, awaited on an `AsyncStore` (after any writes still in the outbox), then make it in
        memory; on `ConflictError`, record what was paid for, read the conversation again and raise."""
        store = self._async_store
        if store is None:
            self._apply(change)
            return
        await self.flush()
        try:
            await apply_async(store, change.writes)
        except ConflictError:
            await apply_async(store, change.on_conflict)
            await self._reload()
            raise
        apply(self._core.store, change.writes)
        change.done()

    def _must_read(self) -> bool:
        """On an `AsyncStore`, a pending last turn may be another writer's, answered since: a new turn reads the
        branch again first (with a `Store`, `_sending` does it)."""
        return self._async_store is not None and self._core.pending

    async def _read_if_pending(self) -> None:
        """Read the branch again when `_must_read` says so."""
        if self._must_read():
            seen = self._core.pending_ids()
            await self.flush()
            await self._reload()
            self._core.check_pending_seen(seen)

    async def flush(self) -> None:
        """Write the history edits still waiting for the async store (see the class docstring); with a `Store`,
        there are none."""
        store = self._async_store
        while self._outbox and store is not None:
            try:
                await apply_async(store, self._outbox[:1])
            except ConflictError:
                self._outbox.clear()
                await self._reload()
                raise
            del self._outbox[0]

    async def _reload(self) -> None:
        """Read the conversation again from the async store into the replica (another writer moved a head)."""
        assert self._async_store is not None
        await load_replica(self._async_store, self._core.id, into=cast(MemoryStore, self._core.store))
        self._core.refresh()

    async def send(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> Reply:
        """See `Conversation.send`."""
        await self._read_if_pending()
        return await self._run(*self._begin(content, prefill, prefill_fallback, request_overrides))

    async def send_tool_results(
        self, results: Mapping[str, object], *, text: str | None = None, **overrides: Any
    ) -> Reply:
        """See `Conversation.send_tool_results`."""
        await self._read_if_pending()
        return await self._run(*self._begin_tool_results(results, text, overrides))

    async def retry(self, **request_overrides: Any) -> Reply:
        """See `Conversation.retry`."""
        return await self._run(*self._begin_retry(request_overrides))

    def stream(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> AsyncReplyStream:
        """`async with chat.stream("Hi") as s: async for text in s: ...`, then `s.reply`. On an `AsyncStore` whose
        last turn is pending, the turn is planned once the stream starts, after the branch is read again (as
        `send` does), so a refused turn raises there."""
        return AsyncReplyStream(
            self, functools.partial(self._begin, content, prefill, prefill_fallback, request_overrides)
        )

    def stream_retry(self, **request_overrides: Any) -> AsyncReplyStream:
        """See `Conversation.stream_retry`."""
        return AsyncReplyStream(self, functools.partial(self._begin_retry, request_overrides), read=False)

    @classmethod
    async def load(
        cls,
        conversation_id: str,
        *,
        store: Store | AsyncStore,
        client: anthropic.AsyncAnthropic | None = None,
        branch: str = "main",
        policy: Policy | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] | None = None,
        threads: bool | None = None,
    ) -> Self:
        """`open` for either kind of store: an `AsyncStore`'s conversation is read with `await`."""
        async_store = cls._async_store_of(store)
        replica = cast(Store, store) if async_store is None else await load_replica(async_store, conversation_id)
        core = ConversationCore.open(
            replica, conversation_id, branch=branch, policy=policy, catalog=catalog, clock=clock, threads=threads
        )
        return cls._bound(core, client, async_store=async_store)

    async def forecast(
        self, content: object | None = None, *, exact: bool = False, **request_overrides: Any
    ) -> Forecast:
        """See `Conversation.forecast`."""
        plan = self._core.explain(content, request_overrides)
        return self._forecast(plan, await self._counting(plan)() if exact else None)

    async def _run(self, pending: PendingTurn, change: Change) -> Reply:
        await self._apply_now(change)
        steps = _Steps(self._core, pending)
        for effect in steps:
            if isinstance(effect, Change):
                await self._apply_now(effect)
                continue
            started = time.monotonic()
            try:
                steps.sent = self._timed(started, await self._creating(effect, pending.attempts)(), None)
            except BaseException as err:
                steps.sent = self._timed(started, None, err)
        return cast(Reply, steps.reply)


class AsyncReplyStream(_StreamedTurn):
    """The async twin of `ReplyStream`."""

    _conversation: AsyncConversation

    def __init__(
        self, conversation: AsyncConversation, begin: Callable[[], tuple[PendingTurn, Change]], *, read: bool = True
    ) -> None:
        super().__init__(conversation, None)
        self._iterator: AsyncGenerator[str, None] | None = None
        self._begin: Callable[[], tuple[PendingTurn, Change]] | None = begin
        self._begun: Change | None = None  # stored (awaited) when the stream starts
        if not (read and conversation._must_read()):
            self._plan()  # a refused turn raises here, as with `Conversation.stream`

    def _plan(self) -> None:
        """Plan the turn (its pending user message is stored when the stream starts)."""
        assert self._begin is not None
        begin, self._begin = self._begin, None
        pending, self._begun = begin()
        self._start(pending)

    async def store_pending(self) -> None:
        """Store the turn's pending user message now (entering the stream, or its first item, does it otherwise):
        for a caller that must know the turn is in the store before it says so, as a gateway answering a client."""
        if self._begin is not None:
            await self._conversation._read_if_pending()
            self._plan()
        begun, self._begun = self._begun, None
        if begun is not None:
            await self._conversation._apply_now(begun)

    async def __aenter__(self) -> Self:
        await self.store_pending()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()
        await self.store_pending()
        if change := self._abandon_change():
            await self._conversation._apply_now(change)

    def __aiter__(self) -> AsyncIterator[str]:
        if self._iterator is None:
            self._iterator = self._text_stream()
        return self._iterator

    async def _text_stream(self) -> AsyncGenerator[str, None]:
        await self.store_pending()
        if self._fold.prefix:
            yield self._fold.prefix
        for effect in self._turn():
            if isinstance(effect, Change):
                await self._conversation._apply_now(effect)
                continue
            started = time.monotonic()
            try:
                async with self._open(effect) as stream:
                    async for event in self._opened(stream):
                        if out := self._fold.feed(event):
                            yield out
                    self._done(started, await stream.get_final_message())
            except BaseException as err:
                self._done(started, None, err)
        if tail := self._fold.finish():
            yield tail

    async def until_done(self) -> Reply:
        """See `ReplyStream.until_done`."""
        async for _ in self:
            pass
        return cast(Reply, self.reply)
