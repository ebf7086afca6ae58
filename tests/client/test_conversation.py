"""Conversation: the history is correct by construction, and a turn is atomic."""

from __future__ import annotations

import json

import anthropic
import pytest
from fake_api import FakeAPI

from turnkeep import (
    ContextWindowExceeded,
    Conversation,
    HistoryError,
    PrefillNotSupported,
    UnknownConversation,
    UsageError,
)
from turnkeep.core import rules
from turnkeep.core.catalog import default_catalog
from turnkeep.core.turn import CONTINUE_PROMPT
from turnkeep.policies import Summarize
from turnkeep.store import MemoryStore


def chat(api: FakeAPI, model: str = "claude-sonnet-4-6", **options: object) -> Conversation:
    return Conversation(model, client=api.client(), **options)  # type: ignore[arg-type]


def roles(request: dict[str, object]) -> list[str]:
    return [m["role"] for m in request["messages"]]  # type: ignore[attr-defined]


# -- memory and request shape ---------------------------------------------------------------------------------


def test_second_turn_carries_the_first_exchange(api: FakeAPI) -> None:
    api.reply("Paris.").reply("About 2.1 million.")
    conversation = chat(api)
    assert conversation.send("What is the capital of France?").text == "Paris."
    assert conversation.send("What is its population?").text == "About 2.1 million."
    assert api.requests[1]["messages"] == [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Paris."}]},
        {"role": "user", "content": "What is its population?"},
    ]


def test_system_prompt_is_always_the_top_level_parameter(api: FakeAPI) -> None:
    api.reply("ok")
    chat(api, system="Be brief.").send("hi")
    assert api.requests[0]["system"] == "Be brief."
    assert "system" not in roles(api.requests[0])


def test_messages_is_exactly_what_the_next_request_carries(api: FakeAPI) -> None:
    api.reply("one").reply("two")
    conversation = chat(api)
    conversation.send("first")
    expected = conversation.messages
    conversation.send("second")
    assert api.requests[1]["messages"][:-1] == expected


def test_requests_are_cached_with_the_automatic_breakpoint(api: FakeAPI) -> None:
    api.reply("ok")
    chat(api).send("hi")
    assert api.requests[0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}


def test_reply_reports_usage_and_cost_from_the_catalog(api: FakeAPI) -> None:
    api.reply("ok", input_tokens=1000, output_tokens=100, cache_read_input_tokens=2000)
    conversation = chat(api)
    reply = conversation.send("hi")
    assert reply.usage.total_input == 3000
    # Sonnet 4.6: 3 / 15 / 0.30 per million.
    assert str(reply.cost.total) == "0.0051"
    assert conversation.cost == reply.cost.total
    [entry] = conversation.ledger
    assert (entry.purpose, entry.request_id, entry.stop_reason) == ("reply", "req_0001", "end_turn")


# -- nothing invalid leaves the process ------------------------------------------------------------------------


def test_prefill_on_a_model_that_rejects_it_raises_before_any_request(api: FakeAPI) -> None:
    conversation = chat(api, "claude-sonnet-4-6")
    with pytest.raises(PrefillNotSupported, match=r"claude-sonnet-4-6.*prefill_fallback='instruct'"):
        conversation.send("Give me JSON", prefill="{")
    assert api.requests == []
    assert conversation.transcript == []


def test_a_leading_assistant_message_is_refused_without_a_request(api: FakeAPI) -> None:
    conversation = chat(api)
    with pytest.raises(HistoryError, match=r"messages\[0\]") as info:
        conversation.add_assistant("I speak first")
    assert info.value.rule == "first_message_not_user"
    assert api.requests == []


def test_an_empty_user_text_is_refused_without_a_request(api: FakeAPI) -> None:
    conversation = chat(api)
    with pytest.raises(HistoryError):
        conversation.send([{"type": "text", "text": "   "}])
    with pytest.raises(HistoryError):
        conversation.send("")
    assert api.requests == []
    assert conversation.transcript == []


def test_an_orphan_tool_call_cannot_be_left_unanswered(api: FakeAPI) -> None:
    api.tool_call(("get_weather", {"city": "Paris"}))
    conversation = chat(api, tools=[WEATHER])
    conversation.send("Weather in Paris?")
    with pytest.raises(UsageError, match="waiting for tool results"):
        conversation.send("never mind")
    assert len(api.requests) == 1


