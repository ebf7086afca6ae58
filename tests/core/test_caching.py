"""Breakpoints, TTL choice and the cache forecast."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping
from typing import Any

import pytest

from turnkeep.core.catalog import default_catalog
from turnkeep.core.policies import FullHistory, Policy, RequestSettings, SlidingWindow, TokenBudget, Window
from turnkeep.core.policies.caching import choose_ttl, forecast, place_breakpoints, remember
from turnkeep.core.rules import validate
from turnkeep.emulator.cache import PromptCache
from turnkeep.emulator.clock import Clock
from turnkeep.emulator.tokenizer import request_segments

MODEL = default_catalog().get("claude-sonnet-5")  # min_cache_tokens 1024
PREFILL_MODEL = default_catalog().get("claude-haiku-4-5")
BIG_SYSTEM = "You are a careful assistant. " * 400  # ~3,000 tokens: above every model's minimum
CONTROL_5M = {"type": "ephemeral", "ttl": "5m"}


def _request(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL.id, "max_tokens": 512, "messages": messages, **extra}


def _chat(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"question {turn} " * 20})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {turn} " * 60}]})
    messages.append({"role": "user", "content": "last question"})
    return messages


def _breakpoints(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, ttl) of every breakpoint in the request, in prefix order."""
    found: list[tuple[str, str]] = []
    system = request.get("system")
    for index, block in enumerate(system if isinstance(system, list) else []):
        if "cache_control" in block:
            found.append((f"system[{index}]", block["cache_control"].get("ttl", "5m")))
    for index, message in enumerate(request["messages"]):
        content = message["content"]
        for block_index, block in enumerate(content if isinstance(content, list) else []):
            if "cache_control" in block:
                found.append((f"messages[{index}].content[{block_index}]", block["cache_control"].get("ttl", "5m")))
    if "cache_control" in request:
        found.append(("top", request["cache_control"].get("ttl", "5m")))
    return found


def test_a_moving_breakpoint_goes_on_the_last_block_of_the_request() -> None:
    request, placed = place_breakpoints(_request(_chat(3)), MODEL)
    assert placed == [{"location": "messages[6].content[0]", "kind": "moving", "ttl": "5m", "message": 6}]
    assert request["messages"][6]["content"] == [{"type": "text", "text": "last question", "cache_control": CONTROL_5M}]
    validate(request, MODEL)


def test_placing_is_deterministic_and_leaves_the_input_alone() -> None:
    original = _request(_chat(3), system=BIG_SYSTEM)
    pristine = copy.deepcopy(original)
    first, _ = place_breakpoints(original, MODEL)
    second, _ = place_breakpoints(copy.deepcopy(original), MODEL)
    assert original == pristine
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_a_large_tools_and_system_prefix_gets_its_own_breakpoint() -> None:
    request, placed = place_breakpoints(_request(_chat(1), system=BIG_SYSTEM), MODEL)
    assert [item["kind"] for item in placed] == ["prefix", "moving"]
    assert request["system"] == [{"type": "text", "text": BIG_SYSTEM, "cache_control": CONTROL_5M}]
    small, placed_small = place_breakpoints(_request(_chat(1), system="Be brief."), MODEL)
    assert [item["kind"] for item in placed_small] == ["moving"]
    assert small["system"] == "Be brief."
    tools = [{"name": "t", "description": "d " * 3000, "input_schema": {"type": "object"}}]
    with_tools, placed_tools = place_breakpoints(_request(_chat(1), tools=tools), MODEL)
    assert placed_tools[0]["location"] == "tools[-1]"
    assert with_tools["tools"][-1]["cache_control"] == CONTROL_5M


