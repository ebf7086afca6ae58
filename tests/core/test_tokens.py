"""Token estimates: magnitudes, the tokenizer generation, thinking, and calibration."""

from __future__ import annotations

from dataclasses import replace

import pytest

from turnkeep.core.catalog import default_catalog
from turnkeep.core.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    Calibrator,
    estimate_block,
    estimate_message,
    estimate_request,
    estimate_text,
)
from turnkeep.emulator.tokenizer import input_tokens

OLD = default_catalog().get("claude-haiku-4-5")  # tokenizer generation 1
NEW = default_catalog().get("claude-sonnet-5")  # generation 2
PROSE = "The quick brown fox jumps over the lazy dog while the cat watches from the window. " * 20


def test_about_four_characters_per_token_on_the_older_tokenizer() -> None:
    assert estimate_text("x" * 400, OLD) == 100
    assert estimate_text("", OLD) == 0
    assert estimate_text("hi", OLD) == 1


def test_the_newer_tokenizer_counts_thirty_percent_more() -> None:
    assert estimate_text("x" * 400, NEW) == 130
    assert OLD.tokenizer == 1
    assert NEW.tokenizer == 2


def test_non_ascii_text_weighs_more_per_character() -> None:
    assert estimate_text("中文" * 100, OLD) >= 200  # at least one token per CJK character
    assert estimate_text("😀" * 40, OLD) > estimate_text("a" * 40, OLD)


def test_estimates_are_in_the_same_ballpark_as_the_emulators_tokenizer() -> None:
    body = {"model": OLD.id, "messages": [{"role": "user", "content": PROSE}]}
    estimated = estimate_request(body, OLD)
    counted = input_tokens(body, OLD.tokenizer)
    assert 0.6 <= estimated / counted <= 1.6


def test_thinking_blocks_of_earlier_turns_count_nothing() -> None:
    thinking = {"type": "thinking", "thinking": "a long chain of thought " * 100, "signature": "sig"}
    assert estimate_block(thinking, OLD) == 0
    assert estimate_block({"type": "redacted_thinking", "data": "x" * 500}, OLD) == 0
    reply = {"role": "assistant", "content": [thinking, {"type": "text", "text": "x" * 40}]}
    assert estimate_message(reply, OLD) == MESSAGE_OVERHEAD + 10
    finished = [{"role": "user", "content": "q"}, reply, {"role": "user", "content": "next"}]
    without = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * 40}, finished[2]]
    assert estimate_request({"messages": finished}, OLD) == estimate_request({"messages": without}, OLD)


def test_the_thinking_of_the_tool_loop_in_progress_is_counted() -> None:
    thinking = {"type": "thinking", "thinking": "y" * 400, "signature": "sig"}
    call = {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}
    loop = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [thinking, call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"}]},
    ]
    plain = [loop[0], {"role": "assistant", "content": [call]}, loop[2]]
    assert estimate_request({"messages": loop}, OLD) == estimate_request({"messages": plain}, OLD) + 100


def test_tool_blocks_images_and_tool_definitions_add_their_overheads() -> None:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    assert estimate_block(call, OLD) > 8
    assert estimate_block({"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}, OLD) > 6
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    assert estimate_block(image, OLD) == IMAGE_TOKENS
    tools = [{"name": "get_weather", "description": "Weather " * 50, "input_schema": {"type": "object"}}]
    assert estimate_request({"tools": tools, "messages": []}, OLD) > 100


def test_calibration_scales_the_estimate() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}]}
    plain = estimate_request(body, OLD)
    assert estimate_request(body, OLD, calibration=1.5) == pytest.approx(plain * 1.5, abs=1)


def test_calibration_converges_to_the_observed_ratio() -> None:
    calibrator = Calibrator()
    for _ in range(200):
        calibrator.observe(1000, 1200)
    assert calibrator.factor == pytest.approx(1.2, rel=1e-3)
    for _ in range(400):
        calibrator.observe(1000, 900)
    assert calibrator.factor == pytest.approx(0.9, rel=1e-3)


def test_calibration_weighs_observations_by_their_size() -> None:
    calibrator = Calibrator()
    calibrator.observe(3000, 2100)  # a long message at 0.7
    for _ in range(5):
        calibrator.observe(4, 5)  # one-liners, where per-message overhead dominates
    assert calibrator.factor == pytest.approx(0.7, abs=0.01)


def test_calibration_ignores_empty_observations_and_clamps_outliers() -> None:
    calibrator = Calibrator()
    assert calibrator.observe(0, 500) == 1.0
    assert calibrator.observe(500, 0) == 1.0
    assert calibrator.observe(1, 1_000_000) == 4.0


def test_an_unknown_generation_above_two_counts_like_the_newer_tokenizer() -> None:
    assert estimate_text("x" * 400, replace(NEW, tokenizer=3)) == 130
