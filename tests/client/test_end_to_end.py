"""End to end: turnkeep's Conversation, the real `anthropic` SDK, and the emulator over loopback HTTP."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import anthropic
import pytest

from turnkeep import AsyncConversation, Conversation, refresh_catalog
from turnkeep.emulator import EmulatorServer

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_example_runs_and_remembers(
    turnkeep_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    [code] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", turnkeep_emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    exec(compile(code, str(README), "exec"), {})
    capital, population, cost = capsys.readouterr().out.splitlines()
    assert "Paris" in capital
    assert "Paris" in population
    assert "2.1 million" in population
    assert cost.startswith("2 requests, $0.0")


def test_without_the_first_turn_the_follow_up_cannot_be_answered(turnkeep_emulator: EmulatorServer) -> None:
    fresh = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    assert "don't know" in fresh.send("What is its population?").text


def test_a_fact_from_an_early_turn_is_recalled_much_later(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    chat.send("My name is Ada.")
    for number in range(5):
        chat.send(f"Remember that box {number} is red.")
    assert chat.send("What is my name?").text == "Your name is Ada."


def test_the_ledger_matches_the_emulators_bill_to_the_cent(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), system="You are terse. " * 400)
    for number in range(4):
        chat.send(f"Question number {number}?")
    bill = turnkeep_emulator.bill()
    assert Decimal(bill["usd"]["total"]) == chat.cost
    assert chat.cost > 0


def test_full_history_reads_the_previous_turn_from_the_cache(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), system="Background. " * 1500)
    first = chat.send("Hello there.")
    second = chat.send("And again.")
    assert first.usage.cache_read == 0
    assert first.usage.cache_write > 0
    assert second.usage.cache_read >= first.usage.cache_write


def test_streamed_and_created_replies_store_the_same_history(turnkeep_emulator: EmulatorServer) -> None:
    created = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    streamed = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    created.send("My name is Ada.")
    with streamed.stream("My name is Ada.") as stream:
        text = "".join(stream)
    assert stream.reply is not None
    assert text == stream.reply.text
    assert created.messages == streamed.messages


def test_a_scripted_tool_loop_round_trips(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script(
        {"tool_use": [{"name": "lookup", "input": {"q": "a"}}, {"name": "lookup", "input": {"q": "b"}}]},
        {"text": "Both found."},
    )
    tool = {"name": "lookup", "description": "Look up", "input_schema": {"type": "object", "properties": {}}}
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), tools=[tool])
    calls = chat.send("Look up a and b", extra_headers={"x-emulator-responder": "scripted"}).tool_calls
    assert len(calls) == 2
    reply = chat.send_tool_results(
        {call.id: f"value of {call.input['q']}" for call in calls}, extra_headers={"x-emulator-responder": "scripted"}
    )
    assert reply.text == "Both found."


def test_thinking_blocks_round_trip_unmodified_on_a_model_that_binds_them(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script({"thinking": "The user greets me.", "text": "Hello!"})
    chat = Conversation("claude-opus-5-5", client=turnkeep_emulator.client(), max_tokens=4096)
    chat.send("Hi", extra_headers={"x-emulator-responder": "scripted"}, thinking={"type": "adaptive"})
    assert chat.messages[-1]["content"][0]["type"] == "thinking"
    # The emulator checks the signature against the whole prefix: a changed byte would be a 400.
    assert chat.send("My name is Ada.").text


def test_prefill_is_accepted_by_the_emulator_on_a_model_that_supports_it(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-haiku-4-5", client=turnkeep_emulator.client())
    reply = chat.send("What is the capital of France?", prefill="The capital")
    assert reply.text.startswith("The capital")


def test_sdk_errors_from_the_server_leave_the_turn_pending(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault({"status": 529})
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(max_retries=0))
    with pytest.raises(anthropic.APIStatusError) as info:
        chat.send("My name is Ada.")
    assert info.value.status_code == 529
    assert chat.pending
    assert chat.retry().text == "Noted: your name is Ada."


def test_the_catalog_refreshes_from_the_models_endpoint(turnkeep_emulator: EmulatorServer) -> None:
    catalog = refresh_catalog(turnkeep_emulator.client())
    assert catalog.get("claude-opus-5").context_window == 1_000_000


@pytest.mark.anyio
async def test_async_conversation_remembers(turnkeep_emulator: EmulatorServer) -> None:
    async with turnkeep_emulator.async_client() as client:
        chat = AsyncConversation("claude-sonnet-4-6", client=client)
        await chat.send("What is the capital of France?")
        assert "2.1 million" in (await chat.send("What is its population?")).text