def test_automatic_caching_uses_the_top_level_cache_control() -> None:
    request, placed = place_breakpoints(_request(_chat(2)), MODEL, automatic=True, ttl="1h")
    assert request["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert [item["kind"] for item in placed] == ["automatic"]
    assert _breakpoints(request) == [("top", "1h")]


def test_never_more_than_four_breakpoints_and_the_callers_are_kept() -> None:
    messages = _chat(4)
    for index in (0, 2, 4):
        messages[index]["content"] = [{"type": "text", "text": "mine", "cache_control": {"type": "ephemeral"}}]
    request, placed = place_breakpoints(_request(messages, system=BIG_SYSTEM), MODEL)
    assert len(placed) == 1  # only the moving one fits next to the caller's three
    assert placed[0]["kind"] == "moving"
    assert len(_breakpoints(request)) == 4
    for index in (0, 2, 4):
        assert request["messages"][index]["content"][0]["cache_control"] == {"type": "ephemeral"}
    validate(request, MODEL)
    messages[6]["content"] = [{"type": "text", "text": "mine", "cache_control": {"type": "ephemeral"}}]
    full, none_placed = place_breakpoints(_request(messages), MODEL)
    assert none_placed == []
    assert len(_breakpoints(full)) == 4


def test_no_breakpoint_on_thinking_blocks() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "so", "signature": "sig2"}]},
    ]
    request, placed = place_breakpoints(_request(messages), PREFILL_MODEL)
    for where, _ in _breakpoints(request):
        index, block = where.removeprefix("messages[").removesuffix("]").split("].content[")
        assert request["messages"][int(index)]["content"][int(block)]["type"] not in ("thinking", "redacted_thinking")
    assert placed[0]["location"] == "messages[2].content[0]"


def test_a_final_prefill_is_not_cached_the_reply_replaces_it() -> None:
    messages = [*_chat(1), {"role": "assistant", "content": "The answer is"}]
    request, placed = place_breakpoints({**_request(messages), "model": PREFILL_MODEL.id}, PREFILL_MODEL)
    assert placed[0]["location"] == "messages[2].content[0]"
    assert request["messages"][3] == {"role": "assistant", "content": "The answer is"}


def test_one_hour_breakpoints_come_before_five_minute_ones() -> None:
    messages = _chat(3)
    messages[2]["content"] = [{"type": "text", "text": "pinned", "cache_control": {"type": "ephemeral"}}]
    request, placed = place_breakpoints(_request(messages, system=BIG_SYSTEM), MODEL, ttl="1h")
    # The prefix precedes the caller's 5m breakpoint and keeps 1h; the moving one follows it and must be 5m.
    assert [(item["kind"], item["ttl"]) for item in placed] == [("prefix", "1h"), ("moving", "5m")]
    validate(request, MODEL)
    messages[2]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    request, placed = place_breakpoints(_request(messages, system=BIG_SYSTEM), MODEL, ttl="5m")
    assert [(item["kind"], item["ttl"]) for item in placed] == [("prefix", "1h"), ("moving", "5m")]
    validate(request, MODEL)


