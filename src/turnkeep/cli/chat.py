"""`turnkeep chat` (the REPL) and `turnkeep ask` (one turn)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from turnkeep.cli._runtime import Runtime, make_console, one_line, pass_runtime, stdin_is_terminal

if TYPE_CHECKING:
    from turnkeep.client import Conversation

__all__ = ["ask", "chat"]

F = TypeVar("F", bound=Callable[..., Any])


def conversation_options(function: F) -> F:
    """The options naming the conversation a turn goes to, shared by `chat` and `ask`."""
    options = [
        click.option("-c", "--continue", "continue_latest", is_flag=True, help="Continue the latest conversation."),
        click.option("--cid", metavar="ID", help="Continue the conversation with this id (see `turnkeep ls`)."),
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
    from turnkeep.store import SQLiteStore, default_path

    conversation = _open(runtime, cid=cid, continue_latest=continue_latest, model=model, system=system, policy=policy)
    console = make_console()
    store = runtime.store()
    if stdin_is_terminal():
        home = store.file.parent if isinstance(store, SQLiteStore) else default_path().parent
        reader = prompt_toolkit_reader(home / "chat_history")
        Repl(conversation, store, console, reader, live=console.is_terminal).run()
    else:
        Repl(conversation, store, console, stdin_reader, echo=True).run()


@click.command()
@click.argument("message")
@conversation_options
@click.option("--json", "as_json", is_flag=True, help="Print the reply, usage and cost as JSON.")
@pass_runtime
def ask(
    runtime: Runtime,
    message: str,
    continue_latest: bool,
    cid: str | None,
    model: str | None,
    system: str | None,
    policy: str | None,
    as_json: bool,
) -> None:
    """Send one message and print the reply (streamed); the conversation is saved.

    \b
        turnkeep ask "What is the capital of France?"
        turnkeep ask -c "What is its population?"      # continues the latest conversation
        turnkeep ask --json "My name is Ada." | jq .text

    The conversation id and the turn's tokens and cost go to stderr, so stdout holds only the reply.
    """
    from turnkeep.cli import render

    conversation = _open(runtime, cid=cid, continue_latest=continue_latest, model=model, system=system, policy=policy)
    if conversation.pending:
        raise click.UsageError(
            f"conversation {conversation.id} has a message without a reply: resend it with "
            f"`turnkeep chat --cid {conversation.id}` and /retry, or drop it there with /undo"
        )
    if as_json:
        reply = conversation.send(message)
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
    stream = conversation.stream(message)
    ended, interrupted = True, False
    try:
        with stream:
            for chunk in stream:
                sys.stdout.write(chunk)
                sys.stdout.flush()
                ended = chunk.endswith("\n")
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
    assert stream.reply is not None
    click.echo(f"[{conversation.id}] {render.status_line(stream.reply, conversation.cost)}", err=True)
