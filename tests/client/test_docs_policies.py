"""docs/policies.md stays true: its examples run against the emulator and print what it shows, and its tables of
defaults, explanation keys, command-line spellings and benchmark numbers match the code and the benchmarks page."""

from __future__ import annotations

import ast
import dataclasses
import gc
import re
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest

import turnkeep.policies
from turnkeep.cli._runtime import parse_policy
from turnkeep.core.catalog import default_catalog
from turnkeep.core.policies import (
    ClearToolUses,
    FullHistory,
    Policy,
    RequestSettings,
    ServerCompaction,
    SlidingWindow,
    Summarize,
    TokenBudget,
    Window,
)
from turnkeep.core.policies.summarize import SUMMARY_MARKER
from turnkeep.emulator import EmulatorServer

DOCS = Path(__file__).parents[2] / "docs"
GUIDE = DOCS / "policies.md"
# A python block, and the text block right after it: what the block prints.
EXAMPLE = re.compile(r"```python\n(.*?)```(?:\n\n```text\n(.*?)```)?", re.DOTALL)
# What tells the examples apart, one per example; a new example needs a test of its own below.
MARKERS = ("Window(messages=6)", "Summarize(", "ServerCompaction(fallback=", "clock=lambda")

Run = Callable[[str], tuple[dict[str, Any], str]]


def examples() -> list[tuple[str, str | None]]:
    return [(match[1], match[2]) for match in EXAMPLE.finditer(GUIDE.read_text())]


def example(marker: str) -> tuple[str, str]:
    """The one example whose code contains `marker`, and the output the guide shows for it."""
    found = [(code, shown) for code, shown in examples() if marker in code]
    assert len(found) == 1, f"{len(found)} examples contain {marker!r}"
    code, shown = found[0]
    assert shown is not None, f"the example with {marker!r} shows no output"
    return code, shown


def table(heading: str) -> list[list[str]]:
    """The body rows of the Markdown table whose header row starts with `heading`, as lists of cells."""
    lines = GUIDE.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.fixture
