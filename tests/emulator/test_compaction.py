"""Server-side compaction, context editing and the extractive summariser."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types.beta import BetaMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.emulator.compaction import (
    CLEARED_TOOL_RESULT,
    SUMMARY_HEADER,
    apply_context_management,
    compaction_block_error,
    compaction_block_valid,
    explicit_compaction,
    explicit_compaction_usage,
    summarize,
)
from turnkeep.emulator.errors import ApiError
from turnkeep.emulator.tokenizer import input_tokens, text_tokens

MODEL = "claude-opus-5-5"
GEN = 2
FILLER = "The quarterly weather report was long and rather dull to read. " * 700  # ~8,000 tokens per message
FACT = "My name is Ada Lovelace and my locker code is 4417."


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def long_history(turns: int = 4) -> list[dict[str, Any]]:
    """A conversation of ~16,000 tokens per turn, with a fact planted in its first message."""
    messages = [user(FACT + " " + FILLER)]
    for n in range(turns):
        if n:
            messages.append(user(f"Turn {n}. " + FILLER))
        messages.append(assistant([{"type": "text", "text": "Noted. " + FILLER}]))
    messages.append(user("What is my locker code?"))
    return messages


def request(messages: list[dict[str, Any]], *edits: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 1024, "messages": messages, **fields}
    if edits:
        body["context_management"] = {"edits": list(edits)}
    return body


def compact(value: int = 50_000, **options: Any) -> dict[str, Any]:
    return {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": value}, **options}


def code_of(excinfo: pytest.ExceptionInfo[ApiError]) -> tuple[int, str | None]:
    return excinfo.value.status, excinfo.value.error_code


def compacted_reply(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The block of a compaction over `messages` and the assistant message a client appends for it."""
    outcome = apply_context_management(request(messages, compact()), generation=GEN)
    assert outcome.compaction_block is not None
    return outcome.compaction_block, assistant([outcome.compaction_block, {"type": "text", "text": "It is 4417."}])


# --------------------------------------------------------------------------------------------------- compact edit


def test_under_the_trigger_nothing_is_compacted() -> None:
    body = request(long_history(1), compact(200_000))
    outcome = apply_context_management(body, generation=GEN)

    assert outcome.compaction_block is None
    assert outcome.iterations == outcome.applied_edits == []
    assert outcome.body["messages"] == body["messages"]
    assert "context_management" not in outcome.body


def test_over_the_trigger_a_signed_block_summarises_the_conversation() -> None:
    body = request(long_history(), compact(), system="Be brief.")
    assert input_tokens(body, GEN) > 50_000
    outcome = apply_context_management(body, generation=GEN)

    block = outcome.compaction_block
    assert block is not None
    assert block["type"] == "compaction"
    assert compaction_block_valid(block)
    assert FACT in block["content"]
    assert block["tool_changes"] == []
    assert not outcome.pause
    # The model sees the summary and the question it answers, after the system prompt.
    assert outcome.body["system"] == "Be brief."
    assert outcome.body["messages"] == [
        user([block, {"type": "text", "text": "What is my locker code?"}]),
    ]
    assert outcome.iterations == [
        {
            "type": "compaction",
            "input_tokens": input_tokens(body, GEN),
            "output_tokens": text_tokens(block["content"], GEN),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        }
    ]


def test_the_reply_shape_parses_as_the_sdk_beta_message() -> None:
    outcome = apply_context_management(request(long_history(), compact()), generation=GEN)
    assert outcome.compaction_block is not None
    sampling = {"type": "message", "input_tokens": 300, "output_tokens": 5}
    sampling |= {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    message = BetaMessage.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [outcome.compaction_block, {"type": "text", "text": "4417."}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 300, "output_tokens": 5, "iterations": [*outcome.iterations, sampling]},
            "context_management": {"applied_edits": outcome.applied_edits},
        }
    )
    assert message.content[0].type == "compaction"
    assert message.usage.iterations is not None
    assert message.usage.iterations[0].type == "compaction"
    # The block round-trips through the SDK's own param conversion and still verifies.
    param_block = message.to_param()["content"][0]
    assert compaction_block_valid(param_block.model_dump())  # type: ignore[union-attr]


