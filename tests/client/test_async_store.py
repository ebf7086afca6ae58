"""`AsyncConversation` on an `AsyncStore` (`AsyncPostgresStore` on a real PostgreSQL server): every write awaited on
the async pool, the same requests and history as the sync twin on a sync store, and the same guarantees (a refused
send changes nothing, a writer that lost a race gets `ConflictError` and can continue)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from fake_api import FakeAPI
from test_async_parity import run_async, run_sync, script, shape

from turnkeep import AsyncConversation, Budget, Conversation
from turnkeep.config import database_url
from turnkeep.errors import ConfigError, ConflictError, PrefillNotSupported, TransportError, UsageError
from turnkeep.store import AsyncPostgresStore, AsyncStore, MemoryStore, PostgresStore, open_async_store
from turnkeep.store.pgserver import TemporaryServer
from turnkeep.store.writes import is_async_store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def async_store(postgres_server: TemporaryServer) -> AsyncIterator[AsyncPostgresStore]:
    """An empty schema of its own on the session's server."""
    store = await AsyncPostgresStore.open(postgres_server.url, schema=f"a_{uuid.uuid4().hex[:10]}")
    yield store
    await store.close()


async def stored(store: AsyncStore, conversation_id: str) -> dict[str, Any]:
    """Everything the store holds about a conversation."""
    branches = await store.branches(conversation_id)
    return {
        "settings": await store.settings(conversation_id),
        "branches": branches,
        "paths": {name: await store.path(conversation_id, head) for name, head in branches.items()},
        "ledger": await store.ledger(conversation_id),
        "policy_states": await store.policy_states(conversation_id),
    }


async def test_the_twins_agree_when_the_async_one_writes_to_an_async_store(async_store: AsyncPostgresStore) -> None:
    sync_api, async_api = FakeAPI(), FakeAPI()
    script(sync_api)
    script(async_api)
    sync_conversation = run_sync(sync_api)
    async_conversation = await run_async(async_api, store=async_store)
    assert async_api.requests == sync_api.requests
    assert shape(async_conversation) == shape(sync_conversation)
    assert [e.purpose for e in async_conversation.ledger] == [e.purpose for e in sync_conversation.ledger]
    # What the async store holds is what the conversation holds in memory, and reopening it resumes byte for byte.
    holds = await stored(async_store, async_conversation.id)
    assert holds["paths"]["main"] == async_conversation.transcript
    assert holds["ledger"] == async_conversation.ledger
    reopened = await AsyncConversation.load(async_conversation.id, store=async_store, client=async_api.async_client())
    assert reopened.transcript == async_conversation.transcript
    assert reopened.messages == async_conversation.messages
    assert reopened.cost == sync_conversation.cost


async def test_the_conversation_reads_nothing_from_the_async_store_while_it_sends(
    async_store: AsyncPostgresStore, api: FakeAPI, postgres_server: TemporaryServer
) -> None:
    chat = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    assert not is_async_store(chat._core.store)  # the core reads its replica, in memory
    api.reply("One.").reply("Two.")
    await chat.send("first")
    await chat.send("second")
    # The sync store on the same tables sees the turns the async one wrote.
    with PostgresStore(postgres_server.url, schema=async_store.schema) as sync_store:
        texts = [n.message["content"] for n in sync_store.path(chat.id, sync_store.branches(chat.id)["main"])]
    assert texts == ["first", [{"type": "text", "text": "One."}], "second", [{"type": "text", "text": "Two."}]]


async def test_a_refused_send_changes_nothing_in_the_async_store(async_store: AsyncPostgresStore, api: FakeAPI) -> None:
    budget = Budget(max_cost_usd=Decimal("0.003"), degrade_to="claude-haiku-5-5")
    chat = AsyncConversation("claude-haiku-4-5", client=api.async_client(), store=async_store, budget=budget)
    api.reply("Noted.")
    await chat.send("Remember the word cobalt.")
    before = await stored(async_store, chat.id)
    with pytest.raises(PrefillNotSupported):
        await chat.send("Write a long story about cobalt. " * 400, prefill="Once upon a time")
    with pytest.raises(UsageError):
        await chat.send("hi", model="claude-opus-4-6")
    assert chat.model == "claude-haiku-4-5"
    assert await stored(async_store, chat.id) == before
    assert len(api.requests) == 1


async def test_a_writer_that_lost_a_race_on_an_async_store_gets_a_conflict_and_continues(
    async_store: AsyncPostgresStore, api: FakeAPI
) -> None:
    first = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    await first.flush()  # the conversation exists in the store before another writer opens it
    second = await AsyncConversation.load(first.id, store=async_store, client=api.async_client())
    api.reply("One.").reply("Two.").reply("Three.")
    await first.send("first writer")
    with pytest.raises(ConflictError):
        await second.send("second writer, stale")
    assert not second.pending
    assert (await second.send("second writer again")).text == "Two."
    with pytest.raises(ConflictError):
        await first.send("first writer, now stale")
    assert (await first.send("first writer again")).text == "Three."
    reopened = await AsyncConversation.load(first.id, store=async_store)
    texts = [node.message["content"] for node in reopened.transcript]
    assert texts[0::2] == ["first writer", "second writer again", "first writer again"]


async def test_history_edits_without_await_reach_the_async_store_before_the_next_request(
    async_store: AsyncPostgresStore, api: FakeAPI
) -> None:
    chat = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    chat.add_user("A note kept without a request.")
    chat.add_assistant("Understood.")
    fork = chat.fork("other")
    await chat.flush()
    assert (await async_store.branches(chat.id)).keys() == {"main", "other"}
    assert len(await async_store.path(chat.id, (await async_store.branches(chat.id))["main"])) == 2
    api.reply("Forked reply.")
    await fork.send("on the fork")
    assert len(await async_store.path(chat.id, (await async_store.branches(chat.id))["other"])) == 4
    chat.undo()
    await chat.flush()
    assert (await async_store.branches(chat.id))["main"] is None


