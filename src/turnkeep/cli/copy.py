"""`turnkeep copy`: move conversations between stores (a SQLite file and a PostgreSQL database, either way)."""

from __future__ import annotations

import click

from turnkeep.cli._runtime import Runtime, pass_runtime


@click.command()
@click.option(
    "--from", "source", metavar="FILE|URL", help="Copy from this store (default: the one --db or the defaults name)."
)
@click.option("--to", "target", metavar="FILE|URL", required=True, help="Copy into this store (created if new).")
@click.argument("conversation_ids", metavar="[ID]...", nargs=-1)
@pass_runtime
def copy(runtime: Runtime, source: str | None, target: str, conversation_ids: tuple[str, ...]) -> None:
    """Copy conversations (all, or the IDs given) into another store, ids, branches and costs included.

    Conversations the target already holds unchanged are skipped, so an interrupted copy is finished by running
    it again; one the target holds with different content is left alone and reported (exit status 1).

    \b
        turnkeep copy --to postgresql://ada@db.example/chats
        turnkeep --db chats.db copy --to postgresql://ada@db.example/chats 3f2a9c...
        turnkeep copy --from postgresql://ada@db.example/chats --to backup.db
    """
    from turnkeep.store import open_store
    from turnkeep.store.copy import copy_conversations

    origin = runtime.store() if source is None else open_store(source)
    if source is not None:
        runtime.stack.callback(origin.close)
    destination = open_store(target)
    runtime.stack.callback(destination.close)
    report = copy_conversations(origin, destination, conversation_ids or None)
    for conversation_id in report.conflicts:
        click.echo(f"Conflict: {conversation_id} is already in the target with different content; left as is", err=True)
    click.echo(
        f"Copied {len(report.copied)} conversation{'' if len(report.copied) == 1 else 's'}"
        f" ({len(report.already_there)} already there, {len(report.conflicts)} conflicting)"
    )
    if report.conflicts:
        raise SystemExit(1)
