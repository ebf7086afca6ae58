"""The recommender: the cheapest candidate that keeps as much context as the best one, explained in numbers."""

from __future__ import annotations

import pytest

from turnkeep.core.policies import FullHistory, Window
from turnkeep.errors import UsageError
from turnkeep.sim import recommend, workload


def test_it_picks_the_cheapest_candidate_that_keeps_every_fact_and_explains_the_trade() -> None:
    chat = workload("chat-200").head(30)
    result = recommend(
        chat,
        conversations_per_month=10_000,
        models=["claude-haiku-4-5", "claude-sonnet-4-6"],
        strategies=[FullHistory(), Window(turns=2)],
    )
    choice = result.choice
    assert choice.row.facts_retained == max(c.row.facts_retained for c in result.candidates)
    assert choice.row.model == "claude-haiku-4-5"  # the same context for a third of the price
    assert choice.monthly_usd == choice.row.cost_usd * 10_000
    assert len(result.candidates) == 4
    assert [c.monthly_usd for c in result.candidates] == sorted(c.monthly_usd for c in result.candidates)
    assert "$" in result.reasons[0]
    assert "a month for 10,000 conversations" in result.reasons[0]
    cheaper = [c for c in result.candidates if c.monthly_usd < choice.monthly_usd]
    if cheaper:
        assert "keeps only" in result.reasons[1]
    assert result.to_dict()["choice"]["model"] == "claude-haiku-4-5"


def test_a_volume_below_one_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 1"):
        recommend(workload("chat-200").head(5), conversations_per_month=0)
