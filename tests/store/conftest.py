from __future__ import annotations

import multiprocessing
import multiprocessing.context
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from turnkeep.store import MemoryStore, SQLiteStore, Store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each contract test runs against all three stores."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_store")
        return
    sqlite_store = SQLiteStore(tmp_path / "store.db")
    yield sqlite_store
    sqlite_store.close()


@pytest.fixture(scope="session")
def forkserver() -> multiprocessing.context.ForkServerContext:
    """Child processes forked from a server that has already imported the SDK and turnkeep (fast to start)."""
    context = multiprocessing.get_context("forkserver")
    # Module names the server can import from site-packages (it does not see this folder on sys.path).
    context.set_forkserver_preload(
        ["anthropic", "anthropic.types", "turnkeep.client", "turnkeep.store", "psycopg", "psycopg_pool"]
    )
    return context
