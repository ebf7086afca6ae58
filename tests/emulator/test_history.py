"""Remembered facts change no answer: segments, token counts, the depth limit, validation and whole responses and
bills are the same as reading every request in full."""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnkeep.core.catalog import default_catalog
from turnkeep.emulator.app import _has_compaction_block, _nests_deeper_than
from turnkeep.emulator.errors import ApiError
from turnkeep.emulator.history import History
from turnkeep.emulator.server import EmulatorServer
from turnkeep.emulator.tokenizer import input_tokens, request_segments
from turnkeep.emulator.validation import validate_request

CATALOG = default_catalog()
MODELS = ("claude-haiku-4-5", "claude-opus-5-5")  # tokenizer generations 1 and 2; with and without prefill
HISTORY = History()  # the memo of this module's requests, as one emulator holds it
analyse, forget = HISTORY.analyse, HISTORY.forget


def outcome(body: dict[str, Any], model_id: str, *, remembered: bool) -> str:
    """What validation answers: "ok", or the error's status, type, code and message."""
    try:
        validate_request(
            body,
            model=CATALOG.get(model_id),
            api_version="2026-10-21",
            betas=frozenset(),
            history=analyse(body) if remembered else None,
        )
    except ApiError as err:
        return f"{err.status} {err.error_type} {err.error_code} {err.message}"
    return "ok"


def assert_same_as_read_in_full(body: dict[str, Any]) -> None:
    analysis = analyse(body)
    for model_id in MODELS:
        generation = CATALOG.get(model_id).tokenizer
        assert analysis.segments(generation) == request_segments(body, generation)
        assert analysis.input_tokens(generation) == input_tokens(body, generation)
        assert outcome(body, model_id, remembered=True) == outcome(body, model_id, remembered=False)
    assert analysis.compaction == _has_compaction_block(body)
    for limit in (1, 2, 3, 4, 6, 136):
        assert analysis.nests_deeper_than(limit, _nests_deeper_than) == _nests_deeper_than(body, limit)


# --- requests built from valid and invalid pieces -----------------------------------------------------------

breakpoints = st.sampled_from(
    [None, {"type": "ephemeral"}, {"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral", "ttl": "2h"}, {"x": 1}]
)
texts = st.sampled_from(["My name is Ada.", "What is my name?", " ", "", "ok", "Trailing space "])
tool_ids = st.sampled_from(["toolu_1", "toolu_2", "bad id"])


@st.composite
def blocks(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["text", "text", "tool_use", "tool_result", "thinking", "compaction", "odd"]))
    if kind == "text":
        block: dict[str, Any] = {"type": "text", "text": draw(texts)}
        if draw(st.booleans()):
            block["citations"] = draw(st.sampled_from([[], [{"type": "char_location"}]]))
    elif kind == "tool_use":
        block = {"type": "tool_use", "id": draw(tool_ids), "name": "read", "input": draw(st.sampled_from(
            [{}, {"n": 1}, {"n": 1.0}, {"n": True}, {"deep": [[[["x"]]]]}, "not an object"]
        ))}  # fmt: skip
    elif kind == "tool_result":
        block = {"type": "tool_result", "tool_use_id": draw(tool_ids)}
        if draw(st.booleans()):
            block["content"] = [{"type": "text", "text": "result", "cache_control": draw(breakpoints)}]
    elif kind == "thinking":
        block = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    elif kind == "compaction":
        block = {"type": "compaction", "content": draw(st.sampled_from(["Summary.", None, ""]))}
    else:
        return draw(st.sampled_from([{"type": "unknown"}, {"text": "no type"}, "a string", 7]))
    control = draw(breakpoints)
    if control is not None:
        block["cache_control"] = control
    return block


@st.composite
def messages(draw: st.DrawFn) -> Any:
    role = draw(st.sampled_from(["user", "assistant", "user", "assistant", "system", "robot"]))
    content = draw(st.one_of(texts, st.lists(blocks(), max_size=3), st.just(5)))
    message: Any = {"role": role, "content": content}
    if draw(st.integers(0, 20)) == 0:
        message = draw(st.sampled_from([{"role": role}, ["not", "a", "message"], None]))
    return message


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A request and the requests that follow it: each resends the last one's messages (moving a breakpoint,
    changing a number's type or editing a message on the way) and adds a few."""
    history: list[Any] = []
    head: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 100}
    if draw(st.booleans()):
        head["system"] = draw(st.sampled_from(["Be brief.", [{"type": "text", "text": "Be brief."}], " "]))
    if draw(st.booleans()):
        head["tools"] = [{"name": "read", "input_schema": {"type": "object", "minProperties": draw(st.sampled_from(
            [0, 0.0, False]
        ))}}]  # fmt: skip
    if draw(st.booleans()):
        head["cache_control"] = {"type": "ephemeral"}
    requests = []
    for _ in range(draw(st.integers(1, 4))):
        history = copy.deepcopy(history)
        if history and draw(st.booleans()):
            index = draw(st.integers(0, len(history) - 1))
            history[index] = draw(messages())
        history += draw(st.lists(messages(), min_size=1, max_size=3))
        requests.append({**copy.deepcopy(head), "messages": history})
    return requests


@given(conversations())
def test_every_request_of_a_conversation_reads_as_if_read_in_full(requests: list[dict[str, Any]]) -> None:
    for body in requests:
        assert_same_as_read_in_full(body)


