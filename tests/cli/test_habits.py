"""The habits of `llm`: stdin with the prompt, `-o NAME=VALUE`, `--no-stream`, `--branch`, `-c` resuming the
branch last used, and `turnkeep models`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner, Result

from turnkeep.cli import main
from turnkeep.config import load_catalog

Run = Callable[..., Result]


def invoke(*args: str, input: str | bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def shown(run: Run) -> dict[str, Any]:
    latest = json.loads(run("ls", "--json").stdout)[0]["id"]
    data: dict[str, Any] = json.loads(run("show", latest, "--json").stdout)
    return data


def user_texts(data: dict[str, Any]) -> list[str]:
    return [m["content"] for m in data["messages"] if m["role"] == "user" and isinstance(m["content"], str)]


def test_piped_stdin_is_sent_first_then_the_prompt(run: Run) -> None:
    result = invoke("ask", "What is my name?", input="My name is Ada.\n")
    assert result.exit_code == 0, result.output
    assert user_texts(shown(run)) == ["My name is Ada.\n\nWhat is my name?"]


def test_a_dash_reads_the_whole_message_from_stdin(run: Run) -> None:
    assert invoke("ask", "-", input="My name is Ada.\nI live in Paris.\n").exit_code == 0
    assert user_texts(shown(run)) == ["My name is Ada.\nI live in Paris.\n"]


def test_no_message_and_nothing_piped_is_a_usage_error(run: Run) -> None:
    result = run("ask")
    assert result.exit_code == 2
    assert "give a message" in result.stderr or "empty" in result.stderr


def test_options_go_into_the_request(run: Run) -> None:
    result = run("ask", "--json", "-o", "max_tokens=1", "Tell me a long story.")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["stop_reason"] == "max_tokens"


def test_an_unknown_option_names_the_known_ones(run: Run) -> None:
    result = run("ask", "-o", "temprature=0", "Hello")
    assert result.exit_code == 2
    assert "unknown request option 'temprature'" in result.stderr
    assert "temperature" in result.stderr
    assert json.loads(run("ls", "--json").stdout) == []


def test_an_option_the_model_refuses_is_refused_before_sending_and_keeps_nothing(run: Run) -> None:
    result = run("ask", "-m", "claude-sonnet-5-5", "-o", "temperature=0", "Hello")
    assert result.exit_code == 2
    assert "temperature" in result.stderr
    assert json.loads(run("ls", "--json").stdout) == []


def test_no_stream_prints_the_whole_reply_then_the_status_line(run: Run) -> None:
    result = run("ask", "--no-stream", "My name is Ada.")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert "· branch main]" in result.stderr


def test_dash_c_resumes_the_branch_last_used_and_branch_picks_another(run: Run) -> None:
    assert run("ask", "My name is Ada.").exit_code == 0
    forked = invoke("chat", "-c", input="/fork side\nMy name is Bob.\n")
    assert forked.exit_code == 0, forked.output
    assert forked.stdout.rstrip().endswith("--branch side")  # the exit line names the branch
    on_side = run("ask", "-c", "What is my name?")
    assert "Bob" in on_side.stdout
    assert "· branch side]" in on_side.stderr
    on_main = run("ask", "-c", "--branch", "main", "What is my name?")
    assert "Ada" in on_main.stdout
    assert "· branch main]" in on_main.stderr
    assert "Ada" in run("ask", "-c", "What is my name?").stdout  # main is now the branch last used


def test_an_unknown_branch_names_the_branches(run: Run) -> None:
    assert run("ask", "Hello").exit_code == 0
    result = run("ask", "-c", "--branch", "nope", "Hello")
    assert result.exit_code == 2
    assert "no branch 'nope' (branches: main)" in result.stderr


def test_models_lists_every_catalog_model_with_its_lifecycle(run: Run) -> None:
    catalog = load_catalog()
    result = run("models")
    assert result.exit_code == 0, result.output
    for model_id in catalog:
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{model_id} "))
        assert catalog.get(model_id).lifecycle in line
        assert f"{catalog.get(model_id).context_window:,}" in line


def test_models_json_has_every_fact_of_every_model(run: Run) -> None:
    rows = json.loads(run("models", "--json").stdout)
    catalog = load_catalog()
    assert [row["id"] for row in rows] == list(catalog)
    for row in rows:
        info = catalog.get(row["id"])
        assert row["context_window"] == info.context_window
        assert row["max_output"] == info.max_output
        assert row["min_cache_tokens"] == info.min_cache_tokens
        assert row["prefill"] is info.prefill
        assert row["thinking"] == list(info.thinking)
        assert row["lifecycle"] == info.lifecycle
        assert row["prices"]["input"] == str(info.prices.input)


def test_money_has_one_format_in_the_status_line_show_and_cost(run: Run) -> None:
    asked = run("ask", "My name is Ada.")
    total = re.search(r"conversation (\$\d+\.\d{6})\]", asked.stderr)
    assert total, asked.stderr
    latest = json.loads(run("ls", "--json").stdout)[0]["id"]
    assert f"· {total[1]}" in run("show", latest).stdout
    assert total[1] in run("cost").stdout
