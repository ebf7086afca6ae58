"""Every `turnkeep` command run in-process: help with an example, JSON that parses, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from turnkeep.cli import COMMANDS
from turnkeep.emulator.server import EmulatorServer
from turnkeep.store import SQLiteStore

Run = Callable[..., Result]

NOTICE = "replies come from turnkeep's offline emulator"


def one_line_error(result: object, status: int) -> str:
    """The result failed with `status`, printing exactly one `Error: ...` line on stderr and no traceback."""
    assert result.exit_code == status, result.output  # type: ignore[attr-defined]
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert stderr.startswith("Error: "), stderr
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    return stderr


def conversation_id(run: Run) -> str:
    result = run("ls", "--json")
    rows = json.loads(result.stdout)
    return str(rows[0]["id"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(run: Run, name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0
    assert re.search(rf"^\s+turnkeep {name}\b", result.stdout, re.MULTILINE), result.stdout


def test_the_group_help_lists_every_command_and_gives_examples(run: Run) -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", result.stdout, re.MULTILINE), name
    assert 'turnkeep ask "What is the capital of France?"' in result.stdout


def test_ask_without_a_key_answers_from_the_emulator_and_says_so_once(run_offline: Run, home: Path) -> None:
    result = run_offline("ask", "What is the capital of France?")
    assert result.exit_code == 0, result.output
    assert result.stdout == "The capital of France is Paris.\n"
    assert result.stderr.count(NOTICE) == 1
    assert (home / "turnkeep.db").is_file()
    follow_up = run_offline("ask", "-c", "What is its population?")
    assert follow_up.stdout == "Paris has a population of about 2.1 million.\n"
    assert follow_up.stderr.count(NOTICE) == 1


def test_ask_dash_c_continues_the_latest_conversation_and_a_new_ask_does_not(run: Run) -> None:
    run("ask", "What is the capital of France?")
    follow_up = run("ask", "-c", "What is its population?")
    assert follow_up.stdout == "Paris has a population of about 2.1 million.\n"
    fresh = run("ask", "What is its population?")
    assert "Paris" not in fresh.stdout
    assert len(json.loads(run("ls", "--json").stdout)) == 2


def test_ask_cid_continues_a_named_conversation(run: Run) -> None:
    run("ask", "My name is Ada.")
    first = conversation_id(run)
    run("ask", "My name is Bob.")
    assert run("ask", "--cid", first, "What is my name?").stdout == "Your name is Ada.\n"


def test_ask_json_reports_the_reply_usage_and_cost(run: Run) -> None:
    result = run("ask", "--json", "My name is Ada.")
    data = json.loads(result.stdout)
    assert data["text"] == "Noted: your name is Ada."
    assert data["conversation_id"] == conversation_id(run)
    assert data["usage"]["uncached_input"] > 0
    assert data["usage"]["output"] > 0
    assert float(data["cost_usd"]) > 0


def test_ask_with_a_model_and_system_prompt_stores_them(run: Run) -> None:
    run("ask", "--model", "claude-haiku-4-5", "--system", "Be brief.", "Hello")
    shown = json.loads(run("show", conversation_id(run), "--json").stdout)
    assert shown["model"] == "claude-haiku-4-5"
    assert shown["system"] == "Be brief."


def test_turnkeep_model_is_the_default_model(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNKEEP_MODEL", "claude-haiku-4-5")
    run("ask", "Hello")
    assert json.loads(run("ls", "--json").stdout)[0]["model"] == "claude-haiku-4-5"


def test_continuing_with_nothing_stored_is_a_usage_error(run: Run) -> None:
    assert "no conversation yet" in one_line_error(run("ask", "-c", "Hello"), 2)


def test_an_unknown_id_is_one_line_and_exit_status_2_for_every_command_that_takes_one(run: Run) -> None:
    for args in (
        ("show", "nope"),
        ("export", "nope"),
        ("rm", "nope", "--yes"),
        ("cost", "nope"),
        ("explain", "nope"),
        ("ask", "--cid", "nope", "Hi"),
        ("chat", "--cid", "nope"),
    ):
        assert "nope" in one_line_error(run(*args), 2), args


def test_a_bad_option_is_one_line_and_exit_status_2(run: Run) -> None:
    one_line_error(run("ls", "--limit", "0"), 2)
    one_line_error(run("export", "x", "--format", "pdf"), 2)
    one_line_error(run("ask", "-c", "--cid", "x", "Hi"), 2)
    assert "unknown policy" in one_line_error(run("ask", "--policy", "forever", "Hi"), 2)


def test_ls_lists_conversations_newest_first_as_a_table_and_as_json(run: Run) -> None:
    assert "No conversations yet" in run("ls").stdout
    run("ask", "What is the capital of France?")
    run("ask", "My name is Ada.")
    rows = json.loads(run("ls", "--json").stdout)
    assert [row["title"] for row in rows] == ["My name is Ada.", "What is the capital of France?"]
    assert set(rows[0]) >= {"id", "model", "messages", "cost_usd", "updated_at"}
    assert rows[0]["messages"] == 2
    table = run("ls", "--limit", "1").stdout
    assert rows[0]["id"] in table
    assert rows[1]["id"] not in table


def test_show_prints_the_transcript_and_its_json(run: Run) -> None:
    run("ask", "My name is Ada.")
    cid = conversation_id(run)
    text = run("show", cid).stdout
    assert "My name is Ada." in text
    assert "Noted: your name is Ada." in text
    data = json.loads(run("show", cid, "--json").stdout)
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["branches"] == ["main"]
    assert "no branch" in one_line_error(run("show", cid, "--branch", "elsewhere"), 2)


def test_search_finds_messages_across_conversations(run: Run) -> None:
    run("ask", "My name is Ada.")
    run("ask", "What is the capital of France?")
    hits = json.loads(run("search", "Ada", "--json").stdout)
    assert {hit["role"] for hit in hits} == {"user", "assistant"}
    assert all("Ada" in hit["snippet"] for hit in hits)
    assert "[Ada]" in run("search", "Ada").stdout  # the match marker is shown, not read as markup
    assert "No message matches" in run("search", "Zanzibar").stdout


def test_export_then_import_makes_an_equal_second_conversation(run: Run, tmp_path: Path) -> None:
    run("ask", "My name is Ada.")
    cid = conversation_id(run)
    out = tmp_path / "chat.json"
    assert run("export", cid, "-o", str(out)).exit_code == 0
    imported = run("import", str(out))
    assert imported.exit_code == 0
    new_id = imported.stdout.strip()
    assert new_id != cid
    assert run("ask", "--cid", new_id, "What is my name?").stdout == "Your name is Ada.\n"
    markdown = run("export", cid, "--format", "md").stdout
    assert markdown.startswith("# My name is Ada.")


def test_importing_a_bad_file_is_one_line_and_exit_status_2(run: Run, tmp_path: Path) -> None:
    not_json = tmp_path / "bad.json"
    not_json.write_text("{not json", encoding="utf-8")
    assert "not JSON" in one_line_error(run("import", str(not_json)), 2)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "something-else", "version": 1}), encoding="utf-8")
    assert "format" in one_line_error(run("import", str(wrong)), 2)
    one_line_error(run("import", str(tmp_path / "missing.json")), 2)
    assert json.loads(run("ls", "--json").stdout) == []


def test_rm_asks_first_and_deletes_only_when_confirmed(run: Run) -> None:
    run("ask", "Hello")
    cid = conversation_id(run)
    declined = run("rm", cid, input="n\n")
    assert declined.exit_code == 1
    assert "Delete conversation" in declined.output
    assert len(json.loads(run("ls", "--json").stdout)) == 1
    assert run("rm", cid, input="y\n").exit_code == 0
    assert json.loads(run("ls", "--json").stdout) == []
    run("ask", "Hello again")
    assert run("rm", conversation_id(run), "--yes").exit_code == 0
    assert json.loads(run("ls", "--json").stdout) == []


def test_cost_shows_every_request_with_totals_and_the_cache_read_share(run: Run) -> None:
    run("ask", "What is the capital of France?")
    run("ask", "-c", "What is its population?")
    data = json.loads(run("cost", "--json").stdout)
    assert len(data["requests"]) == 2
    for column in ("uncached", "cache_write_5m", "cache_write_1h", "cache_read", "output"):
        assert data["totals"][column] == sum(row[column] for row in data["requests"])
    assert float(data["totals"]["usd"]) == pytest.approx(sum(float(row["usd"]) for row in data["requests"]))
    assert 0 <= data["cache_read_share"] <= 1
    table = run("cost").stdout
    for heading in ("purpose", "uncached", "write 5m", "write 1h", "cache read", "output", "USD", "total"):
        assert heading in table
    assert f"${float(data['totals']['usd']):.6f}" in table
    assert "2 requests" in table


def test_explain_plans_the_next_request_without_sending_it(run_offline: Run) -> None:
    run = run_offline
    run("ask", "My name is Ada.")
    before = json.loads(run("cost", "--json").stdout)["requests"]
    data = json.loads(run("explain", "--json").stdout)
    assert data["explanation"]["kept"] == [0, 2]
    assert [m["role"] for m in data["request"]["messages"]] == ["user", "assistant"]
    text = run("explain")
    assert text.exit_code == 0
    assert "kept" in text.stdout
    assert "messages 0–1" in text.stdout
    assert NOTICE not in text.stderr  # planning starts no emulator
    assert json.loads(run("cost", "--json").stdout)["requests"] == before


def test_explain_can_plan_the_request_of_a_given_next_message(run_offline: Run) -> None:
    run = run_offline
    run("ask", "--policy", "window(messages=2)", "My name is Ada.")
    data = json.loads(run("explain", "--message", "What is my name?", "--json").stdout)
    messages = data["request"]["messages"]
    assert len(messages) == 1  # three messages would pass the window's two: it steps back to the new one
    assert messages[0]["content"][0]["text"] == "What is my name?"
    assert data["explanation"]["step"]["reason"] == "high_water"
    assert json.loads(run("explain", "--json").stdout)["explanation"]["kept"] == [0, 2]  # as it stands


def test_a_window_policy_drops_old_turns_and_explain_says_so(run: Run) -> None:
    run("ask", "--policy", "window:2", "My name is Ada.")
    for question in ("What is the capital of France?", "What is its population?", "What is the capital of Japan?"):
        run("ask", "-c", question)
    assert "don't know your name" in run("ask", "-c", "What is my name?").stdout
    explanation = json.loads(run("explain", "--json").stdout)["explanation"]
    assert explanation["policy"] == "window"
    assert explanation["dropped"]
    assert "Ada" in run("search", "Ada").stdout  # dropped from requests, never from the store


def test_db_option_chooses_the_store_file(run: Run, tmp_path: Path, home: Path) -> None:
    db = tmp_path / "elsewhere.db"
    assert run("--db", str(db), "ask", "Hello").exit_code == 0
    assert db.is_file()
    assert not (home / "turnkeep.db").exists()
    assert len(json.loads(run("--db", str(db), "ls", "--json").stdout)) == 1


def test_a_store_that_cannot_be_opened_is_one_line_and_exit_status_1(run: Run, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    one_line_error(run("--db", str(garbage), "ls"), 1)


def test_with_a_key_the_cli_uses_the_sdk_client_and_says_nothing_about_the_emulator(
    run: Run, online: EmulatorServer
) -> None:
    result = run("ask", "What is the capital of France?")
    assert result.exit_code == 0
    assert result.stdout == "The capital of France is Paris.\n"
    assert NOTICE not in result.stderr
    assert online.bill()["requests"] == 1
    assert "test-key" not in result.output


def test_an_api_error_is_one_line_and_exit_status_1(run: Run, online: EmulatorServer) -> None:
    online.fault({"status": 400, "message": "emulated bad request"})
    stderr = one_line_error(run("ask", "Hello"), 1)
    assert "400" in stderr
    assert "invalid_request_error" in stderr


def test_ctrl_c_during_ask_keeps_the_message_pending_and_exits_130(online: EmulatorServer, home: Path) -> None:
    # The reply takes 10 s, the window in which the message is pending; the test interrupts as soon as it sees
    # the message pending, however long the command took to start (seconds on a busy machine).
    online.fault("slow:10")
    env = {**os.environ, "TURNKEEP_HOME": str(home)}
    with subprocess.Popen(
        [str(Path(sys.executable).parent / "turnkeep"), "ask", "What is the capital of France?"],
        stdin=subprocess.DEVNULL,  # `ask` reads a piped stdin; never wait on the test runner's
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_interruptible,
    ) as process:
        try:
            while not (home / "turnkeep.db").exists() or _pending_count(home) == 0:
                assert process.poll() is None, (
                    "it ended before its message was seen pending:\n" + process.communicate()[1]
                )
                time.sleep(0.05)
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()  # however this test ends, no process outlives it
    assert process.returncode == 130
    assert stdout == ""
    assert stderr.splitlines()[-1].startswith("Interrupted: the partial reply is kept.")
    assert "Traceback" not in stderr
    assert _pending_count(home) == 1


def _pending_count(home: Path) -> int:
    with SQLiteStore(home / "turnkeep.db") as store:
        latest = store.latest()
        return 0 if latest is None else sum(node.status == "pending" for node in store.nodes(latest))


def _interruptible() -> None:
    """In the child: Ctrl-C as a terminal sends it, even when the test runner was started with SIGINT ignored (as
    a shell's background job is, and its children inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
