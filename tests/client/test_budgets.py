"""Budgets: checked before each request with the forecast; nothing is stored or sent when one would be passed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from fake_api import FakeAPI

from turnkeep import Budget, BudgetExceeded, Conversation
from turnkeep.errors import ConfigError
from turnkeep.policies import Summarize, Window
from turnkeep.store import MemoryStore


def test_a_turn_budget_refuses_the_next_turn_before_sending() -> None:
    api = FakeAPI()
    api.reply("one").reply("two")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), budget=Budget(max_turns=2))
    conversation.send("first")
    conversation.send("second")
    with pytest.raises(BudgetExceeded, match="2 of 2 turns"):
        conversation.send("third")
    assert len(api.requests) == 2
    assert not conversation.pending


def test_a_turn_answered_after_an_overflow_counts_once_against_the_turn_budget() -> None:
    api = FakeAPI()
    conversation = Conversation(
        "claude-sonnet-4-6", client=api.client(), policy=Window(turns=10), budget=Budget(max_turns=3)
    )
    api.reply("one")
    conversation.send("first")
    api.fail(400, "invalid_request_error", "prompt is too long: 1000001 tokens > 1000000 maximum").reply("two")
    conversation.send("second")  # the reply failed, the smaller overflow request answered
    api.reply("cut", stop_reason="model_context_window_exceeded").reply("three")
    conversation.send("third")  # cut by the window, answered by the overflow request
    assert conversation.spent.turns == 3
    with pytest.raises(BudgetExceeded, match="3 of 3 turns"):
        conversation.send("fourth")


def test_a_cost_budget_names_spent_forecast_and_limit() -> None:
    api = FakeAPI()
    api.reply("one", input_tokens=100_000, output_tokens=1_000)
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), budget=Budget(max_cost_usd=Decimal("0.32")))
    conversation.send("first")  # $0.30 input + $0.015 output
    # The next request carries the first one's 100,000 tokens again (known exactly from its usage).
    with pytest.raises(BudgetExceeded, match=r"spent \$0\.315000, next request ~\$0\.\d+, limit \$0\.320000"):
        conversation.send("second " * 2000)
    assert len(api.requests) == 1


def test_an_input_token_budget_counts_every_token_sent() -> None:
    api = FakeAPI()
    api.reply("one", input_tokens=900, cache_read_input_tokens=100)
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), budget=Budget(max_input_tokens_total=1_010))
    conversation.send("first")
    assert conversation.spent.input_tokens == 1_000
    with pytest.raises(BudgetExceeded, match="input-token budget"):
        conversation.send("a longer second question")


def test_a_budget_may_degrade_to_a_cheaper_model_instead_of_refusing() -> None:
    api = FakeAPI()
    api.reply("one", input_tokens=100_000, output_tokens=0).reply("two")
    # Spent $0.30; the next request carries the first one's 100,000 tokens again (known from its usage): ~$0.39
    # on Sonnet 4.6 (over the limit) but ~$0.13 on Haiku 4.5 (under it).
    budget = Budget(max_cost_usd=Decimal("0.50"), degrade_to="claude-haiku-4-5")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), budget=budget)
    conversation.send("first")
    conversation.send("second")
    assert api.requests[1]["model"] == "claude-haiku-4-5"
    assert conversation.model == "claude-haiku-4-5"


def test_budgets_are_stored_with_the_conversation() -> None:
    api, store = FakeAPI(), MemoryStore()
    api.reply("one")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), store=store, budget=Budget(max_turns=1))
    conversation.send("first")
    reopened = Conversation.open(conversation.id, store=store, client=api.client())
    assert reopened.budget == Budget(max_turns=1)
    with pytest.raises(BudgetExceeded):
        reopened.send("second")


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ConfigError):
        Budget(max_turns=-1)
    with pytest.raises(ConfigError):
        Budget(max_cost_usd=Decimal("-1"))


def test_when_even_the_cheaper_model_would_pass_the_budget_nothing_changes() -> None:
    api = FakeAPI()
    api.reply("one", input_tokens=100_000, output_tokens=0)
    budget = Budget(max_cost_usd=Decimal("0.35"), degrade_to="claude-haiku-4-5")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), budget=budget)
    conversation.send("first")
    with pytest.raises(BudgetExceeded):
        conversation.send("second")
    assert conversation.model == "claude-sonnet-4-6"
    assert len(api.requests) == 1


def _summarizing(api: FakeAPI, budget: Budget | None = None) -> Conversation:
    policy = Summarize(trigger=2_600, keep_last=2)  # due on the fourth turn of the long turns below
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=policy, budget=budget)
    for number in range(3):
        api.reply(f"answer {number} " + "word " * 400)
        conversation.send(f"question {number} " + "word " * 400)
    return conversation


def test_an_input_token_budget_counts_what_the_summary_call_sends_too() -> None:
    probe = _summarizing(FakeAPI())
    forecast = probe.forecast("question 3")
    assert forecast.prelude_input_tokens > 1_000  # the leaving turns, rendered for the summary call
    limit = probe.spent.input_tokens + forecast.input_tokens + forecast.prelude_input_tokens // 2
    api = FakeAPI()
    conversation = _summarizing(api, Budget(max_input_tokens_total=limit))
    sent = len(api.requests)
    with pytest.raises(BudgetExceeded, match="input-token budget"):
        conversation.send("question 3")
    assert len(api.requests) == sent


def test_the_forecast_of_a_turn_with_a_summary_due_reads_nothing_of_the_old_history() -> None:
    conversation = _summarizing(FakeAPI())
    forecast = conversation.forecast("question 3")
    # The request after the summary begins with a new first message: only tools and system could be read, and
    # this conversation has neither.
    assert forecast.tokens.cache_read == 0
    assert forecast.tokens.cache_write_5m == forecast.input_tokens