def _long_tool_loop(calls: int) -> list[dict[str, Any]]:
    uses = [{"type": "tool_use", "id": f"toolu_{i}", "name": "read", "input": {"n": i}} for i in range(calls)]
    results = [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": f"r{i}"} for i in range(calls)]
    return [*_chat(2), {"role": "assistant", "content": uses}, {"role": "user", "content": results}]


def test_a_long_tool_loop_gets_an_intermediate_breakpoint_at_the_previous_end() -> None:
    request, placed = place_breakpoints(_request(_long_tool_loop(12)), MODEL)
    assert [(item["kind"], item["location"]) for item in placed] == [
        ("intermediate", "messages[4].content[0]"),
        ("moving", "messages[6].content[11]"),
    ]
    validate(request, MODEL)
    _, short = place_breakpoints(_request(_long_tool_loop(5)), MODEL)
    assert [item["kind"] for item in short] == ["moving"]


def test_an_explicit_previous_end_is_used_for_the_intermediate_breakpoint() -> None:
    _, placed = place_breakpoints(_request(_long_tool_loop(12)), MODEL, previous_end=(2, 0))
    assert placed[0] == {"location": "messages[2].content[0]", "kind": "intermediate", "ttl": "5m", "message": 2}


def test_choose_ttl_prefers_one_hour_when_gaps_outlive_five_minutes() -> None:
    minutes = [6 * 60, 12 * 60, 20 * 60, 45 * 60, 8 * 60, 30 * 60]
    assert choose_ttl(minutes, MODEL, prefix_tokens=20_000, new_tokens=300) == "1h"
    seconds = [2.0, 5.0, 12.0, 3.0, 40.0]
    assert choose_ttl(seconds, MODEL, prefix_tokens=20_000, new_tokens=300) == "5m"
    # The human rhythm of reference §9: about a quarter of the gaps pass five minutes, none an hour.
    human = [30.0, 60.0, 110.0, 400.0, 90.0, 200.0, 700.0, 45.0]
    assert choose_ttl(human, MODEL, prefix_tokens=20_000, new_tokens=300) == "1h"


def test_choose_ttl_needs_a_few_gaps_and_honours_a_fixed_mode() -> None:
    assert choose_ttl([900.0, 1200.0], MODEL, prefix_tokens=20_000) == "5m"
    assert choose_ttl([], MODEL, prefix_tokens=20_000, mode="1h") == "1h"
    assert choose_ttl([900.0] * 10, MODEL, prefix_tokens=20_000, mode="5m") == "5m"
    with pytest.raises(ValueError, match="auto"):
        choose_ttl([], MODEL, prefix_tokens=1, mode="2h")


def test_choose_ttl_keeps_five_minutes_when_little_is_cached_and_much_is_new() -> None:
    gaps = [400.0, 30.0, 20.0, 10.0, 15.0, 25.0]
    assert choose_ttl(gaps, MODEL, prefix_tokens=1_000, new_tokens=5_000) == "5m"


def _settings(now: float | None, last: float | None = None) -> RequestSettings:
    return RequestSettings(MODEL, 512, now=now, last_request_at=last)


def test_forecast_an_identical_repeat_within_the_ttl_reads_everything() -> None:
    request, _ = place_breakpoints(_request(_chat(20), system=BIG_SYSTEM), MODEL)
    first = forecast(request, {}, MODEL, _settings(1000.0))
    assert first["cache"] == "new"
    assert first["cache_read"] == 0
    assert first["cache_write_5m"] == first["input_tokens"]
    state = remember(request, {}, _settings(1000.0))
    again = forecast(request, state, MODEL, _settings(1060.0, 1000.0))
    assert again["cache"] == "warm"
    assert again["cache_read"] == again["input_tokens"]
    assert again["cache_write_5m"] == again["cache_write_1h"] == again["uncached"] == 0
    assert float(again["usd"]["input_total"]) < float(first["usd"]["input_total"]) / 5


def test_forecast_after_expiry_writes_everything_again() -> None:
    request, _ = place_breakpoints(_request(_chat(20), system=BIG_SYSTEM), MODEL)
    state = remember(request, {}, _settings(1000.0))
    late = forecast(request, state, MODEL, _settings(1000.0 + 301, 1000.0))
    assert late["cache"] == "expired"
    assert late["cache_read"] == 0
    assert late["cache_write_5m"] == late["input_tokens"]


def test_forecast_reads_the_previous_request_and_writes_only_what_is_new() -> None:
    messages = _chat(20)
    first, _ = place_breakpoints(_request(messages, system=BIG_SYSTEM), MODEL)
    state = remember(first, {}, _settings(0.0))
    grown = [*messages, {"role": "assistant", "content": "ok " * 100}, {"role": "user", "content": "more " * 30}]
    second, _ = place_breakpoints(_request(grown, system=BIG_SYSTEM), MODEL)
    predicted = forecast(second, state, MODEL, _settings(10.0, 0.0))
    assert predicted["cache_read"] == state["cache"]["entries"][-1]["tokens"]
    assert 100 < predicted["cache_write_5m"] < 200
    assert predicted["uncached"] == 0


def test_forecast_a_changed_prefix_reads_only_the_system() -> None:
    first, _ = place_breakpoints(_request(_chat(20), system=BIG_SYSTEM), MODEL)
    state = remember(first, {}, _settings(0.0))
    cut, _ = place_breakpoints(_request(_chat(20)[10:], system=BIG_SYSTEM), MODEL)
    predicted = forecast(cut, state, MODEL, _settings(10.0, 0.0))
    assert predicted["cache"] == "warm"
    assert predicted["cache_read"] == state["cache"]["entries"][0]["tokens"]  # the system prefix entry
    assert predicted["cache_write_5m"] > 0


def test_forecast_of_a_request_too_small_to_cache_says_so_and_writes_nothing() -> None:
    small, _ = place_breakpoints(_request(_chat(1)), MODEL)  # far below the model's 1,024-token minimum
    assert forecast(small, {}, MODEL, _settings(0.0))["cache"] == "too_small"
    state = remember(small, {}, _settings(0.0))
    grown, _ = place_breakpoints(_request(_chat(2)), MODEL)
    predicted = forecast(grown, state, MODEL, _settings(10.0, 0.0))
    assert predicted["cache"] == "too_small"
    assert predicted["cache_write_5m"] == predicted["cache_read"] == 0
    assert predicted["uncached"] == predicted["input_tokens"]
    # Once it is big enough, it is written for the first time: nothing was cached before.
    big, _ = place_breakpoints(_request(_chat(20)), MODEL)
    assert forecast(big, state, MODEL, _settings(20.0, 10.0))["cache"] == "new"
    assert forecast(_request(_chat(20)), state, MODEL, _settings(20.0, 10.0))["cache"] == "off"  # no breakpoint


def test_remember_keeps_the_rest_of_the_state_and_is_json_ready() -> None:
    request, _ = place_breakpoints(_request(_chat(2)), MODEL)
    state = remember(request, {"start": 4, "calibration": 1.1}, _settings(5.0))
    assert state["start"] == 4
    assert state["calibration"] == 1.1
    assert json.loads(json.dumps(state)) == state


@pytest.mark.parametrize(
    "policy",
    [
        FullHistory(),
        FullHistory(automatic=False),
        Window(turns=10),
        TokenBudget(max_input_tokens=6000),
        SlidingWindow(10),
    ],
    ids=lambda policy: f"{policy.name}",
)
def test_the_forecast_agrees_with_the_emulators_bill(policy: Policy) -> None:
    """The emulator's prompt cache is an independent model of the API's billing: the predicted cache-read share
    of each request matches what it bills, within a few points (estimates are not its tokenizer's counts)."""
    rng = random.Random(3)
    words = ["the", "of", "and", "to", "in", "is", "you", "that", "it", "was", "for", "on", "are", "as", "with"]

    def text(count: int) -> str:
        return " ".join(rng.choice(words) for _ in range(count))

    clock = Clock("virtual")
    cache = PromptCache(clock)
    transcript: list[dict[str, Any]] = []
    state: Mapping[str, Any] = {}
    last: float | None = None
    for _ in range(60):
        transcript.append({"role": "user", "content": text(70)})
        settings = RequestSettings(MODEL, 1024, BIG_SYSTEM, None, now=clock.now(), last_request_at=last)
        plan = policy.plan(transcript, state, settings)
        automatic = plan.request.get("cache_control")
        billed = cache.process(
            scope="key",
            model=MODEL,
            segments=request_segments(plan.request, MODEL.tokenizer),
            automatic_ttl=automatic.get("ttl", "5m") if automatic else None,
        )
        predicted = plan.explanation["forecast"]
        predicted_share = predicted["cache_read"] / predicted["input_tokens"]
        assert predicted_share == pytest.approx(billed.cache_read / billed.total_input_tokens, abs=0.05)
        assert (predicted["cache_read"] > 0) == (billed.cache_read > 0)
        state, last = plan.state, clock.now()
        transcript.append({"role": "assistant", "content": text(215)})
        clock.advance(rng.choice([5.0, 30.0, 400.0]))


def test_breakpoints_nested_in_a_tool_result_count_too() -> None:
    nested = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}} for i in range(3)]
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": nested}]},
    ]
    request, placed = place_breakpoints(_request(messages, system=BIG_SYSTEM), MODEL)
    # The caller's breakpoints already mark the end of the request (the tool_result): one slot is left.
    assert [item["kind"] for item in placed] == ["prefix"]
    validate(request, MODEL)


def test_what_precedes_a_compaction_block_is_neither_counted_nor_read_from_the_cache() -> None:
    # As turnkeep sends it after the API compacted: the turn whose reply holds the block, then the new turn.
    history = _chat(20)
    block = {"type": "compaction", "content": "Summary of questions 0 to 19.", "encrypted_content": "x"}
    reply = {"role": "assistant", "content": [block, {"type": "text", "text": "ok"}]}

    def compacted(question: str) -> dict[str, Any]:
        messages = [{"role": "user", "content": question}, reply, {"role": "user", "content": "next"}]
        return place_breakpoints(_request(messages, system=BIG_SYSTEM), MODEL)[0]

    first, _ = place_breakpoints(_request(history, system=BIG_SYSTEM), MODEL)
    state = remember(first, {}, _settings(0.0))
    short, long = compacted("Go on."), compacted("Go on. " * 500)
    predicted = forecast(long, state, MODEL, _settings(10.0, 0.0))
    assert predicted["input_tokens"] == forecast(short, state, MODEL, _settings(10.0, 0.0))["input_tokens"]
    assert predicted["cache_read"] == state["cache"]["entries"][0]["tokens"]  # the system prompt, nothing after
