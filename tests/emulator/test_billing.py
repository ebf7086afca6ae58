"""The emulator's bill: exact USD per API key and model, computed by hand here with the reference's prices."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

from turnkeep.core.catalog import default_catalog
from turnkeep.emulator.billing import Bill, usd
from turnkeep.emulator.cache import CacheUsage

CATALOG = default_catalog()
SONNET_46 = CATALOG.get("claude-sonnet-4-6")  # 3 / 15, writes 3.75 / 6, read 0.30
HAIKU_55 = CATALOG.get(
    "claude-haiku-5-5"
)  # ≤100K: 0.10 / 0.50, 0.125 / 0.20 / 0.01; above: 0.50 / 2.50, 0.625 / 1 / 0.05
OPUS_55 = CATALOG.get("claude-opus-5-5")  # 4 / 20, writes 5 / 8, read 0.20
MILLION = Decimal(1_000_000)


def usage(
    input_tokens: int = 0, write_5m: int = 0, write_1h: int = 0, read: int = 0, output: int = 0, **extra: Any
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "cache_read_input_tokens": read,
        "output_tokens": output,
        **extra,
    }


def iteration(kind: str, **counts: Any) -> dict[str, Any]:
    model = counts.pop("model", None)
    item = {"type": kind, **usage(**counts)}
    if model is not None:
        item["model"] = model
    return item


def total_usd(bill: Bill, scope: str = "key") -> Decimal:
    return Decimal(bill.summary(scope)["usd"]["total"])


SONNET_USAGE = usage(input_tokens=1_000, write_5m=2_000, write_1h=3_000, read=4_000, output=500)
# 1,000 × 3 + 2,000 × 3.75 + 3,000 × 6 + 4,000 × 0.30 + 500 × 15 = 37,200 USD per million tokens
SONNET_USD = Decimal(37_200) / MILLION


def test_every_kind_of_token_is_priced_at_its_own_rate() -> None:
    bill = Bill()
    bill.add("key", SONNET_46, SONNET_USAGE)
    summary = bill.summary("key")
    assert Decimal(summary["usd"]["total"]) == SONNET_USD == Decimal("0.0372")
    assert summary["usd"] == {
        "input": "0.003",
        "cache_write_5m": "0.0075",
        "cache_write_1h": "0.018",
        "cache_read": "0.0012",
        "output": "0.0075",
        "total": "0.0372",
    }
    assert {key: summary[key] for key in summary if key.endswith(("tokens", "requests"))} == {
        "requests": 1,
        "batch_requests": 0,
        "input_tokens": 1_000,
        "cache_creation_input_tokens": 5_000,
        "ephemeral_5m_input_tokens": 2_000,
        "ephemeral_1h_input_tokens": 3_000,
        "cache_read_input_tokens": 4_000,
        "output_tokens": 500,
    }


def test_haiku_5_5_up_to_100k_input_tokens_pays_the_base_prices() -> None:
    bill = Bill()
    bill.add("key", HAIKU_55, usage(input_tokens=50_000, write_1h=10_000, read=40_000, output=1_000))
    # 50,000 × 0.10 + 10,000 × 0.20 + 40,000 × 0.01 + 1,000 × 0.50 = 7,900
    assert total_usd(bill) == Decimal(7_900) / MILLION


def test_haiku_5_5_over_100k_input_tokens_pays_the_long_context_prices_on_everything() -> None:
    bill = Bill()
    bill.add("key", HAIKU_55, usage(input_tokens=60_000, write_1h=10_001, read=30_000, output=2_000))
    # 100,001 input tokens in all: 60,000 × 0.50 + 10,001 × 1.00 + 30,000 × 0.05 + 2,000 × 2.50 = 46,501
    assert total_usd(bill) == Decimal(46_501) / MILLION
    assert bill.summary("key")["usd"]["cache_write_1h"] == "0.010001"


def test_the_batch_api_halves_the_bill() -> None:
    bill = Bill()
    bill.add("key", SONNET_46, SONNET_USAGE, batch=True)
    assert total_usd(bill) == SONNET_USD / 2
    assert bill.summary("key")["batch_requests"] == 1


def test_requests_add_up_per_key_and_per_model() -> None:
    bill = Bill()
    bill.add("alice", SONNET_46, SONNET_USAGE)
    bill.add("alice", SONNET_46, SONNET_USAGE)
    bill.add("alice", OPUS_55, usage(input_tokens=10, output=10))  # 10 × 4 + 10 × 20 = 240
    bill.add("bob", OPUS_55, usage(read=1_000))  # 1,000 × 0.20 = 200
    alice = bill.summary("alice")
    assert alice["requests"] == 3
    assert Decimal(alice["usd"]["total"]) == 2 * SONNET_USD + Decimal(240) / MILLION
    assert alice["models"]["claude-sonnet-4-6"]["requests"] == 2
    assert alice["models"]["claude-sonnet-4-6"]["input_tokens"] == 2_000
    assert alice["models"]["claude-opus-5-5"]["usd"]["total"] == "0.00024"
    everyone = bill.summary()
    assert set(everyone["scopes"]) == {"alice", "bob"}
    assert everyone["scopes"]["bob"]["cache_read_input_tokens"] == 1_000
    assert everyone["total"]["requests"] == 4
    assert Decimal(everyone["total"]["usd"]["total"]) == 2 * SONNET_USD + Decimal(440) / MILLION


def test_a_key_that_spent_nothing_has_a_zero_bill() -> None:
    summary = Bill().summary("nobody")
    assert summary["requests"] == 0
    assert summary["usd"]["total"] == "0"
    assert summary["models"] == {}


def test_reset_forgets_one_key_or_all() -> None:
    bill = Bill()
    bill.add("alice", SONNET_46, SONNET_USAGE)
    bill.add("bob", SONNET_46, SONNET_USAGE)
    bill.reset("alice")
    assert bill.summary("alice")["requests"] == 0
    assert bill.summary("bob")["requests"] == 1
    bill.reset()
    assert bill.summary() == Bill().summary()


def test_summaries_are_json_with_exact_usd_strings() -> None:
    bill = Bill()
    bill.add("key", HAIKU_55, usage(read=1))  # 1 × 0.01 / 1,000,000 USD
    text = json.dumps(bill.summary())
    assert json.loads(text)["scopes"]["key"]["usd"]["total"] == "0.00000001"
    assert usd(Decimal("12.500")) == "12.5"
    assert usd(Decimal("1E+2")) == "100"


def test_with_iterations_every_iteration_is_billed_including_compaction() -> None:
    bill = Bill()
    compaction = iteration("compaction", input_tokens=60_000, output=2_000)
    reply = iteration("message", input_tokens=100, write_5m=3_000, output=500)
    # The top-level fields hold only the message iteration; the compaction call is billed all the same.
    bill.add("key", OPUS_55, usage(input_tokens=100, write_5m=3_000, output=500, iterations=[compaction, reply]))
    # 60,000 × 4 + 2,000 × 20 + 100 × 4 + 3,000 × 5 + 500 × 20 = 305,400
    assert total_usd(bill) == Decimal(305_400) / MILLION
    summary = bill.summary("key")
    assert (summary["requests"], summary["input_tokens"], summary["output_tokens"]) == (1, 60_100, 2_500)


def test_an_advisor_iteration_is_billed_at_the_advisor_model() -> None:
    bill = Bill()
    executor = iteration("message", input_tokens=1_000, output=100)
    advisor = iteration("advisor_message", input_tokens=2_000, output=300, model="claude-opus-4-8")
    bill.add("key", SONNET_46, usage(input_tokens=1_000, output=100, iterations=[executor, advisor]))
    # Sonnet 4.6: 1,000 × 3 + 100 × 15 = 4,500; Opus 4.8: 2,000 × 5 + 300 × 25 = 17,500
    summary = bill.summary("key")
    assert Decimal(summary["usd"]["total"]) == Decimal(22_000) / MILLION
    assert summary["models"]["claude-sonnet-4-6"]["usd"]["total"] == "0.0045"
    assert summary["models"]["claude-opus-4-8"]["usd"]["total"] == "0.0175"
    assert summary["models"]["claude-opus-4-8"]["requests"] == 1


def test_each_iteration_gets_its_own_long_context_band() -> None:
    bill = Bill()
    step = iteration("message", input_tokens=60_000, output=100)
    bill.add("key", HAIKU_55, usage(input_tokens=120_000, output=200, iterations=[step, step]))
    # Two sampling calls of 60,000 tokens each stay in the base band: 2 × (60,000 × 0.10 + 100 × 0.50)
    assert total_usd(bill) == Decimal(12_100) / MILLION


def test_the_cache_engine_usage_bills_directly() -> None:
    bill = Bill()
    cached = CacheUsage(input_tokens=1_000, cache_creation_5m=2_000, cache_creation_1h=3_000, cache_read=4_000)
    bill.add("key", SONNET_46, {**cached.usage_fields(), "output_tokens": 500})
    assert total_usd(bill) == SONNET_USD


def test_concurrent_adds_are_all_counted() -> None:
    bill = Bill()

    def spend() -> None:
        for _ in range(250):
            bill.add("key", SONNET_46, SONNET_USAGE)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = bill.summary("key")
    assert summary["requests"] == 2_000
    assert summary["output_tokens"] == 1_000_000
    assert Decimal(summary["usd"]["total"]) == 2_000 * SONNET_USD == Decimal("74.4")
