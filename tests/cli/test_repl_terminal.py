"""`turnkeep chat` at a real terminal (a pseudo-terminal), where prompt_toolkit reads the keys: a paste the
terminal does not mark (no bracketed paste) is one message, and one longer than a message may be is refused at
once, naming the limit, with nothing kept. Each step waits for what the session prints, never for a time."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from turnkeep.cli._runtime import MAX_MESSAGE_CHARS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

# prompt_toolkit turns bracketed paste on each time it shows a prompt.
PROMPT = b"\x1b[?2004h"
LINE = "the quick brown fox jumps over the lazy dog and keeps on running.\n"


class Terminal:
    """`turnkeep chat` on a pseudo-terminal, without an API key (the offline emulator answers)."""

    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
        # No cursor-position requests: nobody at this terminal answers them.
        env.update(TURNKEEP_HOME=str(home), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm", COLUMNS="100", LINES="40")
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from turnkeep.cli import main; main()", "chat"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.output = bytearray()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:  # the session ended and closed the terminal
                data = b""
            with self.changed:
                self.output.extend(data)
                if not data:
                    self.output.extend(b"\0<closed>")
                self.changed.notify_all()
            if not data:
                return

    def wait_for(self, text: bytes, count: int = 1) -> None:
        """Until the session has printed `text` `count` times (it fails at once if the session ends first)."""
        with self.changed:
            while self.output.count(text) < count:
                assert not self.output.endswith(b"\0<closed>"), bytes(self.output[-2000:])
                self.changed.wait()

    def type(self, text: str) -> None:
        data = memoryview(text.encode())
        while data:
            data = data[os.write(self.master, data) :]

    def peak_memory_kb(self) -> int:
        """The session's high-water resident memory (Linux /proc)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0])

    def close(self) -> int:
        self.type("/exit\r")
        status = self.process.wait()
        os.close(self.master)
        return status


def stored_messages(home: Path) -> list[str]:
    """The text of every message in the store, in the order written."""
    connection = sqlite3.connect(home / "turnkeep.db")
    try:
        return [row[0] for row in connection.execute("SELECT message FROM nodes ORDER BY seq")]
    finally:
        connection.close()


@pytest.fixture
def terminal(tmp_path: Path) -> Terminal:
    session = Terminal(tmp_path / "home")
    session.wait_for(PROMPT)
    return session


def paste(session: Terminal, text: str) -> threading.Thread:
    """Write `text` as a terminal writes a paste without bracketed paste: just the characters, as fast as read."""
    writer = threading.Thread(target=session.type, args=(text,), daemon=True)
    writer.start()
    return writer


@pytest.mark.slow
def test_a_ten_megabyte_paste_is_refused_at_once_naming_the_limit_and_nothing_is_kept(
    terminal: Terminal, tmp_path: Path
) -> None:
    text = LINE * (10 * 1024 * 1024 // len(LINE) + 1)
    writer = paste(terminal, text)
    terminal.wait_for(f"the paste is {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}".encode())
    terminal.wait_for(PROMPT, count=2)  # the session goes on
    writer.join()
    assert terminal.peak_memory_kb() < 400_000  # read and dropped in chunks, never held whole or key by key
    terminal.type("My name is Ada.\r")
    terminal.wait_for(PROMPT, count=3)
    assert terminal.close() == 0
    messages = stored_messages(tmp_path / "home")
    assert len(messages) == 2  # "My name is Ada." and its reply: no line of the paste was sent
    assert "My name is Ada." in messages[0]
    assert "quick brown fox" not in "".join(messages)


@pytest.mark.slow
def test_a_pasted_block_of_many_lines_is_one_message_sent_by_enter(terminal: Terminal, tmp_path: Path) -> None:
    text = "Remember this report.\n" + LINE * 3_000  # 195 KB, 3,001 lines
    paste(terminal, text).join()
    terminal.wait_for(b"keeps on running.")  # drawn in the prompt: the paste is in, and nothing was sent
    terminal.type("\r")
    terminal.wait_for(b"conversation $")  # the status line after the one reply
    terminal.wait_for(PROMPT, count=2)
    assert terminal.close() == 0
    messages = stored_messages(tmp_path / "home")
    assert len(messages) == 2
    assert messages[0].count("quick brown fox") == 3_000
