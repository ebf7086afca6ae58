"""End to end: turnkeep's Conversation, the real `anthropic` SDK, and the emulator over loopback HTTP."""

from __future__ import annotations

import gc
import json
import re
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

from turnkeep import AsyncConversation, Conversation, refresh_catalog
from turnkeep.core.messages import as_blocks
from turnkeep.core.policies import FullHistory, Policy, ServerCompaction, Summarize, TokenBudget, Window
from turnkeep.core.pricing import token_counts, usage_cost
from turnkeep.core.tokens import estimate_request
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import ContextWindowExceeded
from turnkeep.store import MemoryStore, SQLiteStore

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_examples_run_and_the_first_remembers(
    turnkeep_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    first, second = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", turnkeep_emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path))
    exec(compile(first, str(README), "exec"), {})
    capital, population, cost = capsys.readouterr().out.splitlines()
    assert "Paris" in capital
    assert "Paris" in population
    assert "2.1 million" in population
    assert cost.startswith("2 requests, $0.0")
    exec(compile(second, str(README), "exec"), {})
    forecast_usd, kept = capsys.readouterr().out.splitlines()
    assert float(forecast_usd) > 0
    assert kept == "[0, 0]"
    assert (tmp_path / "turnkeep.db").exists()
    # The examples' clients come from the environment and are never closed, as in a reader's script: collect them
    # now, so no unclosed socket is reported during a later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


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


BOUND_FILL = "word " * 9_000  # ~9,000 tokens: a few turns pass every trigger below


def _scripted(reply: dict[str, object]) -> dict[str, str]:
    """Headers that make the emulator answer this one request with `reply` (a summary call answers on its own)."""
    return {"x-emulator-script": json.dumps(reply)}


@pytest.mark.parametrize(
    "policy",
    [
        Window(turns=2),
        Summarize(trigger=20_000, keep_last=2),
        ServerCompaction(explicit=True, trigger=50_000, keep_last=2),
        ServerCompaction(trigger=50_000),
    ],
    ids=["window", "summarize", "explicit-compaction", "compaction-edit"],
)
def test_every_policy_that_cuts_or_compacts_keeps_bound_thinking_valid(
    turnkeep_emulator: EmulatorServer, policy: Policy
) -> None:
    # On claude-sonnet-5-5 a thinking block is bound to everything before it: a block kept across a cut would be
    # rejected by the emulator (400), as by the API.
    client = turnkeep_emulator.client(max_retries=0)
    chat = Conversation("claude-sonnet-5-5", client=client, max_tokens=8192, policy=policy)
    for number in range(8):
        headers = _scripted({"thinking": f"Thought {number}.", "text": f"Answer {number}."})
        chat.send(f"Question {number}. {BOUND_FILL}", extra_headers=headers, thinking={"type": "adaptive"})
    assert all(entry.error is None for entry in chat.ledger)
    assert len([e for e in chat.ledger if e.purpose == "reply"]) == 8


@pytest.mark.parametrize(
    "policy",
    [Summarize(trigger=20_000, keep_last=2), ServerCompaction(explicit=True, trigger=50_000, keep_last=2)],
    ids=["summarize", "explicit-compaction"],
)
def test_a_summary_due_inside_a_tool_loop_waits_for_the_next_user_turn_on_a_binding_model(
    turnkeep_emulator: EmulatorServer, policy: Policy
) -> None:
    tools = [{"name": "look", "description": "Look up.", "input_schema": {"type": "object", "properties": {}}}]
    client = turnkeep_emulator.client(max_retries=0)
    chat = Conversation("claude-sonnet-5-5", client=client, max_tokens=8192, policy=policy, tools=tools)
    for number in range(6):
        call = _scripted({"thinking": f"Thought {number}.", "tool_use": [{"name": "look", "input": {}}]})
        reply = chat.send(f"Question {number}.", extra_headers=call, thinking={"type": "adaptive"})
        answer = _scripted({"thinking": f"Then {number}.", "text": f"Answer {number}."})
        # Short results first, then a long one: the trigger is first passed by a request inside the loop.
        results = {reply.tool_calls[0].id: BOUND_FILL * 3 if number >= 3 else "Nothing found."}
        chat.send_tool_results(results, extra_headers=answer, thinking={"type": "adaptive"})
    purposes = [entry.purpose for entry in chat.ledger]
    assert all(entry.error is None for entry in chat.ledger)
    assert "summary" in purposes
    # Every summary or compaction call is made at a user turn, before its first reply, never inside the loop.
    kinds = [entry.stop_reason for entry in chat.ledger if entry.purpose == "reply"]
    after = [kinds[purposes[: i + 1].count("reply")] for i, p in enumerate(purposes) if p == "summary"]
    assert set(after) == {"tool_use"}


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


# -- context policies against the emulator's recall responder ----------------------------------------------------

FILLER = "Here is some unrelated chatter about the weather and the garden. " * 30


def _talk(chat: Conversation, turns: int) -> None:
    chat.send("My name is Ada.")
    for number in range(turns):
        chat.send(f"Note {number}. {FILLER}")


def test_full_history_still_knows_a_fact_from_the_first_turn(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), policy=FullHistory())
    _talk(chat, 12)
    assert chat.send("What is my name?").text == "Your name is Ada."


