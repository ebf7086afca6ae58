"""The emulator's bill: what every API key has spent, per model, in tokens and exact USD.

Each response's `usage` is added with `Bill.add`; USD comes from `turnkeep.core.pricing.usage_cost` (Decimal, the
catalog's prices, long-context bands chosen per request, the Batch API discount when `batch`).

`usage.iterations` (beta): when present, the bill is the sum over the iterations, each priced on its own (its
own model, its own long-context band). The top-level fields only add up the `message` iterations; a
`compaction` entry (the compaction call's own cost) and an `advisor_message` entry (priced at the advisor's
model) are not in them but are billed all the same. Without `iterations`, the top-level fields are billed.
Server-tool fees (`server_tool_use`, e.g. web searches) are not part of the token bill.

Summaries are JSON-ready: token counts as ints, USD as decimal strings (`"0.0123"`) so nothing is rounded.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from turnkeep.core.catalog import Catalog, ModelInfo, default_catalog
from turnkeep.core.pricing import Cost, TokenCounts, token_counts, usage_cost

__all__ = ["Bill", "usd"]


@dataclass(slots=True)
class _Tally:
    requests: int = 0
    batch_requests: int = 0
    counts: TokenCounts = field(default_factory=TokenCounts)
    cost: Cost = field(default_factory=Cost)

    def add(self, counts: TokenCounts, cost: Cost) -> None:
        self.counts += counts
        self.cost += cost

    def summary(self) -> dict[str, Any]:
        counts, cost = self.counts, self.cost
        return {
            "requests": self.requests,
            "batch_requests": self.batch_requests,
            "input_tokens": counts.input,
            "cache_creation_input_tokens": counts.cache_write,
            "ephemeral_5m_input_tokens": counts.cache_write_5m,
            "ephemeral_1h_input_tokens": counts.cache_write_1h,
            "cache_read_input_tokens": counts.cache_read,
            "output_tokens": counts.output,
            "usd": {
                "input": usd(cost.input),
                "cache_write_5m": usd(cost.cache_write_5m),
                "cache_write_1h": usd(cost.cache_write_1h),
                "cache_read": usd(cost.cache_read),
                "output": usd(cost.output),
                "total": usd(cost.total),
            },
        }


@dataclass(slots=True)
class _Account:
    total: _Tally = field(default_factory=_Tally)
    models: dict[str, _Tally] = field(default_factory=dict)


class Bill:
    """Per-API-key, per-model totals of every billed request. Thread-safe.

    `catalog` prices the iterations that name another model than the request's (fallback or advisor models);
    it defaults to the shipped catalog.
    """

    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}

    def add(self, scope: str, model: ModelInfo, usage: Mapping[str, Any], *, batch: bool = False) -> None:
        """Bill one response's `usage` (the API's JSON dict) to API key `scope` on `model`."""
        iterations = usage.get("iterations")
        if iterations:
            parts = [(self._model_of(item, model), token_counts(item)) for item in iterations]
            priced = [(info, counts, usage_cost(counts, info, batch=batch)) for info, counts in parts]
        else:  # priced from the usage itself: a redeemed fallback credit changes the price, not the counts
            priced = [(model, token_counts(usage), usage_cost(usage, model, batch=batch))]
        with self._lock:
            account = self._accounts.setdefault(scope, _Account())
            account.total.requests += 1
            account.total.batch_requests += int(batch)
            seen: set[str] = set()
            for info, counts, cost in priced:
                account.total.add(counts, cost)
                tally = account.models.setdefault(info.id, _Tally())
                tally.add(counts, cost)
                if info.id not in seen:
                    seen.add(info.id)
                    tally.requests += 1
                    tally.batch_requests += int(batch)

    def summary(self, scope: str | None = None) -> dict[str, Any]:
        """Totals of one API key (`scope`), or of every key with a grand total when `scope` is None.

        One key: `{"scope", "requests", "batch_requests", <token counts>, "usd": {...}, "models": {id: {...}}}`;
        a key that has spent nothing has zero totals. All keys: `{"scopes": {key: <one key>}, "total": {...}}`.
        """
        with self._lock:
            if scope is not None:
                return _account_summary(scope, self._accounts.get(scope, _Account()))
            grand = _Tally()
            scopes: dict[str, Any] = {}
            for name, account in self._accounts.items():
                scopes[name] = _account_summary(name, account)
                grand.requests += account.total.requests
                grand.batch_requests += account.total.batch_requests
                grand.add(account.total.counts, account.total.cost)
            return {"scopes": scopes, "total": grand.summary()}

    def reset(self, scope: str | None = None) -> None:
        """Forget the bill of one API key, or of every key when `scope` is None."""
        with self._lock:
            if scope is None:
                self._accounts.clear()
            else:
                self._accounts.pop(scope, None)

    def _model_of(self, iteration: Mapping[str, Any], default: ModelInfo) -> ModelInfo:
        named = iteration.get("model")
        if not named or named == default.id or named in default.aliases:
            return default
        catalog = self._catalog if self._catalog is not None else default_catalog()
        return catalog.get(str(named))


def _account_summary(scope: str, account: _Account) -> dict[str, Any]:
    return {
        "scope": scope,
        **account.total.summary(),
        "models": {model_id: tally.summary() for model_id, tally in account.models.items()},
    }


def usd(amount: Decimal) -> str:
    """A Decimal amount as a plain decimal string: no exponent, no trailing zeros (`"0.0000375"`, `"12"`)."""
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")
