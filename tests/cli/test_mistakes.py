"""Mistakes leave nothing behind: bad input is refused with one line and its exit status, and the store is the
same afterwards as before (compared row by row), so `-c` goes on as if the mistake never happened."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from turnkeep.cli import main
from turnkeep.cli._runtime import MAX_MESSAGE_CHARS
from turnkeep.emulator.server import EmulatorServer

Run = Callable[..., Result]


def snapshot(home: Path) -> dict[str, list[Any]]:
    """Every row of the store's tables (nothing at all when the file does not exist)."""
    path = home / "turnkeep.db"
    if not path.exists():
        return {}
    connection = sqlite3.connect(path)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: sorted(map(repr, connection.execute(f"SELECT * FROM {name}"))) for name in tables}
    finally:
        connection.close()


def one_line_error(result: Result, status: int) -> str:
    """The command failed with `status`, printing exactly one `Error: ...` line on stderr and no traceback."""
    assert result.exit_code == status, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


def invoke(*args: str, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def started(run: Run, home: Path) -> dict[str, list[Any]]:
    """A store holding one conversation of one turn; the snapshot every refused command must leave unchanged."""
    assert run("ask", "My name is Ada.").exit_code == 0
    return snapshot(home)


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("caf\udce9", "the byte 0xe9 at character 3"),  # what Python makes of the byte 0xE9 in argv
        ("My name is \ud800Ada", "lone surrogate U+D800"),
    ],
)
def test_ask_refuses_a_message_that_cannot_be_sent_before_anything_is_created(
    run: Run, home: Path, started: dict[str, list[Any]], message: str, why: str
) -> None:
    assert why in one_line_error(run("ask", message), 2)
    assert snapshot(home) == started
    assert "Ada" in run("ask", "-c", "What is my name?").stdout  # -c continues the good conversation


def test_ask_refuses_undecodable_bytes_on_stdin(run: Run, home: Path, started: dict[str, list[Any]]) -> None:
    del run
    assert "the byte 0xff at character 11" in one_line_error(invoke("ask", "-", input=b"My name is \xff\xfeAda\n"), 2)
    assert snapshot(home) == started


def test_an_empty_ask_on_an_empty_machine_creates_no_store_row(run: Run, home: Path) -> None:
    one_line_error(run("ask", " "), 2)
    assert not snapshot(home).get("conversations")


def test_chat_refuses_an_undecodable_line_and_sends_nothing(run: Run, home: Path) -> None:
    del run
    result = invoke("chat", input=b"My name is \xff\xfeAda\n")
    assert result.exit_code == 0, result.output
    assert "Error: the message is not valid UTF-8 text: the byte 0xff at character 11" in result.stdout
    assert "Traceback" not in result.output
    assert snapshot(home).get("nodes") == []


def test_a_model_one_typo_from_a_known_one_gets_did_you_mean(
    run: Run, home: Path, started: dict[str, list[Any]]
) -> None:
    error = one_line_error(run("ask", "-m", "claude-sonet-4-6", "Hello"), 2)
    assert "did you mean 'claude-sonnet-4-6'" in error
    one_line_error(run("ask", "-c", "-m", "claude-sonet-4-6", "Hello"), 2)
    assert snapshot(home) == started


def test_a_model_far_from_every_known_one_still_works_with_a_warning(run: Run) -> None:
    result = run("ask", "-m", "claude-future-9", "Hello")
    assert "Warning:" in result.stderr
    assert "did you mean" not in result.stderr
    # The emulator serves only the models of its catalog: the API's 404 is rolled back (see below).
    assert result.exit_code in (0, 1)


def test_a_request_the_api_refuses_is_rolled_back_so_dash_c_continues_cleanly(
    run: Run, home: Path, online: EmulatorServer, started: dict[str, list[Any]]
) -> None:
    online.fault({"status": 400, "message": "emulated bad request"})
    error = one_line_error(run("ask", "-c", "What is my name?"), 1)
    assert "400" in error
    assert "rolled back" in error
    nodes = snapshot(home)["nodes"]
    assert nodes == started["nodes"]  # the refused message is gone (only the ledger records the failed call)
    follow_up = run("ask", "-c", "What is my name?")
    assert follow_up.exit_code == 0, follow_up.output
    assert "Ada" in follow_up.stdout


def test_a_new_conversation_whose_first_request_is_refused_is_not_kept(
    run: Run, home: Path, online: EmulatorServer, started: dict[str, list[Any]]
) -> None:
    online.fault({"status": 404, "type": "not_found_error", "message": "model: claude-gone"})
    error = one_line_error(run("ask", "Hello"), 1)
    assert "nothing was kept" in error
    assert snapshot(home)["conversations"] == started["conversations"]


def test_a_rate_limit_is_not_rolled_back(run: Run, online: EmulatorServer) -> None:
    assert run("ask", "My name is Ada.").exit_code == 0
    online.fault({"status": 429}, {"status": 429}, {"status": 429})
    error = one_line_error(run("ask", "-c", "What is my name?"), 1)
    assert "rolled back" not in error
    assert "has a message without a reply" in one_line_error(run("ask", "-c", "Again"), 2)


def test_a_db_path_in_a_directory_that_does_not_exist_is_an_error(run: Run, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    for command in (["ls"], ["ask", "Hello"], ["search", "x"]):
        error = one_line_error(run("--db", str(missing / "x.db"), *command), 2)
        assert "does not exist" in error
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ("window(turns=-1)", ("window", "turns=-1", "at least one")),
        ("window:0", ("window", "turns=0", "at least one")),
        ("summarize(trigger=-5)", ("summarize", "trigger", "at least 1")),
        ("token-budget:0", ("token-budget", "max_input_tokens", "at least 1")),
    ],
)
def test_a_bad_value_of_a_known_policy_names_the_policy_the_field_and_the_range(
    run: Run, home: Path, policy: str, words: tuple[str, ...]
) -> None:
    error = one_line_error(run("ask", "--policy", policy, "Hello"), 2)
    assert "unknown policy" not in error
    for word in words:
        assert word in error.lower()
    assert not snapshot(home).get("conversations")


def test_an_unknown_policy_is_still_called_unknown(run: Run) -> None:
    assert "unknown policy 'windw(turns=3)'" in one_line_error(run("ask", "--policy", "windw(turns=3)", "Hi"), 2)


def test_a_ten_megabyte_paste_into_the_repl_is_refused_at_once_naming_the_limit(run: Run, home: Path) -> None:
    del run
    paste = "x" * (10 * 1024 * 1024)
    began = time.monotonic()
    result = invoke("chat", input=f'"""\n{paste}\n"""\nMy name is Ada.\n')
    elapsed = time.monotonic() - began
    assert result.exit_code == 0, result.output[-500:]
    assert f"the limit is {MAX_MESSAGE_CHARS:,}" in result.stdout
    assert len(snapshot(home)["nodes"]) == 2  # only "My name is Ada." and its reply
    print(f"10 MB paste handled in {elapsed:.1f} s")  # a report, not an assertion: a busy machine is slow


def test_a_ten_megabyte_line_on_stdin_is_refused_by_ask_naming_the_limit(run: Run, home: Path) -> None:
    del run
    error = one_line_error(invoke("ask", "-", input="x" * (10 * 1024 * 1024)), 2)
    assert f"the limit is {MAX_MESSAGE_CHARS:,}" in error
    assert not snapshot(home)
