"""`turnkeep simulate` and `turnkeep recommend`: one library call each, JSON when asked, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from turnkeep.cli import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def transcript(tmp_path: Path) -> Path:
    turns = [
        {"user": "My name is Ada.", "gap": 0},
        *({"user": f"Tell me about item {n}.", "reply_tokens": 200, "gap": 30} for n in range(8)),
        {"user": "What is my name?", "expect": "Ada", "gap": 30},
    ]
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(turns))
    return path


def test_simulate_prints_one_row_per_strategy_and_model_as_json(transcript: Path) -> None:
    result = invoke(
        "simulate",
        "--transcript",
        str(transcript),
        "-s",
        "full-history",
        "-s",
        "window(turns=2)",
        "-m",
        "claude-haiku-4-5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [(row["strategy"], row["model"]) for row in rows] == [
        ("full-history", "claude-haiku-4-5"),
        ("window(turns=2)", "claude-haiku-4-5"),
    ]
    full, window = rows
    assert full["facts_retained"] == 1
    assert window["facts_retained"] == 0


def test_simulate_draws_a_plot(transcript: Path, tmp_path: Path) -> None:
    png = tmp_path / "costs.png"
    result = invoke("simulate", "--transcript", str(transcript), "-s", "full-history", "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "full-history" in result.output
    assert f"Plot written to {png.resolve()}" in result.stderr


def test_simulate_compares_five_strategies_by_default_and_reports_progress_in_a_log(transcript: Path) -> None:
    result = invoke("simulate", "--transcript", str(transcript), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [row["strategy"] for row in rows] == [
        "full-history",
        "full-history(ttl=1h)",
        "window(turns=20)",
        "token-budget(max_input_tokens=50000)",
        "summarize(trigger=20000)",
    ]
    progress = [line for line in result.stderr.splitlines() if line.startswith("simulating ")]
    assert len(progress) == 5  # one line per run when stderr is not a terminal


def test_a_plot_path_in_no_directory_is_refused_before_simulating(transcript: Path, tmp_path: Path) -> None:
    result = invoke("simulate", "--transcript", str(transcript), "--plot", str(tmp_path / "missing" / "x.png"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --plot {str(tmp_path / 'missing' / 'x.png')!r}: expected a file in an existing directory"
    ]


def test_recommend_explains_its_choice_in_numbers(transcript: Path) -> None:
    result = invoke(
        "recommend",
        "--transcript",
        str(transcript),
        "--volume",
        "5000",
        "-m",
        "claude-haiku-4-5",
        "-m",
        "claude-sonnet-4-6",
        "-s",
        "full-history",
        "-s",
        "window(turns=2)",
    )
    assert result.exit_code == 0, result.output
    assert "claude-haiku-4-5 with full-history: $" in result.output
    assert "a month for 5,000 conversations" in result.output


def test_a_bad_transcript_is_one_line_naming_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"user": "hi"}, {"user": 42}]))
    result = invoke("simulate", "--transcript", str(path))
    assert result.exit_code == 2
    assert "turns[1].user" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unknown_workload_or_strategy_is_a_usage_error() -> None:
    assert invoke("simulate", "-w", "nope").exit_code == 2
    result = invoke("simulate", "-s", "no-such-policy", "-w", "chat-200")
    assert result.exit_code == 2
    assert "no-such-policy" in result.output


def test_any_policy_can_be_named_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path))
    result = invoke("ask", "--policy", "summarize(trigger=20000, keep_last=3)", "My name is Ada.", "--json")
    assert result.exit_code == 0, result.output
    explained = invoke("explain", "--json")
    assert json.loads(explained.output)["explanation"]["policy"] == "summarize"
    bad = invoke("ask", "--policy", "nope(x=1)", "hi")
    assert bad.exit_code == 2
    assert "unknown policy 'nope(x=1)'" in bad.output
