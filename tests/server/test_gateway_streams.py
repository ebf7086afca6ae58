"""Streamed thread turns: the reply streams as it arrives and is stored once complete; a stream cut short (by
upstream or by the client) leaves the user message pending, and the retry of the same continue records it once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from gateway_helpers import MODEL, add_key, sdk, user
from serve_process import PATIENCE, continue_on, stream_continue

from turnkeep.emulator import EmulatorServer
from turnkeep.server import Gateway, GatewayServer
from turnkeep.server.runner import EMULATOR_UPSTREAM_KEY

THREADS = ["message-threads-2026-08-12"]


def main_path(gateway: Gateway, tenant: str, reply_id: str) -> list[tuple[str, str, Any]]:
    row = gateway.tenancy.thread(tenant, reply_id)
    assert row is not None
    path = gateway.store.path(row.conversation_id, gateway.store.branches(row.conversation_id)["main"])
    return [(n.message["role"], n.status, n.message["content"]) for n in path if n.status != "partial"]


@pytest.mark.anyio
async def test_a_streamed_continue_is_stored_as_it_was_streamed(gateway: Gateway) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    first = await client.beta.messages.thread(model=MODEL, max_tokens=200).send(user("My name is Ada."))
    async with client.beta.messages.stream(
        model=MODEL,
        max_tokens=200,
        messages=[user("What is my name?")],
        thread={"type": "continue", "previous_message_id": first.id},
        betas=THREADS,
    ) as stream:
        streamed = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert streamed == "Your name is Ada."
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens > 0
    path = main_path(gateway, "acme", final.id)
    assert [(role, status) for role, status, _ in path] == [("user", "ok"), ("assistant", "ok")] * 2
    assert path[-1][2] == [{"type": "text", "text": streamed}]
    await client.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fault", ["529", {"kind": "sse_error", "after": 4}, {"kind": "drop", "after": 4}], ids=["529", "sse", "drop"]
)
async def test_a_streamed_continue_cut_upstream_stays_pending_and_its_retry_is_stored_once(
    gateway: Gateway, upstream: EmulatorServer, fault: str | dict[str, Any]
) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    first = await client.beta.messages.thread(model=MODEL, max_tokens=200).send(user("My name is Ada."))
    upstream.fault(fault, api_key=EMULATOR_UPSTREAM_KEY)
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 200,
        "messages": [user("What is my name?")],
        "thread": {"type": "continue", "previous_message_id": first.id},
        "betas": THREADS,
    }

    async def read_all() -> None:
        async with client.beta.messages.stream(**request) as stream:
            async for _ in stream:
                pass

    with pytest.raises(anthropic.APIError):
        await read_all()
    assert main_path(gateway, "acme", first.id)[-1] == ("user", "pending", "What is my name?")

    async with client.beta.messages.stream(**request) as stream:
        again = await stream.get_final_message()
    assert again.content[0].text == "Your name is Ada."  # type: ignore[union-attr]
    path = main_path(gateway, "acme", again.id)
    assert [(role, status) for role, status, _ in path] == [("user", "ok"), ("assistant", "ok")] * 2
    await client.close()


def test_a_client_that_leaves_mid_stream_leaves_the_turn_pending_for_its_retry(tmp_path: Path) -> None:
    with GatewayServer(database=tmp_path / "gateway.db") as server:
        assert server.gateway is not None
        key = server.create_key("acme")
        with anthropic.Anthropic(api_key=key, base_url=server.base_url, max_retries=0) as client:
            first = client.beta.messages.thread(model=MODEL, max_tokens=100).send(user("My name is Ada."))
        server.emulator.fault("slow:5", api_key=EMULATOR_UPSTREAM_KEY)  # the reply is on its way when we leave
        stream = stream_continue(server.base_url, key, first.id, "What is my name?")
        assert b"event: message_start" in next(stream)
        stream.close()  # the client goes away

        # The gateway abandons the turn and frees the conversation; until it has, the retry is in flight.
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                reply = continue_on(server.base_url, key, first.id, "What is my name?")
                break
            except anthropic.BadRequestError as err:
                refused = err
            assert refused.body["error"]["details"]["error_code"] == "thread_continue_in_flight"  # type: ignore[index]
            assert time.monotonic() < deadline, "the abandoned turn kept its conversation"
            time.sleep(0.05)
        assert reply.content[0].text == "Your name is Ada."
        path = main_path(server.gateway, "acme", reply.id)
        assert [(role, status) for role, status, _ in path] == [("user", "ok"), ("assistant", "ok")] * 2
