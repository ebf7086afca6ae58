"""`simulate` against the emulator: ledger equals bill, facts kept or lost as the policy decides, bounds below
every cost, strategies by name."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from turnkeep.core.catalog import default_catalog
from turnkeep.core.policies import (
    ClearToolUses,
    FullHistory,
    ServerCompaction,
    SlidingWindow,
    Summarize,
    TokenBudget,
    Window,
)
from turnkeep.errors import ContextWindowExceeded, UsageError
from turnkeep.sim import (
    SimulationResult,
    agent_workload,
    chat_workload,
    parse_strategy,
    simulate,
    strategy_label,
    workload,
)

MODEL = "claude-sonnet-4-6"
# One worker runs the module: the shared simulation (a module fixture) runs once under `make test`'s parallel run.
pytestmark = pytest.mark.xdist_group("simulator")


@pytest.fixture(scope="module")
def small() -> SimulationResult:
    """20 turns of chat (facts in turns 2-5, asked in turns 17-20) under three strategies."""
    return simulate(
        chat_workload(20, seed=3),
        [FullHistory(), Window(turns=2), SlidingWindow(messages=6, cache=False)],
        [MODEL],
    )


def test_each_run_costs_what_the_emulator_billed_its_key_to_the_cent(small: SimulationResult) -> None:
    for row in small.rows:
        assert row.cost_usd.quantize(Decimal("0.01")) == row.bill_usd.quantize(Decimal("0.01"))
        assert row.requests == 20
        assert sum(row.turn_costs) == row.cost_usd


def test_full_history_keeps_every_planted_fact_and_a_tiny_window_loses_them(small: SimulationResult) -> None:
    full, tiny = small.row("full-history"), small.row("window(turns=2)")
    assert full.facts == tuple(
        (q, True)
        for q in (
            "What is my name?",
            "What is my favourite colour?",
            "Where do I live?",
            "What is the capital of Atlantis?",
        )
    )
    assert tiny.facts_retained == 0
    assert tiny.peak_context < full.peak_context


def test_the_lower_bounds_are_ordered_and_below_every_strategys_cost(small: SimulationResult) -> None:
    for row in small.rows:
        assert 0 < row.bound_no_expiry_usd <= row.bound_clairvoyant_usd <= row.cost_usd


def test_caching_shows_in_the_cache_read_share(small: SimulationResult) -> None:
    assert small.row("full-history").cache_read_share > 0.5
    assert small.row("sliding-window(messages=6, cache=false)").cache_read_share == 0


def test_the_result_is_json_ready_with_one_row_per_strategy_and_model(small: SimulationResult) -> None:
    data = json.loads(json.dumps(small.to_dict()))
    assert data["workload"] == "chat-20"
    assert [(row["strategy"], row["model"]) for row in data["rows"]] == [
        ("full-history", MODEL),
        ("window(turns=2)", MODEL),
        ("sliding-window(messages=6, cache=false)", MODEL),
    ]
    first = data["rows"][0]
    assert first["facts_retained"] == first["facts_total"] == 4
    assert first["cost_usd"] == str(small.rows[0].cost_usd)


def test_a_summary_call_is_billed_to_the_same_key_and_counted_in_the_row() -> None:
    result = simulate(workload("chat-200").head(14), [Summarize(trigger=2_000, keep_last=2)], [MODEL])
    row = result.rows[0]
    assert row.requests > 14  # the summary calls
    assert row.cost_usd.quantize(Decimal("0.01")) == row.bill_usd.quantize(Decimal("0.01"))
    assert row.bound_clairvoyant_usd <= row.cost_usd


def test_rows_come_in_strategy_by_model_order_and_progress_counts_every_turn() -> None:
    seen: list[tuple[int, int, str]] = []
    result = simulate(
        chat_workload(9, seed=1),
        ["full-history", "token-budget(max_input_tokens=3000)"],
        [MODEL, "claude-haiku-4-5"],
        progress=lambda done, total, label: seen.append((done, total, label)),
    )
    assert [(row.strategy, row.model) for row in result.rows] == [
        ("full-history", MODEL),
        ("full-history", "claude-haiku-4-5"),
        ("token-budget(max_input_tokens=3000)", MODEL),
        ("token-budget(max_input_tokens=3000)", "claude-haiku-4-5"),
    ]
    assert [done for done, _, _ in seen] == list(range(1, 37))
    assert seen[-1][1] == 36


def test_runs_played_in_worker_processes_give_exactly_the_rows_played_here() -> None:
    chat = chat_workload(12, seed=5)
    strategies = [FullHistory(), Window(turns=2), Summarize(trigger=1_500, keep_last=2)]
    models = [MODEL, "claude-haiku-5-5"]
    seen: list[tuple[int, int]] = []
    here = simulate(chat, strategies, models, jobs=1)
    there = simulate(chat, strategies, models, jobs=2, progress=lambda done, total, _: seen.append((done, total)))

    def without_times(result: SimulationResult) -> list[dict[str, object]]:
        return [{k: v for k, v in row.to_dict().items() if k != "seconds"} for row in result.rows]

    assert without_times(there) == without_times(here)
    assert [row.cost_usd for row in there.rows] == [row.cost_usd for row in here.rows]  # exact Decimals
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (6 * 12, 6 * 12)


def test_a_run_that_fails_in_a_worker_raises_its_error_here() -> None:
    # A window too small for the chat: the history outgrows it mid-run, and the request is refused before upload.
    small = default_catalog().merged("[models.claude-sonnet-4-6]\ncontext_window = 3000\n")
    chat = chat_workload(12, seed=5)
    strategies = [FullHistory(), FullHistory(ttl="1h")]
    refused = "estimated at 5,571 input tokens, more than the model's context window of 3,000"
    with pytest.raises(ContextWindowExceeded, match=refused):
        simulate(chat, strategies, [MODEL], jobs=1, catalog=small)
    with pytest.raises(ContextWindowExceeded, match=refused):
        simulate(chat, strategies, [MODEL], jobs=2, catalog=small)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("full-history", FullHistory()),
        ("FullHistory(cache=false)", FullHistory(cache=False)),
        ("window(turns=20)", Window(turns=20)),
        ("Window( turns = 8 , ttl = '1h' )", Window(turns=8, ttl="1h")),
        ("token-budget(max_input_tokens=20_000)", TokenBudget(max_input_tokens=20_000)),
        ("sliding_window(messages=20, cache=False)", SlidingWindow(messages=20, cache=False)),
        ("summarize(trigger=20000, keep_last=4)", Summarize(trigger=20_000, keep_last=4)),
        ("window(messages=20)", Window(messages=20)),
        (
            "summarize(inner=window(messages=40), model=claude-haiku-4-5)",
            Summarize(inner=Window(messages=40), model="claude-haiku-4-5"),
        ),
        ("summarize(inner=TokenBudget)", Summarize(inner=TokenBudget())),
        (
            "server-compaction(fallback=window(turns=10), explicit=true)",
            ServerCompaction(fallback=Window(turns=10), explicit=True),
        ),
        ("clear-tool-uses(exclude_tools=[read, 'grep'])", ClearToolUses(exclude_tools=("read", "grep"))),
        ('server-compaction(instructions="Keep names, dates")', ServerCompaction(instructions="Keep names, dates")),
        ("server-compaction(instructions='20000')", ServerCompaction(instructions="20000")),
        ("server-compaction(instructions=Keep it short)", ServerCompaction(instructions="Keep it short")),
        ("summarize(trigger=2e4)", Summarize(trigger=20_000)),  # a whole number, however written
        ("summarize(inner=server-compaction)", Summarize(inner=ServerCompaction())),  # its fallback is not inside
    ],
)
def test_a_strategy_is_parsed_from_its_name_and_settings_and_its_label_reads_back(text: str, policy: object) -> None:
    parsed = parse_strategy(text)
    assert parsed == policy
    assert parse_strategy(strategy_label(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("window(turn=20)", "unknown setting 'turn'"),
        ("no-such-policy", "unknown context policy 'no-such-policy'"),
        ("window(20)", "expected key=value at position 8"),
        ("window(turns=0)", "keep at least one turn"),
        ("(x)", "expected NAME or NAME(key=value, ...)"),
        ("window(turns=5.5)", "turns must be a whole number, not 5.5"),
        ("window(turns=nan)", "turns must be a whole number, not 'nan'"),
        ("window(messages=)", "expected a value at position 17"),
        ("window(cache=no)", "cache must be true or false, not 'no'"),
        ("window(turns=2, turns=3)", "setting 'turns' given twice"),
        ("window(turns=2", "expected ','"),
        ("window(turns=2) extra", "unexpected text after the policy"),
        ("full-history(ttl=2h)", "cache ttl must be one of 5m, 1h, auto, not '2h'"),
        ("clear-tool-uses(keep=-1)", "keep must be at least 0, not -1"),
        ("clear-tool-uses(exclude_tools=read_file)", "exclude_tools must be a list of names"),
        ("clear-tool-uses(inner=clear-tool-uses)", "cannot hold another clear-tool-uses policy"),
        ("summarize(inner=windw)", "inner must be a policy"),
    ],
)
def test_a_bad_strategy_is_a_usage_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_strategy(text)


def test_an_unknown_model_or_an_empty_run_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown model 'claude-nope'"):
        simulate(chat_workload(9), ["full-history"], ["claude-nope"])
    with pytest.raises(UsageError, match="at least one strategy and one model"):
        simulate(chat_workload(9), [], [MODEL])
    with pytest.raises(UsageError, match="strategy 'summarize\\(model=nope\\)': unknown model 'nope'"):
        simulate(chat_workload(9), ["full-history", "summarize(model=nope)"], [MODEL])  # before any run


def test_a_tool_loop_is_played_call_by_call_and_a_window_that_drops_the_first_task_forgets_its_facts() -> None:
    result = simulate(agent_workload(3, 2, seed=2), [FullHistory(), Window(turns=1)], [MODEL])
    full, tiny = result.rows
    assert full.requests == tiny.requests == 3 * 3 + 2  # per task: the request and one per tool result; 2 questions
    assert full.facts_retained == 2
    assert tiny.facts_retained == 0
    for row in result.rows:
        assert row.cost_usd.quantize(Decimal("0.01")) == row.bill_usd.quantize(Decimal("0.01"))
        assert row.bound_no_expiry_usd <= row.bound_clairvoyant_usd <= row.cost_usd
