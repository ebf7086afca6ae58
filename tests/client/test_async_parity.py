"""AsyncConversation behaves exactly like Conversation: the same script gives the same requests and history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from fake_api import FakeAPI

from turnkeep import AsyncConversation, Conversation
from turnkeep.store import AsyncStore, Store

TOOL = {"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {}}}


def script(api: FakeAPI) -> None:
    api.reply("Hello.")
    api.reply("Once upon a", stop_reason="max_tokens").reply(" time.")
    api.tool_call(("lookup", {"q": "x"}))
    api.reply("Found.")
    api.fail(500, "api_error")
    api.reply("Retried.")
    api.reply("streamed reply text")


def shape(conversation: Conversation | AsyncConversation) -> list[tuple[str, str, Any]]:
    return [(n.message["role"], n.status, n.message["content"]) for n in conversation.transcript]


def normalised(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Tool ids come from the fake's counter, which both runs share in order; nothing else may differ.
    return requests


def run_sync(api: FakeAPI) -> Conversation:
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), tools=[TOOL], auto_continue=1)
    conversation.send("Hi")
    conversation.send("Story")
    [call] = conversation.send("Look up x").tool_calls
    conversation.send_tool_results({call.id: "x is 1"})
    with pytest.raises(anthropic.InternalServerError):
        conversation.send("fails once")
    conversation.retry()
    with conversation.stream("stream it") as stream:
        list(stream)
    return conversation


async def run_async(api: FakeAPI, store: Store | AsyncStore | None = None) -> AsyncConversation:
    """The script, on `store` (an `AsyncStore` too: tests/client/test_async_store.py runs it on PostgreSQL)."""
    conversation = AsyncConversation(
        "claude-sonnet-4-6", client=api.async_client(), tools=[TOOL], auto_continue=1, store=store
    )
    await conversation.send("Hi")
    await conversation.send("Story")
    [call] = (await conversation.send("Look up x")).tool_calls
    await conversation.send_tool_results({call.id: "x is 1"})
    with pytest.raises(anthropic.InternalServerError):
        await conversation.send("fails once")
    await conversation.retry()
    async with conversation.stream("stream it") as stream:
        async for _ in stream:
            pass
    return conversation


@pytest.mark.anyio
async def test_sync_and_async_twins_send_the_same_requests_and_keep_the_same_history() -> None:
    sync_api, async_api = FakeAPI(), FakeAPI()
    script(sync_api)
    script(async_api)
    sync_conversation = run_sync(sync_api)
    async_conversation = await run_async(async_api)
    assert normalised(async_api.requests) == normalised(sync_api.requests)
    assert shape(async_conversation) == shape(sync_conversation)
    assert async_conversation.cost == sync_conversation.cost
    purposes: Callable[[Conversation | AsyncConversation], list[str]] = lambda c: [e.purpose for e in c.ledger]  # noqa: E731
    assert purposes(async_conversation) == purposes(sync_conversation)
