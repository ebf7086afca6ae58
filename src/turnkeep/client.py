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

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self, cast

from anthropic.types import Message, MessageParam

from turnkeep.attempts import AttemptLog
from turnkeep.core.budget import Budget, Forecast, Spent
from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.policies import Plan, Policy
from turnkeep.core.signals import thinking_update_text
from turnkeep.core.turn import Call
from turnkeep.errors import ConfigError
from turnkeep.sdk import is_transport_failure, messages_resource, split_betas, stream_snapshot, transport_error
from turnkeep.session import (
    ConversationCore,
    PendingTurn,
    PrefillFallback,
    PrefixAligner,
    Reply,
    partial_content,
    stream_prefix,
)
from turnkeep.store import LedgerEntry, Node, Store

if TYPE_CHECKING:
    import anthropic
    from anthropic.lib.streaming import AsyncMessageStream, MessageStream


__all__ = ["AsyncConversation", "AsyncReplyStream", "Conversation", "Reply", "ReplyStream"]


def _betas(betas: list[str] | None) -> dict[str, Any]:
    return {"betas": betas} if betas else {}


def _raise_ours(error: BaseException) -> NoReturn:
    """Re-raise a call's error; a raw transport failure the SDK let through becomes `TransportError`."""
    if is_transport_failure(error):
        raise transport_error(error) from error
    raise error


class _Facade:
    """Methods both drivers expose unchanged."""

    _core: ConversationCore
    _client: Any  # anthropic.Anthropic or anthropic.AsyncAnthropic, as the driver needs; None until first needed

    @classmethod
    def _bound(cls, core: ConversationCore, client: Any) -> Self:
        """A driver over an existing core (another branch of the same conversation, a reopened one)."""
        self = cls.__new__(cls)
        self._attach(core, client)
        return self

    def _attach(self, core: ConversationCore, client: Any | None) -> None:
        """Drive `core` with `client`, or with the SDK client the environment configures."""
        self._core = core
        self._client = client

    def _resolved_client(self) -> Any:
        """The client given, else the SDK's own from the environment, made on first use: a conversation that only
        plans (`explain`, `forecast`) needs no credentials."""
        if self._client is None:
            _require_credentials()
            self._client = self._default_client()
        return self._client

    def _sending(self) -> ConversationCore:
        """The core, once the client that will send is known: no turn begins that could not be sent."""
        self._resolved_client()
        return self._core

    @staticmethod
    def _default_client() -> Any:
        raise NotImplementedError

    def _failed(self, pending: PendingTurn, call: Call, error: BaseException, started: float) -> Call | None:
        """A call raised: record it; the call to make instead, or raise (a raw transport failure as ours)."""
        following = self._core.failed(pending, call, error, time.monotonic() - started)
        if following is None:
            self._core.fail(pending, partial=partial_content(pending.turn, None) or None)
            _raise_ours(error)
        return following

    def fork(self, name: str | None = None) -> Self:
        """A new branch at the current head, sharing this conversation's store and client."""
        return self._bound(self._core.fork(name), self._client)

    def switch(self, branch: str) -> Self:
        """The same conversation bound to another existing branch."""
        return self._bound(self._core.on_branch(branch), self._client)

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
        return self._core.ledger

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
        self._core.update(system=system)

    def set_model(self, model: str) -> None:
        """Switch later turns to another model. The prompt cache starts over (caches are per model)."""
        self._core.update(model=model)

    def explain(self, content: object | None = None, **request_overrides: Any) -> Plan:
        """The plan of the next request, sent nowhere: what the context policy keeps, drops or summarises, the
        cache breakpoints and the predicted cost (`plan.explanation`), and the exact request (`plan.request`)."""
        return self._core.explain(content, request_overrides)

    def add_user(self, content: object) -> None:
        """Append a user message without sending it (merged with the next one when sent)."""
        self._core.add("user", content)

    def add_assistant(self, content: object) -> None:
        """Append an assistant message without a request (e.g. few-shot examples or an imported history)."""
        self._core.add("assistant", content)

    def instruct(self, text: str) -> None:
        """Add a mid-conversation system message (sent after the next user message) on models that accept it."""
        self._core.instruct(text)

    def rollback(self) -> None:
        """Drop the pending user message of a failed turn."""
        self._core.rollback()

    def undo(self) -> None:
        """Step back one turn on this branch (the turn stays in the tree)."""
        self._core.undo()


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


