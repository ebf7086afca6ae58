"""`PostgresTenancy`: the gateway's tenancy rows in PostgreSQL, shared by any number of gateway replicas.

The tables sit beside the conversation store's, in the same PostgreSQL schema (`turnkeep` by default), with their
own version table (`gateway_schema_version`): `GATEWAY_MIGRATIONS[i]` takes them from version i to i+1, in one
transaction holding an advisory lock, so of several replicas starting on a new database one migrates and the
others wait, then find it done.

Everything that must hold across replicas is one statement on the shared rows:

- a lease is taken by one `UPDATE … WHERE lease_until IS NULL OR lease_until <= now`; PostgreSQL re-checks the
  condition once a concurrent writer's row lock is released, so of two replicas racing for one conversation
  exactly one gets it;
- usage and per-minute counters are incremented in place (`requests = requests + 1`, `usd = usd + …` in
  `numeric`), so no replica's update overwrites another's and budgets hold for the sum of all replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from turnkeep.errors import StorageError, UsageError
from turnkeep.server.tenancy import Dialect, SQLTenancy, Statements
from turnkeep.store.postgres import _SCHEMA_NAME, _driver, _reason, _server, redact

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["GATEWAY_MIGRATIONS", "PostgresTenancy"]

# Append; never edit a released script.
GATEWAY_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE gateway_tenants (name text PRIMARY KEY, limits json NOT NULL, policy text);
    CREATE TABLE gateway_keys (
        digest text PRIMARY KEY,
        prefix text NOT NULL,
        tenant text NOT NULL REFERENCES gateway_tenants (name),
        created_at double precision NOT NULL,
        revoked_at double precision
    );
    CREATE TABLE gateway_conversations (
        conversation_id text PRIMARY KEY,
        tenant text NOT NULL,
        created_at double precision NOT NULL,
        lease_token text,
        lease_until double precision
    );
    CREATE INDEX gateway_conversations_tenant ON gateway_conversations (tenant, created_at DESC);
    CREATE TABLE gateway_threads (
        tenant text NOT NULL,
        reply_id text NOT NULL,
        conversation_id text NOT NULL,
        node_id text NOT NULL,
        fingerprint json NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (tenant, reply_id)
    );
    CREATE INDEX gateway_threads_conversation ON gateway_threads (tenant, conversation_id);
    CREATE TABLE gateway_usage (
        tenant text NOT NULL,
        day text NOT NULL,
        model text NOT NULL,
        requests bigint NOT NULL,
        input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL,
        usd numeric NOT NULL,
        PRIMARY KEY (tenant, day, model)
    );
    CREATE TABLE gateway_minutes (
        tenant text NOT NULL,
        minute bigint NOT NULL,
        requests bigint NOT NULL,
        tokens bigint NOT NULL,
        PRIMARY KEY (tenant, minute)
    );
    """,
)


class PostgresTenancy(SQLTenancy):
    """`TenancyStore` in PostgreSQL: `PostgresTenancy("postgresql://user@host/db")`. Thread-safe (a pool of
    connections); any number of processes and hosts may share the database."""

    dialect = Dialect(prefix="gateway_", placeholder="%s", json_in="::json", as_text="::text", numeric_money=True)

    def __init__(
        self, conninfo: str, *, schema: str = "turnkeep", max_connections: int = 10, timeout: float = 10.0
    ) -> None:
        psycopg, pools = _driver()
        if not _SCHEMA_NAME.fullmatch(schema):
            raise UsageError(f"schema must be a lower-case SQL name (letters, digits, _), not {schema!r}")
        self._psycopg = psycopg
        self.url = redact(conninfo)
        self.server = _server(conninfo, psycopg)
        self.schema = schema
        self._lock = threading.Lock()
        try:
            connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, round(timeout)))
        except psycopg.Error as err:
            raise StorageError(f"cannot connect to PostgreSQL at {self.server}: {_reason(err)}") from err
        try:
            with connection:
                self._configure(connection)
                with connection.transaction(), connection.cursor() as cursor:
                    self._migrate(cursor)
        except psycopg.Error as err:
            raise self._failed(err) from err
        self._pool: psycopg_pool.ConnectionPool[Any] = pools.ConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=pools.ConnectionPool.check_connection,  # a connection broken by a restart is replaced, not used
            timeout=timeout,
            open=False,
            name=f"turnkeep-gateway-{schema}",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except pools.PoolTimeout as err:
            self._pool.close()
            raise StorageError(f"cannot connect to PostgreSQL at {self.server}: {err}") from err

    def __repr__(self) -> str:
        return f"PostgresTenancy({self.url!r}, schema={self.schema!r})"

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute(f"SET search_path TO {self.schema}")

    def _failed(self, err: BaseException) -> StorageError:
        return StorageError(f"gateway tables at {self.server}: {_reason(err)}")

    def _migrate(self, cursor: psycopg.Cursor[Any]) -> None:
        # One replica migrates; the others wait on the lock, then find the work done.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"turnkeep gateway schema {self.schema}",))
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        cursor.execute("CREATE TABLE IF NOT EXISTS gateway_schema_version (version integer NOT NULL)")
        cursor.execute("SELECT version FROM gateway_schema_version")
        row = cursor.fetchone()
        version: int = row[0] if row else 0
        if version > len(GATEWAY_MIGRATIONS):
            raise StorageError(
                f"the gateway tables at {self.server} (schema {self.schema}) have version {version}; this turnkeep "
                f"knows up to {len(GATEWAY_MIGRATIONS)}: upgrade turnkeep"
            )
        for number in range(version, len(GATEWAY_MIGRATIONS)):
            cursor.execute(GATEWAY_MIGRATIONS[number].encode())  # a script: the simple query protocol
        if row is None:
            cursor.execute("INSERT INTO gateway_schema_version (version) VALUES (%s)", (len(GATEWAY_MIGRATIONS),))
        elif version < len(GATEWAY_MIGRATIONS):
            cursor.execute("UPDATE gateway_schema_version SET version = %s", (len(GATEWAY_MIGRATIONS),))

    @contextmanager
    def _cursor(self, *, transaction: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        psycopg = self._psycopg
        try:
            with self._pool.connection() as connection:
                if transaction:
                    with connection.transaction(), connection.cursor() as cursor:
                        yield cursor
                else:
                    with connection.cursor() as cursor:
                        yield cursor
        except psycopg.Error as err:
            raise self._failed(err) from err
        except self._pool_timeout() as err:
            raise StorageError(f"PostgreSQL at {self.server} is unreachable: {err}") from err

    @staticmethod
    def _pool_timeout() -> type[Exception]:
        return _driver()[1].PoolTimeout  # type: ignore[no-any-return]

    @contextmanager
    def _transaction(self, *, read_only: bool = False) -> Iterator[Statements]:  # noqa: ARG002 (one kind here)
        with self._cursor(transaction=True) as cursor:
            yield _PostgresStatements(cursor)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            return _PostgresStatements(cursor).rows(sql, args)

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._cursor() as cursor:  # one statement commits on its own (autocommit)
            return _PostgresStatements(cursor).run(sql, args)

    def close(self) -> None:
        with self._lock:
            self._pool.close()


class _PostgresStatements:
    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql, args)
        return list(self._cursor.fetchall())

    def run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        self._cursor.execute(sql, args)
        return int(self._cursor.rowcount)
