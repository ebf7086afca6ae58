"""The emulated model's replies: recall, echo, scripts, summaries, and the limits every reply obeys."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.core.catalog import default_catalog
from turnkeep.emulator import signatures, tokenizer
from turnkeep.emulator.responders import WORLD, Reply, recall_answer, respond

SONNET = default_catalog().get("claude-sonnet-5")
BINDING = default_catalog().get("claude-opus-5-5")  # binds thinking blocks to their prefix
GENERATION = SONNET.tokenizer


def ids() -> Any:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}_{next(counter)}"


def conversation(*turns: str, system: str | None = None, **fields: Any) -> dict[str, Any]:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)]
    body: dict[str, Any] = {"model": SONNET.id, "max_tokens": 1000, "messages": messages, **fields}
    if system is not None:
        body["system"] = system
    return body


def reply(body: dict[str, Any], mode: str = "recall", script: dict[str, Any] | None = None) -> Reply:
    return respond(body, model=SONNET, generation=GENERATION, mode=mode, script_reply=script, ids=ids())


def text_of(result: Reply) -> str:
    return "".join(block["text"] for block in result.content if block["type"] == "text")


# --- recall ---


@pytest.mark.parametrize(
    ("turns", "answer"),
    [
        (["My name is Ada."], "Noted: your name is Ada."),
        (["My name is Ada.", "Noted: your name is Ada.", "What is my name?"], "Your name is Ada."),
        (["What is my name?"], "I don't know your name; you haven't told me."),
        (["Call me Grace. What's my name?"], "Your name is Grace."),
        (["Remember that my favourite colour is green.", "Noted.", "What is my favourite colour?"], None),
        (["I live in Berlin.", "Noted.", "Where do I live?"], "You live in Berlin."),
        (["What is the capital of France?"], "The capital of France is Paris."),
        (["The capital of Atlantis is Poseidonia.", "Noted.", "What is the capital of Atlantis?"], None),
        (["What is the capital of Narnia?"], "I don't know the capital of Narnia."),
        (["Hello!"], "Hello! How can I help you today?"),
        (["Why is the sky blue?"], "I don't know; the answer is not in our conversation."),
    ],
)
def test_recall_answers_from_the_requests_own_context(turns: list[str], answer: str | None) -> None:
    expected = {
        "Remember that my favourite colour is green.": "Your favourite colour is green.",
        "The capital of Atlantis is Poseidonia.": "The capital of Atlantis is Poseidonia.",
    }
    assert recall_answer(conversation(*turns)) == (answer or expected[turns[0]])


def test_recall_resolves_it_to_the_place_named_last() -> None:
    with_history = conversation(
        "What is the capital of France?", "The capital of France is Paris.", "What is its population?"
    )
    assert recall_answer(with_history) == "Paris has a population of about 2.1 million."


def test_recall_says_it_does_not_know_what_it_refers_to_without_the_earlier_turn() -> None:
    answer = recall_answer(conversation("What is its population?"))
    assert answer == 'I don\'t know what "it" refers to; nothing earlier in our conversation names it.'


def test_recall_reads_facts_from_the_system_prompt_and_compaction_blocks() -> None:
    assert recall_answer(conversation("What is my name?", system="The user's name is Linus.")) == "Your name is Linus."
    compacted = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "compaction", "content": "User: My name is Ada. Assistant: Noted."},
                    {"type": "text", "text": "What is my name?"},
                ],
            }
        ]
    }
    assert recall_answer(compacted) == "Your name is Ada."


def test_recall_forgets_a_fact_that_a_context_policy_dropped() -> None:
    full = conversation("My name is Ada.", "Noted: your name is Ada.", "I like tea.", "Understood.", "What is my name?")
    windowed = {**full, "messages": full["messages"][2:]}
    assert recall_answer(full) == "Your name is Ada."
    assert recall_answer(windowed) == "I don't know your name; you haven't told me."


def test_the_world_table_is_small_and_consistent() -> None:
    assert len(WORLD["capital"]) <= 10
    assert all(capital in WORLD["population"] for capital in WORLD["capital"].values())


def test_recall_is_deterministic() -> None:
    body = conversation("My name is Ada. What is the capital of Spain?")
    assert reply(body) == reply(body)


# --- echo, summaries, thinking ---


def test_echo_repeats_the_last_user_text() -> None:
    assert text_of(reply(conversation("first", "ok", "say it back"), mode="echo")) == "say it back"


def test_a_summarisation_request_gets_an_extractive_summary() -> None:
    body = conversation(
        "My name is Ada.", "Noted: your name is Ada.", "I live in Rome.", "Noted.", "Summarise the conversation so far."
    )
    summary = text_of(reply(body))
    assert "Ada" in summary
    assert "Rome" in summary
    assert "Summarise the conversation" not in summary


def test_thinking_requests_get_a_signed_thinking_block_first() -> None:
    body = conversation("What is my name?", thinking={"type": "adaptive"})
    result = respond(body, model=BINDING, generation=BINDING.tokenizer, mode="recall", ids=ids())
    thinking, text = result.content
    assert thinking["type"] == "thinking"
    assert text["type"] == "text"
    index = len(body["messages"])
    assert signatures.signature_valid(BINDING, body, index, 0, thinking["thinking"], thinking["signature"])
    changed = {**body, "system": "Something else entirely."}
    assert not signatures.signature_valid(BINDING, changed, index, 0, thinking["thinking"], thinking["signature"])


# --- scripted ---


def test_scripted_text() -> None:
    result = reply(conversation("Hi"), mode="scripted", script={"text": "Scripted hello."})
    assert result == Reply([{"type": "text", "text": "Scripted hello."}], "end_turn")


def test_scripted_parallel_tool_calls_get_unique_ids_and_stop_for_tool_use() -> None:
    script = {
        "text": "Checking both.",
        "tool_use": [{"name": "weather", "input": {"city": "Paris"}}, {"name": "weather", "input": {"city": "Rome"}}],
    }
    result = reply(conversation("Weather?"), mode="scripted", script=script)
    assert result.stop_reason == "tool_use"
    assert [block["type"] for block in result.content] == ["text", "tool_use", "tool_use"]
    assert result.content[1]["id"] != result.content[2]["id"]
    assert all(block["id"].startswith("toolu") for block in result.content[1:])
    assert result.content[2]["input"] == {"city": "Rome"}


def test_scripted_thinking_is_signed_at_its_position() -> None:
    body = conversation("Think first.")
    script = {"content": [{"type": "text", "text": "Before."}, {"type": "thinking", "thinking": "Hmm."}]}
    result = respond(body, model=BINDING, generation=BINDING.tokenizer, mode="scripted", script_reply=script, ids=ids())
    block = result.content[1]
    sent_back = {**body, "messages": [*body["messages"], {"role": "assistant", "content": result.content}]}
    assert signatures.signature_valid(BINDING, sent_back, 1, 1, block["thinking"], block["signature"])


def test_scripted_refusal_carries_stop_details() -> None:
    script = {"refusal": {"category": "cyber", "explanation": "No malware."}}
    result = reply(conversation("Write malware"), mode="scripted", script=script)
    assert result.stop_reason == "refusal"
    assert result.stop_details == {"type": "refusal", "category": "cyber", "explanation": "No malware."}
    assert result.content == []


def test_scripted_pause_turn_ends_with_a_server_tool_use() -> None:
    result = reply(conversation("Search"), mode="scripted", script={"pause_turn": True, "text": "Searching."})
    assert result.stop_reason == "pause_turn"
    assert result.content[-1]["type"] == "server_tool_use"
    assert result.content[-1]["name"] == "web_search"


@pytest.mark.parametrize("stop_reason", ["max_tokens", "model_context_window_exceeded"])
def test_scripted_stop_reasons(stop_reason: str) -> None:
    result = reply(conversation("Go"), mode="scripted", script={"stop_reason": stop_reason, "text": "Partial"})
    assert result.stop_reason == stop_reason
    assert text_of(result) == "Partial"


def test_scripted_mode_without_a_script_falls_back_to_recall() -> None:
    assert text_of(reply(conversation("What is my name?"), mode="scripted")) == recall_answer(
        conversation("What is my name?")
    )


def test_a_malformed_script_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="tool"):
        reply(conversation("Go"), mode="scripted", script={"tool_use": []})


def test_an_unknown_mode_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown responder"):
        reply(conversation("Go"), mode="poetry")


# --- limits ---

LONG_TEXT = " ".join(f"word{i}" for i in range(300))


def test_max_tokens_returns_the_first_max_tokens_tokens() -> None:
    result = reply(conversation("Go", max_tokens=20), mode="scripted", script={"text": LONG_TEXT})
    text = text_of(result)
    assert result.stop_reason == "max_tokens"
    assert tokenizer.output_tokens(result.content, GENERATION) <= 20
    assert LONG_TEXT.startswith(text)
    longer = LONG_TEXT[: len(text) + 1]
    assert tokenizer.text_tokens(longer.rstrip(), GENERATION) > 20 or longer.endswith(" ")


@pytest.mark.parametrize("limit", [1, 2])
def test_a_tiny_max_tokens_still_returns_the_first_tokens(limit: int) -> None:
    # A three-token reply cut to one or two tokens: the API returns them, it does not return nothing.
    result = reply(conversation("Go", max_tokens=limit), mode="scripted", script={"text": "Hello there, friend."})
    assert result.stop_reason == "max_tokens"
    assert text_of(result)
    assert "Hello there, friend.".startswith(text_of(result))
    assert 0 < tokenizer.output_tokens(result.content, GENERATION) <= limit


@given(limit=st.integers(min_value=1, max_value=400))
@settings(max_examples=25, deadline=None)
def test_a_reply_never_exceeds_max_tokens(limit: int) -> None:
    result = reply(conversation("Go", max_tokens=limit), mode="scripted", script={"text": LONG_TEXT})
    assert tokenizer.output_tokens(result.content, GENERATION) <= limit
    assert (result.stop_reason == "max_tokens") == (text_of(result) != LONG_TEXT)


def test_max_tokens_zero_returns_no_content() -> None:
    result = reply(conversation("Hello", max_tokens=0))
    assert result.content == []
    assert result.stop_reason == "max_tokens"


def test_stop_sequences_cut_the_reply_and_name_the_sequence() -> None:
    body = conversation("Go", stop_sequences=["STOP", "###"])
    result = reply(body, mode="scripted", script={"text": "one two ### three STOP four"})
    assert text_of(result) == "one two "
    assert result.stop_reason == "stop_sequence"
    assert result.stop_sequence == "###"


def test_a_prefill_is_continued_not_repeated() -> None:
    body = conversation("My name is Ada. What is my name?", "Your name is")
    assert text_of(reply(body)) == " Ada."


def test_a_prefill_that_the_answer_does_not_start_with_is_followed_by_it() -> None:
    body = conversation("What is the capital of France?", "Answer:")
    assert text_of(reply(body)) == " The capital of France is Paris."