class Conversation(_Facade):
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

    @property
    def client(self) -> anthropic.Anthropic:
        """The SDK client: the one given, else `anthropic.Anthropic()` from the environment, made on first use."""
        return cast("anthropic.Anthropic", self._resolved_client())

    @client.setter
    def client(self, client: anthropic.Anthropic) -> None:
        self._client = client

    @staticmethod
    def _default_client() -> anthropic.Anthropic:
        import anthropic

        return anthropic.Anthropic()

    def __init__(
        self,
        model: str | None = None,
        *,
        system: str | list[dict[str, Any]] | None = None,
        max_tokens: int = 1024,
        client: anthropic.Anthropic | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        policy: Policy | None = None,
        store: Store | None = None,
        catalog: Catalog | None = None,
        auto_continue: int = 0,
        max_resumes: int = 5,
        keep_refusals: bool = False,
        refusal_retry: bool = False,
        clock: Callable[[], float] | None = None,
        threads: bool = False,
        budget: Budget | None = None,
    ) -> None:
        core = ConversationCore(
            model,
            system=system,
            max_tokens=max_tokens,
            tools=tools,
            policy=policy,
            store=store,
            catalog=catalog,
            auto_continue=auto_continue,
            max_resumes=max_resumes,
            keep_refusals=keep_refusals,
            refusal_retry=refusal_retry,
            clock=clock,
            threads=threads,
            budget=budget,
        )
        self._attach(core, client)

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
        pending = self._sending().begin(
            content, prefill=prefill, prefill_fallback=prefill_fallback, overrides=request_overrides
        )
        return self._run(pending)

    def send_tool_results(self, results: Mapping[str, object], *, text: str | None = None, **overrides: Any) -> Reply:
        """Answer every pending tool call of the last reply: `{tool_use_id: result}`; an exception as a result is
        sent as an error (`is_error`). `text` adds a user note after the results."""
        content = self._core.tool_results_content(results, text)
        pending = self._sending().begin(
            content, prefill=None, prefill_fallback="error", overrides=overrides, kind="tool_results"
        )
        return self._run(pending)

    def retry(self, **request_overrides: Any) -> Reply:
        """Resend the pending user message of a failed or cut-off turn."""
        return self._run(self._sending().begin_retry(request_overrides))

    def stream(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> ReplyStream:
        """Like `send`, streaming: `with chat.stream("Hi") as s: for text in s: ...`, then `s.reply`."""
        pending = self._sending().begin(
            content, prefill=prefill, prefill_fallback=prefill_fallback, overrides=request_overrides
        )
        return ReplyStream(self, pending)

    @classmethod
    def open(
        cls,
        conversation_id: str,
        *,
        store: Store,
        client: anthropic.Anthropic | None = None,
        branch: str = "main",
        policy: Policy | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] | None = None,
        threads: bool | None = None,
    ) -> Conversation:
        """Reopen a stored conversation (on `branch`) to continue it; its next request repeats the stored
        history byte for byte, so the prompt cache still applies. `policy` and `threads` (None: as stored)
        change how it goes on."""
        core = ConversationCore.open(
            store, conversation_id, branch=branch, policy=policy, catalog=catalog, clock=clock, threads=threads
        )
        return cls._bound(core, client)

    def forecast(self, content: object | None = None, *, exact: bool = False, **request_overrides: Any) -> Forecast:
        """What the next request (with `content` as its new message) will cost, split as it will be billed.

        Exact for everything the last request already carried (its `usage` measured it); the new content is
        estimated and calibrated on this conversation's history. `exact=True` asks the API's free `count_tokens`
        endpoint for the total instead (one extra request, not billed)."""
        plan = self._core.explain(content, request_overrides)
        max_tokens = int(plan.request["max_tokens"])
        if not exact:
            return self._core.forecast_plan(plan, max_tokens)
        request, betas = split_betas(self._core.count_tokens_request(plan))
        counter = messages_resource(self.client, betas)
        counted = counter.count_tokens(**request, **({"betas": betas} if betas else {}))
        return self._core.forecast_plan(plan, max_tokens, exact_input_tokens=counted.input_tokens)

    def stream_retry(self, **request_overrides: Any) -> ReplyStream:
        """Like `retry`, streaming."""
        return ReplyStream(self, self._sending().begin_retry(request_overrides))

    def _create(self, call: Call, attempts: AttemptLog) -> Message:
        request, betas = split_betas(self._core.wire(call))
        request = attempts.tag(self.client, request)  # each HTTP attempt observed for the ledger
        return cast(Message, messages_resource(self.client, betas).create(**request, **_betas(betas)))

    def _run(self, pending: PendingTurn) -> Reply:
        call: Call | None = pending.turn.start()
        while call is not None:
            started = time.monotonic()
            try:
                message = self._create(call, pending.attempts)
            except BaseException as err:
                call = self._failed(pending, call, err, started)
                continue
            call = self._core.answered(pending, call, message, time.monotonic() - started)
        return self._core.commit(pending, pending.turn.outcome())


