"""Upstream faults: the client gets the API's error, the turn stays pending, a retry completes it once, and the
tenant's accounting equals the upstream bill."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import pytest
from gateway_helpers import MODEL, Clock, add_key, sdk, user

from turnkeep.emulator import EmulatorServer
from turnkeep.server import Gateway
from turnkeep.server.runner import EMULATOR_UPSTREAM_KEY

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("429", anthropic.RateLimitError),
        ("529", anthropic.OverloadedError),
        ("500", anthropic.InternalServerError),
        ("504", anthropic.InternalServerError),
        ("truncate", anthropic.InternalServerError),
        ("drop", anthropic.InternalServerError),
    ],
)
async def test_a_failed_continue_keeps_the_message_pending_and_the_retry_records_it_once(
    gateway: Gateway, upstream: EmulatorServer, clock: Clock, fault: str, error: type[Exception]
) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    thread = client.beta.messages.thread(model=MODEL, max_tokens=200)
    first = await thread.send(user("My name is Ada."))
    upstream.fault(fault, api_key=EMULATOR_UPSTREAM_KEY)
    with pytest.raises(error):
        await client.beta.messages.create(
            model=MODEL,
            max_tokens=200,
            messages=[user("What is my name?")],
            thread={"type": "continue", "previous_message_id": first.id},
            betas=["message-threads-2026-08-12"],
        )
    row = gateway.tenancy.thread("acme", first.id)
    assert row is not None
    path = gateway.store.path(row.conversation_id, gateway.store.branches(row.conversation_id)["main"])
    assert [(n.message["role"], n.status) for n in path if n.status != "partial"][-1] == ("user", "pending")
    # The client retries the same continue: it succeeds, and the question is stored once.
    again = await client.beta.messages.create(
        model=MODEL,
        max_tokens=200,
        messages=[user("What is my name?")],
        thread={"type": "continue", "previous_message_id": first.id},
        betas=["message-threads-2026-08-12"],
    )
    assert "Ada" in again.content[0].text  # type: ignore[union-attr]
    path = gateway.store.path(row.conversation_id, gateway.store.branches(row.conversation_id)["main"])
    assert [n.message["role"] for n in path] == ["user", "assistant", "user", "assistant"]
    assert all(n.status == "ok" for n in path)
    bill = upstream.bill(api_key=EMULATOR_UPSTREAM_KEY)
    usage = gateway.tenancy.usage("acme", since=clock.now, until=clock.now)
    if fault in ("truncate", "drop"):
        # Upstream billed a reply whose body never arrived whole: its usage is estimated (and marked), not read;
        # the rest is exact, so the difference is that estimate's error alone.
        estimated = [entry for entry in gateway.store.ledger(row.conversation_id) if entry.estimated]
        assert len(estimated) == 1
        assert abs(usage.usd - Decimal(bill["usd"]["total"])) < Decimal(estimated[0].cost_usd)
    else:
        assert usage.usd == Decimal(bill["usd"]["total"])
        assert usage.output_tokens == bill["output_tokens"]
    await client.close()


async def test_the_sdks_own_retry_gets_through_a_transient_fault(gateway: Gateway, upstream: EmulatorServer) -> None:
    client = sdk(gateway, add_key(gateway, "acme"), max_retries=2)
    thread = client.beta.messages.thread(model=MODEL, max_tokens=200)
    await thread.send(user("My name is Ada."))
    upstream.fault({"status": 529, "retry_after": 0.001}, api_key=EMULATOR_UPSTREAM_KEY)
    reply = await thread.send(user("What is my name?"))
    assert "Ada" in reply.content[0].text  # type: ignore[union-attr]
    await client.close()


async def test_a_failed_create_leaves_no_conversation(gateway: Gateway, upstream: EmulatorServer) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    upstream.fault("529", api_key=EMULATOR_UPSTREAM_KEY)
    with pytest.raises(anthropic.OverloadedError):
        await client.beta.messages.thread(model=MODEL, max_tokens=200).send(user("Hello."))
    assert gateway.tenancy.conversations("acme", 10, 0) == ([], 0)
    assert gateway.store.count_conversations() == 0
    await client.close()


async def test_pass_through_faults_reach_the_client_as_the_api_sent_them(
    gateway: Gateway, upstream: EmulatorServer
) -> None:
    client = sdk(gateway, add_key(gateway, "acme"))
    upstream.fault({"status": 429, "retry_after": 7}, api_key=EMULATOR_UPSTREAM_KEY)
    with pytest.raises(anthropic.RateLimitError) as excinfo:
        await client.messages.create(model=MODEL, max_tokens=50, messages=[user("Hi.")])
    assert excinfo.value.response.headers["retry-after"] == "7"
    upstream.fault({"kind": "sse_error", "after": 3}, api_key=EMULATOR_UPSTREAM_KEY)
    with pytest.raises(anthropic.APIStatusError):
        async with client.messages.stream(model=MODEL, max_tokens=50, messages=[user("Hi.")]) as stream:
            await stream.get_final_message()
    await client.close()
