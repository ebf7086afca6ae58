"""`turnkeep chat`, tested by feeding it input: through stdin (the command) and through `Repl` itself, whose
loop takes a reader function and a console, so Ctrl-C can be delivered at an exact point."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result
from rich.console import Console

from turnkeep import Conversation
from turnkeep.cli.repl import HELP, Repl
from turnkeep.emulator.server import EmulatorServer
from turnkeep.store import SQLiteStore

Run = Callable[..., Result]

NOTICE = "replies come from turnkeep's offline emulator"


def chat(run: Run, *lines: str, args: tuple[str, ...] = ()) -> str:
    result = run("chat", *args, input="".join(line + "\n" for line in lines))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return str(result.stdout)


def after(output: str, prompt_line: str) -> str:
    """What the session printed after the echo of `prompt_line` (up to the next prompt)."""
    rest = output.split(f"> {prompt_line}\n", 1)[1]
    return rest.split("\n> ", 1)[0]


# -- through the command ------------------------------------------------------------------------------------------


def test_the_chat_remembers_across_turns(run: Run) -> None:
    out = chat(run, "What is the capital of France?", "What is its population?", "My name is Ada.", "What is my name?")
    assert after(out, "What is the capital of France?").startswith("The capital of France is Paris.\n")
    assert after(out, "What is its population?").startswith("Paris has a population of about 2.1 million.\n")
    assert after(out, "What is my name?").startswith("Your name is Ada.\n")


def test_each_reply_is_followed_by_a_status_line_with_tokens_and_usd(run: Run) -> None:
    out = chat(run, "My name is Ada.")
    status = after(out, "My name is Ada.").splitlines()[1]
    assert status.startswith("[")
    assert " in (" in status
    assert " out · $" in status
    assert "conversation $" in status


def test_without_a_key_the_chat_says_once_that_replies_come_from_the_emulator(run_offline: Run) -> None:
    result = run_offline("chat", input="My name is Ada.\nWhat is my name?\n")
    assert result.stderr.count(NOTICE) == 1
    assert "Your name is Ada." in result.stdout


def test_end_of_input_leaves_and_says_how_to_continue(run: Run) -> None:
    out = chat(run, "My name is Ada.")
    last = out.strip().splitlines()[-1]
    assert last.startswith("Saved. Continue with: turnkeep chat --cid ")
    assert last.endswith(" --branch main")  # the exit line names the branch
    cid = last.split()[-3]
    assert after(chat(run, "What is my name?", args=("--cid", cid)), "What is my name?").startswith("Your name is Ada.")


def test_chat_dash_c_continues_the_latest_conversation(run: Run) -> None:
    chat(run, "My name is Ada.")
    assert after(chat(run, "What is my name?", args=("-c",)), "What is my name?").startswith("Your name is Ada.")


def test_exit_stops_reading_input(run: Run) -> None:
    out = chat(run, "My name is Ada.", "/exit", "What is my name?")
    assert "> What is my name?" not in out
    assert "Your name is Ada." not in out


def test_help_lists_every_slash_command(run: Run) -> None:
    out = chat(run, "/help")
    for command in ("/help", "/system", "/model", "/undo", "/retry", "/fork", "/branches", "/switch", "/explain"):
        assert command in out
    for command in ("/cost", "/export", "/exit"):
        assert command in out
    assert HELP.splitlines()[0] in out


def test_an_unknown_slash_command_is_one_line_and_the_session_goes_on(run: Run) -> None:
    out = chat(run, "/frobnicate", "My name is Ada.")
    assert "Error: unknown command /frobnicate: /help lists the commands" in out
    assert "Noted: your name is Ada." in out


def test_system_shows_and_replaces_the_system_prompt(run: Run) -> None:
    out = chat(run, "/system", "/system You are terse.", "/system", args=("--system", "Be kind."))
    assert "System prompt: Be kind." in out
    assert "System prompt: You are terse." in out
    cid = json.loads(run("ls", "--json").stdout)[0]["id"]
    assert json.loads(run("show", cid, "--json").stdout)["system"] == "You are terse."


def test_model_shows_and_switches_the_model_for_later_turns(run: Run) -> None:
    out = chat(run, "/model", "Hello", "/model claude-haiku-4-5", "Hello again")
    assert "Model: claude-sonnet-5-5" in out
    assert "Model for later turns: claude-haiku-4-5" in out
    requests = json.loads(run("cost", "--json").stdout)["requests"]
    assert [row["model"] for row in requests] == ["claude-sonnet-5-5", "claude-haiku-4-5"]
    table = run("cost").stdout
    assert "model" in table.splitlines()[1]  # a second model adds the model column
    assert "claude-haiku-4-5" in table


def test_undo_steps_back_so_the_next_answer_no_longer_knows(run: Run) -> None:
    out = chat(run, "My name is Ada.", "/undo", "What is my name?")
    assert "Stepped back before 'My name is Ada.'" in out
    assert "I don't know your name" in after(out, "What is my name?")
    assert "Ada" in run("search", "Ada").stdout  # the undone turn stays in the tree


def test_undo_with_nothing_to_undo_is_an_error_line(run: Run) -> None:
    assert "Error: nothing to undo" in chat(run, "/undo")


def test_fork_and_switch_keep_branches_apart(run: Run) -> None:
    out = chat(
        run,
        "My name is Ada.",
        "/fork other",
        "My name is Bob.",
        "/branches",
        "/switch main",
        "What is my name?",
        "/switch other",
        "What is my name?",
    )
    assert "now on branch 'other'" in out
    assert "  main\n* other" in out
    replies = out.split("> What is my name?\n")
    assert replies[1].startswith("Your name is Ada.")
    assert replies[2].startswith("Your name is Bob.")
    assert "Error:" in chat(run, "/switch nowhere", args=("-c",))


def test_explain_shows_the_plan_of_the_next_request(run: Run) -> None:
    out = after(chat(run, "My name is Ada.", "/explain"), "/explain")
    assert "policy" in out
    assert "full-history" in out
    assert "kept" in out
    assert "messages 0–1" in out
    assert "cache breakpoints" in out


def test_cost_shows_the_ledger_table(run: Run) -> None:
    out = after(chat(run, "What is the capital of France?", "What is its population?", "/cost"), "/cost")
    assert "cache read" in out
    assert "total" in out
    assert "2 requests" in out


def test_export_writes_json_and_markdown(run: Run, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    out = chat(run, "My name is Ada.", f"/export json {target}", "/export md", "/export pdf x y")
    data = json.loads(target.read_text(encoding="utf-8"))
    assert data["format"] == "turnkeep.conversation"
    assert "## User\n\nMy name is Ada." in after(out, "/export md")
    assert "Error: usage: /export [json|md] [FILE]" in out


def test_a_backslash_continues_a_line_and_triple_quotes_make_a_block(run: Run, home: Path) -> None:
    chat(run, "first line \\", "second line", '"""', "block one", "", "block two", '"""')
    with SQLiteStore(home / "turnkeep.db") as store:
        cid = store.latest()
        assert cid is not None
        users = [n.message["content"] for n in store.nodes(cid) if n.message["role"] == "user"]
    assert users == ["first line \nsecond line", "block one\n\nblock two"]


def test_retry_after_a_failed_reply_resends_the_pending_message(run: Run, online: EmulatorServer) -> None:
    online.fault({"kind": "sse_error", "after": 6})
    out = chat(run, "What is the capital of France?", "Anything else?", "/retry")
    failed = after(out, "What is the capital of France?")
    assert "Error: the API answered" in failed
    assert "/retry sends it again" in failed
    assert "Error: the last message has no reply yet" in after(out, "Anything else?")
    assert after(out, "/retry").startswith("The capital of France is Paris.\n")
    assert "reply (estimated)" in run("cost").stdout  # the cut attempt is in the ledger, its cost estimated
    assert "Paris" in run("ask", "-c", "What is its population?").stdout


def test_retry_with_nothing_pending_asks_the_last_question_again(run: Run) -> None:
    out = chat(run, "What is the capital of France?", "/retry")
    assert after(out, "/retry").startswith("The capital of France is Paris.\n")
    assert len(json.loads(run("cost", "--json").stdout)["requests"]) == 2
    cid = json.loads(run("ls", "--json").stdout)[0]["id"]
    assert len(json.loads(run("show", cid, "--json").stdout)["messages"]) == 2


def test_undo_drops_a_pending_message(run: Run, online: EmulatorServer) -> None:
    online.fault({"status": 400})
    out = chat(run, "My name is Ada.", "/undo", "What is my name?")
    assert "Dropped the message that had no reply." in out
    assert "I don't know your name" in after(out, "What is my name?")


# -- the loop itself ---------------------------------------------------------------------------------------------


class InterruptingFile(io.StringIO):
    """A terminal where the person presses Ctrl-C while the next write (a chunk of the reply) is shown."""

    armed = False

    def write(self, text: str) -> int:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return super().write(text)


@pytest.fixture
def conversation(turnkeep_emulator: EmulatorServer, tmp_path: Path) -> Iterator[tuple[Conversation, SQLiteStore]]:
    with SQLiteStore(tmp_path / "repl.db") as store:
        yield Conversation(client=turnkeep_emulator.client(), store=store), store


def test_ctrl_c_during_a_reply_keeps_the_partial_reply_and_retry_completes_it(
    conversation: tuple[Conversation, SQLiteStore],
) -> None:
    chat, store = conversation
    screen = InterruptingFile()
    inputs = iter(["What is the capital of France?", "/retry", "What is its population?"])

    def read(prompt: str) -> str:
        del prompt
        line = next(inputs, None)
        if line is None:
            raise EOFError
        screen.armed = line == "What is the capital of France?"  # Ctrl-C on the reply's first chunk
        return line

    Repl(chat, store, Console(file=screen, width=120), read).run()
    output = screen.getvalue()
    assert "Interrupted: the partial reply is kept but never sent back. /retry asks again" in output
    assert "The capital of France is Paris." in output
    assert "Paris has a population of about 2.1 million." in output
    partial = [node for node in store.nodes(chat.id) if node.status == "partial"]
    assert len(partial) == 1
    partial_text = partial[0].message["content"][0]["text"]
    assert partial_text
    assert "The capital of France is Paris.".startswith(partial_text)
    assert partial[0] not in chat.transcript  # kept for display, never sent back
    assert [node.status for node in chat.transcript] == ["ok"] * 4


def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_leaves(conversation: tuple[Conversation, SQLiteStore]) -> None:
    chat, store = conversation
    screen = io.StringIO()
    events: Iterator[str | type[BaseException]] = iter([KeyboardInterrupt, "My name is Ada.", EOFError])

    def read(prompt: str) -> str:
        del prompt
        event = next(events)
        if isinstance(event, type):
            raise event
        return event

    Repl(chat, store, Console(file=screen, width=120), read).run()
    output = screen.getvalue()
    assert "Ctrl-C clears the line" in output
    assert "Noted: your name is Ada." in output
    assert output.rstrip().endswith(f"turnkeep chat --cid {chat.id} --branch main")