class _StreamedTurn:
    """What a streamed turn's sync and async drivers share: its state, the text to show, finishing, abandoning."""

    def __init__(self, core: ConversationCore, pending: PendingTurn) -> None:
        self._core = core
        self._pending = pending
        self._stream: Any = None
        self.reply: Reply | None = None
        self._finished = False
        self._shown = False  # whether any of the model's text reached the caller (then no silent resend)

    def _text(self, call: Call, event: Any, aligner: PrefixAligner) -> str:
        """The text an event brings the caller (a summary call's text is not the reply's)."""
        # Asked for with thinking.display "updates": what the model writes between tool calls arrives as thinking.
        update = thinking_update_text(call.request, event) if call.shows_text else None
        if update:
            self._shown = True
            return update
        if call.shows_text and event.type == "content_block_delta" and event.delta.type == "text_delta":
            out = aligner.feed(event.delta.text)
            self._shown = self._shown or bool(out)
            return out
        return ""

    def _finish(self, aligner: PrefixAligner) -> str:
        """Commit the reply; returns the last text held back by the prefix aligner."""
        tail = aligner.flush()
        self._finished = True
        self.reply = self._core.commit(self._pending, self._pending.turn.outcome())
        return tail

    def _failed(self, call: Call, error: BaseException, started: float, request_id: str | None) -> Call | None:
        """A streamed call raised: record it with what had arrived; the call to make instead, or raise."""
        snapshot, self._stream = stream_snapshot(self._stream), None
        latency = time.monotonic() - started
        may_resend = not self._shown
        following = self._core.failed(
            self._pending, call, error, latency, received=snapshot, request_id=request_id, may_resend=may_resend
        )
        if following is None:
            self._abandon(snapshot)
            _raise_ours(error)
        return following

    def _answered(self, call: Call, message: Message, started: float, request_id: str | None) -> Call | None:
        """A streamed call finished: record it; the turn's next call (None: the turn is over)."""
        self._stream = None
        latency = time.monotonic() - started
        return self._core.answered(
            self._pending, call, message, latency, request_id=request_id, may_resend=not self._shown
        )

    def _abandon(self, snapshot: Message | None = None) -> None:
        """Keep what arrived as a partial reply (never sent back); the user message stays pending."""
        if self._finished:
            return
        self._finished = True
        snapshot = snapshot or stream_snapshot(self._stream)
        content = partial_content(self._pending.turn, snapshot)
        self._stream = None
        self.reply = self._core.partial_reply(self._pending, content, snapshot)


