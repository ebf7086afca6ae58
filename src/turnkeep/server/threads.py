"""Message threads, made durable: `create` stores a conversation, `continue` sends only the new messages.

The client speaks the API's message-threads protocol (beta `message-threads-2026-08-12`); the gateway keeps the
conversation in its store and sends upstream an ordinary, complete request rebuilt by the conversation's context
policy (default `FullHistory`), with turnkeep's cache breakpoints. Upstream never sees a `thread`.

```
create    {"thread": {"type": "create"}, model, max_tokens, system?, tools?, messages: [... , user]}
            → a new conversation owned by the tenant; the reply's `id` is recorded as its continuable head
continue  {"thread": {"type": "continue", "previous_message_id": "msg_…"}, model, max_tokens, messages: [user]}
            → lease the conversation, check the reply is still its head, send, record the new reply's `id`
```

A reply's `id` is minted by the gateway (`msg_tk…`), so a streamed turn names it in its first event, before
upstream answers. `prepare_thread_turn` does every check (a refusal is an ordinary HTTP error); then the turn
runs to a JSON answer or streams as it arrives (`ThreadTurn`).

Errors, as the API's (status, `error.details.error_code`):

- unknown id, or another tenant's → 404 `thread_not_found` (the same answer, so ids leak nothing);
- a reply that was continued already → 400 `thread_already_continued`;
- a continue of the same conversation running on any replica (its lease is held) → 400
  `thread_continue_in_flight`;
- `model`, `speed` or the thinking type differing from the create → 400 `thread_fingerprint_mismatch`;
- `context_management`, `fallbacks`, manual thinking or a `compaction` request → 400 `thread_unsupported_request`;
- `system` or `tools` on a continue → 400 (fixed at create).

Unlike the API, threads do not expire. A turn whose upstream call failed, whose stream was cut, or whose process
died leaves its user message pending in the store; the client's retry of the same continue replaces it
(rollback, then send), so nothing is recorded twice.
A failed `create` leaves nothing: its conversation is deleted, since no reply id could ever name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from turnkeep.errors import ConflictError
from turnkeep.server import sse
from turnkeep.server.errors import GatewayError, invalid_request, not_found
from turnkeep.server.tenancy import ThreadRow

if TYPE_CHECKING:
    from turnkeep.client import AsyncConversation, AsyncReplyStream, Reply
    from turnkeep.server.app import Gateway

__all__ = [
    "THREADS_BETA",
    "Lease",
    "ThreadRequest",
    "ThreadTurn",
    "new_reply_id",
    "parse_thread_request",
    "prepare_thread_turn",
]

THREADS_BETA = "message-threads-2026-08-12"

# Fields the conversation takes from the create (settings) and fields the gateway sets itself (caching,
# diagnostics): neither goes into a turn's overrides.
_SETTINGS = frozenset({"model", "max_tokens", "system", "tools", "messages", "thread", "stream"})
_GATEWAY_OWNED = frozenset({"cache_control", "diagnostics"})


@dataclass(frozen=True)
class ThreadRequest:
    """A threaded request, checked: what kind, which reply it continues, the new messages and the turn's options."""

    kind: str  # "create" | "continue"
    previous_message_id: str | None
    body: Mapping[str, Any]
    messages: list[dict[str, Any]]
    overrides: dict[str, Any]
    fingerprint: dict[str, Any]


