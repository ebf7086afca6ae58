"""Presentation shared by the commands and the REPL: JSON-ready data first, then rich tables made from that data,
so `--json` and the table always say the same thing."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from turnkeep.core.explain import explanation_rows, usd_text

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table
    from rich.text import Text

    from turnkeep.client import Reply
    from turnkeep.store import ConversationInfo, LedgerEntry, SearchHit

__all__ = [
    "conversation_rows",
    "conversations_table",
    "cost_data",
    "cost_summary",
    "cost_table",
    "explanation_table",
    "hits_table",
    "status_line",
    "to_json",
]


def to_json(data: object) -> str:
    """Indented JSON for `--json` output (decimals and other odd values as strings)."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _text(value: str) -> Text:
    """A table cell shown as is: model text like "[Ada]" must not be read as rich markup."""
    from rich.text import Text

    return Text(value)


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M")


# -- one turn ---------------------------------------------------------------------------------------------------


def status_line(reply: Reply, conversation_usd: Decimal) -> str:
    """The line after a reply: the turn's tokens (uncached in, cache read, cache written, out) and USD."""
    usage = reply.usage
    written = f", {usage.cache_write:,} cache-written" if usage.cache_write else ""
    return (
        f"[{usage.total_input:,} in ({usage.cache_read:,} cached{written}) · {usage.output:,} out · "
        f"{usd_text(reply.cost.total)} · conversation {usd_text(conversation_usd)}]"
    )


# -- the ledger -------------------------------------------------------------------------------------------------

_COST_COLUMNS = ("uncached", "cache_write_5m", "cache_write_1h", "cache_read", "output")


def cost_data(conversation_id: str, ledger: Sequence[LedgerEntry]) -> dict[str, Any]:
    """Per-request token counts and USD of a conversation's ledger, the totals and the cache-read share
    (cache reads over all input tokens)."""
    from turnkeep.core.catalog import default_catalog
    from turnkeep.core.pricing import TokenCounts, token_counts, usage_cost

    catalog = default_catalog()
    requests = []
    totals = dict.fromkeys(_COST_COLUMNS, 0)
    usd = Decimal(0)
    uncached_usd = Decimal(0)
    for number, entry in enumerate(ledger, start=1):
        counts = token_counts(dict(entry.usage)) if entry.usage else None
        if counts is not None:
            # The same request with no prompt caching: every input token at the plain input price.
            plain = TokenCounts(input=counts.total_input, output=counts.output)
            uncached_usd += usage_cost(plain, catalog.get(entry.model)).total
        row: dict[str, Any] = {
            "n": number,
            "purpose": entry.purpose,
            "model": entry.model,
            "uncached": counts.input if counts else 0,
            "cache_write_5m": counts.cache_write_5m if counts else 0,
            "cache_write_1h": counts.cache_write_1h if counts else 0,
            "cache_read": counts.cache_read if counts else 0,
            "output": counts.output if counts else 0,
            "usd": entry.cost_usd,
            "request_id": entry.request_id,
            "cache_miss_reason": entry.cache_miss_reason,
            "error": entry.error,
            "estimated": entry.estimated,
        }
        requests.append(row)
        for column in _COST_COLUMNS:
            totals[column] += row[column]
        usd += Decimal(entry.cost_usd)
    all_input = totals["uncached"] + totals["cache_write_5m"] + totals["cache_write_1h"] + totals["cache_read"]
    return {
        "conversation_id": conversation_id,
        "requests": requests,
        "totals": {**totals, "usd": str(usd)},
        "cache_read_share": round(totals["cache_read"] / all_input, 4) if all_input else 0.0,
        "without_caching_usd": str(uncached_usd),
    }


