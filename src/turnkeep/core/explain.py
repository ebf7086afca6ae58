"""A plan's explanation in words: the rows `print(chat.explain())` and `turnkeep explain` show.

Pure formatting of `Plan.explanation` (see `turnkeep.core.policies`): known keys are worded for people (message
ranges, breakpoints, the forecast split), any other key is shown as compact JSON, so a policy's own facts appear
without this module knowing them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal

__all__ = ["explanation_rows", "explanation_text", "usd_text"]


def explanation_rows(explanation: Mapping[str, object]) -> list[tuple[str, str]]:
    """`plan.explanation` as (what, value) rows, in the explanation's order."""
    rows: list[tuple[str, str]] = []
    for key, value in explanation.items():
        if key == "kept":
            rows.append(("kept", _range(value)))
        elif key == "dropped":
            ranges = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
            rows.append(("dropped", "; ".join(_range(r) for r in ranges) if ranges else "nothing"))
        elif key == "breakpoints":
            rows.append(("cache breakpoints", _breakpoints(value)))
        elif key == "forecast":
            rows.append(("forecast", _forecast(value)))
        elif key == "estimated_input_tokens" and isinstance(value, int):
            rows.append(("estimated input tokens", f"{value:,}"))
        else:
            rows.append((key.replace("_", " "), _compact(value)))
    return rows


def explanation_text(explanation: Mapping[str, object]) -> str:
    """The rows as a plain two-column table (for a terminal, a log or a notebook)."""
    rows = explanation_rows(explanation)
    width = max((len(what) for what, _ in rows), default=0)
    return "\n".join(f"{what.ljust(width)}  {value}" for what, value in rows)


def usd_text(value: object) -> str:
    """An amount of US dollars as shown to people: `$0.001234`."""
    return f"${Decimal(str(value)):.6f}"


def _range(value: object) -> str:
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        start, end = value
        return f"messages {start}–{end - 1}" if end > start else "none"
    return _compact(value)


def _compact(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, str | int | float | bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def _breakpoints(value: object) -> str:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return _compact(value)
    if not value:
        return "none"
    parts = []
    for item in value:
        if isinstance(item, Mapping):
            where = item.get("location", "?")
            details = [str(item[k]) for k in ("kind", "ttl") if item.get(k)]
            parts.append(f"{where} ({', '.join(details)})" if details else str(where))
        else:
            parts.append(_compact(item))
    return "; ".join(parts)


def _forecast(value: object) -> str:
    if not isinstance(value, Mapping):
        return _compact(value)
    counts = [
        f"{value[key]:,} {label}"
        for key, label in (
            ("cache_read", "cache read"),
            ("cache_write_5m", "written 5m"),
            ("cache_write_1h", "written 1h"),
            ("uncached", "uncached"),
        )
        if isinstance(value.get(key), int)
    ]
    text = ", ".join(counts)
    if isinstance(value.get("cache"), str):
        text += f" (cache {value['cache']})"
    usd = value.get("usd")
    if isinstance(usd, Mapping) and "input_total" in usd:
        text += f"; input {usd_text(usd['input_total'])}"
    return text