def test_removed_sampling_parameters_are_refused(api: FakeAPI) -> None:
    with pytest.raises(HistoryError, match="temperature"):
        chat(api).send("hi", temperature=0.5)
    assert api.requests == []


# -- prefill ---------------------------------------------------------------------------------------------------


def test_native_prefill_is_sent_last_and_stored_with_the_completion(api: FakeAPI) -> None:
    api.reply('"name": "Ada"}')
    conversation = chat(api, "claude-haiku-4-5")
    reply = conversation.send("Return JSON", prefill="{  \n")
    assert api.requests[0]["messages"][-1] == {"role": "assistant", "content": "{"}
    assert reply.text == '{"name": "Ada"}'
    assert conversation.transcript[-1].message["content"] == [{"type": "text", "text": '{"name": "Ada"}'}]


@pytest.mark.parametrize(("model_text", "expected"), [('{"a": 1}', '{"a": 1}'), ('"a": 1}', '{"a": 1}')])
def test_instructed_prefill_guarantees_the_reply_starts_with_it(api: FakeAPI, model_text: str, expected: str) -> None:
    api.reply(model_text)
    reply = chat(api, "claude-sonnet-4-6").send("JSON please", prefill="{", prefill_fallback="instruct")
    sent_user = api.requests[0]["messages"][-1]
    assert sent_user["role"] == "user"
    assert "Begin your reply with exactly" in sent_user["content"][-1]["text"]
    assert reply.text == expected


# -- stop reasons ----------------------------------------------------------------------------------------------


def test_truncated_reply_is_reported(api: FakeAPI) -> None:
    api.reply("Once upon a", stop_reason="max_tokens")
    reply = chat(api).send("Tell a story")
    assert reply.truncated
    assert reply.text == "Once upon a"


def test_auto_continue_on_a_prefill_model_sends_the_partial_reply_as_prefill(api: FakeAPI) -> None:
    api.reply("Once upon a ", stop_reason="max_tokens").reply(" time.")
    conversation = chat(api, "claude-haiku-4-5", auto_continue=3)
    reply = conversation.send("Tell a story")
    assert api.requests[1]["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Once upon a"}],
    }
    assert reply.text == "Once upon a time."
    assert not reply.truncated
    assert [n.message["role"] for n in conversation.transcript] == ["user", "assistant"]
    assert [e.purpose for e in conversation.ledger] == ["reply", "continue"]


def test_auto_continue_without_prefill_asks_in_a_user_turn_and_stores_one_message(api: FakeAPI) -> None:
    api.reply("Once upon a", stop_reason="max_tokens").reply(" time.")
    conversation = chat(api, "claude-sonnet-4-6", auto_continue=1)
    reply = conversation.send("Tell a story")
    assert api.requests[1]["messages"][-1] == {"role": "user", "content": CONTINUE_PROMPT}
    assert reply.text == "Once upon a time."
    assert len(conversation.transcript) == 2


def test_auto_continue_stops_after_its_budget(api: FakeAPI) -> None:
    api.reply("a", stop_reason="max_tokens").reply("b", stop_reason="max_tokens")
    reply = chat(api, auto_continue=1).send("go")
    assert reply.truncated
    assert reply.text == "ab"
    assert len(api.requests) == 2


def test_pause_turn_is_resumed_by_sending_the_reply_back(api: FakeAPI) -> None:
    paused = [
        {"type": "text", "text": "Searching."},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
    ]
    api.reply(content=paused, stop_reason="pause_turn").reply(" Found it.")
    conversation = chat(api, "claude-sonnet-4-6")
    reply = conversation.send("Look it up")
    assert api.requests[1]["messages"][-1] == {"role": "assistant", "content": paused}
    assert reply.stop_reason == "end_turn"
    assert reply.text == "Searching. Found it."


def test_pause_turn_resumes_are_bounded(api: FakeAPI) -> None:
    for number in range(3):
        paused = [{"type": "server_tool_use", "id": f"srvtoolu_{number}", "name": "web_search", "input": {}}]
        api.reply(content=paused, stop_reason="pause_turn")
    reply = chat(api, max_resumes=2).send("Look it up")
    assert reply.stop_reason == "pause_turn"
    assert len(api.requests) == 3


def test_refused_exchange_is_left_out_of_later_requests(api: FakeAPI) -> None:
    api.reply("", stop_reason="refusal", stop_details={"type": "refusal", "category": "cyber", "explanation": "no"})
    api.reply("Sure.")
    conversation = chat(api)
    reply = conversation.send("something refused")
    assert reply.refused
    assert reply.refusal is not None
    assert reply.refusal.category == "cyber"
    conversation.send("something else")
    assert api.requests[1]["messages"] == [{"role": "user", "content": "something else"}]
    assert [n.status for n in conversation.transcript] == ["refused", "refused", "ok", "ok"]


