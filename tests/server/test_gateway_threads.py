"""Durable message threads: the official SDK's thread helper works unchanged, and the API's thread errors apply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anthropic
import httpx2
import pytest
from gateway_helpers import MODEL, add_key, rows, sdk, user

from turnkeep.emulator import EmulatorServer
from turnkeep.server import Gateway
from turnkeep.server.runner import EMULATOR_UPSTREAM_KEY

pytestmark = pytest.mark.anyio

THREADS = {"anthropic-beta": "message-threads-2026-08-12"}


def text(message: anthropic.types.beta.BetaMessage) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


async def test_the_sdk_thread_helper_sends_only_new_messages_and_the_reply_uses_earlier_turns(
    gateway: Gateway, upstream: EmulatorServer
) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    thread = client.beta.messages.thread(model=MODEL, max_tokens=200, system="You are terse.")
    first = await thread.send(user("My name is Ada."))
    second = await thread.send(user("What is my name?"))
    assert "Ada" in text(second)
    assert second.id != first.id
    assert thread.previous_message_id == second.id
    # Upstream saw two complete, unthreaded requests: the gateway rebuilt the second from its store.
    bill = upstream.bill(api_key=EMULATOR_UPSTREAM_KEY)
    assert bill["requests"] == 2
    ids, total = gateway.tenancy.conversations("acme", 10, 0)
    assert total == 1
    path = gateway.store.path(ids[0], gateway.store.branches(ids[0])["main"])
    assert [node.message["role"] for node in path] == ["user", "assistant", "user", "assistant"]
    assert gateway.store.settings(ids[0])["system"] == "You are terse."
    await client.close()


async def test_a_streamed_thread_turn_arrives_as_the_apis_events_and_is_stored(gateway: Gateway) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    thread = client.beta.messages.thread(model=MODEL, max_tokens=200)
    await thread.send(user("I live in Paris."))
    async with thread.stream(user("Where do I live?")) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert "Paris" in "".join(pieces)
    assert final.usage.output_tokens > 0
    assert thread.previous_message_id == final.id
    # The streamed reply is the thread's head: the next turn continues from it.
    third = await thread.send(user("Where do I live?"))
    assert "Paris" in text(third)
    await client.close()


async def test_threads_survive_a_new_gateway_process_on_the_same_store(
    make_gateway: Callable[..., Gateway],
) -> None:
    first_gateway = make_gateway()
    key = add_key(first_gateway, "acme")
    client = sdk(first_gateway, key)
    thread = client.beta.messages.thread(model=MODEL, max_tokens=200)
    await thread.send(user("My name is Ada."))
    await client.close()
    await first_gateway.aclose()
    # Another gateway over the same database (a restart, or another replica) continues the thread.
    other = sdk(make_gateway(), key)
    resumed = other.beta.messages.thread(model=MODEL, max_tokens=200)
    reply = await other.beta.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=[user("What is my name?")],
        thread={"type": "continue", "previous_message_id": thread.previous_message_id},
        betas=["message-threads-2026-08-12"],
    )
    assert "Ada" in text(reply)
    del resumed
    await other.close()


async def continue_body(previous: str, content: str = "Next.") -> dict[str, object]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [user(content)],
        "thread": {"type": "continue", "previous_message_id": previous},
    }


async def create(http: httpx2.AsyncClient, key: str, content: str = "My name is Ada.") -> str:
    response = await http.post(
        "/v1/messages",
        headers={"x-api-key": key, **THREADS},
        json={"model": MODEL, "max_tokens": 100, "messages": [user(content)], "thread": {"type": "create"}},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def error_of(response: httpx2.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["type"], (error.get("details") or {}).get("error_code")


async def test_an_unknown_reply_and_another_tenants_reply_get_the_same_thread_not_found(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path
) -> None:
    alice, bob = add_key(gateway, "alice"), add_key(gateway, "bob")
    reply_id = await create(http, alice)
    before = rows(database)
    answers = []
    for previous in ("msg_unknown", reply_id):
        response = await http.post("/v1/messages", headers={"x-api-key": bob}, json=await continue_body(previous))
        answers.append(error_of(response))
    assert answers == [(404, "not_found_error", "thread_not_found")] * 2
    assert rows(database) == before


async def test_each_reply_is_continued_once(gateway: Gateway, http: httpx2.AsyncClient, database: Path) -> None:
    key = add_key(gateway, "acme")
    first = await create(http, key)
    ok = await http.post("/v1/messages", headers={"x-api-key": key}, json=await continue_body(first))
    assert ok.status_code == 200
    before = rows(database)
    again = await http.post("/v1/messages", headers={"x-api-key": key}, json=await continue_body(first, "Forked?"))
    assert error_of(again) == (400, "invalid_request_error", "thread_already_continued")
    assert rows(database) == before


async def test_a_continue_while_another_holds_the_conversation_is_in_flight(
    gateway: Gateway, http: httpx2.AsyncClient
) -> None:
    key = add_key(gateway, "acme")
    first = await create(http, key)
    row = gateway.tenancy.thread("acme", first)
    assert row is not None
    # Another replica's turn holds the lease (written to the shared store, as that replica would).
    assert gateway.tenancy.acquire_lease("acme", row.conversation_id, "other", now=gateway.clock(), seconds=60)
    busy = await http.post("/v1/messages", headers={"x-api-key": key}, json=await continue_body(first))
    assert error_of(busy) == (400, "invalid_request_error", "thread_continue_in_flight")
    gateway.tenancy.release_lease(row.conversation_id, "other")
    done = await http.post("/v1/messages", headers={"x-api-key": key}, json=await continue_body(first))
    assert done.status_code == 200


async def test_a_lease_left_by_a_dead_replica_expires(gateway: Gateway, http: httpx2.AsyncClient) -> None:
    key = add_key(gateway, "acme")
    first = await create(http, key)
    row = gateway.tenancy.thread("acme", first)
    assert row is not None
    gone = gateway.clock() - gateway.config.lease_seconds - 1  # taken long ago by a replica that never released it
    assert gateway.tenancy.acquire_lease("acme", row.conversation_id, "dead", now=gone, seconds=1)
    response = await http.post("/v1/messages", headers={"x-api-key": key}, json=await continue_body(first))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"model": "claude-opus-5-5"}, "thread_fingerprint_mismatch"),
        ({"speed": "fast"}, "thread_fingerprint_mismatch"),
        ({"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}}, "thread_unsupported_request"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thread_unsupported_request"),
        ({"system": "Be brief."}, None),
        ({"messages": [user("a"), user("b")]}, None),
        ({"thread": {"type": "continue"}}, None),
        ({"thread": {"type": "resume", "previous_message_id": "x"}}, None),
        ({"max_tokens": 0}, None),
    ],
)
async def test_malformed_or_mismatched_continues_are_refused_and_change_nothing(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path, change: dict[str, object], code: str | None
) -> None:
    key = add_key(gateway, "acme")
    first = await create(http, key)
    before = rows(database)
    response = await http.post(
        "/v1/messages", headers={"x-api-key": key}, json={**await continue_body(first), **change}
    )
    assert error_of(response) == (400, "invalid_request_error", code)
    assert rows(database) == before
    # The thread is intact: its head can still be continued.
    assert (
        await http.post("/v1/messages", headers={"x-api-key": key}, json=await continue_body(first))
    ).status_code == 200


async def test_a_create_the_history_rules_refuse_leaves_nothing(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path
) -> None:
    key = add_key(gateway, "acme")
    before = rows(database)
    response = await http.post(
        "/v1/messages",
        headers={"x-api-key": key},
        json={
            "model": MODEL,
            "max_tokens": 100,
            "messages": [user("a"), {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}],
            "thread": {"type": "create"},
        },
    )
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert rows(database) == before


async def test_a_tenants_policy_shapes_what_upstream_receives(gateway: Gateway, http: httpx2.AsyncClient) -> None:
    async def last_prompt(key: str) -> int:
        previous = await create(http, key, "Turn 0 " + "word " * 300)
        for turn in range(1, 8):
            body = await continue_body(previous, f"Turn {turn} " + "word " * 300)
            answer = await http.post("/v1/messages", headers={"x-api-key": key}, json=body)
            previous = answer.json()["id"]
        usage = answer.json()["usage"]
        return int(usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"])

    windowed = await last_prompt(add_key(gateway, "windowed", policy="window:2"))
    full = await last_prompt(add_key(gateway, "full"))
    assert windowed < full / 2
