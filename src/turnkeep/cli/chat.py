"""`turnkeep chat` (the REPL) and `turnkeep ask` (one turn)."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from turnkeep.cli._runtime import (
    Runtime,
    check_message,
    make_console,
    one_line,
    pass_runtime,
    read_stdin,
    stdin_is_terminal,
)
from turnkeep.errors import UsageError

if TYPE_CHECKING:
    from turnkeep.client import Conversation

__all__ = ["OPTIONS", "ask", "chat", "parse_options"]

F = TypeVar("F", bound=Callable[..., Any])

# `-o NAME=VALUE`: request options of one turn, as `messages.create` takes them. Whether the model accepts one
# (a sampling setting on a model that refuses it, a thinking type it lacks) is checked with the request, before
# anything is sent.
OPTIONS = {
    "max_tokens": "the most tokens the reply may have, e.g. max_tokens=2000",
    "temperature": "0 to 1",
    "top_p": "nucleus sampling, 0 to 1",
    "top_k": "sample from the K likeliest tokens",
    "stop_sequences": "a word, or a JSON list: stop_sequences='[\"END\"]'",
    "thinking": 'JSON, e.g. thinking=\'{"type": "adaptive"}\'',
    "tool_choice": 'JSON, e.g. tool_choice=\'{"type": "auto"}\'',
    "metadata": 'JSON, e.g. metadata=\'{"user_id": "u-1"}\'',
    "service_tier": "auto or standard_only",
}


def conversation_options(function: F) -> F:
    """The options naming the conversation a turn goes to, shared by `chat` and `ask`."""
    options = [
        click.option("-c", "--continue", "continue_latest", is_flag=True, help="Continue the latest conversation."),
        click.option("--cid", metavar="ID", help="Continue the conversation with this id (see `turnkeep ls`)."),
        click.option(
            "--branch",
            "-b",
            metavar="NAME",
            help="The branch to continue (default: the one written to last).",
        ),
        click.option("--model", "-m", metavar="MODEL", help="Model id (default: $TURNKEEP_MODEL, else the default)."),
        click.option("--system", "-s", metavar="TEXT", help="System prompt (replaces it when continuing)."),
        click.option(
            "--policy",
            metavar="POLICY",
            help=(
                "Context policy of a new conversation: full-history (default), window:TURNS, token-budget:TOKENS, "
                "or any policy with its settings, e.g. 'window(messages=20)' or "
                "'summarize(trigger=20000, model=claude-haiku-4-5)' (docs/policies.md)."
            ),
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """`NAME=VALUE` pairs as request options: a value is read as JSON when it parses (numbers, lists, objects),
    else as text. `UsageError` for a malformed pair or a name that is not a request option."""
    options: dict[str, Any] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        name = name.strip()
        if not equals or not name:
            raise UsageError(f"-o {pair!r}: expected NAME=VALUE, e.g. -o max_tokens=2000")
        if name not in OPTIONS:
            raise UsageError(f"-o {pair!r}: unknown request option {name!r} (known: {', '.join(sorted(OPTIONS))})")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        if name == "stop_sequences" and isinstance(value, str):
            value = [value]
        options[name] = value
    return options


def _open(runtime: Runtime, **options: Any) -> Conversation:
    # The library warns (Python warning) about a model missing from the catalog; say it as one plain line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chat = runtime.open(**options)
    for warning in caught:
        click.echo(f"Warning: {one_line(str(warning.message))}", err=True)
    return chat


@click.command()
@conversation_options
@pass_runtime
def chat(
    runtime: Runtime,
    continue_latest: bool,
    cid: str | None,
    branch: str | None,
    model: str | None,
    system: str | None,
    policy: str | None,
) -> None:
    """Chat in the terminal: streamed replies, history, slash commands.

    \b
        turnkeep chat --system "You are a concise geography assistant."
        turnkeep chat -c                 # continue the latest conversation

    Type /help inside for the commands (/undo /retry /fork /switch /explain /cost /export ...). A line ending
    in \\ continues; \"\"\" opens a multi-line block. Ctrl-C stops a reply, Ctrl-D leaves. With stdin from a
    pipe, lines are read one by one, so a session can be scripted:

    \b
        printf 'My name is Ada.\\nWhat is my name?\\n/cost\\n' | turnkeep chat
    """
    from turnkeep.cli.repl import Repl, prompt_toolkit_reader, stdin_reader
    from turnkeep.config import store_path
    from turnkeep.store import SQLiteStore

    conversation = _open(
        runtime, cid=cid, continue_latest=continue_latest, branch=branch, model=model, system=system, policy=policy
    )
    console = make_console()
    store = runtime.store()
    if stdin_is_terminal():
        home = store.file.parent if isinstance(store, SQLiteStore) else store_path().parent
        reader = prompt_toolkit_reader(home / "chat_history")
        Repl(conversation, store, console, reader, live=console.is_terminal).run()
    else:
        Repl(conversation, store, console, stdin_reader, echo=True).run()


@click.command()
@click.argument("message", required=False)
@conversation_options
@click.option(
    "--option",
    "-o",
    "request_options",
    metavar="NAME=VALUE",
    multiple=True,
    help=f"A request option of this turn, repeatable: {', '.join(OPTIONS)}.",
)
@click.option("--no-stream", is_flag=True, help="Wait for the whole reply, then print it.")
@click.option("--json", "as_json", is_flag=True, help="Print the reply, usage and cost as JSON.")
@pass_runtime
def ask(
    runtime: Runtime,
    message: str | None,
    continue_latest: bool,
    cid: str | None,
    branch: str | None,
    model: str | None,
    system: str | None,
    policy: str | None,
    request_options: Sequence[str],
    no_stream: bool,
    as_json: bool,
) -> None:
    """Send one message and print the reply (streamed); the conversation is saved.

    \b
        turnkeep ask "What is the capital of France?"
        turnkeep ask -c "What is its population?"      # continues the latest conversation
        cat notes.md | turnkeep ask "Summarise this"   # stdin, then the message
        turnkeep ask - < question.txt                  # the message from stdin
        turnkeep ask -o max_tokens=200 -o temperature=0 "Name three rivers."
        turnkeep ask --json "My name is Ada." | jq .text

    The conversation id, branch and the turn's tokens and cost go to stderr, so stdout holds only the reply. A
    request the API refuses (a 4xx other than rate limits and timeouts) is rolled back, so `-c` goes on cleanly.
    """
    from turnkeep.cli import render

    text = check_message(_message(message))  # before anything is opened: a bad message leaves nothing behind
    overrides = parse_options(request_options)
    conversation = _open(
        runtime, cid=cid, continue_latest=continue_latest, branch=branch, model=model, system=system, policy=policy
    )
    if conversation.pending:
        raise click.UsageError(
            f"conversation {conversation.id} has a message without a reply: resend it with "
            f"`turnkeep chat --cid {conversation.id}` and /retry, or drop it there with /undo"
        )
    is_new = not conversation.messages
    if as_json or no_stream:
        reply = _refused_rolls_back(runtime, conversation, is_new, lambda: conversation.send(text, **overrides))
        if not as_json:
            click.echo(reply.text)
            click.echo(f"[{_where(conversation)}] {render.status_line(reply, conversation.cost)}", err=True)
            return
        click.echo(
            render.to_json(
                {
                    "conversation_id": conversation.id,
                    "branch": conversation.branch,
                    "model": conversation.model,
                    "text": reply.text,
                    "stop_reason": reply.stop_reason,
                    "usage": {
                        "uncached_input": reply.usage.input,
                        "cache_write_5m": reply.usage.cache_write_5m,
                        "cache_write_1h": reply.usage.cache_write_1h,
                        "cache_read": reply.usage.cache_read,
                        "output": reply.usage.output,
                    },
                    "cost_usd": str(reply.cost.total),
                    "conversation_cost_usd": str(conversation.cost),
                }
            )
        )
        return
    ended, interrupted = True, False

    def streamed() -> Any:
        nonlocal ended
        stream = conversation.stream(text, **overrides)
        with stream:
            for chunk in stream:
                sys.stdout.write(chunk)
                sys.stdout.flush()
                ended = chunk.endswith("\n")
        return stream.reply

    try:
        reply = _refused_rolls_back(runtime, conversation, is_new, streamed)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if not ended:
            sys.stdout.write("\n")
            sys.stdout.flush()
    if interrupted:
        click.echo(
            f"Interrupted: the partial reply is kept. `turnkeep chat --cid {conversation.id}` then /retry asks again.",
            err=True,
        )
        raise click.exceptions.Exit(130)
    click.echo(f"[{_where(conversation)}] {render.status_line(reply, conversation.cost)}", err=True)


def _message(argument: str | None) -> str:
    """The message of `ask`: the argument; `-` or no argument reads stdin; piped stdin and an argument are sent
    together, stdin first (`cat notes.md | turnkeep ask "Summarise this"`)."""
    piped = not stdin_is_terminal()
    if argument == "-":
        if not piped:
            raise UsageError("`turnkeep ask -` reads the message from stdin, but stdin is a terminal")
        return read_stdin()
    if argument is None:
        if not piped:
            raise UsageError('give a message (turnkeep ask "...") or pipe one on stdin')
        return read_stdin()
    stdin = read_stdin() if piped else ""
    return f"{stdin.rstrip()}\n\n{argument}" if stdin.strip() else argument


def _where(conversation: Conversation) -> str:
    return f"{conversation.id} · branch {conversation.branch}"


R = TypeVar("R")


def _refused_rolls_back(runtime: Runtime, conversation: Conversation, is_new: bool, turn: Callable[[], R]) -> R:
    """Run `turn`; when the API refuses the request for good (a 4xx other than 408, 409 and 429), drop the
    pending message — and the conversation if this turn started it — so nothing half-done is left, and say so.
    A request turnkeep itself refuses (a `UsageError`, nothing sent) does not keep a conversation it started."""
    try:
        return turn()
    except Exception as err:
        import anthropic

        from turnkeep.cli._runtime import api_error_text

        if isinstance(err, UsageError) and is_new and not conversation.messages and not conversation.pending:
            runtime.store().delete(conversation.id)  # refused before sending: the new conversation is not kept
            raise
        status = err.status_code if isinstance(err, anthropic.APIStatusError) else None
        if status is None or not 400 <= status < 500 or status in (408, 409, 429) or not conversation.pending:
            raise
        conversation.rollback()
        if is_new and not conversation.messages:
            runtime.store().delete(conversation.id)
            kept = "nothing was kept"
        else:
            kept = f"the message was rolled back, so `-c` continues from the last reply of {conversation.id}"
        raise click.ClickException(f"{api_error_text(err)}; {kept}") from err