def test_refused_exchange_can_be_kept(api: FakeAPI) -> None:
    api.reply("I can't help with that.", stop_reason="refusal").reply("ok")
    conversation = chat(api, keep_refusals=True)
    conversation.send("hmm")
    conversation.send("next")
    assert roles(api.requests[1]) == ["user", "assistant", "user"]


def test_context_window_exceeded_is_a_clear_error_and_keeps_the_turn_pending(api: FakeAPI) -> None:
    api.reply("partial", stop_reason="model_context_window_exceeded")
    conversation = chat(api)
    with pytest.raises(ContextWindowExceeded, match="claude-sonnet-4-6"):
        conversation.send("huge")
    assert conversation.pending


# -- tools -----------------------------------------------------------------------------------------------------

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_parallel_tool_calls_are_answered_in_call_order(api: FakeAPI) -> None:
    api.tool_call(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}), text="Checking.")
    api.reply("Paris 20°C, Rome 25°C.")
    conversation = chat(api, tools=[WEATHER])
    reply = conversation.send("Weather in Paris and Rome?")
    paris, rome = reply.tool_calls
    assert (paris.input, rome.input) == ({"city": "Paris"}, {"city": "Rome"})
    final = conversation.send_tool_results({rome.id: {"temp": 25}, paris.id: "20°C"})
    assert final.text == "Paris 20°C, Rome 25°C."
    results = api.requests[1]["messages"][-1]["content"]
    assert [r["tool_use_id"] for r in results] == [paris.id, rome.id]
    assert results[1]["content"] == '{"temp": 25}'
    rules.validate(api.requests[1], default_catalog().get("claude-sonnet-4-6"))


def test_a_tool_error_is_sent_as_an_error_result(api: FakeAPI) -> None:
    api.tool_call(("get_weather", {"city": "Atlantis"})).reply("No such city.")
    conversation = chat(api, tools=[WEATHER])
    [call] = conversation.send("Weather in Atlantis?").tool_calls
    conversation.send_tool_results({call.id: LookupError("unknown city")})
    result = api.requests[1]["messages"][-1]["content"][0]
    assert result == {"type": "tool_result", "tool_use_id": call.id, "content": "unknown city", "is_error": True}


def test_every_pending_tool_call_needs_a_result(api: FakeAPI) -> None:
    api.tool_call(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}))
    conversation = chat(api, tools=[WEATHER])
    paris, _rome = conversation.send("Weather?").tool_calls
    with pytest.raises(UsageError, match="results missing"):
        conversation.send_tool_results({paris.id: "20°C"})
    with pytest.raises(UsageError, match="no pending tool call"):
        conversation.send_tool_results({"toolu_nope": "x"})
    assert len(api.requests) == 1


# -- failures, retry, rollback ---------------------------------------------------------------------------------


def test_sdk_errors_pass_through_and_the_user_message_stays_pending(api: FakeAPI) -> None:
    api.reply("first")
    api.fail(529, "overloaded_error", "Overloaded")
    conversation = chat(api)
    conversation.send("one")
    with pytest.raises(anthropic.APIStatusError) as info:
        conversation.send("two")
    assert info.value.status_code == 529
    assert conversation.pending
    assert conversation.messages == api.requests[0]["messages"] + [
        {"role": "assistant", "content": [{"type": "text", "text": "first"}]}
    ]
    with pytest.raises(UsageError, match="retry"):
        conversation.send("three")


def test_retry_resends_the_identical_request(api: FakeAPI) -> None:
    api.fail(500, "api_error").reply("done")
    conversation = chat(api)
    with pytest.raises(anthropic.InternalServerError):
        conversation.send("hello")
    assert conversation.retry().text == "done"
    assert api.requests[0] == api.requests[1]
    assert not conversation.pending
    assert [n.status for n in conversation.transcript] == ["ok", "ok"]


def test_rollback_drops_the_pending_message(api: FakeAPI) -> None:
    api.fail(500, "api_error").reply("fine")
    conversation = chat(api)
    with pytest.raises(anthropic.InternalServerError):
        conversation.send("lost")
    conversation.rollback()
    assert conversation.transcript == []
    conversation.send("again")
    assert api.requests[1]["messages"] == [{"role": "user", "content": "again"}]


