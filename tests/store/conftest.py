from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from turnkeep.store import AsyncPostgresStore, MemoryStore, SQLiteStore, Store
from turnkeep.store.pgserver import TemporaryServer

T = TypeVar("T")


class AsyncStoreInThread:
    """An `AsyncPostgresStore` behind the sync `Store` methods, so the contract suite runs on it too: every call
    is a coroutine run on one event loop in a thread of its own (calls from several threads run concurrently)."""

    def __init__(self, url: str, schema: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.store: AsyncPostgresStore = self._call(AsyncPostgresStore.open(url, schema=schema))

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)
        return lambda *args, **kwargs: self._call(method(*args, **kwargs))

    def close(self) -> None:
        self._call(self.store.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@pytest.fixture(scope="session")
def _async_postgres_store(postgres_server: TemporaryServer) -> Iterator[AsyncStoreInThread]:
    store = AsyncStoreInThread(postgres_server.url, "shared_async")
    yield store
    store.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `store` run on every store; the async store (the sync one's logic on another driver) runs
    the contract suite only."""
    if "store" in metafunc.fixturenames:
        kinds = ["memory", "sqlite", "postgres"]
        if metafunc.module.__name__ == "test_store_contract":
            kinds.append("postgres-async")
        metafunc.parametrize("store", kinds, indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The store a test runs on (see `pytest_generate_tests`); the async one through `AsyncStoreInThread`."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_store")
        return
    if request.param == "postgres-async":
        facade: AsyncStoreInThread = request.getfixturevalue("_async_postgres_store")
        server: TemporaryServer = request.getfixturevalue("postgres_server")
        with psycopg.connect(server.url, autocommit=True) as cleaner:
            cleaner.execute("TRUNCATE shared_async.conversations CASCADE")
        yield cast(Store, facade)
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
