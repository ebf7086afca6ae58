"""The `turnkeep chat` loop: read a message or a slash command, stream the reply, print a status line.

`Repl` takes its input as a function and its output as a rich `Console`, so the same loop runs with
prompt_toolkit at a terminal, with lines piped on stdin, and in tests (which feed it lines and read the console).

Input: a line is one message. A line ending in a backslash continues on the next line; a line starting with
`\"\"\"` opens a block that runs to the next line ending in `\"\"\"`. At a terminal a paste is one message however
many lines it has, also where the terminal does not mark pastes; one longer than `MAX_MESSAGE_CHARS` is refused
at once and nothing of it is kept. Ctrl-C at the prompt clears the line;
Ctrl-C during a reply stops it: the text so far is kept as a partial reply (shown, never sent back) and the
message stays pending, so `/retry` asks again and `/undo` drops it. Ctrl-D (end of input) or `/exit` leaves.
"""

from __future__ import annotations

import os
import select
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from turnkeep.cli import render
from turnkeep.cli._runtime import MAX_MESSAGE_CHARS, api_error_text, check_message, one_line
from turnkeep.errors import TurnkeepError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from turnkeep.client import Conversation, Reply, ReplyStream
    from turnkeep.store import Store

__all__ = ["HELP", "PasteTooLong", "Reader", "Repl", "prompt_toolkit_reader", "stdin_reader"]

Reader = Callable[[str], str]
"""Reads one line after showing a prompt; raises EOFError at the end of input and KeyboardInterrupt on Ctrl-C."""

PROMPT = "> "
CONTINUE = "… "
BLOCK = '"""'

HELP = """\
Type a message and press Enter. End a line with \\ to continue it; start a block with \"\"\" and end it with \"\"\".
Start a message with // to send a line that begins with /.
  /help                  this list
  /system [TEXT]         show or replace the system prompt (the cache of the messages starts over)
  /model [ID]            show or switch the model for later turns
  /undo                  step back one turn (it stays in the tree), or drop an unanswered message
  /retry                 resend an unanswered message; otherwise ask the last question again
  /fork [NAME]           start a branch here and continue on it
  /branches              list the branches (* marks the current one)
  /switch NAME           continue on another branch
  /explain               the plan of the next request: what is kept or dropped, cache breakpoints, forecast
  /cost                  every request so far: tokens, cache reads and writes, USD
  /export [json|md] [FILE]   the conversation as JSON or Markdown, to FILE or the screen
  /exit                  leave (so does Ctrl-D)
Ctrl-C stops a reply (the partial text is kept; /retry asks again)."""


def stdin_reader(prompt: str) -> str:
    """Read a line from stdin without a prompt (pipes and tests); EOFError at the end of input."""
    del prompt  # nobody is there to see it; the loop echoes the line instead
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        line = sys.stdin.readline()
    else:
        # Bytes that are not UTF-8 become lone surrogates, which `send` refuses by position (no decoding traceback);
        # a line is read in bounded pieces, so a huge paste never sits in memory more than once.
        data = stream.readline(MAX_MESSAGE_CHARS * 4 + 1)
        line = data.decode("utf-8", "surrogateescape")
        if len(data) > MAX_MESSAGE_CHARS * 4:
            while data and not data.endswith(b"\n"):
                data = stream.readline(1 << 20)  # skip the rest of the over-long line
    if not line:
        raise EOFError
    return line.rstrip("\r\n")