def test_a_later_request_sees_only_from_the_block_on() -> None:
    history = long_history()
    block, reply = compacted_reply(history)
    follow_up = [*history, reply, user("Thanks. And my name?")]

    outcome = apply_context_management(request(follow_up, compact()), generation=GEN)
    assert outcome.compaction_block is None  # the visible context is small again
    assert outcome.body["messages"] == [reply, user("Thanks. And my name?")]
    # Without any edit the block still hides what it summarises.
    plain = apply_context_management(request(follow_up), generation=GEN)
    assert plain.body["messages"][0]["content"][0] == block
    assert len(plain.body["messages"]) == 2


def test_counting_tokens_checks_but_never_runs_a_compaction() -> None:
    body = request(long_history(), compact())
    outcome = apply_context_management(body, generation=GEN, compact=False)
    assert outcome.compaction_block is None
    assert input_tokens(outcome.body, GEN) == input_tokens(body, GEN)


def test_pause_after_compaction_returns_the_block_alone() -> None:
    outcome = apply_context_management(request(long_history(), compact(pause_after_compaction=True)), generation=GEN)
    assert outcome.pause
    assert outcome.compaction_block is not None


def test_the_default_trigger_is_150000_tokens() -> None:
    body = request(long_history(), {"type": "compact_20260112"})
    assert 50_000 < input_tokens(body, GEN) < 150_000
    assert apply_context_management(body, generation=GEN).compaction_block is None


def test_a_trigger_below_50000_is_rejected() -> None:
    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request([user("hi")], compact(49_999)), generation=GEN)
    assert code_of(excinfo) == (400, None)
    assert "50,000" in excinfo.value.message


def test_compaction_cannot_close_a_turn_with_unanswered_tool_calls() -> None:
    history = long_history()[:-1]
    history.append(user("Look it up."))
    history.append(assistant([{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}]))

    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request(history, compact()), generation=GEN)
    assert code_of(excinfo) == (400, "compaction_incomplete_turn")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda b: b.update(content=b["content"] + " I am the Queen."), "compaction_content_mismatch"),
        (lambda b: b.update(signature=b["signature"][:-2] + "AA"), "compaction_signature_invalid"),
        (lambda b: b.pop("encrypted_content"), "compaction_signature_invalid"),
        (lambda b: b.update(tool_changes=[{"type": "tool_removal"}]), "compaction_tool_changes_mismatch"),
    ],
)
def test_a_tampered_block_is_detected(edit: Any, expected: str) -> None:
    history = long_history()
    block, reply = compacted_reply(history)
    tampered = copy.deepcopy(block)
    edit(tampered)

    assert not compaction_block_valid(tampered)
    assert compaction_block_error(tampered) == expected
    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request([assistant([tampered]), user("go on")]), generation=GEN)
    assert code_of(excinfo) == (400, expected)
    assert reply["content"][0] == block  # the helper's own copy was not touched


def test_a_block_with_null_content_is_a_no_op() -> None:
    failed = {"type": "compaction", "content": None}
    messages = [user("hello"), assistant([failed, {"type": "text", "text": "hi"}]), user("bye")]
    assert apply_context_management(request(messages), generation=GEN).body["messages"] == messages


def test_two_blocks_with_content_are_ambiguous_and_a_late_block_is_misplaced() -> None:
    block, _ = compacted_reply(long_history())
    two = [assistant([block]), user("a"), assistant([block]), user("b")]
    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request(two), generation=GEN)
    assert code_of(excinfo) == (400, "compaction_block_ambiguous")

    late = [user("a"), assistant([{"type": "text", "text": "x"}, block]), user("b")]
    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request(late), generation=GEN)
    assert code_of(excinfo) == (400, "compaction_block_misplaced")


# --------------------------------------------------------------------------------------------------- explicit


def test_explicit_compaction_returns_one_block_for_the_whole_conversation() -> None:
    history = long_history()[:-1]
    body = request(history, compaction={"type": "summarize", "instructions": "Keep codes and names."})
    block = explicit_compaction(body, generation=GEN)

    assert compaction_block_valid(block)
    assert FACT in block["content"]
    usage = explicit_compaction_usage(body, block, generation=GEN)
    iteration = usage["iterations"][0]
    assert iteration["type"] == "compaction"
    assert iteration["output_tokens"] == usage["output_tokens"] == text_tokens(block["content"], GEN)
    assert usage["input_tokens"] == iteration["input_tokens"] > 50_000

    # Sent back first in place of what it summarises, the model sees the summary and what follows it.
    later = [assistant([block]), user("What is my code?")]
    assert apply_context_management(request(later), generation=GEN).body["messages"] == later