class ReplyStream(_StreamedTurn):
    """A streamed turn: iterate for text as it arrives; `reply` once the stream is done.

    Leaving the `with` block early, or an error mid-stream, keeps the text received so far as a partial reply
    (`reply.partial`), never sent back; the user message stays pending for `retry()`.
    """

    def __init__(self, conversation: Conversation, pending: PendingTurn) -> None:
        super().__init__(conversation._core, pending)
        self._conversation = conversation
        self._iterator: Generator[str, None, None] | None = None

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._iterator is not None:
            self._iterator.close()  # an unfinished generator records and stores what it had (see its except)
        self._abandon()

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._text_stream()
        return self._iterator

    def _text_stream(self) -> Generator[str, None, None]:
        core, turn = self._conversation._core, self._pending.turn
        prefix, aligner = stream_prefix(self._pending)
        if prefix:
            yield prefix
        call: Call | None = turn.start()
        while call is not None:
            started = time.monotonic()
            request, betas = split_betas(core.wire(call))
            request = self._pending.attempts.tag(self._conversation.client, request)  # observed for the ledger
            manager = messages_resource(self._conversation.client, betas).stream(**request, **_betas(betas))
            try:
                request_id = None
                with manager as stream:
                    self._stream = cast("MessageStream[Any]", stream)
                    request_id = stream.request_id
                    for event in stream:
                        out = self._text(call, event, aligner)
                        if out:
                            yield out
                    message = cast(Message, stream.get_final_message())
            except BaseException as err:
                call = self._failed(call, err, started, request_id)
                continue
            call = self._answered(call, message, started, request_id)
        tail = self._finish(aligner)
        if tail:
            yield tail

    def until_done(self) -> Reply:
        """Consume the stream and return the reply."""
        for _ in self:
            pass
        assert self.reply is not None
        return self.reply