def prompt_toolkit_reader(history_file: Path) -> Reader:
    """A reader with line editing and a persistent input history (prompt_toolkit) for a person at a terminal.

    A paste is one message, also where the terminal does not mark pastes (bracketed paste): see `_PasteReader`.
    A paste longer than `MAX_MESSAGE_CHARS` is refused (`PasteTooLong`) without being kept."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # What was typed is as private as the conversations themselves (the store is 0600 too).
    os.close(os.open(history_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    paste_input = _paste_aware_input()
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history_file)), enable_history_search=True, input=paste_input
    )

    def read(prompt: str) -> str:
        pastes = getattr(paste_input, "stdin_reader", None)
        if isinstance(pastes, _PasteReader):
            pastes.pasted = 0
        try:
            return session.prompt(prompt)
        except KeyboardInterrupt:
            if isinstance(pastes, _PasteReader) and pastes.refused:
                size, pastes.refused = pastes.refused, 0
                raise PasteTooLong(size) from None
            raise

    return read


class PasteTooLong(UsageError):
    """A paste at the prompt longer than a message may be; it was dropped, nothing was kept or sent."""

    def __init__(self, size: int) -> None:
        super().__init__(
            f"the paste is {size:,} characters; the limit is {MAX_MESSAGE_CHARS:,} (about the largest "
            "context window): nothing was kept. Send a file with: turnkeep ask -c 'your question' < FILE"
        )


# A read of this many characters or more at once is pasted, not typed (prompt_toolkit reads up to 1,024).
_PASTE_MIN_CHARS = 256
# A paste has ended when no more input arrives for this long (a terminal writes a paste in quick bursts).
_PASTE_QUIET_SECONDS = 0.25
_PASTE_START, _PASTE_END = "\x1b[200~", "\x1b[201~"


class _PasteReader:
    """Stands in for prompt_toolkit's stdin reader and turns a paste the terminal did not mark into a bracketed
    paste, so prompt_toolkit inserts it in one piece (a newline in it does not send the half typed so far) instead
    of handling each character as a key press, which for megabytes takes minutes and gigabytes.

    Input is a paste when one read brings `_PASTE_MIN_CHARS` or more, or a line break before its last character
    (nobody types that fast); it is read to its end, in large chunks. Past `MAX_MESSAGE_CHARS` (counted over the
    pastes into one prompt) the rest is read and dropped, so memory stays bounded; the prompt is then interrupted
    and `refused` says how much was pasted."""

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self.pasted = 0
        self.refused = 0

    @property
    def closed(self) -> bool:
        return bool(self._reader.closed)

    def read(self, count: int = 1024) -> str:
        data: str = self._reader.read(count)
        if not _looks_pasted(data):
            return data
        chunks, size = [data], len(data)
        while not self._reader.closed and select.select([self._reader.stdin_fd], [], [], _PASTE_QUIET_SECONDS)[0]:
            chunk: str = self._reader.read(1 << 16)
            size += len(chunk)
            if self.pasted + size <= MAX_MESSAGE_CHARS:
                chunks.append(chunk)
            elif len(chunks):
                chunks = []  # over the limit: keep nothing, read the rest to its end
        self.pasted += size
        if self.pasted > MAX_MESSAGE_CHARS:
            self.refused = self.pasted
            return "\x03"  # Ctrl-C: the prompt gives up the line, and the reader says why
        return _PASTE_START + "".join(chunks).replace(_PASTE_END, "") + _PASTE_END


def _looks_pasted(data: str) -> bool:
    if not data or "\x1b" in data:  # escape sequences: keys, terminal replies, a paste the terminal marked
        return False
    return len(data) >= _PASTE_MIN_CHARS or any(c in data[:-1] for c in "\r\n")


def _paste_aware_input() -> Any:
    """prompt_toolkit's input for this terminal, with `_PasteReader` in front of its stdin reader (POSIX)."""
    from prompt_toolkit.input import create_input

    terminal = create_input()
    reader = getattr(terminal, "stdin_reader", None)
    if reader is not None and hasattr(reader, "stdin_fd"):
        terminal.stdin_reader = _PasteReader(reader)  # type: ignore[attr-defined]
    return terminal