def test_an_explicit_block_is_refused_next_to_a_compaction_edit() -> None:
    block = explicit_compaction(request([user(FACT)], compaction={"type": "summarize"}), generation=GEN)
    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request([assistant([block]), user("go on")], compact()), generation=GEN)
    assert code_of(excinfo) == (400, None)


def test_a_conversation_that_is_only_a_summary_is_adopted() -> None:
    block = explicit_compaction(request([user(FACT)], compaction={"type": "summarize"}), generation=GEN)
    again = explicit_compaction(request([assistant([block])], compaction={"type": "summarize"}), generation=GEN)
    assert again["content"] == block["content"]
    assert compaction_block_valid(again)


@pytest.mark.parametrize(
    ("messages", "fields", "expected"),
    [
        ([], {}, "compaction_nothing_to_summarize"),
        ([assistant([{"type": "compaction", "content": None}])], {}, "compaction_nothing_to_summarize"),
        (
            [user("hi"), assistant([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}])],
            {},
            "compaction_incomplete_turn",
        ),
        ([user("hi")], {"context_management": {"edits": []}}, None),
        ([user("hi")], {"stop_sequences": ["END"]}, None),
        ([user("hi")], {"tool_choice": {"type": "any"}}, None),
    ],
)
def test_explicit_compaction_refusals(messages: list[Any], fields: dict[str, Any], expected: str | None) -> None:
    with pytest.raises(ApiError) as excinfo:
        explicit_compaction(request(messages, compaction={"type": "summarize"}, **fields), generation=GEN)
    assert code_of(excinfo) == (400, expected)


# --------------------------------------------------------------------------------------------------- clearing


def tool_loop(uses: int) -> list[dict[str, Any]]:
    messages = [user("Check the files.")]
    for n in range(uses):
        name = "secret" if n == 0 else "read"
        messages.append(assistant([{"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": {"n": n}}]))
        messages.append(user([{"type": "tool_result", "tool_use_id": f"toolu_{n}", "content": f"file {n}: " + FILLER}]))
    return messages


def results_of(messages: list[dict[str, Any]]) -> list[Any]:
    return [m["content"][0]["content"] for m in messages if m["role"] == "user" and isinstance(m["content"], list)]


def clear(**options: Any) -> dict[str, Any]:
    return {"type": "clear_tool_uses_20250919", "trigger": {"type": "tool_uses", "value": 3}, **options}


def test_clear_tool_uses_clears_old_results_and_keeps_the_most_recent() -> None:
    body = request(tool_loop(5), clear(keep={"type": "tool_uses", "value": 2}))
    outcome = apply_context_management(body, generation=GEN)

    results = results_of(outcome.body["messages"])
    assert results[:3] == [CLEARED_TOOL_RESULT] * 3
    assert results[3:] == results_of(body["messages"])[3:]
    [applied] = outcome.applied_edits
    assert applied["type"] == "clear_tool_uses_20250919"
    assert applied["cleared_tool_uses"] == 3
    assert applied["cleared_input_tokens"] == input_tokens(body, GEN) - input_tokens(outcome.body, GEN) > 0
    assert results_of(body["messages"])[0] != CLEARED_TOOL_RESULT  # the request itself is not modified


def test_clear_tool_uses_respects_exclusions_inputs_and_its_minimum() -> None:
    keep_one = {"type": "tool_uses", "value": 1}
    outcome = apply_context_management(
        request(tool_loop(4), clear(keep=keep_one, exclude_tools=["secret"], clear_tool_inputs=True)), generation=GEN
    )
    results = results_of(outcome.body["messages"])
    assert results[0] != CLEARED_TOOL_RESULT
    assert results[1:3] == [CLEARED_TOOL_RESULT] * 2
    uses = [m["content"][0] for m in outcome.body["messages"] if m["role"] == "assistant"]
    assert [use["input"] for use in uses] == [{"n": 0}, {}, {}, {"n": 3}]

    untouched = apply_context_management(
        request(tool_loop(4), clear(clear_at_least={"type": "input_tokens", "value": 10**9})), generation=GEN
    )
    assert untouched.applied_edits == []
    assert untouched.body["messages"] == tool_loop(4)


