"""Helpers of the gateway tests."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx2

from turnkeep.server import Gateway, Limits, Tenant, create_app
from turnkeep.server.tenancy import new_key

MODEL = "claude-sonnet-5"


def add_key(gateway: Gateway, tenant: str, limits: Limits | None = None, policy: str | None = None) -> str:
    """A new key of `tenant` (created, or its limits replaced when given)."""
    if gateway.tenancy.tenant(tenant) is None or limits is not None or policy is not None:
        gateway.tenancy.put_tenant(Tenant(tenant, limits or Limits(), policy))
    key = new_key()
    gateway.tenancy.add_key(tenant, key, now=time.time())
    return key


def sdk(gateway: Gateway, key: str, **options: Any) -> anthropic.AsyncAnthropic:
    """The official async SDK talking to the gateway app in-process."""
    options.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(
        api_key=key,
        base_url="http://gateway",
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app(gateway))),
        **options,
    )


def rows(database: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the database, to show a refused request changed nothing."""
    db = sqlite3.connect(database)
    try:
        # The full-text index's shadow tables keep internal bookkeeping after a delete; its rows are in `nodes`.
        tables = [
            name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") if "_fts" not in name
        ]
        return {table: sorted(db.execute(f'SELECT * FROM "{table}"'), key=repr) for table in tables}
    finally:
        db.close()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


class Clock:
    """A settable clock for budgets and rate limits (the upstream keeps its own)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