def test_a_valid_conversation_with_tools_and_moving_breakpoints_reads_as_if_read_in_full() -> None:
    history: list[dict[str, Any]] = []
    for turn in range(30):
        for message in history:
            for block in message["content"]:
                block.pop("cache_control", None)
        history = copy.deepcopy(history)
        history.append({"role": "user", "content": [{"type": "text", "text": f"Question {turn}?"}]})
        if turn % 3 == 0:
            history.append({"role": "assistant", "content": [
                {"type": "tool_use", "id": f"toolu_{turn}", "name": "read", "input": {"path": f"f{turn}"}}
            ]})  # fmt: skip
            history.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": "data"}
            ]})  # fmt: skip
        history.append({"role": "assistant", "content": [{"type": "text", "text": f"Answer {turn}."}]})
        history[-1]["content"][-1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
        if len(history) > 5:
            history[-5]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        body = {"model": "claude-haiku-4-5", "max_tokens": 100, "system": "Be brief.", "messages": history}
        assert_same_as_read_in_full(body)


@pytest.mark.parametrize("value", [1.0, True, 0, "1"])
def test_a_number_is_never_taken_for_an_equal_one_of_another_type(value: Any) -> None:
    def body(number: Any) -> dict[str, Any]:
        return {
            "model": "claude-haiku-4-5",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": "Read it."},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "r", "input": {"n": number}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
            ],
        }

    assert_same_as_read_in_full(body(1))
    assert_same_as_read_in_full(body(value))


def test_a_history_that_holds_numbers_and_booleans_is_still_worked_out_once_per_message() -> None:
    forget()
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Read line 10."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read", "input": {"line": 10}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x", "is_error": True}]},
    ]
    previous = analyse({"model": "claude-haiku-4-5", "max_tokens": 10, "messages": copy.deepcopy(messages)})
    for turn in range(5):
        messages += [
            {"role": "assistant", "content": [{"type": "text", "text": f"Answer {turn}."}]},
            {"role": "user", "content": f"Question {turn}?"},
        ]
        body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": copy.deepcopy(messages)}
        analysis = analyse(body)  # every message a new object, as a request decoded from JSON
        assert all(now is before for now, before in zip(analysis.messages, previous.messages, strict=False)), (
            "the facts of the messages the last request sent are reused"
        )
        assert_same_as_read_in_full(body)
        previous = analysis


def test_changing_an_analysed_body_in_place_leaves_no_stale_fact() -> None:
    body: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "short"}]}],
    }
    assert_same_as_read_in_full(body)
    body["messages"][0]["content"][0]["text"] = "a much longer text than before, counted anew " * 20
    body["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    assert_same_as_read_in_full(body)
    body["messages"][0]["content"] = ""
    assert_same_as_read_in_full(body)


def test_forgetting_changes_nothing_but_the_work() -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    before = analyse(body).segments(1)
    forget()
    assert analyse(body).segments(1) == before


# --- whole responses and bills ------------------------------------------------------------------------------


def test_an_emulator_with_memory_answers_and_bills_exactly_as_one_reading_every_request_in_full() -> None:
    """The same conversation (growing history, a long first message, moving breakpoints, a prefill the model
    refuses, an unanswered tool call) sent to two emulators on virtual clocks: the same replies, errors, usage
    and bill."""
    long_text = " ".join(f"Fact {i}: the handbook section {i} applies." for i in range(400))
    answers: dict[bool, list[Any]] = {}
    bills: dict[bool, Any] = {}
    for memo in (True, False):
        with EmulatorServer(clock="virtual", memo=memo) as server:
            client = server.client(max_retries=0)
            history: list[dict[str, Any]] = []
            replies: list[Any] = []
            for turn in range(12):
                history = [
                    {**m, "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]]}
                    for m in history
                ]
                text = f"My name is Ada. Question {turn}: {long_text if turn == 0 else 'what is my name?'}"
                history.append({"role": "user", "content": [{"type": "text", "text": text}]})
                history[-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
                variants = [history]
                if turn == 4:
                    variants.append([*history, {"role": "assistant", "content": [{"type": "text", "text": "Sure"}]}])
                if turn == 6:
                    call = {"type": "tool_use", "id": "toolu_x", "name": "read", "input": {"n": 1}}
                    variants.append([*history, {"role": "assistant", "content": [call]}, history[0]])
                for messages in variants:
                    try:
                        reply = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=messages)
                    except anthropic.APIStatusError as err:  # the refused requests: compare the errors
                        error = err.body.get("error") if isinstance(err.body, dict) else err.body
                        replies.append((err.status_code, error))
                        continue
                    data = reply.model_dump(exclude_none=True)
                    data.pop("id")
                    replies.append(data)
                    if messages is history:
                        history.append({"role": "assistant", "content": [b.model_dump() for b in reply.content]})
            answers[memo] = replies
            bills[memo] = server.app.state.emulator.bill.summary("test-key")
    assert answers[True] == answers[False]
    assert bills[True] == bills[False]
    assert (
        sum(isinstance(answer, tuple) for answer in answers[True]) == 2
    )  # the two refused requests, alike  # some requests were refused, alike


@given(conversations())
def test_the_prompt_cache_and_its_diagnostics_reuse_only_what_two_requests_share(
    requests: list[dict[str, Any]],
) -> None:
    from turnkeep.emulator.cache import _prefix_digests, _units

    known_units = None
    known_digests: tuple[Any, Any] = ((), ())
    for body in requests:
        for extra_tool in (False, True):
            if extra_tool:
                body = {**body, "tools": [*(body.get("tools") or []), {"name": "more", "input_schema": {}}]}
            segments = request_segments(body, 1)
            units, ends = _units(segments, known_units)
            assert (units, ends) == _units(segments)
            known_units = (segments, units, ends)
            digests = _prefix_digests(segments, len(segments), known_digests)
            assert digests == _prefix_digests(segments, len(segments))
            known_digests = (segments, digests)