class Repl:
    """One chat session over `conversation`. `live` renders replies as Markdown while they stream (a terminal);
    otherwise text is printed as it arrives. `echo` repeats each input line after its prompt, so a transcript of
    piped input reads like the session a person would have seen."""

    def __init__(
        self,
        conversation: Conversation,
        store: Store,
        console: Console,
        read: Reader,
        *,
        live: bool = False,
        echo: bool = False,
    ) -> None:
        self.conversation = conversation
        self.store = store
        self.console = console
        self.read = read
        self.live = live
        self.echo = echo

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Greet, then read and handle input until Ctrl-D or /exit."""
        chat = self.conversation
        self.note(f"Chatting with {chat.model} · conversation {chat.id} · branch {chat.branch}")
        self.note("/help lists the commands; Ctrl-D or /exit leaves.")
        if chat.pending:
            self.note("The last message has no reply yet: /retry sends it again, /undo drops it.")
        while True:
            try:
                text = self.read_message()
            except KeyboardInterrupt:
                self.note("(Ctrl-C clears the line; Ctrl-D or /exit leaves)")
                continue
            except UsageError as err:  # a paste too long to be a message
                self.error(str(err))
                continue
            except EOFError:
                break
            if not text.strip():
                continue
            if text.startswith("/") and not text.startswith("//"):
                if not self.command(text):
                    break
            else:
                self.send(text[1:] if text.startswith("//") else text)
        chat = self.conversation
        self.note(f"Saved. Continue with: turnkeep chat --cid {chat.id} --branch {chat.branch}")

    def _line(self, prompt: str) -> str:
        line = self.read(prompt)
        if self.echo:  # undecodable bytes are shown as "?" (the line itself is refused when sent)
            shown = line.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(line) else line
            self.console.out(prompt + shown, highlight=False)
        return line

    def read_message(self) -> str:
        """One message: a line, lines joined by trailing backslashes, or a \"\"\" block."""
        line = self._line(PROMPT)
        if line.lstrip().startswith(BLOCK):
            first = line.lstrip()[len(BLOCK) :]
            if first.rstrip().endswith(BLOCK) and first.strip():
                return first.rstrip()[: -len(BLOCK)]
            lines = [first] if first.strip() else []
            while True:
                try:
                    line = self._line(CONTINUE)
                except EOFError:
                    break  # the input ended inside a block: send what there is
                if line.rstrip().endswith(BLOCK):
                    last = line.rstrip()[: -len(BLOCK)]
                    if last:
                        lines.append(last)
                    break
                lines.append(line)
            return "\n".join(lines)
        parts = []
        while line.endswith("\\"):
            parts.append(line[:-1])
            line = self._line(CONTINUE)
        parts.append(line)
        return "\n".join(parts)

    # -- output helpers -------------------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A dim line of information (not part of the conversation)."""
        from rich.text import Text

        self.console.print(Text(text, style="dim"))

    def error(self, text: str) -> None:
        """One line saying what went wrong; the session goes on."""
        from rich.text import Text

        self.console.print(Text(f"Error: {one_line(text)}", style="red"))

    def _problem(self, err: Exception) -> bool:
        """Report a library or API error in one line; False if `err` is neither (it should propagate)."""
        text = api_error_text(err)
        if text is None and isinstance(err, TurnkeepError):
            text = str(err)
        if text is None:
            return False
        self.error(text)
        if self.conversation.pending:
            self.note("The message has no reply: /retry sends it again, /undo drops it.")
        return True

    # -- a turn -----------------------------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Send `text` and stream the reply."""
        chat = self.conversation
        if chat.pending:
            self.error("the last message has no reply yet: /retry sends it again, /undo drops it")
            return
        try:
            check_message(text)
        except UsageError as err:
            self.error(str(err))
            return
        try:
            stream = chat.stream(text)
        except Exception as err:
            if not self._problem(err):
                raise
            return
        self._consume(stream)

    def _consume(self, stream: ReplyStream) -> None:
        try:
            with stream:
                self._show(iter(stream))
        except KeyboardInterrupt:
            self.note("Interrupted: the partial reply is kept but never sent back. /retry asks again; /undo drops it.")
            return
        except Exception as err:
            if not self._problem(err):
                raise
            return
        if stream.reply is not None:
            self._status(stream.reply)

    def _show(self, chunks: Iterator[str]) -> None:
        """Print streamed text: as live Markdown at a terminal, else as plain text while it arrives."""
        if self.live:
            from rich.live import Live
            from rich.markdown import Markdown

            # The live view is cropped to the screen and cleared when done; the whole reply (or, after Ctrl-C,
            # what arrived) is then printed once, so a reply taller than the terminal is never drawn twice.
            text = ""
            try:
                with Live(
                    Markdown(""), console=self.console, refresh_per_second=12, transient=True, vertical_overflow="crop"
                ) as live:
                    for chunk in chunks:
                        text += chunk
                        live.update(Markdown(text))
            finally:
                if text:
                    self.console.print(Markdown(text))
            return
        out = self.console.file
        ended = True
        try:
            for chunk in chunks:
                out.write(chunk)
                out.flush()
                ended = chunk.endswith("\n")
        finally:
            if not ended:
                out.write("\n")
                out.flush()

    def _show_reply(self, reply: Reply) -> None:
        if self.live:
            from rich.markdown import Markdown

            self.console.print(Markdown(reply.text))
        else:
            self._show(iter([reply.text]))

    def _status(self, reply: Reply) -> None:
        if reply.truncated:
            self.note("(the reply stopped at max_tokens)")
        if reply.refused:
            self.note("(the model refused; this exchange is left out of later requests)")
        self.note(render.status_line(reply, self.conversation.cost))

    # -- slash commands -------------------------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a slash command; False when the session should end."""
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        name = name.lower()
        if name in ("exit", "quit"):
            return False
        handler = _COMMANDS.get(name)
        if handler is None:
            self.error(f"unknown command /{name}: /help lists the commands")
            return True
        try:
            handler(self, rest)
        except KeyboardInterrupt:
            self.note("Interrupted. /retry asks again; /undo drops the message.")
        except Exception as err:
            if not self._problem(err):
                raise
        return True

    def _help(self, rest: str) -> None:
        del rest
        from rich.text import Text

        self.console.print(Text(HELP))

    def _system(self, rest: str) -> None:
        if not rest:
            system = self.conversation.system
            self.note(f"System prompt: {system}" if isinstance(system, str) else f"System prompt: {system or '(none)'}")
            return
        self.conversation.set_system(rest)
        self.note("System prompt replaced for later turns.")

    def _model(self, rest: str) -> None:
        if not rest:
            self.note(f"Model: {self.conversation.model}")
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.conversation.set_model(rest)
        for warning in caught:
            self.note(f"Warning: {one_line(str(warning.message))}")
        self.note(f"Model for later turns: {self.conversation.model}")

    def _undo(self, rest: str) -> None:
        del rest
        chat = self.conversation
        if chat.pending:
            chat.rollback()
            self.note("Dropped the message that had no reply.")
            return
        question = _last_question(chat)
        chat.undo()
        self.note(f"Stepped back before {_excerpt(question)} (the turn stays in the conversation's tree).")

    def _retry(self, rest: str) -> None:
        del rest
        chat = self.conversation
        if chat.pending:
            self._consume(chat.stream_retry())
            return
        question = _last_question(chat)
        if question is None:
            raise UsageError("nothing to retry yet")
        chat.undo()  # the earlier answer stays in the tree; the question is asked again from here
        self.send(question)

    def _fork(self, rest: str) -> None:
        before = self.conversation.branch
        self.conversation = self.conversation.fork(rest or None)
        self.note(f"Forked from {before!r}: now on branch {self.conversation.branch!r}.")

    def _branches(self, rest: str) -> None:
        del rest
        current = self.conversation.branch
        for name in sorted(self.conversation.branches):
            self.console.out(f"{'*' if name == current else ' '} {name}", highlight=False)

    def _switch(self, rest: str) -> None:
        if not rest:
            raise UsageError("/switch needs a branch name (/branches lists them)")
        self.conversation = self.conversation.switch(rest)
        self.note(f"On branch {rest!r} ({len(self.conversation.transcript)} messages).")

    def _explain(self, rest: str) -> None:
        del rest
        plan = self.conversation.explain()
        self.console.print(render.explanation_table(plan.explanation))

    def _cost(self, rest: str) -> None:
        del rest
        data = render.cost_data(self.conversation.id, self.conversation.ledger)
        self.console.print(render.cost_table(data))
        self.note(render.cost_summary(data))

    def _export(self, rest: str) -> None:
        from turnkeep.export import export_json, export_markdown

        args = shlex.split(rest)
        kind = "md"
        if args and args[0] in ("json", "md"):
            kind = args.pop(0)
        if len(args) > 1:
            raise UsageError("usage: /export [json|md] [FILE]")
        chat = self.conversation
        if kind == "json":
            text = render.to_json(export_json(self.store, chat.id)) + "\n"
        else:
            text = export_markdown(self.store, chat.id, branch=chat.branch)
        if not args:
            self.console.file.write(text)
            self.console.file.flush()
            return
        path = Path(args[0]).expanduser()
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write {str(path)!r}: {err.strerror}") from err
        self.note(f"Wrote {path}")


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _last_question(chat: Conversation) -> str | None:
    """The text of the last user turn on this branch (None when there is none)."""
    from turnkeep.core.messages import text_of

    for node in reversed(chat.transcript):
        if node.message.get("role") == "user" and node.meta.get("kind") != "tool_results":
            return text_of(node.message["content"])
    return None


def _excerpt(text: str | None, width: int = 60) -> str:
    flat = one_line(text or "")
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


_COMMANDS: dict[str, Callable[[Repl, str], None]] = {
    "help": Repl._help,
    "system": Repl._system,
    "model": Repl._model,
    "undo": Repl._undo,
    "retry": Repl._retry,
    "fork": Repl._fork,
    "branches": Repl._branches,
    "switch": Repl._switch,
    "explain": Repl._explain,
    "cost": Repl._cost,
    "export": Repl._export,
}
