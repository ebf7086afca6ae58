"""The lower bounds, on hand-made request sequences whose ideal caching cost is easy to work out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.core.catalog import default_catalog
from turnkeep.sim import PrefixTracker

MODEL = default_catalog().get("claude-sonnet-4-6")  # $/MTok: input 3, 5m write 3.75, 1h write 6, read 0.30


def tracker(*requests: tuple[float, list[tuple[str, int]]]) -> PrefixTracker:
    result = PrefixTracker()
    for at, segments in requests:
        result.add(at, MODEL, segments)
    return result


def test_a_prefix_sent_once_costs_the_uncached_price_in_both_bounds() -> None:
    once = tracker((0.0, [("system", 1_000_000)]))
    assert once.no_expiry_usd() == pytest.approx(3.0)
    assert once.clairvoyant_usd() == pytest.approx(3.0)


def test_a_shared_prefix_is_written_once_then_read_and_a_new_tail_is_priced_on_its_own() -> None:
    sent = tracker((0.0, [("a", 1_000_000)]), (60.0, [("a", 1_000_000), ("b", 1_000_000)]))
    # a: written at 5m then read 60 s later; b: sent once, uncached.
    assert sent.no_expiry_usd() == pytest.approx(3.75 + 0.30 + 3.0)
    assert sent.clairvoyant_usd() == pytest.approx(3.75 + 0.30 + 3.0)


def test_the_same_block_after_a_different_prefix_is_a_different_node() -> None:
    sent = tracker((0.0, [("a", 1_000_000), ("c", 1_000_000)]), (10.0, [("b", 1_000_000), ("c", 1_000_000)]))
    assert sent.no_expiry_usd() == pytest.approx(4 * 3.0)


def test_past_five_minutes_the_clairvoyant_bound_pays_for_a_one_hour_write_where_no_expiry_pays_nothing() -> None:
    sent = tracker((0.0, [("a", 1_000_000)]), (600.0, [("a", 1_000_000)]), (1_200.0, [("a", 1_000_000)]))
    assert sent.no_expiry_usd() == pytest.approx(3.75 + 2 * 0.30)
    assert sent.clairvoyant_usd() == pytest.approx(6.0 + 2 * 0.30)


def test_past_an_hour_the_clairvoyant_bound_rewrites_or_resends_whichever_is_cheaper() -> None:
    sent = tracker((0.0, [("a", 1_000_000)]), (7_200.0, [("a", 1_000_000)]), (7_260.0, [("a", 1_000_000)]))
    # First use: nothing reads it in time, so uncached; then a 5m write read 60 s later.
    assert sent.clairvoyant_usd() == pytest.approx(3.0 + 3.75 + 0.30)
    assert sent.no_expiry_usd() == pytest.approx(3.75 + 2 * 0.30)


def test_reads_refresh_the_ttl_so_a_chain_of_short_gaps_keeps_a_five_minute_entry_alive() -> None:
    uses = [(float(t), [("a", 1_000_000)]) for t in range(0, 3_000, 250)]
    sent = tracker(*uses)
    assert sent.clairvoyant_usd() == pytest.approx(3.75 + (len(uses) - 1) * 0.30)


def test_requests_to_different_models_never_share_a_prefix() -> None:
    other = default_catalog().get("claude-haiku-4-5")  # input $1
    sent = PrefixTracker()
    sent.add(0.0, MODEL, [("a", 1_000_000)])
    sent.add(1.0, other, [("a", 1_000_000)])
    assert sent.no_expiry_usd() == pytest.approx(3.0 + 1.0)
    assert sent.peak_input == 1_000_000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=7_200), st.lists(st.sampled_from("abc"), min_size=1, max_size=4)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.integers(min_value=1, max_value=5_000), min_size=3, max_size=3),
)
def test_no_expiry_is_below_clairvoyant_which_is_below_sending_uncached_or_always_rewriting(
    requests: list[tuple[float, list[str]]], sizes: list[int]
) -> None:
    sent = PrefixTracker()
    uncached = rewrite = 0.0
    at = 0.0
    for gap, blocks in requests:
        at += gap
        # The same block name always has the same size, so equal prefixes are equal requests.
        segments = [(name, sizes["abc".index(name)]) for name in blocks]
        sent.add(at, MODEL, segments)
        tokens = sum(size for _, size in segments)
        uncached += tokens * 3.0 / 1_000_000
        rewrite += tokens * 3.75 / 1_000_000
    assert sent.no_expiry_usd() <= sent.clairvoyant_usd() + 1e-12
    assert sent.clairvoyant_usd() <= min(uncached, rewrite) + 1e-12