def parse_thread_request(body: Mapping[str, Any]) -> ThreadRequest:
    """Check the `thread` parameter and the request around it; raises `GatewayError` (400) naming what is wrong."""
    thread = body.get("thread")
    if not isinstance(thread, Mapping):
        raise invalid_request("thread: Input should be an object")
    kind = thread.get("type")
    allowed = {"type"} if kind == "create" else {"type", "previous_message_id"}
    if kind not in ("create", "continue"):
        raise invalid_request(f"thread.type: Input should be 'create' or 'continue', not {kind!r}")
    extra = sorted(set(thread) - allowed)
    if extra:
        raise invalid_request(f"thread.{extra[0]}: Extra inputs are not permitted")
    previous = thread.get("previous_message_id")
    if kind == "continue" and (not isinstance(previous, str) or not previous):
        raise invalid_request("thread.previous_message_id: Field required (a non-empty string)")
    _check_threadable(body)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise invalid_request("model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise invalid_request("max_tokens: Field required (a positive integer)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, Mapping) for m in messages):
        raise invalid_request("messages: Input should be a non-empty list of messages")
    for index, message in enumerate(messages):
        if message.get("role") not in ("user", "assistant") or "content" not in message:
            raise invalid_request(f"messages.{index}: a message needs a role (user or assistant) and content")
    if kind == "continue":
        fixed = [f"`{name}`" for name in ("system", "tools") if name in body]
        if fixed:
            raise invalid_request(
                f'{" and ".join(fixed)} cannot be sent with `thread.type` "continue": the thread keeps the values '
                'of the request that created it. To change them, send the full conversation with `thread: {"type": '
                '"create"}`.'
            )
        # A continue brings one new turn: a user message, optionally followed by an assistant prefill.
        roles = [m["role"] for m in messages]
        if roles not in (["user"], ["user", "assistant"]):
            raise invalid_request(
                "messages: a continue carries the new user message (optionally followed by an assistant prefill), "
                f"not {len(messages)} messages with roles {roles}"
            )
    overrides = {k: v for k, v in body.items() if k not in _SETTINGS and k not in _GATEWAY_OWNED}
    return ThreadRequest(
        kind=str(kind),
        previous_message_id=previous if kind == "continue" else None,
        body=body,
        messages=[dict(m) for m in messages],
        overrides=overrides,
        fingerprint=_fingerprint(body),
    )


def _check_threadable(body: Mapping[str, Any]) -> None:
    unsupported = [name for name in ("context_management", "fallbacks") if body.get(name)]
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        unsupported.append("thinking")
    if unsupported or body.get("compaction") is not None:
        names = ", ".join(f"`{name}`" for name in unsupported or ["compaction"])
        error = GatewayError(
            400,
            f"`thread` cannot be combined with {names}. Send the full conversation without `thread`, or change "
            "that field.",
            error_code="thread_unsupported_request",
        )
        raise error


def _fingerprint(body: Mapping[str, Any]) -> dict[str, Any]:
    thinking = body.get("thinking")
    return {
        "model": body.get("model"),
        "speed": body.get("speed") or "standard",
        "thinking": thinking.get("type") if isinstance(thinking, Mapping) else None,
    }


def new_reply_id() -> str:
    """A reply id of the gateway's own (`msg_tk…`): threads are continued by it."""
    return "msg_tk" + secrets.token_hex(12)


