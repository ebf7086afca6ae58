"""The emulator's tokenizer: deterministic counts in the ballpark of real ones, segments that sum, fingerprints."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.emulator.tokenizer import (
    DOCUMENT_OVERHEAD,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    PDF_PAGE_TOKENS,
    block_tokens,
    fingerprint,
    input_tokens,
    output_tokens,
    request_segments,
    text_tokens,
    truncate_to_tokens,
)

PROSE = (
    "Prompt caching lets you reuse a prefix of your request. When the prefix is identical to an earlier one, "
    "the API reads it from the cache instead of processing it again, which is cheaper and faster. "
    "Breakpoints mark where a cached prefix ends; at most four may be used in one request."
)


def conversation(turns: int = 6, words: int = 60, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    vocabulary = PROSE.replace(".", "").replace(",", "").replace(";", "").split()
    messages = []
    for index in range(turns):
        text = " ".join(rng.choice(vocabulary) for _ in range(words)) + "."
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are a careful assistant.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "lookup", "description": "Look a word up", "input_schema": {"type": "object"}}],
        "messages": messages,
    }


def test_english_prose_is_about_four_characters_per_token() -> None:
    ratio = len(PROSE) / text_tokens(PROSE, 1)
    assert 3.5 <= ratio <= 5.5


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello", 1),
        ("hello world", 2),
        ("internationalization", 4),  # 20 letters: ceil(20 / 6)
        ("1234567", 3),  # digits in threes
        ("a, b.", 4),
        ("line\n\nnext", 3),
        ("日本語", 3),  # 9 UTF-8 bytes
    ],
)
def test_documented_piece_rules(text: str, tokens: int) -> None:
    assert text_tokens(text, 1) == tokens


def test_generation_two_counts_thirty_percent_more_rounded_half_up() -> None:
    base = text_tokens(PROSE, 1)
    assert text_tokens(PROSE, 2) == (base * 13 + 5) // 10
    assert text_tokens("hello", 2) == 1  # 1.3 rounds to 1
    assert text_tokens("hello hello hello hello hello", 2) == 7  # 6.5 rounds up


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_counts_are_deterministic_and_generation_two_is_about_1_3_times(text: str) -> None:
    first = text_tokens(text, 1)
    assert first == text_tokens(text, 1)
    assert text_tokens(text, 2) == (first * 13 + 5) // 10


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=0, max_value=60), st.sampled_from([1, 2]))
def test_truncation_fits_the_limit(text: str, limit: int, generation: int) -> None:
    cut = truncate_to_tokens(text, limit, generation)
    assert text.startswith(cut)
    assert text_tokens(cut, generation) <= limit
    if text_tokens(text, generation) <= limit:
        assert cut == text


@pytest.mark.parametrize("generation", [1, 2])
def test_input_tokens_is_the_sum_of_the_segments(generation: int) -> None:
    body = conversation()
    segments = request_segments(body, generation)
    assert input_tokens(body, generation) == sum(segment.tokens for segment in segments)


def test_segments_follow_prefix_order_with_locations() -> None:
    segments = request_segments(conversation(turns=2), 1)
    assert [s.location for s in segments] == [
        "tools[0]",
        "system[0]",
        "messages[0].content[0]",
        "messages[1].content[0]",
    ]
    assert [s.section for s in segments] == ["tools", "system", "messages", "messages"]
    assert [s.message_index for s in segments] == [None, None, 0, 1]
    assert segments[1].cache_ttl == "5m"
    assert segments[2].cache_ttl is None


def test_each_message_adds_its_overhead_to_its_first_block() -> None:
    text = "Two blocks here."
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "text", "text": text}]}]}
    first, second = request_segments(body, 1)
    assert first.tokens == text_tokens(text, 1) + MESSAGE_OVERHEAD
    assert second.tokens == text_tokens(text, 1)


def test_string_content_counts_as_one_text_block() -> None:
    as_string = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi there"}]}
    as_blocks = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}],
    }
    assert request_segments(as_string, 2) == request_segments(as_blocks, 2)


def test_thinking_of_earlier_turns_is_not_input_and_not_cacheable() -> None:
    thinking = {"type": "thinking", "thinking": "A long chain of thought " * 50, "signature": "sig"}
    body = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": [thinking]}]}
    segment = request_segments(body, 2)[1]
    assert segment.tokens == MESSAGE_OVERHEAD
    assert segment.cacheable is False
    assert output_tokens([thinking], 2) == text_tokens(thinking["thinking"], 2)


def test_structural_blocks() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    assert block_tokens(image, 1) == IMAGE_TOKENS
    assert block_tokens({"type": "compaction", "content": "Summary here."}, 1) == text_tokens("Summary here.", 1)
    assert block_tokens({"type": "compaction", "content": None}, 1) == 0
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"word": "cache"}}
    assert block_tokens(tool_use, 1) > text_tokens("lookup", 1)
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A cache is a store."}
    assert block_tokens(result, 1) > text_tokens("A cache is a store.", 1)


def test_a_pdf_counts_per_page() -> None:
    pdf = base64.b64encode(b"%PDF-1.7 << /Type /Pages >> << /Type /Page >> << /Type/Page >>").decode()
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}}
    assert block_tokens(document, 1) == 2 * PDF_PAGE_TOKENS + DOCUMENT_OVERHEAD
    by_url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    assert block_tokens(by_url, 1) == PDF_PAGE_TOKENS + DOCUMENT_OVERHEAD


def test_a_tool_definition_counts_its_canonical_json_without_cache_control() -> None:
    tool = {"name": "lookup", "input_schema": {"type": "object"}}
    with_breakpoint = {**tool, "cache_control": {"type": "ephemeral"}}
    assert (
        request_segments({"tools": [tool]}, 1)[0].tokens == request_segments({"tools": [with_breakpoint]}, 1)[0].tokens
    )
    assert request_segments({"tools": [tool]}, 1)[0].tokens == text_tokens(
        '{"input_schema":{"type":"object"},"name":"lookup"}', 1
    )


def test_fingerprints_ignore_cache_control() -> None:
    body = conversation()
    marked = copy.deepcopy(body)
    marked["messages"][2]["content"] = [
        {"type": "text", "text": body["messages"][2]["content"], "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    del marked["system"][0]["cache_control"]
    plain_prints = [s.fingerprint for s in request_segments(body, 2)]
    marked_prints = [s.fingerprint for s in request_segments(marked, 2)]
    assert plain_prints == marked_prints


def test_fingerprints_see_roles_and_message_boundaries() -> None:
    one_message = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    }
    two_messages = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}]},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
        ]
    }
    as_assistant = {"messages": [{"role": "assistant", "content": [{"type": "text", "text": "a"}]}]}
    one = request_segments(one_message, 1)
    two = request_segments(two_messages, 1)
    assert one[0].fingerprint == two[0].fingerprint
    assert one[1].fingerprint != two[1].fingerprint
    assert request_segments(as_assistant, 1)[0].fingerprint != one[0].fingerprint


@settings(max_examples=60)
@given(
    role=st.sampled_from(["user", "assistant", "system"]),
    starts=st.booleans(),
    text=st.text(max_size=40) | st.just("x" * 20_000),
    ttl=st.sampled_from([None, "5m", "1h"]),
)
def test_a_text_blocks_fingerprint_is_the_digest_of_its_canonical_json(
    role: str, starts: bool, text: str, ttl: str | None
) -> None:
    """Remembering plain text blocks by their text changes no fingerprint (asked twice: computed, then recalled)."""
    block: dict[str, Any] = {"type": "text", "text": text}
    if ttl is not None:
        block["cache_control"] = {"type": "ephemeral", "ttl": ttl}
    payload = {"role": role, "starts_message": starts, "block": {"type": "text", "text": text}}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    except UnicodeEncodeError:  # a lone surrogate: neither way has a digest
        with pytest.raises(UnicodeEncodeError):
            fingerprint(role, starts, block)
        return
    assert fingerprint(role, starts, block) == expected
    assert fingerprint(role, starts, dict(block)) == expected
    with_citations = {**block, "citations": []}
    assert fingerprint(role, starts, with_citations) != expected


def test_a_long_text_counts_the_same_when_counted_again() -> None:
    """Texts beyond the plain cache are remembered by a digest; a different long text gets its own count."""
    long_text = " ".join([PROSE] * 100)
    assert len(long_text) > 16_384
    first = text_tokens(long_text, 1)
    assert text_tokens(long_text, 1) == first
    assert text_tokens(long_text + " more words here", 1) == first + 3
    assert text_tokens(long_text, 2) == (first * 13 + 5) // 10


def test_output_tokens_count_reply_blocks() -> None:
    reply = [
        {"type": "text", "text": PROSE},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"word": "cache"}},
    ]
    assert output_tokens(reply, 1) == text_tokens(PROSE, 1) + block_tokens(reply[1], 1)
    assert output_tokens([], 2) == 0


def test_a_thousand_token_request_tokenises_quickly() -> None:
    body = conversation(turns=10, words=75)
    assert 800 <= input_tokens(body, 1) <= 1500
    started = time.perf_counter()
    for _ in range(50):
        request_segments(body, 2)
    average = (time.perf_counter() - started) / 50
    assert average < 0.020  # a sanity bound only; the benchmark measures real numbers
