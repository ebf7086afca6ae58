"""A refusal that recommends another model: shown by default, answered once more there on request (SDK 2.16
`stop_details.recommended_model` and `fallback_credit_token`), each request in the ledger as the emulator bills it."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import pytest

from turnkeep import AsyncConversation, Conversation
from turnkeep.core.catalog import default_catalog
from turnkeep.core.pricing import usage_cost
from turnkeep.emulator import EmulatorServer
from turnkeep.store import MemoryStore

SCRIPTED = {"extra_headers": {"x-emulator-responder": "scripted"}}
REFUSED = {
    "refusal": {
        "category": "cyber",
        "explanation": "declined on this model",
        "fallback_credit_token": True,  # the emulator mints one
        "recommended_model": "claude-opus-4-6",
    }
}
LONG_SYSTEM = "You answer questions about network security for a blue team. " * 600


def test_without_the_opt_in_the_refusal_stands_and_names_the_model_to_try(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script(REFUSED)
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    reply = chat.send("How do port scanners work?", **SCRIPTED)
    assert reply.refused
    assert not reply.fell_back
    assert reply.fallback is not None
    assert reply.fallback.recommended_model == "claude-opus-4-6"
    assert reply.fallback.fallback_credit_token is not None
    assert [entry.purpose for entry in chat.ledger] == ["reply"]


def test_the_opt_in_answers_once_more_on_the_recommended_model_with_the_credit(
    turnkeep_emulator: EmulatorServer,
) -> None:
    turnkeep_emulator.script(REFUSED, {"text": "A port scanner sends probes and reads the answers."})
    store = MemoryStore()
    chat = Conversation(
        "claude-sonnet-4-6", client=turnkeep_emulator.client(), system=LONG_SYSTEM, store=store, refusal_retry=True
    )
    reply = chat.send("How do port scanners work?", **SCRIPTED)

    assert reply.fell_back
    assert not reply.refused
    assert reply.text == "A port scanner sends probes and reads the answers."
    assert reply.message.model == "claude-opus-4-6"
    assert [(entry.purpose, entry.model) for entry in chat.ledger] == [
        ("reply", "claude-sonnet-4-6"),
        ("fallback", "claude-opus-4-6"),
    ]
    retry_usage = chat.ledger[1].usage
    assert retry_usage["fallback_credit"] == {"status": {"type": "redeemed"}}
    # Redeemed: the retry's cache writes (the prefix warm on the refused model) are billed at the read rate.
    assert retry_usage["cache_creation_input_tokens"] > 0
    opus = default_catalog().get("claude-opus-4-6")
    full_price = usage_cost({k: v for k, v in retry_usage.items() if k != "fallback_credit"}, opus).total
    assert Decimal(chat.ledger[1].cost_usd) < full_price
    assert chat.cost == Decimal(turnkeep_emulator.bill()["usd"]["total"])
    assert reply.cost.total == chat.cost
    # The conversation stays on its own model; the reply is stored as the recommended model's.
    assert chat.model == "claude-sonnet-4-6"
    assert chat.transcript[-1].meta["model"] == "claude-opus-4-6"
    turnkeep_emulator.script({"text": "Next."})
    chat.send("And firewalls?", **SCRIPTED)
    assert chat.ledger[-1].model == "claude-sonnet-4-6"


def test_an_expired_credit_is_still_served_at_the_normal_price(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script(REFUSED, {"text": "Served anyway."})
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), refusal_retry=True)
    # Each request first moves the emulator's clock past the credit's five minutes.
    headers = {"x-emulator-responder": "scripted", "x-emulator-advance": "301"}
    reply = chat.send("How do port scanners work?", extra_headers=headers)
    assert reply.text == "Served anyway."
    assert chat.ledger[1].usage["fallback_credit"] == {"status": {"type": "not_applied", "reason": "expired"}}
    assert chat.cost == Decimal(turnkeep_emulator.bill()["usd"]["total"])


def test_the_opt_in_is_kept_with_the_conversation(turnkeep_emulator: EmulatorServer) -> None:
    store = MemoryStore()
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), store=store, refusal_retry=True)
    chat.send("Hello.")
    reopened = Conversation.open(chat.id, store=store, client=turnkeep_emulator.client())
    turnkeep_emulator.script(REFUSED, {"text": "Fine."})
    assert reopened.send("How do port scanners work?", **SCRIPTED).fell_back


def test_a_refusal_without_a_recommended_model_is_not_retried(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script({"refusal": {"category": "cyber"}})
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), refusal_retry=True)
    reply = chat.send("How do port scanners work?", **SCRIPTED)
    assert reply.refused
    assert not reply.fell_back
    assert len(chat.ledger) == 1


@pytest.mark.parametrize(
    ("token", "betas", "message"),
    [
        ("fct_unknown", [], "malformed token"),
        ({"token": "fct_x"}, [], "requires the beta header"),
        ({"token": "fct_x", "mode": "sometimes"}, ["fallback-credit-2026-07-01"], "strict' or 'best_effort"),
    ],
)
def test_the_emulator_refuses_a_credit_the_api_would(
    turnkeep_emulator: EmulatorServer, token: object, betas: list[str], message: str
) -> None:
    client = turnkeep_emulator.client(max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.beta.messages.create(
            model="claude-opus-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            fallback_credit_token=token,  # type: ignore[arg-type]
            betas=betas,
        )
    assert Decimal(turnkeep_emulator.bill()["usd"]["total"]) == 0


def test_a_strict_credit_that_cannot_be_redeemed_is_a_400_and_nothing_is_served(
    turnkeep_emulator: EmulatorServer,
) -> None:
    turnkeep_emulator.script(REFUSED)
    client = turnkeep_emulator.client(max_retries=0)
    body = {"max_tokens": 64, "messages": [{"role": "user", "content": "How do port scanners work?"}]}
    refused = client.messages.create(model="claude-sonnet-4-6", **body, **SCRIPTED)  # type: ignore[call-overload]
    token = refused.stop_details.fallback_credit_token  # type: ignore[union-attr]
    billed = turnkeep_emulator.bill()["usd"]["total"]
    other = {**body, "messages": [{"role": "user", "content": "Something else entirely."}]}
    with pytest.raises(anthropic.BadRequestError, match="body_mismatch"):
        client.beta.messages.create(model="claude-opus-4-6", fallback_credit_token=token, **other)  # type: ignore[call-overload]
    assert turnkeep_emulator.bill()["usd"]["total"] == billed


def test_a_stream_that_was_refused_before_any_text_streams_the_fallback_reply(
    turnkeep_emulator: EmulatorServer,
) -> None:
    turnkeep_emulator.script(REFUSED, {"text": "Streamed from the other model."})
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), refusal_retry=True)
    with chat.stream("How do port scanners work?", **SCRIPTED) as stream:
        text = "".join(stream)
    assert text == "Streamed from the other model."
    assert stream.reply is not None
    assert stream.reply.fell_back
    assert chat.cost == Decimal(turnkeep_emulator.bill()["usd"]["total"])


@pytest.mark.anyio
async def test_async_conversations_fall_back_the_same_way(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script(REFUSED, {"text": "From the other model."})
    async with turnkeep_emulator.async_client() as client:
        chat = AsyncConversation("claude-sonnet-4-6", client=client, refusal_retry=True)
        reply = await chat.send("How do port scanners work?", **SCRIPTED)
    assert reply.fell_back
    assert [entry.purpose for entry in chat.ledger] == ["reply", "fallback"]