class ThreadTurn:
    """A threaded turn, checked and ready to send: its conversation (leased, for a continue) and its new message.

    `prepare_thread_turn` makes one; every refusal happens there, before anything is sent to the client. Then
    exactly one of `run` (a JSON answer) or `stream` (SSE events as the reply arrives) sends it, and `close`
    (always, in a `finally`) frees what an unfinished turn holds: the lease of a continue, and the conversation of
    a create that never got a reply (no reply id could ever name it).

    The reply's `id` is the gateway's own, minted here: a streamed turn announces it in its first event, before
    upstream has answered, and any replica finds the thread by it.
    """

    def __init__(
        self,
        gateway: Gateway,
        tenant: str,
        request: ThreadRequest,
        conversation: AsyncConversation,
        *,
        lease: Lease | None,
    ) -> None:
        self.gateway = gateway
        self.tenant = tenant
        self.request = request
        self.conversation = conversation
        self.lease = lease
        self.reply_id = new_reply_id()
        self.done = False
        self._stream: AsyncReplyStream | None = None
        self._before = conversation.spent
        last = request.messages[-1]
        self.content: object = last["content"]
        self.prefill: str | None = None
        if last["role"] == "assistant":
            self.content, self.prefill = request.messages[-2]["content"], _prefill_text(last)

    @property
    def conversation_id(self) -> str:
        return self.conversation.id

    def message(self, reply: Reply) -> dict[str, Any]:
        """The reply as the API's message object, under the gateway's id."""
        message = reply.message.to_dict(mode="json")
        message["id"] = self.reply_id
        message["content"] = [dict(block) for block in reply.content]
        message["stop_reason"] = reply.stop_reason
        return message

    async def run(self) -> dict[str, Any]:
        """Send the turn and record its reply as the thread's new head; returns the reply's message."""
        if self.lease is not None:
            self.lease.keep_alive()
        reply = await _send(self.gateway, self.tenant, self.conversation, self.content, self.prefill, self.request)
        self._commit()
        return self.message(reply)

    async def begin_stream(self) -> None:
        """Store the new user message (pending) and set up the streamed call: a refusal here is still an HTTP
        error, and once the first event is out the turn is in the store, whatever happens to this process."""
        self._before = self.conversation.spent
        self._stream = self.conversation.stream(self.content, prefill=self.prefill, **self.request.overrides)
        await self._stream.store_pending()

    async def stream(self) -> AsyncIterator[bytes]:
        """The turn as SSE events, sent while it runs (see `turnkeep.server.sse`). A failure once the events have
        started ends them with the API's `error` event; the user message then stays pending, as it does when the
        client goes away mid-stream, and a retry of the same continue replaces it."""
        from turnkeep.server.app import _as_gateway_error

        turn = self._stream
        assert turn is not None, "begin_stream() first"
        for event in sse.message_start(self.reply_id, self.conversation.model):
            yield event
        if self.lease is not None:
            self.lease.keep_alive()
        reply: Reply | None = None
        text_open = False
        try:
            async with turn:
                async for text in turn:
                    if not text_open:
                        yield sse.text_start(0)
                        text_open = True
                    yield sse.text_delta(0, text)
            reply = turn.reply
            assert reply is not None
            if reply.partial:
                raise GatewayError(502, "The upstream stream ended before the reply was complete.")
            self._commit()
        except Exception as err:
            self.gateway.forget(self.conversation.id)
            if isinstance(err, ConflictError):
                err = _in_flight("this thread's last response")
            answer = _as_gateway_error(err)
            if answer is None:
                logging.getLogger("turnkeep.gateway").exception("unexpected error", exc_info=err)
                answer = GatewayError(500, "The gateway failed unexpectedly.")
            yield sse.encode("error", answer.body("req_gw"))
            return
        finally:
            self.gateway.account_turn(
                self.tenant, self.conversation.model, self._before, self.conversation.spent, reply
            )
        self.gateway.keep(self.conversation)
        message = self.message(reply)
        index = 1 if text_open else 0
        for block in message["content"]:
            if block.get("type") == "text" and text_open:
                continue  # its text went out as it arrived
            for event in sse.block_events(index, block):
                yield event
            index += 1
        if text_open:
            yield sse.block_stop(0)
        for event in sse.message_end(message):
            yield event

    def _commit(self) -> None:
        head = self.conversation.branches.get(self.conversation.branch)
        assert head is not None
        self.gateway.tenancy.record_thread(
            self.tenant,
            ThreadRow(self.reply_id, self.conversation.id, head, dict(self.request.fingerprint)),
            now=self.gateway.clock(),
        )
        self.done = True

    async def close(self) -> None:
        """Free what the turn holds (call it once, whether the turn ran, failed, or never started)."""
        if self._stream is not None:
            await self._stream.__aexit__(None, None, None)  # a stream never iterated keeps its message pending
        if self.lease is not None:
            await self.lease.release()
        if not self.done and self.request.kind == "create":
            # No reply id names this conversation, so nothing could ever continue it: leave no trace.
            self.gateway.forget(self.conversation.id)
            self.gateway.store.delete(self.conversation.id)
            self.gateway.tenancy.forget_conversation(self.tenant, self.conversation.id)


