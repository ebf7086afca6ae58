"""Stored conversations: `ls`, `show`, `search`, `export`, `import`, `rm`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from turnkeep.cli._runtime import Runtime, make_console, pass_runtime
from turnkeep.errors import UsageError

__all__ = ["export", "import_", "ls", "rm", "search", "show"]


@click.command()
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1), help="How many to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@pass_runtime
def ls(runtime: Runtime, limit: int, as_json: bool) -> None:
    """List conversations, most recently updated first.

    \b
        turnkeep ls --limit 5
        turnkeep ls --json | jq -r '.[0].id'
    """
    from turnkeep.cli import render

    rows = render.conversation_rows(runtime.store().list_conversations(limit=limit))
    if as_json:
        click.echo(render.to_json(rows))
    elif not rows:
        click.echo("No conversations yet: start one with `turnkeep chat` or `turnkeep ask`.")
    else:
        make_console().print(render.conversations_table(rows))


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option("--branch", "-b", default="main", show_default=True, help="Which branch to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the branch's messages as JSON.")
@pass_runtime
def show(runtime: Runtime, conversation_id: str, branch: str, as_json: bool) -> None:
    """Show a conversation's transcript (one branch), as Markdown.

    \b
        turnkeep show 3f2a9c... --branch main
        turnkeep show 3f2a9c... --json | jq '.messages[].role'
    """
    from turnkeep.errors import UnknownConversation
    from turnkeep.export import export_markdown

    store = runtime.store()
    if not as_json:
        text = export_markdown(store, conversation_id, branch=branch)
        console = make_console()
        if console.is_terminal:
            from rich.markdown import Markdown

            console.print(Markdown(text))
        else:
            click.echo(text, nl=False)
        return
    branches = store.branches(conversation_id)
    if branch not in branches:
        raise UnknownConversation(f"conversation {conversation_id!r} has no branch {branch!r}")
    settings = store.settings(conversation_id)
    messages = [
        {"id": node.id, "status": node.status, "role": node.message.get("role"), "content": node.message.get("content")}
        for node in store.path(conversation_id, branches[branch])
    ]
    data = {
        "id": conversation_id,
        "branch": branch,
        "branches": sorted(branches),
        "model": settings.get("model"),
        "system": settings.get("system"),
        "messages": messages,
    }
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.command()
@click.argument("query")
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1), help="Most matches to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@pass_runtime
def search(runtime: Runtime, query: str, limit: int, as_json: bool) -> None:
    """Full-text search over every stored message (SQLite FTS5 syntax).

    \b
        turnkeep search Ada
        turnkeep search '"capital of France"' --json
    """
    from turnkeep.cli import render

    hits = runtime.store().search(query, limit=limit)
    if as_json:
        click.echo(
            render.to_json(
                [
                    {"conversation_id": h.conversation_id, "node_id": h.node_id, "role": h.role, "snippet": h.snippet}
                    for h in hits
                ]
            )
        )
    elif not hits:
        click.echo(f"No message matches {query!r}.")
    else:
        make_console().print(render.hits_table(hits))


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option(
    "--format", "-f", "fmt", type=click.Choice(["json", "md"]), default="json", show_default=True, help="Format."
)
@click.option("--branch", "-b", default="main", show_default=True, help="Branch of a Markdown transcript.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path), help="File to write.")
@pass_runtime
def export(runtime: Runtime, conversation_id: str, fmt: str, branch: str, output: Path | None) -> None:
    """Export a conversation: lossless versioned JSON (every branch, the ledger), or a Markdown transcript.

    \b
        turnkeep export 3f2a9c... -o chat.json        # turnkeep import chat.json restores it
        turnkeep export 3f2a9c... --format md -o chat.md
    """
    from turnkeep.cli import render
    from turnkeep.export import export_json, export_markdown

    store = runtime.store()
    if fmt == "json":
        text = render.to_json(export_json(store, conversation_id)) + "\n"
    else:
        text = export_markdown(store, conversation_id, branch=branch)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot write {str(output)!r}: {err.strerror}") from err
    click.echo(f"Wrote {output}", err=True)


@click.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_runtime
def import_(runtime: Runtime, file: Path) -> None:
    """Import a conversation exported as JSON; prints its new id. Nothing is written if the file is invalid.

    \b
        turnkeep import chat.json
    """
    from turnkeep.export import import_json

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {str(file)!r}: {err}") from err
    except json.JSONDecodeError as err:
        raise UsageError(f"{str(file)!r} is not JSON: line {err.lineno} column {err.colno}: {err.msg}") from err
    except RecursionError as err:  # the json module gives up near 1,000 levels
        raise UsageError(f"{str(file)!r} nests too deeply to be an export") from err
    click.echo(import_json(runtime.store(), data))


@click.command()
@click.argument("conversation_id", metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_runtime
def rm(runtime: Runtime, conversation_id: str, yes: bool) -> None:
    """Delete a conversation and everything it holds (asks first).

    \b
        turnkeep rm 3f2a9c...
        turnkeep rm 3f2a9c... --yes
    """
    store = runtime.store()
    info = store.info(conversation_id)
    if not yes:
        title = info.title or "untitled"
        click.confirm(f"Delete conversation {conversation_id} ({title!r}, {info.message_count} messages)?", abort=True)
    store.delete(conversation_id)
    click.echo(f"Deleted {conversation_id}")