def cost_table(data: Mapping[str, Any]) -> Table:
    """The ledger as a table: one row per request, then the totals. The model column appears only when the
    conversation used more than one model (`cost_summary` names it otherwise), so the table fits 80 columns."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_footer=True, show_edge=False, pad_edge=False)
    totals = data["totals"]
    several_models = len({row["model"] for row in data["requests"]}) > 1
    table.add_column("#", footer="total", justify="right", no_wrap=True)
    table.add_column("purpose", no_wrap=True)
    if several_models:
        table.add_column("model", no_wrap=True)
    headings = {
        "uncached": "uncached",
        "cache_write_5m": "write 5m",
        "cache_write_1h": "write 1h",
        "cache_read": "cache read",
        "output": "output",
    }
    for column, heading in headings.items():
        table.add_column(heading, footer=f"{totals[column]:,}", justify="right", no_wrap=True)
    table.add_column("USD", footer=usd_text(totals["usd"]), justify="right", no_wrap=True)
    for row in data["requests"]:
        purpose = row["purpose"] + (" (estimated)" if row.get("estimated") else " (failed)" if row["error"] else "")
        cells: list[RenderableType] = [str(row["n"]), _text(purpose)]
        if several_models:
            cells.append(_text(row["model"]))
        table.add_row(*cells, *(f"{row[column]:,}" for column in headings), usd_text(row["usd"]))
    return table


def cost_summary(data: Mapping[str, Any]) -> str:
    """One line under the cost table: requests, model(s), USD, and how much of the input was read from the cache."""
    requests = len(data["requests"])
    share = data["cache_read_share"] * 100
    models = sorted({row["model"] for row in data["requests"]})
    spent, plain = Decimal(data["totals"]["usd"]), Decimal(data["without_caching_usd"])
    saved = f" ({1 - spent / plain:.0%} saved)" if plain > 0 and spent < plain else ""
    return (
        f"{requests} request{'s' if requests != 1 else ''} to {', '.join(models) or 'no model'} · "
        f"{usd_text(data['totals']['usd'])} · cache reads {share:.1f}% of input tokens · "
        f"without caching {usd_text(data['without_caching_usd'])}{saved}"
    )


# -- a plan -----------------------------------------------------------------------------------------------------


def explanation_table(explanation: Mapping[str, Any]) -> Table:
    """The plan of the next request, one fact a row."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE, show_header=False, show_edge=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for what, value in explanation_rows(explanation):
        table.add_row(_text(what), _text(value))
    return table


# -- listings ---------------------------------------------------------------------------------------------------


def conversation_rows(infos: Sequence[ConversationInfo]) -> list[dict[str, Any]]:
    """Conversation listing rows as JSON-ready data."""
    return [
        {
            "id": info.id,
            "title": info.title,
            "model": info.model,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "messages": info.message_count,
            "cost_usd": info.cost_usd,
        }
        for info in infos
    ]


def conversations_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """`turnkeep ls` as a table, most recently updated first."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for heading, justify in (
        ("id", "left"),
        ("updated (UTC)", "left"),
        ("msgs", "right"),
        ("USD", "right"),
        ("model", "left"),
        ("title", "left"),
    ):
        # Only the title wraps when the terminal is narrow; ids, times and amounts stay whole.
        table.add_column(heading, justify=justify, no_wrap=heading != "title")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            _text(row["id"]),
            _when(row["updated_at"]),
            str(row["messages"]),
            usd_text(row["cost_usd"]),
            _text(row["model"] or "—"),
            _text(row["title"] or "(empty)"),
        )
    return table


def hits_table(hits: Sequence[SearchHit]) -> Table:
    """`turnkeep search` results: where each match is and an excerpt (the match in [brackets])."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("conversation", no_wrap=True)
    table.add_column("role")
    table.add_column("snippet", overflow="fold")
    for hit in hits:
        table.add_row(_text(hit.conversation_id), hit.role, _text(hit.snippet))
    return table


# -- simulations ------------------------------------------------------------------------------------------------


def simulation_table(result: Any) -> Table:
    """One row per strategy and model: cost, per turn, cache-read share, peak context, facts, lower bounds."""
    from rich.table import Table as RichTable

    table = RichTable(box=None, header_style="bold")
    for name, justify in (
        ("strategy", "left"),
        ("model", "left"),
        ("USD", "right"),
        ("USD/turn", "right"),
        ("cache read", "right"),
        ("peak context", "right"),
        ("facts", "right"),
        ("bound (a)", "right"),
        ("bound (b)", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result.rows:
        table.add_row(
            _text(row.strategy),
            row.model,
            usd_text(row.cost_usd),
            usd_text(row.usd_per_turn),
            f"{row.cache_read_share:.1%}",
            f"{row.peak_context:,}",
            f"{row.facts_retained}/{len(row.facts)}",
            usd_text(row.bound_no_expiry_usd),
            usd_text(row.bound_clairvoyant_usd),
        )
    return table


def recommendation_table(result: Any) -> Table:
    """Every candidate, cheapest first, the chosen one marked."""
    from rich.table import Table as RichTable

    table = RichTable(box=None, header_style="bold")
    for name, justify in (
        ("", "left"),
        ("model", "left"),
        ("strategy", "left"),
        ("USD / month", "right"),
        ("per conversation", "right"),
        ("facts", "right"),
        ("peak context", "right"),
        ("cache read", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for candidate in result.candidates:
        row = candidate.row
        mark = "→" if candidate is result.choice else ("✗" if not candidate.fits else "")
        table.add_row(
            mark,
            row.model,
            _text(row.strategy),
            f"${candidate.monthly_usd:,.2f}",
            usd_text(row.cost_usd),
            candidate.facts,
            f"{row.peak_context:,}",
            f"{row.cache_read_share:.0%}",
        )
    return table