class Lease:
    """A continue's hold on its conversation: a row with an expiry, renewed while the turn runs, so a short
    `lease_seconds` frees the conversation of a replica that died mid-turn soon, without cutting a long turn."""

    def __init__(self, gateway: Gateway, conversation_id: str, token: str) -> None:
        self.gateway = gateway
        self.conversation_id = conversation_id
        self.token = token
        self._renewer: asyncio.Task[None] | None = None

    def keep_alive(self) -> None:
        """Renew the lease every third of its length until released."""
        if self._renewer is None:
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        seconds = self.gateway.config.lease_seconds
        while True:
            await asyncio.sleep(seconds / 3)
            if not self.gateway.tenancy.renew_lease(
                self.conversation_id, self.token, now=self.gateway.clock(), seconds=seconds
            ):
                return  # lost (this process stalled past its expiry): the store's head check still guards writes

    async def release(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        self.gateway.tenancy.release_lease(self.conversation_id, self.token)


async def prepare_thread_turn(gateway: Gateway, tenant: str, request: ThreadRequest, policy: str | None) -> ThreadTurn:
    """Check a threaded request against the store and take what it needs (a new conversation, or the lease of
    the one it continues). Raises `GatewayError` for a refusal, having changed nothing."""
    if request.kind == "create":
        return _prepare_create(gateway, tenant, request, policy)
    return _prepare_continue(gateway, tenant, request)


def _prepare_create(gateway: Gateway, tenant: str, request: ThreadRequest, policy_spec: str | None) -> ThreadTurn:
    from turnkeep.client import AsyncConversation

    body = request.body
    *earlier, last = request.messages
    if last["role"] == "assistant" and earlier:
        *earlier, last = earlier
    if last["role"] != "user":
        raise invalid_request("messages: the last message must be a user message (or an assistant prefill)")
    policy = gateway.policy(policy_spec)
    conversation = AsyncConversation(
        body["model"],
        system=body.get("system"),
        max_tokens=body["max_tokens"],
        tools=body.get("tools"),
        policy=policy,
        store=gateway.store,
        catalog=gateway.catalog,
        client=gateway.upstream,
    )
    gateway.tenancy.claim_conversation(tenant, conversation.id, now=gateway.clock())
    turn = ThreadTurn(gateway, tenant, request, conversation, lease=None)
    try:
        for message in earlier:
            if message["role"] == "user":
                conversation.add_user(message["content"])
            else:
                conversation.add_assistant(message["content"])
    except BaseException:
        gateway.store.delete(conversation.id)
        gateway.tenancy.forget_conversation(tenant, conversation.id)
        raise
    return turn


def _prepare_continue(gateway: Gateway, tenant: str, request: ThreadRequest) -> ThreadTurn:
    assert request.previous_message_id is not None
    row = gateway.tenancy.thread(tenant, request.previous_message_id)
    if row is None:
        raise not_found(
            f"No usable thread state was found for previous_message_id {request.previous_message_id}. Replay the "
            'full conversation with `thread: {"type": "create"}` to start a new thread.',
            error_code="thread_not_found",
        )
    changed = [name for name, value in request.fingerprint.items() if row.fingerprint.get(name) != value]
    if changed:
        names = ", ".join(f"`{name}`" for name in changed)
        raise invalid_request(
            f"{names} differ{'s' if len(changed) == 1 else ''} from the value stored with the thread. Send the "
            'stored values, or replay the full conversation with `thread: {"type": "create"}` to change them.',
            error_code="thread_fingerprint_mismatch",
        )
    token = secrets.token_hex(8)
    if not gateway.tenancy.acquire_lease(
        tenant, row.conversation_id, token, now=gateway.clock(), seconds=gateway.config.lease_seconds
    ):
        raise _in_flight(request.previous_message_id)
    try:
        head = gateway.store.branches(row.conversation_id).get("main")
        conversation = gateway.conversation(row.conversation_id, head)
        if head != row.node_id:
            first_pending = next((n for n in conversation.transcript if n.status == "pending"), None)
            if first_pending is None or first_pending.parent_id != row.node_id:
                raise invalid_request(
                    f"The response {request.previous_message_id} has already been continued, and each response can "
                    "be continued only once. Continue from the thread's most recent response `id`.",
                    error_code="thread_already_continued",
                )
            # An earlier attempt of this continue did not finish (upstream failed, the client went away, or its
            # replica died): its message was kept pending. Replace it.
            conversation.rollback()
    except BaseException:
        gateway.tenancy.release_lease(row.conversation_id, token)
        raise
    return ThreadTurn(gateway, tenant, request, conversation, lease=Lease(gateway, row.conversation_id, token))


def _in_flight(previous_id: str) -> GatewayError:
    return invalid_request(
        f"Another request is still continuing from {previous_id}. Wait for it to complete and continue from its "
        'response `id`, or replay the full conversation with `thread: {"type": "create"}`.',
        error_code="thread_continue_in_flight",
    )


def _prefill_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if (
        isinstance(content, list)
        and len(content) == 1
        and isinstance(content[0], Mapping)
        and content[0].get("type") == "text"
    ):
        return str(content[0].get("text", ""))
    raise invalid_request("messages: an assistant prefill must be text")


async def _send(
    gateway: Gateway,
    tenant: str,
    conversation: AsyncConversation,
    content: object,
    prefill: str | None,
    request: ThreadRequest,
) -> Reply:
    """Send the turn; every upstream request it made is added to the tenant's usage, failed or not."""
    before = conversation.spent
    reply: Reply | None = None
    try:
        reply = await conversation.send(content, prefill=prefill, **request.overrides)
        gateway.keep(conversation)
        return reply
    except ConflictError as err:
        # Another writer moved the head between our lease and our write (a lease that expired under a slow turn).
        gateway.forget(conversation.id)
        raise _in_flight("this thread's last response") from err
    except BaseException:
        gateway.forget(conversation.id)
        raise
    finally:
        # What the turn spent (summary calls and billed failures included), read from the conversation's own
        # running totals rather than its whole ledger.
        gateway.account_turn(tenant, conversation.model, before, conversation.spent, reply)
