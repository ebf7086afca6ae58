"""What every command shares: the store, the client, the console, and opening the conversation a command names.

A `Runtime` lives in the click context (`ctx.obj`) for one invocation; whatever it opens (the SQLite store, the
API client, the in-process emulator) is closed when the command ends. Nothing heavy is imported until a command
asks for it, so `turnkeep --help` stays fast.

Client: with `ANTHROPIC_API_KEY` set, `anthropic.Anthropic()` (the SDK also reads `ANTHROPIC_BASE_URL`); without
one, turnkeep's emulator is started in-process on loopback (real clock) and stderr says so, once. The key is never
printed or stored.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from turnkeep.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import anthropic
    from rich.console import Console

    from turnkeep.client import Conversation
    from turnkeep.core.policies import Policy
    from turnkeep.store import PostgresStore, SQLiteStore, Store

__all__ = ["MAX_MESSAGE_CHARS", "Runtime", "check_message", "make_console", "parse_policy", "pass_runtime"]

EMULATOR_NOTICE = "No ANTHROPIC_API_KEY: replies come from turnkeep's offline emulator ({url})."

MAX_MESSAGE_CHARS = 4_000_000
"""The longest message the CLI sends: about 1M tokens, the largest context window of the catalog. A paste past it
could never fit a request, so it is refused at once instead of being tokenised and planned."""


class Runtime:
    """The resources of one command invocation, opened on first use and closed with the click context."""

    def __init__(self, db: str | Path | None) -> None:
        self.db = db
        self.stack = ExitStack()
        self._store: SQLiteStore | PostgresStore | None = None
        self._client: anthropic.Anthropic | None = None

    def close(self) -> None:
        """Close everything opened (client, emulator, store), last opened first."""
        self.stack.close()

    def check_db(self) -> None:
        """A `--db` file must be in a directory that exists: a typo in the path is an error, not a new directory
        (the default location is created on first use)."""
        if self.db is not None and "://" not in str(self.db) and not Path(self.db).parent.is_dir():
            raise UsageError(f"--db {str(self.db)!r}: the directory {str(Path(self.db).parent)!r} does not exist")

    def store(self) -> SQLiteStore | PostgresStore:
        """The store: `--db` (a file or a postgresql:// URL), else `$TURNKEEP_DATABASE_URL`, else
        `$TURNKEEP_HOME/turnkeep.db`, else the user data directory."""
        if self._store is None:
            self.check_db()
            from turnkeep.config import store_location
            from turnkeep.store.paths import open_store

            store = open_store(store_location(self.db))
            self.stack.callback(store.close)
            self._store = store
        return self._store

    def client(self) -> anthropic.Anthropic:
        """A client that sends: Claude with a key, otherwise the in-process emulator (said once, on stderr)."""
        if self._client is not None:
            return self._client
        import anthropic

        if os.environ.get("ANTHROPIC_API_KEY"):
            self._client = self.stack.enter_context(anthropic.Anthropic())
        else:
            from turnkeep.emulator import EmulatorServer

            server = self.stack.enter_context(EmulatorServer())
            click.echo(EMULATOR_NOTICE.format(url=server.base_url), err=True)
            self._client = server.client()
        return self._client

    def idle_client(self) -> anthropic.Anthropic:
        """A client for commands that plan a request but never send one (no emulator is started for them)."""
        if self._client is not None:
            return self._client
        import anthropic

        client: anthropic.Anthropic = self.stack.enter_context(anthropic.Anthropic())
        return client

    def conversation_id(self, conversation_id: str | None, *, latest: bool = True) -> str:
        """`conversation_id` if given (checked to exist), else the most recently updated one when `latest`."""
        store = self.store()
        if conversation_id is not None:
            store.info(conversation_id)  # UnknownConversation (exit 2) for an id the store does not hold
            return conversation_id
        found = store.latest() if latest else None
        if found is None:
            raise UsageError("there is no conversation yet: start one with `turnkeep chat` or `turnkeep ask`")
        return found

    def open(
        self,
        *,
        cid: str | None,
        continue_latest: bool,
        model: str | None,
        system: str | None,
        policy: str | None,
        branch: str | None = None,
        sending: bool = True,
    ) -> Conversation:
        """The conversation a chat/ask invocation means: `--cid ID`, `-c` (the latest), or a new one.

        `--model`/`--system` given for an existing conversation change it for later turns; `--policy` only
        applies to a new conversation (a stored one keeps the policy it was created with). `branch` (default: the
        branch last written to) applies to a stored conversation. Everything is checked before anything is made.
        """
        from turnkeep.client import Conversation

        if cid is not None and continue_latest:
            raise click.UsageError("use either -c or --cid, not both")
        if model is not None:
            check_model(model)
        store = self.store()
        if cid is None and not continue_latest:
            if branch is not None:
                raise click.UsageError("--branch names a branch of a stored conversation: use it with -c or --cid")
            chosen = parse_policy(policy)
            client = self.client() if sending else self.idle_client()
            return Conversation(model, system=system, client=client, store=store, policy=chosen)
        if policy is not None:
            raise click.UsageError("--policy applies to a new conversation; a stored one keeps its own")
        conversation_id = self.conversation_id(cid)  # before the client, so a bad id starts nothing
        if branch is None:
            branch = last_branch(store, conversation_id)
        elif branch not in store.branches(conversation_id):
            known = ", ".join(sorted(store.branches(conversation_id)))
            raise UsageError(f"conversation {conversation_id} has no branch {branch!r} (branches: {known})")
        client = self.client() if sending else self.idle_client()
        chat = Conversation.open(conversation_id, store=store, client=client, branch=branch)
        if model is not None:
            chat.set_model(model)
        if system is not None:
            chat.set_system(system)
        return chat


def last_branch(store: Store, conversation_id: str) -> str:
    """The branch written to last: the one whose head is the newest node (main when heads tie, e.g. a fork that
    has no turn of its own yet)."""
    branches = store.branches(conversation_id)
    order = {node.id: index for index, node in enumerate(store.nodes(conversation_id))}
    return max(sorted(branches), key=lambda name: (order.get(branches[name] or "", -1), name == "main"))


def check_model(model: str) -> None:
    """A model id the catalog lacks but that is one typo from one it has is refused with "did you mean"; an id far
    from every known one is let through (the library warns and uses safe defaults), for models newer than the
    catalog."""
    import difflib

    from turnkeep import config

    catalog = config.load_catalog()
    if model in catalog:
        return
    close = difflib.get_close_matches(model, catalog.ids(), n=1, cutoff=0.9)
    # Ids that differ only in their version numbers are another model (perhaps one newer than the catalog).
    if close and re.sub(r"\d", "", close[0]) != re.sub(r"\d", "", model):
        raise UsageError(f"unknown model {model!r}: did you mean {close[0]!r}? (`turnkeep models` lists them)")


def check_message(text: str) -> str:
    """`text` if it can be sent; otherwise `UsageError` (one line, exit status 2) saying why: empty or only
    whitespace, undecodable bytes or a lone surrogate (text that is not Unicode cannot be sent as JSON), or
    longer than `MAX_MESSAGE_CHARS`."""
    if not text.strip():
        raise UsageError("the message is empty: nothing to send")
    if len(text) > MAX_MESSAGE_CHARS:
        raise UsageError(
            f"the message is {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,} (about the largest "
            "context window): send the part that matters"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        char = ord(text[err.start])
        what = f"the byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"a lone surrogate U+{char:04X}"
        raise UsageError(
            f"the message is not valid UTF-8 text: {what} at character {err.start}; nothing was sent"
        ) from None
    return text


def read_stdin() -> str:
    """All of stdin as text; bytes that are not UTF-8 become lone surrogates, which `check_message` refuses with
    their position (instead of a decoding traceback)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        return sys.stdin.read()
    data: bytes = stream.read(MAX_MESSAGE_CHARS * 4 + 1)  # bounded: a larger input is refused, never all read
    return data.decode("utf-8", "surrogateescape")


pass_runtime = click.make_pass_decorator(Runtime)
"""Decorator handing a command the invocation's `Runtime` (made by the group)."""


def parse_policy(spec: str | None) -> Policy | None:
    """A context policy from its command-line spelling: the short forms `full-history`, `window:N` (keep about N
    turns) and `token-budget:N` (the latest turns within N input tokens), or any policy with its settings, as
    `turnkeep simulate` spells them: `summarize(trigger=20000)`, `server-compaction`, `window(turns=20, ttl=1h)`.
    None means the library default."""
    if spec is None:
        return None
    from turnkeep.core.policies.grammar import parse_policy as read_policy

    try:
        return read_policy(spec)
    except UsageError as err:
        if "unknown context policy" not in str(err):  # a known policy refused a value, or a spelling slip
            raise ConfigError(str(err) if str(err).startswith("policy ") else f"policy {spec!r}: {err}") from err
        raise ConfigError(
            f"unknown policy {spec!r}: use full-history, window:TURNS, token-budget:TOKENS, or a policy with its "
            f"settings such as summarize(trigger=20000) ({err})"
        ) from err


def make_console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A rich console; when it is not a terminal (a pipe, a test) it prints plain text at 120 columns (or
    `$COLUMNS`), so tables are not squeezed to rich's 80-column default."""
    from rich.console import Console

    options: dict[str, Any] = {"highlight": False, "stderr": stderr}
    if file is not None:
        options["file"] = file
    console = Console(**options)
    if not console.is_terminal:
        columns = os.environ.get("COLUMNS", "")
        console.width = int(columns) if columns.isdigit() and int(columns) > 0 else 120
    return console


def stdin_is_terminal() -> bool:
    """Whether a person is typing (as opposed to a pipe or a test feeding input)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def one_line(message: str) -> str:
    """`message` with every run of whitespace (newlines included) made one space."""
    return " ".join(message.split())


def api_error_text(err: BaseException) -> str | None:
    """One line for an error of the `anthropic` SDK (None for anything else): status, type, message, request id.
    The SDK is looked up only if it was imported, so this costs nothing for commands that never talk to the API."""
    anthropic = sys.modules.get("anthropic")
    if anthropic is None or not isinstance(err, anthropic.APIError):
        return None
    if isinstance(err, anthropic.APIStatusError):
        body: dict[str, Any] = err.body if isinstance(err.body, dict) else {}
        error: dict[str, Any] = body["error"] if isinstance(body.get("error"), dict) else {}
        kind = error.get("type") or type(err).__name__
        message = error.get("message") or err.message
        request = f" (request {err.request_id})" if err.request_id else ""
        from turnkeep.core.signals import error_hint

        hint = error_hint(body)
        fix = f"; {hint}" if hint else ""
        return one_line(f"the API answered {err.status_code} {kind}: {message}{fix}{request}")
    if isinstance(err, anthropic.APIConnectionError):
        return one_line(f"cannot reach the API: {err.message}")
    return one_line(f"{type(err).__name__}: {err}")