def test_clear_tool_uses_waits_for_its_trigger() -> None:
    outcome = apply_context_management(request(tool_loop(2), clear()), generation=GEN)
    assert outcome.applied_edits == []
    assert outcome.body["messages"] == tool_loop(2)


def test_clear_thinking_keeps_the_most_recent_thinking_turns() -> None:
    def thought(n: int) -> dict[str, Any]:
        return assistant(
            [{"type": "thinking", "thinking": f"hmm {n}", "signature": "sig"}, {"type": "text", "text": "ok"}]
        )

    messages = [user("a"), thought(1), user("b"), thought(2), user("c"), thought(3), user("d")]
    edit = {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}}
    outcome = apply_context_management(request(messages, edit, thinking={"type": "adaptive"}), generation=GEN)

    kinds = [[b["type"] for b in m["content"]] for m in outcome.body["messages"] if m["role"] == "assistant"]
    assert kinds == [["text"], ["text"], ["thinking", "text"]]
    assert outcome.applied_edits[0]["cleared_thinking_turns"] == 2

    with pytest.raises(ApiError):
        apply_context_management(request(messages, edit), generation=GEN)  # thinking is off


@pytest.mark.parametrize(
    "edits",
    [
        [{"type": "clear_everything"}],
        [{"type": "compact_20260112"}, {"type": "compact_20260112"}],
        [{"type": "compact_20260112"}, {"type": "clear_thinking_20251015"}],
        [{"type": "clear_tool_uses_20250919", "keep": {"type": "tool_uses", "value": -1}}],
    ],
)
def test_malformed_edits_are_rejected(edits: list[dict[str, Any]]) -> None:
    with pytest.raises(ApiError) as excinfo:
        apply_context_management(request([user("hi")], *edits, thinking={"type": "adaptive"}), generation=GEN)
    assert code_of(excinfo) == (400, None)


# --------------------------------------------------------------------------------------------------- summariser


def test_summarize_keeps_planted_facts_and_drops_filler() -> None:
    messages = [
        user("Hi there. My name is Ada. " + "We talked about nothing much today. " * 50),
        assistant("Nice to meet you, Ada. How can I help?"),
        user("I live in Paris and my flight leaves at 07:45 on Friday. What should I pack?"),
        assistant([{"type": "text", "text": "Pack light. Remember the adapter."}]),
    ]
    summary = summarize(messages, max_words=20)

    assert summary.startswith(SUMMARY_HEADER)
    assert "- User: My name is Ada." in summary
    assert "- User: I live in Paris and my flight leaves at 07:45 on Friday." in summary
    assert summary.count("We talked about nothing much today.") <= 1
    assert "What should I pack?" not in summary  # questions state no facts
    assert "Remember the adapter." in summarize(messages, max_words=40)
    assert summarize(messages, max_words=20) == summary


def test_summarising_a_summary_keeps_its_lines() -> None:
    first = summarize([user("My name is Ada. I was born in 1815.")])
    block = {"type": "compaction", "content": first}
    assert summarize([assistant([block])]) == first


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.text(alphabet=st.sampled_from("abc XYZ 0123 .?!\n"), max_size=80), min_size=1, max_size=6),
    max_words=st.integers(min_value=1, max_value=30),
)
def test_summarize_is_deterministic_and_fits_its_word_budget(texts: list[str], max_words: int) -> None:
    messages = [user(text) if i % 2 == 0 else assistant(text) for i, text in enumerate(texts)]
    summary = summarize(messages, max_words=max_words)

    assert summary == summarize(copy.deepcopy(messages), max_words=max_words)
    lines = summary.splitlines()[1:]
    assert sum(len(line.split(": ", 1)[1].split()) for line in lines) <= max_words


@given(st.lists(st.sampled_from([*"ab Ma9²٣ .?'-", "My name is", "remember", "I live"]), max_size=30).map("".join))
def test_a_sentence_scores_as_the_rule_says(text: str) -> None:
    from turnkeep.emulator.compaction import _FACT_PATTERNS, _WORD, _text_score

    words = _WORD.findall(text)
    expected = (
        3 * any(pattern.search(text) for pattern in _FACT_PATTERNS)
        + 2 * any(char.isdigit() for char in text)
        + min(sum(1 for word in words[1:] if word[0].isupper() and word != "I"), 3)
        - 3 * text.rstrip().endswith("?")
    )
    assert _text_score(text) == (expected, frozenset(word.lower() for word in words))