def test_a_summary_keeps_the_fact_after_its_turn_left_the_window(turnkeep_emulator: EmulatorServer) -> None:
    policy = Summarize(trigger=3_000, keep_last=2)
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), policy=policy)
    _talk(chat, 12)
    assert "summary" in [entry.purpose for entry in chat.ledger]
    assert "My name is Ada" not in str(chat.messages[1:])  # the turn itself is gone ...
    assert chat.send("What is my name?").text == "Your name is Ada."  # ... the summary remembers it


def test_a_window_that_dropped_the_fact_cannot_answer(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), policy=Window(turns=4))
    _talk(chat, 12)
    reply = chat.send("What is my name?")
    assert "don't know" in reply.text


def test_a_window_inside_a_summary_keeps_the_fact_it_dropped(turnkeep_emulator: EmulatorServer) -> None:
    policy = Summarize(trigger=1_000_000, inner=Window(turns=4))  # the trigger is never reached: the window steps
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), policy=policy)
    _talk(chat, 12)
    assert "My name is Ada" not in str(chat.messages[1:])
    assert chat.send("What is my name?").text == "Your name is Ada."


def test_server_compaction_keeps_the_fact_through_the_apis_own_summary(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-opus-5", client=turnkeep_emulator.client(), policy=ServerCompaction(trigger=50_000))
    chat.send("My name is Ada.")
    for number in range(8):
        chat.send(f"Note {number}. {FILLER * 20}")
    assert any(block["type"] == "compaction" for m in chat.messages for block in as_blocks(m["content"]))
    assert chat.send("What is my name?").text == "Your name is Ada."


# -- message threads as a transport ------------------------------------------------------------------------------


def _beta_spied(emulator: EmulatorServer) -> tuple[anthropic.Anthropic, list[dict[str, object]]]:
    """A client of the emulator, and the list of the requests it sends through the beta endpoint (threads)."""
    sent: list[dict[str, object]] = []
    client = emulator.client()
    original = client.beta.messages.create

    def spy(**request: object) -> object:
        sent.append(request)
        return original(**request)  # type: ignore[arg-type]

    client.beta.messages.create = spy  # type: ignore[method-assign]
    return client, sent


def test_threads_send_only_the_new_messages_and_replay_after_expiry(turnkeep_emulator: EmulatorServer) -> None:
    client, sent = _beta_spied(turnkeep_emulator)
    chat = Conversation("claude-opus-5", client=client, threads=True, system="Geography.")
    chat.send("What is the capital of France?")
    chat.send("What is its population?")
    assert sent[0]["thread"] == {"type": "create"}
    assert sent[1]["thread"]["type"] == "continue"  # type: ignore[index]
    assert sent[1]["messages"] == [{"role": "user", "content": "What is its population?"}]
    assert "system" not in sent[1]
    turnkeep_emulator.advance(6 * 60)  # the thread expires
    reply = chat.send("My name is Ada.")
    assert reply.text == "Noted: your name is Ada."
    assert [r["thread"]["type"] for r in sent[2:]] == ["continue", "create"]  # type: ignore[index]
    assert len(sent[3]["messages"]) == 5  # type: ignore[arg-type]
    assert chat.send("What is my name?").text == "Your name is Ada."


def test_a_reopened_conversation_keeps_using_threads_unless_told_otherwise(turnkeep_emulator: EmulatorServer) -> None:
    client, sent = _beta_spied(turnkeep_emulator)
    store = MemoryStore()
    chat = Conversation("claude-opus-5", client=client, threads=True, store=store)
    chat.send("What is the capital of France?")
    reopened = Conversation.open(chat.id, store=store, client=client)
    reopened.send("What is its population?")
    reopened.send("My name is Ada.")
    # A new process knows no thread yet: it creates one with everything, then continues it.
    assert [r["thread"]["type"] for r in sent] == ["create", "create", "continue"]  # type: ignore[index]
    plain = Conversation.open(chat.id, store=store, client=client, threads=False)
    plain.send("What is my name?")
    assert len(sent) == 3  # not through the beta endpoint: no thread


# -- forecasts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [FullHistory(), Window(turns=4)], ids=["full-history", "window"])
def test_forecasts_are_within_two_percent_after_the_first_turn(
    turnkeep_emulator: EmulatorServer, policy: FullHistory | Window
) -> None:
    system = "You are helpful. " * 100
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), system=system, policy=policy)
    errors = []
    for number in range(16):
        question = f"Question {number}: tell me about item {number}, its colour, weight and history. " * (
            1 + number % 3
        )
        predicted = chat.forecast(question).input_tokens
        actual = chat.send(question).usage.total_input
        errors.append(abs(predicted - actual) / actual)
    assert max(errors[1:]) <= 0.02, errors


