"""Prompt caching as the API bills it (reference §4), and cache diagnostics."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from anthropic.types import Diagnostics as SdkDiagnostics
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.core.catalog import ModelInfo, default_catalog
from turnkeep.emulator.cache import CacheUsage, Diagnostics, PromptCache
from turnkeep.emulator.clock import Clock
from turnkeep.emulator.tokenizer import Segment, input_tokens, request_segments

SONNET = default_catalog().get("claude-sonnet-4-6")  # minimum cacheable prefix 1024
HAIKU = default_catalog().get("claude-haiku-5-5")  # minimum 512
KEY = "sk-ant-test-1"


# --- building requests ------------------------------------------------------------------------------------------


def block(
    name: str,
    tokens: int,
    *,
    section: str = "messages",
    message: int | None = None,
    ttl: str | None = None,
    cacheable: bool = True,
) -> Segment:
    """A segment whose fingerprint is derived from `name`: same name and place, same content."""
    if section == "messages" and message is None:
        message = 0
    fingerprint = hashlib.sha256(f"{section}|{message}|{name}".encode()).hexdigest()
    location = section if message is None else f"messages[{message}]"
    return Segment(
        location=f"{location}.{name}",
        section=section,  # type: ignore[arg-type]
        message_index=message,
        tokens=tokens,
        cache_ttl=ttl,
        cacheable=cacheable,
        fingerprint=fingerprint,
    )


def tool(name: str, tokens: int, ttl: str | None = None) -> Segment:
    return block(name, tokens, section="tools", ttl=ttl)


def system(name: str, tokens: int, ttl: str | None = None) -> Segment:
    return block(name, tokens, section="system", ttl=ttl)


def with_ttl(segment: Segment, ttl: str | None) -> Segment:
    return replace(segment, cache_ttl=ttl)


def chat(messages: int, tokens: int = 100) -> list[Segment]:
    """A system prompt of 1,000 tokens and `messages` alternating user/assistant messages of one block each."""
    return [system("prompt", 1_000)] + [block(f"m{i}", tokens, message=i) for i in range(messages)]


def new_cache(start: float = 0.0) -> tuple[PromptCache, Clock]:
    clock = Clock("virtual", start=start)
    return PromptCache(clock), clock


def run(
    cache: PromptCache,
    segments: Sequence[Segment],
    *,
    automatic: str | None = None,
    scope: str = KEY,
    model: ModelInfo = SONNET,
) -> CacheUsage:
    return cache.process(scope=scope, model=model, segments=segments, automatic_ttl=automatic)


def usage(input_tokens: int = 0, write_5m: int = 0, write_1h: int = 0, read: int = 0) -> CacheUsage:
    return CacheUsage(input_tokens, write_5m, write_1h, read)


# --- writes, reads and the minimum -------------------------------------------------------------------------------


def test_first_request_writes_the_prefix_and_an_identical_second_reads_it() -> None:
    cache, _ = new_cache()
    request = [tool("search", 300), system("prompt", 800, ttl="5m"), block("question", 50)]
    first = run(cache, request)
    assert first == usage(input_tokens=50, write_5m=1_100)
    assert first.cache_creation_input_tokens == 1_100
    assert run(cache, request) == usage(input_tokens=50, read=1_100)


def test_usage_fields_have_the_api_shape() -> None:
    fields = usage(input_tokens=7, write_5m=5, write_1h=3, read=11).usage_fields()
    assert fields == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 8,
        "cache_read_input_tokens": 11,
        "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 3},
    }


def test_a_prefix_below_the_model_minimum_caches_nothing() -> None:
    cache, _ = new_cache()
    request = [system("prompt", 1_000, ttl="5m"), block("question", 500)]  # 1,000 < 1,024 at the breakpoint
    assert run(cache, request) == usage(input_tokens=1_500)
    assert run(cache, request) == usage(input_tokens=1_500)
    assert cache.entry_count() == 0
    # The same prefix is long enough for a model with a lower minimum.
    assert run(cache, request, model=HAIKU) == usage(input_tokens=500, write_5m=1_000)


def test_a_short_breakpoint_is_skipped_and_a_later_one_writes_from_the_start() -> None:
    cache, _ = new_cache()
    request = [system("prompt", 600, ttl="5m"), block("doc", 900, ttl="5m"), block("question", 40, message=1)]
    assert run(cache, request) == usage(input_tokens=40, write_5m=1_500)
    assert cache.entry_count() == 1


def test_no_breakpoint_no_caching() -> None:
    cache, _ = new_cache()
    assert run(cache, chat(5)) == usage(input_tokens=1_500)
    assert cache.entry_count() == 0


def test_an_empty_request_costs_nothing() -> None:
    cache, _ = new_cache()
    assert run(cache, [], automatic="5m") == usage()


# --- time to live -------------------------------------------------------------------------------------------------


def test_a_5m_entry_expires_after_five_minutes() -> None:
    cache, clock = new_cache()
    request = with_ttl_last(chat(3), "5m")
    assert run(cache, request) == usage(write_5m=1_300)
    clock.advance(301)
    assert run(cache, request) == usage(write_5m=1_300)


def test_a_hit_refreshes_the_entry_it_read() -> None:
    cache, clock = new_cache()
    request = with_ttl_last(chat(3), "5m")
    run(cache, request)
    clock.advance(240)
    assert run(cache, request) == usage(read=1_300)
    clock.advance(240)  # 8 minutes after the write, 4 after the refresh
    assert run(cache, request) == usage(read=1_300)
    clock.advance(301)
    assert run(cache, request) == usage(write_5m=1_300)


def test_a_1h_entry_outlives_five_minutes_but_not_an_hour() -> None:
    cache, clock = new_cache()
    request = with_ttl_last(chat(3), "1h")
    assert run(cache, request) == usage(write_1h=1_300)
    clock.advance(30 * 60)
    assert run(cache, request) == usage(read=1_300)
    clock.advance(3_601)
    assert run(cache, request) == usage(write_1h=1_300)


def test_writes_split_by_ttl_when_a_1h_breakpoint_precedes_a_5m_one() -> None:
    cache, clock = new_cache()
    request = [
        tool("search", 400),
        tool("fetch", 800, ttl="1h"),
        system("prompt", 500),
        block("question", 300, ttl="5m"),
        block("tail", 100, message=1),
    ]
    assert run(cache, request) == usage(input_tokens=100, write_1h=1_200, write_5m=800)
    clock.advance(600)  # the 5m entry is gone, the 1h entry is not
    assert run(cache, request) == usage(input_tokens=100, read=1_200, write_5m=800)
    assert run(cache, request) == usage(input_tokens=100, read=2_000)


def test_an_entry_written_for_1h_keeps_its_ttl_when_a_5m_breakpoint_reads_it() -> None:
    cache, clock = new_cache()
    run(cache, with_ttl_last(chat(3), "1h"))
    assert run(cache, with_ttl_last(chat(3), "5m")) == usage(read=1_300)
    clock.advance(20 * 60)
    assert run(cache, with_ttl_last(chat(3), "5m")) == usage(read=1_300)


def with_ttl_last(segments: list[Segment], ttl: str) -> list[Segment]:
    return [*segments[:-1], with_ttl(segments[-1], ttl)]


# --- automatic caching and the 20-block lookback ------------------------------------------------------------------


def test_automatic_caching_moves_with_the_conversation() -> None:
    cache, clock = new_cache()
    previous_total = 0
    for turn in range(1, 8):
        request = chat(2 * turn - 1)
        result = run(cache, request, automatic="5m")
        total = sum(s.tokens for s in request)
        assert result == usage(read=previous_total, write_5m=total - previous_total)
        previous_total = total
        clock.advance(30)


def test_the_automatic_breakpoint_skips_trailing_thinking_blocks() -> None:
    cache, _ = new_cache()
    request = [*chat(3), block("thinking", 50, message=3, cacheable=False)]
    assert run(cache, request, automatic="5m") == usage(input_tokens=50, write_5m=1_300)


def test_an_explicit_breakpoint_on_the_last_block_keeps_its_ttl_under_automatic_caching() -> None:
    cache, clock = new_cache()
    assert run(cache, with_ttl_last(chat(3), "1h"), automatic="5m") == usage(write_1h=1_300)
    clock.advance(20 * 60)
    assert run(cache, with_ttl_last(chat(3), "1h"), automatic="5m") == usage(read=1_300)


@pytest.mark.parametrize("blocks_back", [1, 19, 20])
def test_a_breakpoint_finds_an_entry_up_to_20_blocks_back(blocks_back: int) -> None:
    cache, _ = new_cache()
    run(cache, chat(10), automatic="5m")
    grown = chat(10 + blocks_back)
    assert run(cache, grown, automatic="5m") == usage(read=2_000, write_5m=100 * blocks_back)


def test_a_breakpoint_misses_an_entry_21_blocks_back_and_rewrites_everything() -> None:
    cache, _ = new_cache()
    run(cache, chat(10), automatic="5m")
    grown = chat(31)
    assert run(cache, grown, automatic="5m") == usage(write_5m=4_100)


def test_a_tool_loop_adding_more_than_20_blocks_per_turn_rewrites_every_turn() -> None:
    cache, _ = new_cache()
    base = [system("prompt", 1_000), block("task", 200, message=0)]

    def turn(n: int) -> list[Segment]:
        # Each turn: an assistant message with 11 parallel tool_use blocks, a user message with 11 results.
        loop = []
        for t in range(n):
            loop += [block(f"use{t}.{k}", 10, message=2 * t + 1) for k in range(11)]
            loop += [block(f"result{t}.{k}", 30, message=2 * t + 2) for k in range(11)]
        return base + loop

    for n in range(1, 5):
        total = sum(s.tokens for s in turn(n))
        assert run(cache, turn(n), automatic="5m") == usage(write_5m=total)

    # An intermediate breakpoint kept within reach of the previous turn's end fixes it.
    cache.clear()
    previous_total = 0
    for n in range(1, 5):
        request = turn(n)
        anchor = len(turn(n - 1)) - 1 if n > 1 else 1
        request[anchor] = with_ttl(request[anchor], "5m")
        total = sum(s.tokens for s in request)
        result = run(cache, request, automatic="5m")
        assert result.cache_read == previous_total
        assert result.cache_creation_5m == total - previous_total
        previous_total = total


# --- invalidation and isolation -----------------------------------------------------------------------------------


def test_changing_an_early_segment_invalidates_everything_after_it() -> None:
    cache, _ = new_cache()
    tools = [tool("search", 600), tool("fetch", 500)]
    prompt = system("prompt", 400, ttl="5m")
    messages = [block(f"m{i}", 100, message=i) for i in range(6)]
    messages[-1] = with_ttl(messages[-1], "5m")
    run(cache, [*tools, prompt, *messages])

    edited = [*messages]
    edited[1] = block("m1-edited", 100, message=1)
    assert run(cache, [*tools, prompt, *edited]) == usage(read=1_500, write_5m=600)

    assert run(cache, [*tools, system("other prompt", 400, ttl="5m"), *messages]) == usage(write_5m=2_100)
    assert run(cache, [tools[1], tools[0], prompt, *messages]) == usage(write_5m=2_100)


def test_caches_are_isolated_per_api_key_and_per_model() -> None:
    cache, _ = new_cache()
    request = with_ttl_last(chat(3), "5m")
    run(cache, request)
    assert run(cache, request, scope="sk-ant-other") == usage(write_5m=1_300)
    opus = default_catalog().get("claude-opus-4-6")
    assert run(cache, request, model=replace(opus, min_cache_tokens=1_024)) == usage(write_5m=1_300)
    assert run(cache, request) == usage(read=1_300)


def test_a_dated_alias_shares_the_cache_of_its_model() -> None:
    cache, _ = new_cache()
    request = with_ttl_last(chat(40), "5m")  # over Haiku 4.5's minimum of 4,096
    run(cache, request, model=default_catalog().get("claude-haiku-4-5"))
    assert run(cache, request, model=default_catalog().get("claude-haiku-4-5-20251001")) == usage(read=5_000)


def test_segments_of_real_requests_cache_turn_after_turn() -> None:
    cache, _ = new_cache()
    body: dict[str, Any] = {
        "system": [{"type": "text", "text": "You answer questions about the manual. " * 120}],
        "messages": [{"role": "user", "content": "What does chapter one say?"}],
    }
    first = run(cache, request_segments(body, HAIKU.tokenizer), automatic="5m", model=HAIKU)
    assert first.cache_read == 0
    assert first.cache_creation_5m == input_tokens(body, HAIKU.tokenizer) > HAIKU.min_cache_tokens
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "It says hello."}]},
        {"role": "user", "content": "And chapter two?"},
    ]
    second = run(cache, request_segments(body, HAIKU.tokenizer), automatic="5m", model=HAIKU)
    assert second.cache_read == first.cache_creation_5m
    assert second.total_input_tokens == input_tokens(body, HAIKU.tokenizer)


def test_the_same_blocks_split_into_other_messages_do_not_match() -> None:
    cache, _ = new_cache()
    prompt = {"system": "Rules of the house. " * 200}
    two_blocks = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second part"}]
    merged = {**prompt, "messages": [{"role": "user", "content": two_blocks}]}
    split = {
        **prompt,
        "messages": [
            {"role": "user", "content": two_blocks[:1]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": two_blocks[1:]},
        ],
    }
    run(cache, request_segments(merged, 2), automatic="5m", model=HAIKU)
    again = run(cache, request_segments(split, 2), automatic="5m", model=HAIKU)
    assert again.cache_read == 0  # no lookback position of `split` has `merged`'s prefix


# --- invariants, memory, speed, threads -----------------------------------------------------------------------------


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[Segment], list[tuple[int, dict[int, str], str | None, int]]]:
    """A pool of blocks and requests over its prefixes: (length, breakpoints, automatic TTL, gap before it)."""
    pool = [
        block(f"b{position}", draw(st.integers(0, 300)), message=position // 3, cacheable=draw(st.integers(0, 5)) > 0)
        for position in range(draw(st.integers(0, 45)))
    ]
    cacheable = [position for position, segment in enumerate(pool) if segment.cacheable]
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        length = draw(st.integers(0, len(pool)))
        reachable = [position for position in cacheable if position < length]
        chosen = draw(st.lists(st.sampled_from(reachable), max_size=4, unique=True)) if reachable else []
        ttls = {position: draw(st.sampled_from(["5m", "1h"])) for position in chosen}
        steps.append((length, ttls, draw(st.sampled_from([None, "5m", "1h"])), draw(st.sampled_from([0, 60, 301]))))
    return pool, steps


@settings(max_examples=80, deadline=None)
@given(conversations())
def test_every_input_token_is_billed_exactly_once(
    conversation: tuple[list[Segment], list[tuple[int, dict[int, str], str | None, int]]],
) -> None:
    pool, steps = conversation
    cache, clock = new_cache()
    for length, ttls, automatic, gap in steps:
        clock.advance(gap)
        segments = [with_ttl(segment, ttls.get(position)) for position, segment in enumerate(pool[:length])]
        result = run(cache, segments, automatic=automatic, model=HAIKU)
        assert min(result.input_tokens, result.cache_creation_5m, result.cache_creation_1h, result.cache_read) >= 0
        assert result.total_input_tokens == sum(s.tokens for s in segments)
        # Read and written together reach exactly the last breakpoint whose prefix is over the minimum.
        cumulative = list(itertools.accumulate(s.tokens for s in segments))
        points = set(ttls)
        if automatic is not None and any(s.cacheable for s in segments):
            points.add(max(p for p, s in enumerate(segments) if s.cacheable))
        qualifying = [p for p in points if cumulative[p] >= HAIKU.min_cache_tokens]
        end = cumulative[max(qualifying)] if qualifying else 0
        assert result.cache_read + result.cache_creation_input_tokens == end
        assert result.cache_read in {0, *cumulative}


def test_expired_entries_are_freed() -> None:
    cache, clock = new_cache()
    for key in range(50):
        run(cache, with_ttl_last(chat(3), "5m"), scope=f"key-{key}")
    assert cache.entry_count() == 50
    clock.advance(301)
    assert cache.entry_count() == 50  # freed lazily, by the next request
    run(cache, chat(1))
    assert cache.entry_count() == 0


def test_a_long_soak_keeps_memory_flat() -> None:
    cache, clock = new_cache()
    counts = []
    for conversation in range(300):
        for turn in range(1, 6):
            run(cache, chat(2 * turn - 1, tokens=20), automatic="5m", scope=f"key-{conversation}")
            clock.advance(7)
        counts.append(cache.entry_count())
    # Each conversation leaves 4 entries (its first turn is under the minimum) that die 5 minutes after its last
    # turn; conversations are 35 s apart, so nine conversations' entries are alive at any time, however long it runs.
    assert max(counts[20:]) == min(counts[20:]) == 9 * 4


def test_process_takes_well_under_a_millisecond_for_a_typical_request() -> None:
    cache, clock = new_cache()
    request = [tool(f"t{i}", 20) for i in range(4)] + [system("prompt", 220, ttl="1h")]
    request += [block(f"m{i}", 20, message=i // 2) for i in range(35)]
    request[-1] = with_ttl(request[-1], "5m")
    assert sum(s.tokens for s in request) == 1_000
    model = replace(SONNET, min_cache_tokens=256)
    run(cache, request, model=model)
    rounds = 500
    started = time.perf_counter()
    for _ in range(rounds):
        clock.advance(1)
        run(cache, request, model=model)
    assert (time.perf_counter() - started) / rounds < 0.001


def test_concurrent_requests_bill_as_if_sequential() -> None:
    conversation = [chat(2 * turn - 1) for turn in range(1, 11)]
    sequential_cache, _ = new_cache()
    expected = [run(sequential_cache, request, automatic="5m") for request in conversation]
    cache, _ = new_cache()
    results: dict[str, list[CacheUsage]] = {}

    def talk(scope: str) -> None:
        results[scope] = [run(cache, request, automatic="5m", scope=scope) for request in conversation]

    threads = [threading.Thread(target=talk, args=(f"key-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result == expected for result in results.values())
    assert cache.entry_count() == 8 * 10


# --- diagnostics ----------------------------------------------------------------------------------------------------


def request_with(
    tools: Sequence[str] = ("search",), prompt: str = "prompt", messages: Sequence[str] = ("m0",)
) -> list[Segment]:
    segments = [tool(name, 100) for name in tools] + [system(prompt, 200)]
    for index, name in enumerate(messages):
        segments += [block(f"{name}.text", 30, message=index), block(f"{name}.extra", 20, message=index)]
    return segments


def diagnose(
    diagnostics: Diagnostics,
    segments: Sequence[Segment],
    *,
    previous: str | None = "msg_1",
    scope: str = KEY,
    model: str = SONNET.id,
) -> dict[str, Any] | None:
    result = diagnostics.diagnose(previous, scope=scope, model=model, segments=segments)
    if result is not None:
        SdkDiagnostics.model_validate(result)  # the SDK's own type accepts it
    return result


@pytest.fixture
def diagnostics() -> Diagnostics:
    recorder = Diagnostics(Clock("virtual", start=0.0))
    recorder.record("msg_1", scope=KEY, model=SONNET.id, segments=request_with(messages=("m0", "m1", "m2")))
    return recorder


def test_no_previous_id_means_no_diagnosis(diagnostics: Diagnostics) -> None:
    assert diagnose(diagnostics, request_with(tools=("other",)), previous=None) is None


def test_a_request_that_extends_or_repeats_the_previous_one_has_no_divergence(diagnostics: Diagnostics) -> None:
    assert diagnose(diagnostics, request_with(messages=("m0", "m1", "m2", "m3", "m4"))) is None
    assert diagnose(diagnostics, request_with(messages=("m0", "m1", "m2"))) is None
    assert diagnose(diagnostics, request_with(messages=("m0", "m1"))) is None  # a prefix is still readable


def test_an_unknown_id_is_previous_message_not_found(diagnostics: Diagnostics) -> None:
    expected = {"cache_miss_reason": {"type": "previous_message_not_found"}}
    assert diagnose(diagnostics, request_with(), previous="msg_unknown") == expected
    assert diagnose(diagnostics, request_with(), scope="sk-ant-other-key") == expected


def test_fingerprints_expire_after_an_hour_and_are_freed() -> None:
    clock = Clock("virtual", start=0.0)
    recorder = Diagnostics(clock)
    recorder.record("msg_1", scope=KEY, model=SONNET.id, segments=request_with())
    clock.advance(3_599)
    assert diagnose(recorder, request_with()) is None
    clock.advance(2)
    assert diagnose(recorder, request_with()) == {"cache_miss_reason": {"type": "previous_message_not_found"}}
    for n in range(100):
        recorder.record(f"msg_{n}", scope=KEY, model=SONNET.id, segments=request_with())
        clock.advance(60)
    assert recorder.entry_count() == 60


def test_a_model_change_misses_the_whole_previous_request(diagnostics: Diagnostics) -> None:
    assert diagnose(diagnostics, request_with(messages=("m0", "m1", "m2")), model="claude-opus-4-6") == {
        "cache_miss_reason": {"type": "model_changed", "cache_missed_input_tokens": 450}
    }


def test_a_tools_change_misses_from_the_changed_tool_on(diagnostics: Diagnostics) -> None:
    added = request_with(tools=("search", "fetch"), messages=("m0", "m1", "m2"))
    assert diagnose(diagnostics, added) == {
        "cache_miss_reason": {"type": "tools_changed", "cache_missed_input_tokens": 350}
    }
    replaced = request_with(tools=("fetch",), messages=("m0", "m1", "m2"))
    assert diagnose(diagnostics, replaced) == {
        "cache_miss_reason": {"type": "tools_changed", "cache_missed_input_tokens": 450}
    }


def test_a_system_change_misses_system_and_messages(diagnostics: Diagnostics) -> None:
    changed = request_with(prompt="today is Tuesday", messages=("m0", "m1", "m2"))
    assert diagnose(diagnostics, changed) == {
        "cache_miss_reason": {"type": "system_changed", "cache_missed_input_tokens": 350}
    }


def test_a_changed_message_misses_from_that_message_to_the_previous_end(diagnostics: Diagnostics) -> None:
    changed = request_with(messages=("m0", "m1 edited", "m2", "m3"))
    assert diagnose(diagnostics, changed) == {
        "cache_miss_reason": {"type": "messages_changed", "cache_missed_input_tokens": 100}
    }
    first = request_with(messages=("m0 edited",))
    assert diagnose(diagnostics, first) == {
        "cache_miss_reason": {"type": "messages_changed", "cache_missed_input_tokens": 150}
    }


def test_one_block_changed_inside_a_message_changes_that_message(diagnostics: Diagnostics) -> None:
    segments = request_with(messages=("m0", "m1", "m2"))
    segments[-1] = block("different extra", 20, message=2)
    assert diagnose(diagnostics, segments) == {
        "cache_miss_reason": {"type": "messages_changed", "cache_missed_input_tokens": 50}
    }