def test_sdk_retries_are_the_clients(api: FakeAPI) -> None:
    api.fail(529, "overloaded_error").reply("ok")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(max_retries=1, timeout=5))
    # The SDK retries on its own; each attempt is in the ledger, the one answered with an error at $0.
    conversation.client = conversation.client.with_options(max_retries=1)
    assert conversation.send("hi").text == "ok"
    assert len(api.requests) == 2
    overloaded, answered = conversation.ledger
    assert overloaded.cost_usd == "0"
    assert "not billed" in (overloaded.error or "")
    assert answered.error is None


# -- synthetic messages, instructions, branches ----------------------------------------------------------------


def test_synthetic_messages_join_the_history(api: FakeAPI) -> None:
    api.reply("Noted.")
    conversation = chat(api)
    conversation.add_user("My name is Ada.")
    conversation.add_assistant("Hello Ada.")
    conversation.send("What is my name?")
    assert roles(api.requests[0]) == ["user", "assistant", "user"]


def test_two_user_messages_in_a_row_are_merged_into_one_turn(api: FakeAPI) -> None:
    api.reply("ok")
    conversation = chat(api)
    conversation.add_user("Context: a document.")
    conversation.send("Question about it?")
    assert api.requests[0]["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Context: a document."},
                {"type": "text", "text": "Question about it?"},
            ],
        }
    ]


def test_instruct_sends_a_system_message_after_the_next_user_message(api: FakeAPI) -> None:
    api.reply("Bonjour.")
    conversation = chat(api, "claude-opus-5")
    conversation.instruct("Answer in French.")
    conversation.send("Hello")
    assert api.requests[0]["messages"] == [
        {"role": "user", "content": "Hello"},
        {"role": "system", "content": "Answer in French."},
    ]


def test_several_instructions_before_a_turn_become_one_system_message(api: FakeAPI) -> None:
    api.reply("Bonjour.")
    conversation = chat(api, "claude-opus-5")
    conversation.instruct("Answer in French.")
    conversation.instruct("Be brief.")
    conversation.send("Hello")
    assert api.requests[0]["messages"][1] == {
        "role": "system",
        "content": [{"type": "text", "text": "Answer in French."}, {"type": "text", "text": "Be brief."}],
    }


def test_instruct_on_a_model_without_system_messages_names_the_model(api: FakeAPI) -> None:
    with pytest.raises(UsageError, match="claude-sonnet-5"):
        chat(api, "claude-sonnet-5").instruct("Answer in French.")


def test_undo_steps_back_one_turn_and_keeps_it_in_the_tree(api: FakeAPI) -> None:
    api.reply("one").reply("two").reply("three")
    conversation = chat(api)
    conversation.send("first")
    conversation.send("second")
    conversation.undo()
    assert conversation.transcript[0].message["content"] == "first"
    assert len(conversation.transcript) == 2
    conversation.send("other second")
    assert [m["content"] for m in api.requests[2]["messages"] if m["role"] == "user"] == ["first", "other second"]


def test_fork_makes_an_independent_branch(api: FakeAPI) -> None:
    api.reply("shared").reply("main answer").reply("fork answer")
    conversation = chat(api)
    conversation.send("base")
    fork = conversation.fork("alt")
    conversation.send("main question")
    fork.send("fork question")
    assert [m["content"] for m in api.requests[2]["messages"] if m["role"] == "user"] == ["base", "fork question"]
    assert set(conversation.branches) == {"main", "alt"}
    assert len(conversation.transcript) == len(fork.transcript) == 4


def test_unknown_model_works_with_one_warning(api: FakeAPI) -> None:
    api.reply("hi").reply("again")
    with pytest.warns(UserWarning, match="claude-future-1"):
        conversation = Conversation("claude-future-1", client=api.client())
    conversation.send("hello")
    Conversation("claude-future-1", client=api.client()).send("again")  # no second warning (filterwarnings=error)


# -- reopening a stored conversation ---------------------------------------------------------------------------