def run(
    turnkeep_emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Iterator[Run]:
    """Runs a block as a reader would, with the SDK pointed at the emulator: (its globals, what it printed)."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", turnkeep_emulator.base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path))  # no user catalog: the shipped model facts
    namespaces: list[dict[str, Any]] = []

    def run(code: str) -> tuple[dict[str, Any], str]:
        capsys.readouterr()
        namespace: dict[str, Any] = {}
        namespaces.append(namespace)
        exec(compile(code, str(GUIDE), "exec"), namespace)
        return namespace, capsys.readouterr().out

    yield run
    # The examples make their clients from the environment, as a reader's script would, and never close them:
    # close those still named, and collect the rest now, so no unclosed socket is reported during a later test.
    for namespace in namespaces:
        for value in namespace.values():
            if isinstance(getattr(value, "client", None), anthropic.Anthropic):
                value.client.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


# -- the examples ----------------------------------------------------------------------------------------------


def test_every_example_of_the_guide_shows_its_output_and_is_run_below() -> None:
    found = examples()
    for code, shown in found:
        assert sum(marker in code for marker in MARKERS) == 1, code
        assert shown, code
    # One example per marker, so each is run by the test that names it.
    assert sorted(next(m for m in MARKERS if m in code) for code, _ in found) == sorted(MARKERS)


def test_a_message_window_stays_put_then_steps_back_to_its_low_water_mark(run: Run) -> None:
    code, shown = example("Window(messages=6)")
    namespace, printed = run(code)
    assert printed == shown
    chat, last = namespace["chat"], namespace["plan"].explanation
    assert len(chat.ledger) == 6
    assert (last["messages_kept"], last["high_water"], last["low_water"], last["unit"]) == (3, 6, 3, "messages")
    # So small a conversation is below the model's minimum for caching: nothing is cached, a step costs nothing.
    assert last["forecast"]["cache"] == "too_small"
    assert last["step"]["rewrite_tokens"] == 0
    assert Decimal(last["step"]["rewrite_usd"]) == 0


def test_a_cold_cache_makes_the_window_step_before_its_high_water(run: Run) -> None:
    code, shown = example("clock=lambda")
    namespace, printed = run(code)
    assert printed == shown
    step = namespace["step"]
    assert step["reason"] == "cold_cache"
    assert step["rewrite_tokens"] == 0  # nothing of so small a conversation is ever cached
    assert namespace["chat"].explain("Box 3 is red.").explanation["turns_kept"] == 2  # the low water of 4 turns


def test_summaries_are_written_by_the_cheaper_model_and_the_first_turn_lives_on_in_them(run: Run) -> None:
    code, shown = example("Summarize(")
    namespace, printed = run(code)
    assert printed == shown
    chat = namespace["chat"]
    explanation = chat.explain().explanation
    assert explanation["inner"] == "token-budget"
    assert explanation["summarized"][0][0] == 0
    assert explanation["kept"][0] > 1  # "My name is Ada." and its reply are no longer sent verbatim
    lead = chat.messages[0]["content"][0]["text"]
    assert lead.startswith(SUMMARY_MARKER)
    assert "Ada" in lead
    assert all(Decimal(entry.cost_usd) > 0 for entry in chat.ledger if entry.purpose == "summary")


def test_server_compaction_sends_its_edit_where_supported_and_its_fallback_elsewhere(run: Run) -> None:
    code, shown = example("ServerCompaction(fallback=")
    namespace, printed = run(code)
    assert printed == shown
    elsewhere = namespace["plan"]  # the last model of the loop: the one without compaction
    assert elsewhere.explanation["policy"] == "server-compaction"
    assert "context_management" not in elsewhere.request


# -- the tables ------------------------------------------------------------------------------------------------


def test_the_settings_and_defaults_the_guide_gives_for_each_policy_are_the_code_s() -> None:
    signatures = re.findall(r"\*\*`(\w+\(.*?\))`\*\*", GUIDE.read_text(), flags=re.DOTALL)
    described = set()
    for signature in signatures:
        policy = eval(signature, vars(turnkeep.policies))
        cls = type(policy)
        assert policy == cls(), signature
        call = ast.parse(signature, mode="eval").body
        assert isinstance(call, ast.Call)
        named = {keyword.arg for keyword in call.keywords}
        assert named == {item.name for item in dataclasses.fields(cls)} - {"name"}, signature
        described.add(cls)
    assert described == {FullHistory, Window, TokenBudget, Summarize, ServerCompaction, ClearToolUses}


def _plans() -> list[dict[str, Any]]:
    """Explanations of every policy in the situations that add keys: a summary or compaction due, a model without
    compaction or context editing."""
    catalog = default_catalog()

    def settings(model: str) -> RequestSettings:
        return RequestSettings(catalog.get(model), 1024)

    chat: list[Any] = []
    for number in range(3):
        chat += [{"role": "user", "content": f"Box {number} is red."}, {"role": "assistant", "content": "Noted."}]
    chat.append({"role": "user", "content": "And box 3?"})
    long = [{"role": "user", "content": "word " * 60_000}, {"role": "assistant", "content": "Read."}, *chat[-1:]]
    cases: list[tuple[Policy, list[Any], str]] = [
        (FullHistory(), chat, "claude-sonnet-4-6"),
        (Window(turns=2), chat, "claude-sonnet-4-6"),
        (TokenBudget(max_input_tokens=10_000), chat, "claude-sonnet-4-6"),
        (SlidingWindow(messages=4), chat, "claude-sonnet-4-6"),
        (Summarize(trigger=1, keep_last=1), chat, "claude-sonnet-4-6"),
        (ServerCompaction(), chat, "claude-sonnet-4-6"),
        (ServerCompaction(), chat, "claude-haiku-4-5"),
        (ServerCompaction(explicit=True, trigger=50_000, keep_last=1), long, "claude-sonnet-4-6"),
        (ClearToolUses(), chat, "claude-sonnet-4-6"),
        (ClearToolUses(), chat, "claude-mythos-preview"),
    ]
    return [dict(policy.plan(transcript, {}, settings(model)).explanation) for policy, transcript, model in cases]


def test_the_explanation_keys_the_guide_lists_are_those_the_policies_produce() -> None:
    documented = {name for row in table("| key |") for name in re.findall(r"`(\w+)`", row[0])}
    produced = {key for explanation in _plans() for key in explanation}
    assert documented == produced


def test_each_command_line_spelling_in_the_guide_is_the_policy_it_names() -> None:
    rows = table("| `--policy` |")
    assert len(rows) >= 5
    for spelling, python in rows:
        assert parse_policy(spelling.strip("`")) == eval(python.strip("`"), vars(turnkeep.policies)), spelling


def test_the_benchmark_numbers_the_guide_quotes_are_on_the_benchmarks_page() -> None:
    quoted = re.findall(r"\$\d+\.\d{4}|\d+\.\d%", GUIDE.read_text())
    assert len(quoted) >= 6
    measured = (DOCS / "benchmarks.md").read_text()
    assert [number for number in quoted if number not in measured] == []
