"""`turnkeep models`: the model catalog turnkeep plans and prices with."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from turnkeep.cli._runtime import make_console

if TYPE_CHECKING:
    from turnkeep.core.catalog import ModelInfo

__all__ = ["model_row", "models"]


def model_row(info: ModelInfo) -> dict[str, Any]:
    """Every fact of a model as JSON-ready data (prices as decimal strings, USD per million tokens). Built from the
    dataclass's fields, so a fact added to the catalog shows up here without a change."""

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    row = {key: plain(value) for key, value in dataclasses.asdict(info).items()}
    row.pop("known", None)  # always true for a catalog entry
    return row


def _per_million(value: Decimal) -> str:
    """`$3.00`, `$0.30`, `$0.025`: cents always, more digits only where the price has them."""
    whole, _, fraction = f"{value.normalize():f}".partition(".")
    return f"${int(whole):,}.{fraction.ljust(2, '0')}"


def _lifecycle(info: ModelInfo) -> str:
    status = str(getattr(info, "lifecycle", "") or "")
    retires = getattr(info, "retires_at", None)
    return f"{status}, retires {retires}" if retires else status


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print every fact of every model as JSON.")
def models(as_json: bool) -> None:
    """The models turnkeep knows: context window, max output, prices (USD per million tokens), the smallest
    cacheable prefix, prefill, thinking types and lifecycle. Ids not listed still work, with safe defaults and a
    warning. `$TURNKEEP_HOME/models.toml` overrides or adds entries.

    \b
        turnkeep models
        turnkeep models --json | jq '.[] | select(.prefill) | .id'
    """
    from turnkeep import config
    from turnkeep.cli import render

    catalog = config.load_catalog()
    infos = [catalog.get(model_id) for model_id in catalog]
    if as_json:
        click.echo(render.to_json([model_row(info) for info in infos]))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (
        ("model", "left"),
        ("context", "right"),
        ("max out", "right"),
        ("input", "right"),
        ("output", "right"),
        ("write 5m", "right"),
        ("write 1h", "right"),
        ("read", "right"),
        ("cache min", "right"),
        ("prefill", "left"),
        ("thinking", "left"),
        ("lifecycle", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name in ("model", "thinking"))  # type: ignore[arg-type]
    for info in infos:
        prices = info.prices
        table.add_row(
            info.id,
            f"{info.context_window:,}",
            f"{info.max_output:,}",
            _per_million(prices.input),
            _per_million(prices.output),
            _per_million(prices.cache_write_5m),
            _per_million(prices.cache_write_1h),
            _per_million(prices.cache_read),
            f"{info.min_cache_tokens:,}",
            "yes" if info.prefill else "no",
            ", ".join(info.thinking) or "—",
            _lifecycle(info),
        )
    console = make_console()
    if not console.is_terminal:
        console.width = max(console.width, 160)  # piped: one line per model, however many facts there are
    console.print(table)
    console.out("Prices in USD per million tokens; `--json` has every fact, long-context prices included.")
