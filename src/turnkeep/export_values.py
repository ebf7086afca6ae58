"""The values of an export, checked before anything reads them: a pure validator over the parsed JSON.

Money is a finite, non-negative decimal string with a bounded number of digits; token counts are non-negative
integers within 2**53; a calibration pair is two such counts; times and latencies are finite, non-negative
numbers; the branches include `main`; and no value nests deeper than the store accepts. `first_problem` returns
the first violation as (JSON path, detail), or None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from turnkeep.core import values

__all__ = ["MAX_TOKENS", "first_problem"]

MAX_TOKENS = 2**53
_MAX_MONEY_DIGITS = 30


def _time(value: object) -> bool:
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def _money(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 2 * _MAX_MONEY_DIGITS:
        return f"expected a decimal amount as a string, got {value!r:.60}"
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return f"not a decimal amount: {value!r}"
    if not amount.is_finite() or amount < 0 or len(amount.as_tuple().digits) > _MAX_MONEY_DIGITS:
        return f"expected a finite amount >= 0 with at most {_MAX_MONEY_DIGITS} digits, got {value!r}"
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and abs(exponent) > _MAX_MONEY_DIGITS:
        return f"expected a finite amount >= 0 with at most {_MAX_MONEY_DIGITS} digits, got {value!r}"
    return None


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS


def first_problem(data: object) -> tuple[str, str] | None:
    """The first value of an export that a conversation could not live with, as (path, detail)."""
    where = values.depth_exceeds(data, values.MAX_DEPTH + values.ENVELOPE_DEPTH + 4)
    if where is not None:
        return where.lstrip(".") or "export", f"nested more than {values.MAX_DEPTH} levels deep"
    if not isinstance(data, Mapping):
        return None  # the structural check names this
    for key in ("settings", "nodes", "policy_states"):
        found = values.find_problem(data.get(key), key, depth=False)
        if found is not None:
            detail = "credentials are never stored or imported" if found.kind.startswith("secret") else found.detail
            return found.path, detail
    for key in ("created_at", "updated_at"):
        if not _time(data.get(key)):
            return key, f"expected a finite, non-negative number of seconds, got {data.get(key)!r}"
    branches = data.get("branches")
    if isinstance(branches, Mapping) and "main" not in branches:
        return "branches", "the branch `main` is missing"
    ledger = data.get("ledger")
    for index, entry in enumerate(ledger if isinstance(ledger, list) else []):
        position = f"ledger[{index}]"
        if not isinstance(entry, Mapping):
            continue
        problem = _money(entry.get("cost_usd"))
        if problem:
            return f"{position}.cost_usd", problem
        for key in ("latency_ms", "at"):
            if not _time(entry.get(key)) or entry.get(key) is None:
                return f"{position}.{key}", f"expected a finite, non-negative number, got {entry.get(key)!r}"
        usage = entry.get("usage")
        for name, count in usage.items() if isinstance(usage, Mapping) else ():
            if isinstance(count, Mapping):  # e.g. cache_creation: {ephemeral_5m_input_tokens: ...}
                for inner, value in count.items():
                    if value is not None and not _count(value):
                        return f"{position}.usage.{name}.{inner}", f"expected a token count 0..2**53, got {value!r}"
            elif count is not None and not isinstance(count, str) and not _count(count):
                return f"{position}.usage.{name}", f"expected a token count 0..2**53, got {count!r}"
        pair = entry.get("calibration")
        if pair is not None and not (isinstance(pair, list) and len(pair) == 2 and all(_count(n) for n in pair)):
            return f"{position}.calibration", f"expected [estimated, measured] token counts 0..2**53, got {pair!r}"
    return None