async def test_streams_and_retries_write_to_the_async_store(async_store: AsyncPostgresStore, api: FakeAPI) -> None:
    chat = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    api.reply("Cut off mid-way.", cut_after_events=4).reply("Whole.")

    async def consume() -> None:
        async with chat.stream("stream it") as stream:
            async for _ in stream:
                pass

    with pytest.raises(TransportError, match="connection"):
        await consume()
    statuses = [n.status for n in await async_store.path(chat.id, (await async_store.branches(chat.id))["main"])]
    assert statuses == ["pending", "partial"]
    await chat.retry()
    holds = await stored(async_store, chat.id)
    assert [n.status for n in holds["paths"]["main"]] == ["ok", "ok"]
    assert len(holds["ledger"]) == 2  # the failed stream is billed too


async def test_open_async_store_opens_a_url_and_refuses_a_file(postgres_server: TemporaryServer) -> None:
    store = await open_async_store(postgres_server.url)
    try:
        chat = AsyncConversation("claude-sonnet-4-6", store=store)
        await chat.flush()
        assert (await store.info(chat.id)).model == "claude-sonnet-4-6"
    finally:
        await store.close()
    with pytest.raises(UsageError, match="not a postgresql:// URL"):
        await open_async_store("chats.db")
    with pytest.raises(UsageError, match="AsyncStore"):
        AsyncConversation.open("x", store=store)  # type: ignore[arg-type]


async def test_the_database_url_of_the_environment_opens_the_async_store(
    postgres_server: TemporaryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", postgres_server.url)
    url = database_url()
    assert url is not None
    async with await open_async_store(url) as store:
        assert isinstance(store, AsyncPostgresStore)
    monkeypatch.delenv("TURNKEEP_DATABASE_URL")
    assert database_url() is None
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", "chats.db")
    with pytest.raises(ConfigError, match="TURNKEEP_DATABASE_URL must be a postgresql:// URL"):
        database_url()


async def test_a_sync_conversation_refuses_an_async_store_before_anything_is_written(
    async_store: AsyncPostgresStore,
) -> None:
    with pytest.raises(UsageError, match="AsyncPostgresStore is an AsyncStore: use it with AsyncConversation"):
        Conversation("claude-sonnet-4-6", store=async_store)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"AsyncStore: use `await AsyncConversation\.load"):
        Conversation.open("x", store=async_store)  # type: ignore[arg-type]
    assert await async_store.count_conversations() == 0


async def test_load_takes_a_sync_store_too(api: FakeAPI) -> None:
    store = MemoryStore()
    chat = Conversation("claude-sonnet-4-6", client=api.client(), store=store)
    api.reply("Hello.")
    chat.send("Hi")
    again = await AsyncConversation.load(chat.id, store=store)
    assert again.transcript == chat.transcript


async def test_entering_a_stream_stores_its_user_message_before_anything_is_sent(
    async_store: AsyncPostgresStore, api: FakeAPI
) -> None:
    chat = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    api.reply("Hello.")
    async with chat.stream("hi") as stream:
        path = await async_store.path(chat.id, (await async_store.branches(chat.id))["main"])
        assert [(node.message["role"], node.status) for node in path] == [("user", "pending")]
        assert api.requests == []
        async for _ in stream:
            pass
    path = await async_store.path(chat.id, (await async_store.branches(chat.id))["main"])
    assert [(node.message["role"], node.status) for node in path] == [("user", "ok"), ("assistant", "ok")]


async def send_or_stream(chat: AsyncConversation, how: str, text: str) -> str:
    """One turn, sent or streamed to its end; the reply's text."""
    if how == "send":
        return (await chat.send(text)).text
    async with chat.stream(text) as stream:
        streamed = "".join([piece async for piece in stream])
    assert stream.reply is not None
    assert stream.reply.text == streamed
    return streamed


@pytest.mark.parametrize("how", ["send", "stream"])
async def test_a_pending_turn_another_writer_answered_since_is_read_again_before_a_new_turn(
    async_store: AsyncPostgresStore, api: FakeAPI, how: str
) -> None:
    first = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    api.reply("First answer.").reply("Second answer.")
    in_flight = first.stream("first writer")
    await in_flight.store_pending()
    second = await AsyncConversation.load(first.id, store=async_store, client=api.async_client())
    assert second.pending  # it read the branch while the first writer's turn waited for its reply
    async with in_flight:
        assert "".join([piece async for piece in in_flight]) == "First answer."
    assert await send_or_stream(second, how, "second writer") == "Second answer."
    reopened = await AsyncConversation.load(first.id, store=async_store)
    assert [(n.message["role"], n.status) for n in reopened.transcript] == [("user", "ok"), ("assistant", "ok")] * 2
    assert [n.message["content"] for n in reopened.transcript][0::2] == ["first writer", "second writer"]


@pytest.mark.parametrize("how", ["send", "stream"])
async def test_a_pending_turn_of_another_writer_still_in_flight_is_refused_and_nothing_changes(
    async_store: AsyncPostgresStore, api: FakeAPI, how: str
) -> None:
    first = AsyncConversation("claude-sonnet-4-6", client=api.async_client(), store=async_store)
    in_flight = first.stream("first writer")
    await in_flight.store_pending()
    second = await AsyncConversation.load(first.id, store=async_store, client=api.async_client())
    before = await stored(async_store, first.id)
    with pytest.raises(UsageError, match="the last turn has no reply yet"):
        await send_or_stream(second, how, "second writer")
    assert await stored(async_store, first.id) == before
    assert api.requests == []