def test_an_exact_forecast_counts_what_will_be_billed(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client())
    chat.send("My name is Ada.")
    forecast = chat.forecast("What is my name?", exact=True)
    assert forecast.exact_input_tokens == forecast.input_tokens
    assert chat.send("What is my name?").usage.total_input == forecast.input_tokens


def test_a_cache_miss_reason_is_recorded_in_the_ledger(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), system="Background. " * 1500)
    chat.send("Hello there.")
    chat.set_system("Other background. " * 1500)
    chat.send("And again.")
    assert chat.ledger[-1].cache_miss_reason == "system_changed"


def test_explicit_compaction_replaces_old_turns_with_the_apis_block(turnkeep_emulator: EmulatorServer) -> None:
    policy = ServerCompaction(trigger=50_000, explicit=True, keep_last=2)
    chat = Conversation("claude-opus-5", client=turnkeep_emulator.client(), policy=policy)
    chat.send("My name is Ada.")
    for number in range(6):
        chat.send(f"Note {number}. {FILLER * 20}")
    purposes = [entry.purpose for entry in chat.ledger]
    assert "summary" in purposes  # the explicit compaction call, with its own ledger entry
    first = chat.messages[0]["content"][0]
    assert first["type"] == "compaction"
    assert len(chat.messages) < 2 * 7  # the compacted turns are no longer sent ...
    assert chat.send("What is my name?").text == "Your name is Ada."  # ... but the block remembers the fact


def test_a_window_steps_as_usual_when_every_turn_has_a_prefill(turnkeep_emulator: EmulatorServer) -> None:
    sent: list[int] = []
    client = turnkeep_emulator.client()
    original = client.messages.create

    def spy(**request: Any) -> Any:
        sent.append(len(request["messages"]))
        return original(**request)

    client.messages.create = spy  # type: ignore[method-assign]
    chat = Conversation("claude-haiku-4-5", client=client, policy=Window(messages=6))
    for number in range(8):
        assert chat.send(f"Box {number} is red.", prefill="Sure:").text.startswith("Sure:")
    assert max(sent) <= 6  # the prefill (an assistant message last) is not a tool loop the step waits for


def test_a_stream_cut_by_the_context_window_after_showing_text_is_not_silently_replaced(
    turnkeep_emulator: EmulatorServer,
) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(max_retries=0), policy=Window(turns=10))
    for number in range(3):
        chat.send(f"Box {number} is red.")
    cut = {"stop_reason": "model_context_window_exceeded", "text": "The first attempt"}
    turnkeep_emulator.script(cut, {"text": "The second attempt."})
    shown: list[str] = []
    with pytest.raises(ContextWindowExceeded), chat.stream("Box 3 is red.") as stream:
        shown.extend(stream)
    assert "".join(shown) == "The first attempt"  # what the caller saw is all there is of this attempt
    assert chat.pending
    assert chat.retry().text == "The second attempt."  # not streamed: the retry may be sent smaller
    assert [entry.purpose for entry in chat.ledger][-2:] == ["reply", "reply"]


@pytest.mark.parametrize(
    "policy",
    [
        Summarize(trigger=100_000, keep_last=1),
        ServerCompaction(explicit=True, trigger=100_000, keep_last=1),
        Window(turns=5),
    ],
    ids=["summarize", "explicit-compaction", "window"],
)
def test_an_overflow_inside_a_tool_loop_recovers_on_a_model_that_binds_thinking(
    turnkeep_emulator: EmulatorServer, policy: Policy
) -> None:
    tools = [{"name": "look", "description": "Look up.", "input_schema": {"type": "object", "properties": {}}}]
    chat = Conversation(
        "claude-opus-5-5", client=turnkeep_emulator.client(max_retries=0), policy=policy, tools=tools, max_tokens=4096
    )
    for number in range(3):
        headers = _scripted({"thinking": f"Plan {number}.", "text": f"Answer {number}."})
        chat.send(f"Task {number}.", extra_headers=headers, thinking={"type": "adaptive"})
    call = _scripted({"thinking": "I need the tool.", "tool_use": [{"name": "look", "input": {}}]})
    reply = chat.send("Task 3: look it up.", extra_headers=call, thinking={"type": "adaptive"})
    turnkeep_emulator.fault({"status": 400, "message": "prompt is too long: 1000001 tokens > 1000000 maximum"})
    final = _scripted({"thinking": "Got it.", "text": "Final."})
    results = {reply.tool_calls[0].id: "result"}
    assert chat.send_tool_results(results, extra_headers=final, thinking={"type": "adaptive"}).text == "Final."
    # The smaller request drops the loop's thinking (bound to the old prefix); the next turn is accepted too.
    assert chat.send("Thanks.", extra_headers=_scripted({"text": "You are welcome."})).text == "You are welcome."


