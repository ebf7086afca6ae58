"""Pricing: exact USD from usage, per model, per TTL, per band, and over beta iterations."""

from __future__ import annotations

from decimal import Decimal

from anthropic.types import Usage

from turnkeep.core.catalog import default_catalog
from turnkeep.core.pricing import Cost, TokenCounts, token_counts, usage_cost

SONNET_4_6 = default_catalog().get("claude-sonnet-4-6")  # 3 / 15, writes 3.75 / 6, read 0.30


def test_each_kind_of_token_is_priced_separately() -> None:
    usage = {
        "input_tokens": 1_000,
        "output_tokens": 2_000,
        "cache_read_input_tokens": 10_000,
        "cache_creation_input_tokens": 3_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
    }
    cost = usage_cost(usage, SONNET_4_6)
    assert cost == Cost(
        input=Decimal("0.003"),
        cache_write_5m=Decimal("0.00375"),
        cache_write_1h=Decimal("0.012"),
        cache_read=Decimal("0.003"),
        output=Decimal("0.03"),
    )
    assert cost.total == Decimal("0.05175")


def test_an_sdk_usage_and_its_json_cost_the_same() -> None:
    usage = Usage(input_tokens=10, output_tokens=20, cache_read_input_tokens=30, cache_creation_input_tokens=40)
    assert usage_cost(usage, SONNET_4_6) == usage_cost(usage.model_dump(), SONNET_4_6)


def test_writes_without_a_ttl_split_are_billed_at_the_default_5m_price() -> None:
    counts = token_counts({"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 500})
    assert (counts.cache_write_5m, counts.cache_write_1h) == (500, 0)


def test_the_long_context_band_prices_the_whole_request() -> None:
    haiku = default_catalog().get("claude-haiku-5-5")
    small = usage_cost({"input_tokens": 100_000, "output_tokens": 1_000}, haiku)
    large = usage_cost({"input_tokens": 100_001, "output_tokens": 1_000}, haiku)
    assert small.output == Decimal("0.0005")
    assert large.output == Decimal("0.0025")
    assert large.input == Decimal("100001") * Decimal("0.50") / Decimal(1_000_000)


def test_batch_takes_the_discount_off_everything() -> None:
    usage = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    assert usage_cost(usage, SONNET_4_6, batch=True).total == Decimal("9")


def test_iterations_are_billed_each_on_their_own() -> None:
    usage = {
        "input_tokens": 50,
        "output_tokens": 10,
        "iterations": [
            {"type": "compaction", "input_tokens": 160_000, "output_tokens": 2_000},
            {"type": "message", "input_tokens": 50, "output_tokens": 10},
        ],
    }
    assert token_counts(usage) == TokenCounts(input=160_050, output=2_010)
    expected = usage_cost({"input_tokens": 160_000, "output_tokens": 2_000}, SONNET_4_6) + usage_cost(
        {"input_tokens": 50, "output_tokens": 10}, SONNET_4_6
    )
    assert usage_cost(usage, SONNET_4_6) == expected


def test_an_iteration_on_another_model_is_priced_as_that_model() -> None:
    opus = default_catalog().get("claude-opus-5")
    usage = {"iterations": [{"type": "advisor_message", "model": "claude-opus-5", "input_tokens": 1_000_000}]}
    assert usage_cost(usage, SONNET_4_6, model_prices=default_catalog().get).total == opus.prices.input
    assert usage_cost(usage, SONNET_4_6).total == SONNET_4_6.prices.input
