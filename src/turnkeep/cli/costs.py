"""What a conversation costs and what its next request will carry: `cost` and `explain`."""

from __future__ import annotations

import click

from turnkeep.cli._runtime import Runtime, make_console, pass_runtime

__all__ = ["cost", "explain"]


@click.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the rows, totals and cache-read share as JSON.")
@pass_runtime
def cost(runtime: Runtime, conversation_id: str | None, as_json: bool) -> None:
    """Every request of a conversation (default: the latest): tokens, cache writes and reads, USD, totals.

    \b
        turnkeep cost
        turnkeep cost 3f2a9c... --json | jq .totals.usd
    """
    from turnkeep.cli import render

    chosen = runtime.conversation_id(conversation_id)
    data = render.cost_data(chosen, runtime.store().ledger(chosen))
    if as_json:
        click.echo(render.to_json(data))
        return
    console = make_console()
    console.out(f"Conversation {chosen}", highlight=False)
    console.print(render.cost_table(data))
    console.out(render.cost_summary(data), highlight=False)


@click.command()
@click.argument("conversation_id", metavar="[ID]", required=False)
@click.option("--branch", "-b", default="main", show_default=True, help="Branch whose next request to plan.")
@click.option(
    "--message",
    metavar="TEXT",
    help="Plan the request that would send TEXT next (default: the history as it stands, which every next "
    "request begins with).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the explanation and the exact request as JSON.")
@pass_runtime
def explain(runtime: Runtime, conversation_id: str | None, branch: str, message: str | None, as_json: bool) -> None:
    """Plan the next request of a conversation (default: the latest) without sending it: what the context policy
    keeps and drops, where the cache breakpoints go, the estimated tokens and cost.

    \b
        turnkeep explain
        turnkeep explain --message "And the next step?"
        turnkeep explain 3f2a9c... --json | jq .explanation.forecast
    """
    from turnkeep.cli import render

    chat = runtime.open(
        cid=runtime.conversation_id(conversation_id),
        continue_latest=False,
        model=None,
        system=None,
        policy=None,
        branch=branch,
        sending=False,
    )
    plan = chat.explain(message)
    if as_json:
        click.echo(
            render.to_json({"conversation_id": chat.id, "explanation": plan.explanation, "request": plan.request})
        )
        return
    console = make_console()
    console.out(f"Next request of conversation {chat.id} (branch {chat.branch}, {chat.model}):", highlight=False)
    console.print(render.explanation_table(plan.explanation))
