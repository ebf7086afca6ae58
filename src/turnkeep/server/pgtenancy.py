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

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from turnkeep.errors import StorageError, UsageError
from turnkeep.server.tenancy import (
    KEY_PREFIX,
    KeyInfo,
    Limits,
    Tenant,
    ThreadRow,
    UsageTotals,
    day_of,
    hash_key,
)
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


class PostgresTenancy:
    """`TenancyStore` in PostgreSQL: `PostgresTenancy("postgresql://user@host/db")`. Thread-safe (a pool of
    connections); any number of processes and hosts may share the database."""

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

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._cursor() as cursor:
            cursor.execute(sql, args)
            return int(cursor.rowcount)

    def close(self) -> None:
        with self._lock:
            self._pool.close()

    # -- tenants and keys -----------------------------------------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> None:
        if not tenant.name or not tenant.name.strip():
            raise UsageError("a tenant needs a non-empty name")
        self._write(
            "INSERT INTO gateway_tenants (name, limits, policy) VALUES (%s, %s::json, %s) "
            "ON CONFLICT (name) DO UPDATE SET limits = excluded.limits, policy = excluded.policy",
            (tenant.name, json.dumps(tenant.limits.to_json()), tenant.policy),
        )

    def tenant(self, name: str) -> Tenant | None:
        rows = self._all("SELECT name, limits::text, policy FROM gateway_tenants WHERE name = %s", (name,))
        if not rows:
            return None
        found, limits, policy = rows[0]
        return Tenant(found, Limits.from_json(json.loads(limits)), policy)

    def add_key(self, tenant: str, key: str, *, now: float) -> KeyInfo:
        if self.tenant(tenant) is None:
            raise UsageError(f"no tenant named {tenant!r}")
        prefix = key[: len(KEY_PREFIX) + 8]
        self._write(
            "INSERT INTO gateway_keys (digest, prefix, tenant, created_at) VALUES (%s, %s, %s, %s)",
            (hash_key(key), prefix, tenant, now),
        )
        return KeyInfo(prefix, tenant, now, revoked=False)

    def tenant_for_key(self, key: str) -> Tenant | None:
        rows = self._all(
            "SELECT t.name, t.limits::text, t.policy FROM gateway_keys AS k JOIN gateway_tenants AS t "
            "ON t.name = k.tenant WHERE k.digest = %s AND k.revoked_at IS NULL",
            (hash_key(key),),
        )
        if not rows:
            return None
        name, limits, policy = rows[0]
        return Tenant(name, Limits.from_json(json.loads(limits)), policy)

    def keys(self, tenant: str | None = None) -> list[KeyInfo]:
        sql = "SELECT prefix, tenant, created_at, revoked_at FROM gateway_keys"
        rows = (
            self._all(sql + " WHERE tenant = %s ORDER BY created_at", (tenant,))
            if tenant
            else self._all(sql + " ORDER BY tenant, created_at")
        )
        return [KeyInfo(prefix, owner, created, revoked is not None) for prefix, owner, created, revoked in rows]

    def revoke_key(self, prefix: str, *, now: float) -> int:
        if len(prefix) < len(KEY_PREFIX) + 4:
            raise UsageError(f"name a key by at least {len(KEY_PREFIX) + 4} characters of its prefix")
        return self._write(
            "UPDATE gateway_keys SET revoked_at = %s WHERE left(prefix, length(%s)) = %s AND revoked_at IS NULL",
            (now, prefix, prefix),
        )

    # -- ownership, threads, leases -------------------------------------------------------------------------

    def claim_conversation(self, tenant: str, conversation_id: str, *, now: float) -> None:
        self._write(
            "INSERT INTO gateway_conversations (conversation_id, tenant, created_at) VALUES (%s, %s, %s)",
            (conversation_id, tenant, now),
        )

    def owns(self, tenant: str, conversation_id: str) -> bool:
        return bool(
            self._all(
                "SELECT 1 FROM gateway_conversations WHERE conversation_id = %s AND tenant = %s",
                (conversation_id, tenant),
            )
        )

    def conversations(self, tenant: str, limit: int, offset: int) -> tuple[list[str], int]:
        with self._cursor(transaction=True) as cursor:
            cursor.execute(
                "SELECT conversation_id FROM gateway_conversations WHERE tenant = %s "
                "ORDER BY created_at DESC, conversation_id LIMIT %s OFFSET %s",
                (tenant, limit, offset),
            )
            ids = [row[0] for row in cursor.fetchall()]
            cursor.execute("SELECT count(*) FROM gateway_conversations WHERE tenant = %s", (tenant,))
            row = cursor.fetchone()
        return ids, int(row[0]) if row else 0

    def forget_conversation(self, tenant: str, conversation_id: str) -> None:
        with self._cursor(transaction=True) as cursor:
            cursor.execute(
                "DELETE FROM gateway_threads WHERE tenant = %s AND conversation_id = %s", (tenant, conversation_id)
            )
            cursor.execute(
                "DELETE FROM gateway_conversations WHERE tenant = %s AND conversation_id = %s",
                (tenant, conversation_id),
            )

    def record_thread(self, tenant: str, row: ThreadRow, *, now: float) -> None:
        self._write(
            "INSERT INTO gateway_threads (tenant, reply_id, conversation_id, node_id, fingerprint, created_at) "
            "VALUES (%s, %s, %s, %s, %s::json, %s)",
            (tenant, row.reply_id, row.conversation_id, row.node_id, json.dumps(dict(row.fingerprint)), now),
        )

    def thread(self, tenant: str, reply_id: str) -> ThreadRow | None:
        rows = self._all(
            "SELECT conversation_id, node_id, fingerprint::text FROM gateway_threads "
            "WHERE tenant = %s AND reply_id = %s",
            (tenant, reply_id),
        )
        if not rows:
            return None
        conversation_id, node_id, fingerprint = rows[0]
        return ThreadRow(reply_id, conversation_id, node_id, json.loads(fingerprint))

    def acquire_lease(self, tenant: str, conversation_id: str, token: str, *, now: float, seconds: float) -> bool:
        return (
            self._write(
                "UPDATE gateway_conversations SET lease_token = %s, lease_until = %s WHERE conversation_id = %s "
                "AND tenant = %s AND (lease_until IS NULL OR lease_until <= %s)",
                (token, now + seconds, conversation_id, tenant, now),
            )
            == 1
        )

    def renew_lease(self, conversation_id: str, token: str, *, now: float, seconds: float) -> bool:
        return (
            self._write(
                "UPDATE gateway_conversations SET lease_until = %s WHERE conversation_id = %s AND lease_token = %s",
                (now + seconds, conversation_id, token),
            )
            == 1
        )

    def release_lease(self, conversation_id: str, token: str) -> None:
        self._write(
            "UPDATE gateway_conversations SET lease_token = NULL, lease_until = NULL "
            "WHERE conversation_id = %s AND lease_token = %s",
            (conversation_id, token),
        )

    # -- usage and limits -----------------------------------------------------------------------------------

    def admit(self, tenant: str, limits: Limits, *, now: float) -> str | None:
        if limits.requests_per_minute is None and limits.tokens_per_minute is None:
            return None
        rows = self._all(
            "SELECT requests, tokens FROM gateway_minutes WHERE tenant = %s AND minute = %s", (tenant, int(now // 60))
        )
        requests, tokens = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
        if limits.requests_per_minute is not None and requests >= limits.requests_per_minute:
            return "requests"
        if limits.tokens_per_minute is not None and tokens >= limits.tokens_per_minute:
            return "tokens"
        return None

    def record_usage(
        self, tenant: str, model: str, *, input_tokens: int, output_tokens: int, usd: Decimal, now: float
    ) -> None:
        day, minute = day_of(now), int(now // 60)
        with self._cursor(transaction=True) as cursor:
            cursor.execute(
                "INSERT INTO gateway_usage AS u (tenant, day, model, requests, input_tokens, output_tokens, usd) "
                "VALUES (%s, %s, %s, 1, %s, %s, %s) ON CONFLICT (tenant, day, model) DO UPDATE SET "
                "requests = u.requests + 1, input_tokens = u.input_tokens + excluded.input_tokens, "
                "output_tokens = u.output_tokens + excluded.output_tokens, usd = u.usd + excluded.usd",
                (tenant, day, model, input_tokens, output_tokens, usd),
            )
            cursor.execute(
                "INSERT INTO gateway_minutes AS m (tenant, minute, requests, tokens) VALUES (%s, %s, 1, %s) "
                "ON CONFLICT (tenant, minute) DO UPDATE SET requests = m.requests + 1, "
                "tokens = m.tokens + excluded.tokens",
                (tenant, minute, input_tokens + output_tokens),
            )
            # Older minutes are of no further use; keep the table small.
            cursor.execute("DELETE FROM gateway_minutes WHERE tenant = %s AND minute < %s", (tenant, minute - 1))

    def usage(self, tenant: str, *, since: float, until: float) -> UsageTotals:
        rows = self._all(
            "SELECT coalesce(sum(requests), 0), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
            "coalesce(sum(usd), 0) FROM gateway_usage WHERE tenant = %s AND day >= %s AND day <= %s",
            (tenant, day_of(since), day_of(until)),
        )
        requests, input_tokens, output_tokens, usd = rows[0]
        return UsageTotals(int(requests), int(input_tokens), int(output_tokens), Decimal(usd))