def test_a_reopened_conversation_sends_a_byte_identical_prefix(api: FakeAPI) -> None:
    store = MemoryStore()
    api.reply("Paris.").reply("About 2.1 million.").reply("Also 2.1 million.")
    original = Conversation("claude-sonnet-4-6", client=api.client(), store=store, system="Geography.", auto_continue=2)
    original.send("What is the capital of France?")
    reopened = Conversation.open(original.id, store=store, client=api.client())
    assert (reopened.model, reopened.messages) == (original.model, original.messages)
    original.send("What is its population?")
    reopened_again = Conversation.open(original.id, store=store, client=api.client())
    reopened_again.undo()
    reopened_again.send("What is its population?")
    # The prompt is byte-identical (only the cache-diagnostics reference to the last reply differs).
    prompt = [{k: v for k, v in request.items() if k != "diagnostics"} for request in api.requests[1:]]
    assert json.dumps(prompt[1], sort_keys=True) == json.dumps(prompt[0], sort_keys=True)


def test_opening_an_unknown_conversation_or_branch_is_a_clear_error(api: FakeAPI) -> None:
    store = MemoryStore()
    with pytest.raises(UnknownConversation, match="nope"):
        Conversation.open("nope", store=store, client=api.client())
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), store=store)
    with pytest.raises(UnknownConversation, match="branch 'other'"):
        Conversation.open(conversation.id, store=store, client=api.client(), branch="other")


def test_switch_moves_between_branches(api: FakeAPI) -> None:
    api.reply("one").reply("two")
    conversation = chat(api)
    conversation.send("base")
    conversation.fork("alt").send("on alt")
    assert len(conversation.switch("alt").transcript) == 4
    assert len(conversation.transcript) == 2


# -- changing settings, explaining the next request ------------------------------------------------------------


def test_explain_shows_the_next_request_without_sending_it(api: FakeAPI) -> None:
    api.reply("Paris.").reply("2.1 million.")
    conversation = chat(api)
    conversation.send("What is the capital of France?")
    plan = conversation.explain("What is its population?")
    assert api.requests[1:] == []
    conversation.send("What is its population?")
    assert api.requests[1]["messages"] == plan.request["messages"]
    assert plan.explanation["policy"] == "full-history"


def test_explain_refuses_what_send_would_refuse(api: FakeAPI) -> None:
    with pytest.raises(HistoryError):
        chat(api).explain("   ")


def test_system_and_model_can_change_between_turns(api: FakeAPI) -> None:
    store = MemoryStore()
    api.reply("one").reply("two")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), store=store, system="Be brief.")
    conversation.send("first")
    conversation.set_system("Be verbose.")
    conversation.set_model("claude-haiku-4-5")
    conversation.send("second")
    assert (api.requests[1]["system"], api.requests[1]["model"]) == ("Be verbose.", "claude-haiku-4-5")
    reopened = Conversation.open(conversation.id, store=store, client=api.client())
    assert (reopened.model, reopened.system) == ("claude-haiku-4-5", "Be verbose.")


def test_an_invalid_system_prompt_change_is_refused_and_nothing_changes(api: FakeAPI) -> None:
    conversation = chat(api, system="Be brief.")
    with pytest.raises(UsageError):
        conversation.set_system("   ")
    assert conversation.system == "Be brief."


def test_each_request_asks_why_the_cache_missed_compared_with_the_last_reply(api: FakeAPI) -> None:
    api.reply("one").reply("two")
    conversation = chat(api)
    conversation.send("first")
    conversation.send("second")
    assert "diagnostics" not in api.requests[0]
    first_reply_id = conversation.ledger[0].message_id
    assert api.requests[1]["diagnostics"] == {"previous_message_id": first_reply_id}


def test_a_conversation_whose_settings_are_refused_is_never_stored(api: FakeAPI) -> None:
    store = MemoryStore()
    with pytest.raises(UsageError, match="system must be"):
        Conversation("claude-sonnet-4-6", client=api.client(), system="   ", store=store)
    with pytest.raises(UsageError, match="unknown model 'claude-nope' for its own calls"):
        Conversation("claude-sonnet-4-6", client=api.client(), policy=Summarize(model="claude-nope"), store=store)
    assert store.count_conversations() == 0
    assert api.requests == []


def test_a_stored_conversation_opens_even_if_its_summariser_is_no_longer_known(api: FakeAPI) -> None:
    store = MemoryStore()
    chat = Conversation(
        "claude-sonnet-4-6", client=api.client(), policy=Summarize(model="claude-haiku-4-5"), store=store
    )
    store.update_settings(chat.id, {"policy": {"name": "summarize", "model": "claude-gone", "trigger": 20000.0}})
    reopened = Conversation.open(chat.id, store=store, client=api.client())  # to be read, exported or changed
    assert reopened.explain("hi").explanation["policy"] == "summarize"
