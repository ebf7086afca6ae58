"""`make demo`: a short scripted session through the `turnkeep` command line, as a person would type it.

It shows memory across turns (a follow-up about "its population", a name remembered), what a fresh conversation
makes of the same follow-up, a context policy at work (a small window drops old turns; `/explain` says which; the
store still finds them), and the cost of every request.

With ANTHROPIC_API_KEY set the replies come from Claude; without one, from turnkeep's offline emulator of the
Messages API (the CLI says so). Everything is stored in a temporary TURNKEEP_HOME, never in your own data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM = "You are a concise geography assistant."

FIRST_CHAT = [
    "What is the capital of France?",
    "What is its population?",
    "My name is Ada.",
    "What is my name?",
    "/explain",
    "/cost",
]

WINDOW_CHAT = [
    "My name is Ada.",
    "What is the capital of France?",
    "What is its population?",
    "What is the capital of Japan?",
    "What is my name?",
    "/explain",
]


def turnkeep_command() -> list[str]:
    """The installed `turnkeep` script next to this Python, else the same entry point through `python -c`."""
    script = Path(sys.executable).parent / "turnkeep"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from turnkeep.cli import main; sys.exit(main(prog_name='turnkeep'))"]


class Session:
    """Runs `turnkeep` commands in a private TURNKEEP_HOME and prints them the way a terminal would show them."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "TURNKEEP_HOME": str(home), "COLUMNS": "120"}
        self.command = turnkeep_command()

    def run(self, *args: str, lines: list[str] | None = None, show: bool = True) -> str:
        shown = " ".join(_quote(arg) for arg in args)
        if lines is not None:
            shown += " <<EOF\n" + "".join(f"  {line}\n" for line in lines) + "EOF"
        if show:
            print(f"$ turnkeep {shown}", flush=True)
        result = subprocess.run(
            [*self.command, *args],
            # Always a stdin of its own: `ask` reads piped stdin, and must not wait on an inherited one.
            input="".join(line + "\n" for line in lines) if lines is not None else "",
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
            check=False,
        )
        if show:
            print(result.stdout, end="" if result.stdout.endswith("\n") else "\n", flush=True)
            print(flush=True)
        if result.returncode != 0:
            raise SystemExit(f"turnkeep {args[0]} failed with status {result.returncode}")
        return result.stdout


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c in arg for c in " '!?$") else arg


def main() -> int:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="turnkeep-demo-"))
    try:
        session = Session(home)
        if os.environ.get("ANTHROPIC_API_KEY"):
            print("ANTHROPIC_API_KEY is set: the replies come from Claude.\n")
        else:
            print("No ANTHROPIC_API_KEY: the replies come from turnkeep's offline emulator of the Messages API.\n")
        print(f"(conversations are stored in a temporary TURNKEEP_HOME: {home})\n")

        print("# 1. A chat: the follow-up and the name only make sense because earlier turns are sent along.")
        session.run("chat", "--system", SYSTEM, lines=FIRST_CHAT)

        print("# 2. The same follow-up in a fresh conversation: nothing says what 'its' means.")
        session.run("ask", "What is its population?")

        print(
            "# 3. A context policy at work: a window of at most 4 turns, cut back to the latest 2 when it overflows.\n"
            "#    The name leaves the requests (so the model no longer knows it) but not the store (search finds it)."
        )
        session.run("chat", "--policy", "window:4", lines=WINDOW_CHAT)
        session.run("search", "Ada")

        print("# 4. Every conversation, and the cost of the first one, request by request.")
        session.run("ls")
        rows = json.loads(session.run("ls", "--json", show=False))
        first = next(row["id"] for row in rows if row["title"] == FIRST_CHAT[0])
        session.run("cost", first)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"Demo finished in {time.monotonic() - started:.1f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