def test_each_branch_keeps_its_own_summary(turnkeep_emulator: EmulatorServer, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    ok = _scripted({"text": "OK."})
    client = turnkeep_emulator.client(max_retries=0)
    chat = Conversation("claude-sonnet-4-6", client=client, policy=Summarize(trigger=1_200, keep_last=2), store=store)
    chat.send("Hello.", extra_headers=ok)
    side = chat.fork("side")
    for number in range(4):
        chat.send(f"The main code word {number} is apple-{number}. " + "filler " * 100, extra_headers=ok)
    for number in range(5):
        side.send(f"The side secret {number} is banana-{number}. " + "filler " * 300, extra_headers=ok)
    assert any(entry.purpose == "summary" for entry in side.ledger)
    for main in (Conversation.open(chat.id, store=SQLiteStore(tmp_path / "t.db"), client=client), side.switch("main")):
        request = json.dumps(main.explain("What is the code word?").request)
        assert "banana" not in request  # the side branch's summary stays on the side branch
        assert "apple-0" in request  # main's own turns, verbatim or in its own summary


def test_a_reopened_conversation_plans_with_the_calibration_the_live_one_learned(
    turnkeep_emulator: EmulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "t.db"
    client = turnkeep_emulator.client()
    chat = Conversation(
        "claude-sonnet-4-6", client=client, policy=TokenBudget(max_input_tokens=20_000), store=SQLiteStore(path)
    )
    for number in range(4):
        chat.send(f"Box {number} holds " + "papers and notes, " * 60)
    question = "What do the boxes hold?"
    plan = chat.explain(question)
    live = plan.explanation["estimated_input_tokens"]
    assert live != estimate_request(plan.request, chat.model_info)  # it learned a calibration (not 1.0)
    reopened = Conversation.open(chat.id, store=SQLiteStore(path), client=client)
    assert reopened.explain(question).explanation["estimated_input_tokens"] == live


def test_the_forecast_after_a_server_compaction_counts_only_what_the_api_still_reads(
    turnkeep_emulator: EmulatorServer,
) -> None:
    chat = Conversation("claude-sonnet-4-6", client=turnkeep_emulator.client(), policy=ServerCompaction(trigger=50_000))
    for number in range(12):
        question = f"Box {number} holds " + "paper " * 9_000
        forecast = chat.forecast(question)
        reply = chat.send(question)
        if any(block["type"] == "compaction" for block in reply.content):
            break
    else:
        pytest.fail("the emulator never compacted")
    # The turn the API compacts on: its compaction call is forecast too (its summary's length is a guess), so a
    # budget sees it coming; the forecast errs on the safe side.
    billed = Decimal(chat.ledger[-1].cost_usd)
    assert billed <= forecast.usd <= billed * Decimal("1.3")
    for number in (100, 101):  # the turn right after the compaction, and the one after it
        question = f"Box {number} holds " + "paper " * 9_000
        forecast = chat.forecast(question)
        chat.send(question)
        billed = chat.ledger[-1]
        assert forecast.input_tokens == pytest.approx(token_counts(billed.usage).total_input, rel=0.1)
        assert forecast.cost.total - forecast.cost.output == pytest.approx(
            Decimal(billed.cost_usd) - usage_cost(token_counts(billed.usage), chat.model_info).output,
            rel=Decimal("0.1"),
        )


def test_a_conversation_goes_on_through_several_server_compactions(turnkeep_emulator: EmulatorServer) -> None:
    sent: list[dict[str, Any]] = []
    client = turnkeep_emulator.client()
    original = client.beta.messages.create

    def spy(**request: Any) -> Any:
        sent.append(request)
        return original(**request)

    client.beta.messages.create = spy  # type: ignore[method-assign]
    chat = Conversation("claude-sonnet-4-6", client=client, policy=ServerCompaction(trigger=50_000))
    chat.send("My name is Ada.")
    compactions = 0
    for number in range(30):
        reply = chat.send(f"Box {number} holds " + "paper " * 9_000)
        compactions += any(block["type"] == "compaction" for block in reply.content)
        if compactions == 3:
            break
    assert compactions == 3
    blocks = [
        sum(
            1
            for m in request["messages"]
            if isinstance(m["content"], list)
            for b in m["content"]
            if b["type"] == "compaction"
        )
        for request in sent
    ]
    assert max(blocks) == 1  # only the latest block is sent: the API takes one
    assert chat.send("What is my name?").text == "Your name is Ada."  # carried through every summary