class AsyncConversation(_Facade):
    """The `asyncio`/`anyio` twin of `Conversation`: the same behaviour with `await`."""

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The SDK client: the one given, else `anthropic.AsyncAnthropic()` from the environment, made on first use."""
        return cast("anthropic.AsyncAnthropic", self._resolved_client())

    @client.setter
    def client(self, client: anthropic.AsyncAnthropic) -> None:
        self._client = client

    @staticmethod
    def _default_client() -> anthropic.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic()

    def __init__(
        self,
        model: str | None = None,
        *,
        system: str | list[dict[str, Any]] | None = None,
        max_tokens: int = 1024,
        client: anthropic.AsyncAnthropic | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        policy: Policy | None = None,
        store: Store | None = None,
        catalog: Catalog | None = None,
        auto_continue: int = 0,
        max_resumes: int = 5,
        keep_refusals: bool = False,
        refusal_retry: bool = False,
        clock: Callable[[], float] | None = None,
        threads: bool = False,
        budget: Budget | None = None,
    ) -> None:
        core = ConversationCore(
            model,
            system=system,
            max_tokens=max_tokens,
            tools=tools,
            policy=policy,
            store=store,
            catalog=catalog,
            auto_continue=auto_continue,
            max_resumes=max_resumes,
            keep_refusals=keep_refusals,
            refusal_retry=refusal_retry,
            clock=clock,
            threads=threads,
            budget=budget,
        )
        self._attach(core, client)

    async def send(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> Reply:
        """See `Conversation.send`."""
        pending = self._sending().begin(
            content, prefill=prefill, prefill_fallback=prefill_fallback, overrides=request_overrides
        )
        return await self._run(pending)

    async def send_tool_results(
        self, results: Mapping[str, object], *, text: str | None = None, **overrides: Any
    ) -> Reply:
        """See `Conversation.send_tool_results`."""
        content = self._core.tool_results_content(results, text)
        pending = self._sending().begin(
            content, prefill=None, prefill_fallback="error", overrides=overrides, kind="tool_results"
        )
        return await self._run(pending)

    async def retry(self, **request_overrides: Any) -> Reply:
        """See `Conversation.retry`."""
        return await self._run(self._sending().begin_retry(request_overrides))

    def stream(
        self,
        content: object,
        *,
        prefill: str | None = None,
        prefill_fallback: PrefillFallback = "error",
        **request_overrides: Any,
    ) -> AsyncReplyStream:
        """`async with chat.stream("Hi") as s: async for text in s: ...`, then `s.reply`."""
        pending = self._sending().begin(
            content, prefill=prefill, prefill_fallback=prefill_fallback, overrides=request_overrides
        )
        return AsyncReplyStream(self, pending)

    @classmethod
    def open(
        cls,
        conversation_id: str,
        *,
        store: Store,
        client: anthropic.AsyncAnthropic | None = None,
        branch: str = "main",
        policy: Policy | None = None,
        catalog: Catalog | None = None,
        clock: Callable[[], float] | None = None,
        threads: bool | None = None,
    ) -> AsyncConversation:
        """See `Conversation.open`."""
        core = ConversationCore.open(
            store, conversation_id, branch=branch, policy=policy, catalog=catalog, clock=clock, threads=threads
        )
        return cls._bound(core, client)

    async def forecast(
        self, content: object | None = None, *, exact: bool = False, **request_overrides: Any
    ) -> Forecast:
        """See `Conversation.forecast`."""
        plan = self._core.explain(content, request_overrides)
        max_tokens = int(plan.request["max_tokens"])
        if not exact:
            return self._core.forecast_plan(plan, max_tokens)
        request, betas = split_betas(self._core.count_tokens_request(plan))
        counter = messages_resource(self.client, betas)
        counted = await counter.count_tokens(**request, **({"betas": betas} if betas else {}))
        return self._core.forecast_plan(plan, max_tokens, exact_input_tokens=counted.input_tokens)

    def stream_retry(self, **request_overrides: Any) -> AsyncReplyStream:
        """See `Conversation.stream_retry`."""
        return AsyncReplyStream(self, self._sending().begin_retry(request_overrides))

    async def _create(self, call: Call, attempts: AttemptLog) -> Message:
        request, betas = split_betas(self._core.wire(call))
        request = attempts.tag(self.client, request)  # each HTTP attempt observed for the ledger
        return cast(Message, await messages_resource(self.client, betas).create(**request, **_betas(betas)))

    async def _run(self, pending: PendingTurn) -> Reply:
        call: Call | None = pending.turn.start()
        while call is not None:
            started = time.monotonic()
            try:
                message = await self._create(call, pending.attempts)
            except BaseException as err:
                call = self._failed(pending, call, err, started)
                continue
            call = self._core.answered(pending, call, message, time.monotonic() - started)
        return self._core.commit(pending, pending.turn.outcome())


class AsyncReplyStream(_StreamedTurn):
    """The async twin of `ReplyStream`."""

    def __init__(self, conversation: AsyncConversation, pending: PendingTurn) -> None:
        super().__init__(conversation._core, pending)
        self._conversation = conversation
        self._iterator: AsyncGenerator[str, None] | None = None

    async def __aenter__(self) -> AsyncReplyStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()
        self._abandon()

    def __aiter__(self) -> AsyncIterator[str]:
        if self._iterator is None:
            self._iterator = self._text_stream()
        return self._iterator

    async def _text_stream(self) -> AsyncGenerator[str, None]:
        core, turn = self._conversation._core, self._pending.turn
        prefix, aligner = stream_prefix(self._pending)
        if prefix:
            yield prefix
        call: Call | None = turn.start()
        while call is not None:
            started = time.monotonic()
            request, betas = split_betas(core.wire(call))
            request = self._pending.attempts.tag(self._conversation.client, request)  # observed for the ledger
            manager = messages_resource(self._conversation.client, betas).stream(**request, **_betas(betas))
            try:
                request_id = None
                async with manager as stream:
                    self._stream = cast("AsyncMessageStream[Any]", stream)
                    request_id = stream.request_id
                    async for event in stream:
                        out = self._text(call, event, aligner)
                        if out:
                            yield out
                    message = cast(Message, await stream.get_final_message())
            except BaseException as err:
                call = self._failed(call, err, started, request_id)
                continue
            call = self._answered(call, message, started, request_id)
        tail = self._finish(aligner)
        if tail:
            yield tail

    async def until_done(self) -> Reply:
        """Consume the stream and return the reply."""
        async for _ in self:
            pass
        assert self.reply is not None
        return self.reply
