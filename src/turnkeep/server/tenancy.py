"""What the gateway keeps besides conversations: tenants, their keys, who owns what, threads, usage and limits.

Every row is scoped by tenant. Conversations themselves live in the ordinary `turnkeep.store.Store`; this store
only says which tenant owns each one and which reply id continues which conversation, so a tenant never reaches
another tenant's rows (a foreign id looks exactly like an unknown one).

Keys are stored as SHA-256 digests (a gateway key is 32 random bytes, so a slow hash adds nothing); only an
8-character prefix is kept readable, to name a key when listing or revoking it.

`TenancyStore` is the protocol; `SQLiteTenancy` implements it in a SQLite file (the conversation store's file by
default), `turnkeep.server.pgtenancy.PostgresTenancy` in PostgreSQL (many replicas); `open_tenancy` picks by the
location, as `turnkeep.store.open_store` does for conversations.

Everything a replica needs for correctness is here or in the conversation store, never in memory: continuing a
reply takes a *lease* on the conversation (a row with an expiry, renewed while the turn runs), so two replicas
cannot continue one conversation at once, and a replica that dies mid-turn frees the conversation when its lease
expires.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from turnkeep.errors import StorageError, UsageError

__all__ = [
    "KEY_PREFIX",
    "Dialect",
    "KeyInfo",
    "Limits",
    "SQLTenancy",
    "SQLiteTenancy",
    "Statements",
    "TenancyStore",
    "Tenant",
    "ThreadRow",
    "UsageTotals",
    "hash_key",
    "new_key",
    "open_tenancy",
]

KEY_PREFIX = "tk-"
"""Gateway keys look like `tk-<43 url-safe characters>`, so they are never mistaken for an Anthropic key."""


def new_key() -> str:
    """A fresh gateway key (shown once, stored only as its hash)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The digest a key is stored and looked up by."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits; None means unlimited. Money is Decimal USD."""

    usd_per_day: Decimal | None = None
    usd_per_month: Decimal | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "usd_per_day": None if self.usd_per_day is None else str(self.usd_per_day),
            "usd_per_month": None if self.usd_per_month is None else str(self.usd_per_month),
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Limits:
        data = data or {}

        def usd(name: str) -> Decimal | None:
            value = data.get(name)
            return None if value is None else Decimal(str(value))

        return cls(
            usd_per_day=usd("usd_per_day"),
            usd_per_month=usd("usd_per_month"),
            requests_per_minute=data.get("requests_per_minute"),
            tokens_per_minute=data.get("tokens_per_minute"),
        )


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant: its name, limits and default context policy (the policy grammar of the CLI; None = FullHistory)."""

    name: str
    limits: Limits = field(default_factory=Limits)
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed: never the key itself, only its readable prefix."""

    prefix: str
    tenant: str
    created_at: float
    revoked: bool


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """A reply that a thread can continue: the conversation and node it ended, and the thread's fixed fields."""

    reply_id: str
    conversation_id: str
    node_id: str
    fingerprint: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """What a tenant used in a period."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: Decimal = Decimal(0)


class TenancyStore(Protocol):
    """The gateway's own rows. Every method that names a conversation or reply also names the tenant."""

    def put_tenant(self, tenant: Tenant) -> None:
        """Create a tenant or replace its limits and policy."""
        ...

    def tenant(self, name: str) -> Tenant | None: ...

    def add_key(self, tenant: str, key: str, *, now: float) -> KeyInfo:
        """Store `key` (hashed) for an existing tenant; UsageError for an unknown tenant."""
        ...

    def tenant_for_key(self, key: str) -> Tenant | None:
        """The tenant of a valid, unrevoked key, else None."""
        ...

    def keys(self, tenant: str | None = None) -> list[KeyInfo]: ...

    def revoke_key(self, prefix: str, *, now: float) -> int:
        """Revoke every key starting with `prefix`; returns how many."""
        ...

    def claim_conversation(self, tenant: str, conversation_id: str, *, now: float) -> None: ...

    def owns(self, tenant: str, conversation_id: str) -> bool: ...

    def conversations(self, tenant: str, limit: int, offset: int) -> tuple[list[str], int]:
        """The tenant's conversation ids (newest first) and how many it has in all."""
        ...

    def forget_conversation(self, tenant: str, conversation_id: str) -> None:
        """Drop the ownership, threads and lease of a conversation (its content is deleted from the store)."""
        ...

    def record_thread(self, tenant: str, row: ThreadRow, *, now: float) -> None: ...

    def thread(self, tenant: str, reply_id: str) -> ThreadRow | None: ...

    def acquire_lease(self, tenant: str, conversation_id: str, token: str, *, now: float, seconds: float) -> bool:
        """Take the conversation for one turn unless another holder's lease is still running."""
        ...

    def renew_lease(self, conversation_id: str, token: str, *, now: float, seconds: float) -> bool:
        """Extend a lease still held with `token` (a long turn keeps its conversation); False if it was lost."""
        ...

    def release_lease(self, conversation_id: str, token: str) -> None: ...

    def admit(self, tenant: str, limits: Limits, *, now: float) -> str | None:
        """Which per-minute limit the tenant has reached ("requests" or "tokens"), or None. Writes nothing: the
        minute counts the requests that reached upstream and their tokens (`record_usage`)."""
        ...

    def record_usage(
        self, tenant: str, model: str, *, input_tokens: int, output_tokens: int, usd: Decimal, now: float
    ) -> None:
        """Add one upstream request's usage to the tenant's day and minute."""
        ...

    def usage(self, tenant: str, *, since: float, until: float) -> UsageTotals:
        """The tenant's usage in the whole days from `since` to `until` (UTC)."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tk_tenants (
    name TEXT PRIMARY KEY, limits TEXT NOT NULL, policy TEXT);
CREATE TABLE IF NOT EXISTS tk_keys (
    digest TEXT PRIMARY KEY, prefix TEXT NOT NULL, tenant TEXT NOT NULL REFERENCES tk_tenants(name),
    created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS tk_conversations (
    conversation_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at REAL NOT NULL,
    lease_token TEXT, lease_until REAL);
CREATE INDEX IF NOT EXISTS tk_conversations_tenant ON tk_conversations(tenant, created_at);
CREATE TABLE IF NOT EXISTS tk_threads (
    tenant TEXT NOT NULL, reply_id TEXT NOT NULL, conversation_id TEXT NOT NULL, node_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (tenant, reply_id));
CREATE TABLE IF NOT EXISTS tk_usage (
    tenant TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL, requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, usd TEXT NOT NULL,
    PRIMARY KEY (tenant, day, model));
CREATE TABLE IF NOT EXISTS tk_minutes (
    tenant TEXT NOT NULL, minute INTEGER NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL,
    PRIMARY KEY (tenant, minute));
"""


def day_of(now: float) -> str:
    """The UTC day of a Unix time, as the usage table keys it."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class Statements(Protocol):
    """What one transaction of a tenancy backend runs: SQL in the backend's own dialect (see `SQLTenancy.sql`)."""

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows a query returns."""
        ...

    def run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run a statement; how many rows it changed."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where SQLite and PostgreSQL differ in the statements `SQLTenancy` writes once: the tables' prefix, the
    placeholder, and the casts PostgreSQL's `json` and `numeric` columns need (SQLite keeps both as text)."""

    prefix: str
    placeholder: str
    json_in: str = ""
    """Appended to a placeholder whose text goes into a JSON column."""
    as_text: str = ""
    """Appended to a JSON or numeric column read back as text (exact, and parsed by us)."""
    numeric_money: bool = False
    """USD is an exact `numeric` column, added to in SQL; else decimal text, read and written back."""


class SQLTenancy(abc.ABC):
    """The tenancy logic, written once for both SQL backends: each says how a transaction runs (`_transaction`),
    how a lone query runs (`_rows`) and how it closes.

    Statements are written with `?` placeholders and `{tenants}`-style table names (`sql`)."""

    dialect: Dialect

    def sql(self, text: str) -> str:
        """`text` in this backend's dialect."""
        return _render(self.dialect, text)

    @abc.abstractmethod
    def _transaction(self, *, read_only: bool = False) -> AbstractContextManager[Statements]:
        """One transaction: all its statements take effect, or none."""

    @abc.abstractmethod
    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query."""

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one statement on its own; how many rows it changed."""
        with self._transaction() as tx:
            return tx.run(sql, args)

    def _add_to_day(self, tx: Statements, tenant: str, day: str, model: str, usage: tuple[int, int, Decimal]) -> None:
        """Add one request's (input tokens, output tokens, USD) to the tenant's day for `model`."""
        input_tokens, output_tokens, usd = usage
        if self.dialect.numeric_money:  # added in place: replicas adding at once never overwrite each other
            value: Decimal | str = usd
            total = "u.usd + excluded.usd"
        else:  # exact decimal text: read, added and written back under the write lock the transaction holds
            rows = tx.rows(
                self.sql("SELECT usd FROM {usage} WHERE tenant = ? AND day = ? AND model = ?"), (tenant, day, model)
            )
            value, total = str((Decimal(rows[0][0]) if rows else Decimal(0)) + usd), "excluded.usd"
        tx.run(
            self.sql(
                "INSERT INTO {usage} AS u (tenant, day, model, requests, input_tokens, output_tokens, usd) "
                "VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (tenant, day, model) DO UPDATE SET "
                "requests = u.requests + 1, input_tokens = u.input_tokens + excluded.input_tokens, "
                "output_tokens = u.output_tokens + excluded.output_tokens, usd = " + total
            ),
            (tenant, day, model, input_tokens, output_tokens, value),
        )

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection(s)."""

    # -- tenants and keys -----------------------------------------------------------------------------------

    def put_tenant(self, tenant: Tenant) -> None:
        if not tenant.name or not tenant.name.strip():
            raise UsageError("a tenant needs a non-empty name")
        self._run(
            self.sql(
                "INSERT INTO {tenants} (name, limits, policy) VALUES (?, ?{json_in}, ?) "
                "ON CONFLICT (name) DO UPDATE SET limits = excluded.limits, policy = excluded.policy"
            ),
            (tenant.name, json.dumps(tenant.limits.to_json()), tenant.policy),
        )

    def tenant(self, name: str) -> Tenant | None:
        rows = self._rows(self.sql("SELECT name, limits{as_text}, policy FROM {tenants} WHERE name = ?"), (name,))
        return _tenant(rows[0]) if rows else None

    def add_key(self, tenant: str, key: str, *, now: float) -> KeyInfo:
        if self.tenant(tenant) is None:
            raise UsageError(f"no tenant named {tenant!r}")
        prefix = key[: len(KEY_PREFIX) + 8]
        self._run(
            self.sql("INSERT INTO {keys} (digest, prefix, tenant, created_at) VALUES (?, ?, ?, ?)"),
            (hash_key(key), prefix, tenant, now),
        )
        return KeyInfo(prefix, tenant, now, revoked=False)

    def tenant_for_key(self, key: str) -> Tenant | None:
        rows = self._rows(
            self.sql(
                "SELECT t.name, t.limits{as_text}, t.policy FROM {keys} AS k JOIN {tenants} AS t "
                "ON t.name = k.tenant WHERE k.digest = ? AND k.revoked_at IS NULL"
            ),
            (hash_key(key),),
        )
        return _tenant(rows[0]) if rows else None

    def keys(self, tenant: str | None = None) -> list[KeyInfo]:
        sql = "SELECT prefix, tenant, created_at, revoked_at FROM {keys}"
        rows = (
            self._rows(self.sql(sql + " WHERE tenant = ? ORDER BY created_at"), (tenant,))
            if tenant
            else self._rows(self.sql(sql + " ORDER BY tenant, created_at"))
        )
        return [KeyInfo(prefix, owner, created, revoked is not None) for prefix, owner, created, revoked in rows]

    def revoke_key(self, prefix: str, *, now: float) -> int:
        if len(prefix) < len(KEY_PREFIX) + 4:
            raise UsageError(f"name a key by at least {len(KEY_PREFIX) + 4} characters of its prefix")
        return self._run(
            # A literal prefix: `LIKE` would read `%` and `_` in it as wildcards and revoke other keys.
            self.sql("UPDATE {keys} SET revoked_at = ? WHERE substr(prefix, 1, length(?)) = ? AND revoked_at IS NULL"),
            (now, prefix, prefix),
        )

    # -- ownership, threads, leases -------------------------------------------------------------------------

    def claim_conversation(self, tenant: str, conversation_id: str, *, now: float) -> None:
        self._run(
            self.sql("INSERT INTO {conversations} (conversation_id, tenant, created_at) VALUES (?, ?, ?)"),
            (conversation_id, tenant, now),
        )

    def owns(self, tenant: str, conversation_id: str) -> bool:
        return bool(
            self._rows(
                self.sql("SELECT 1 FROM {conversations} WHERE conversation_id = ? AND tenant = ?"),
                (conversation_id, tenant),
            )
        )

    def conversations(self, tenant: str, limit: int, offset: int) -> tuple[list[str], int]:
        with self._transaction(read_only=True) as tx:  # the page and the count from one snapshot
            rows = tx.rows(
                self.sql(
                    "SELECT conversation_id FROM {conversations} WHERE tenant = ? "
                    "ORDER BY created_at DESC, conversation_id LIMIT ? OFFSET ?"
                ),
                (tenant, limit, offset),
            )
            total = tx.rows(self.sql("SELECT count(*) FROM {conversations} WHERE tenant = ?"), (tenant,))
        return [row[0] for row in rows], int(total[0][0])

    def forget_conversation(self, tenant: str, conversation_id: str) -> None:
        with self._transaction() as tx:
            tx.run(
                self.sql("DELETE FROM {threads} WHERE tenant = ? AND conversation_id = ?"), (tenant, conversation_id)
            )
            tx.run(
                self.sql("DELETE FROM {conversations} WHERE tenant = ? AND conversation_id = ?"),
                (tenant, conversation_id),
            )

    def record_thread(self, tenant: str, row: ThreadRow, *, now: float) -> None:
        self._run(
            self.sql(
                "INSERT INTO {threads} (tenant, reply_id, conversation_id, node_id, fingerprint, created_at) "
                "VALUES (?, ?, ?, ?, ?{json_in}, ?)"
            ),
            (tenant, row.reply_id, row.conversation_id, row.node_id, json.dumps(dict(row.fingerprint)), now),
        )

    def thread(self, tenant: str, reply_id: str) -> ThreadRow | None:
        rows = self._rows(
            self.sql(
                "SELECT conversation_id, node_id, fingerprint{as_text} FROM {threads} WHERE tenant = ? AND reply_id = ?"
            ),
            (tenant, reply_id),
        )
        if not rows:
            return None
        conversation_id, node_id, fingerprint = rows[0]
        return ThreadRow(reply_id, conversation_id, node_id, json.loads(fingerprint))

    def acquire_lease(self, tenant: str, conversation_id: str, token: str, *, now: float, seconds: float) -> bool:
        # One statement: of two replicas racing, the second finds the condition false once the first committed.
        changed = self._run(
            self.sql(
                "UPDATE {conversations} SET lease_token = ?, lease_until = ? WHERE conversation_id = ? "
                "AND tenant = ? AND (lease_until IS NULL OR lease_until <= ?)"
            ),
            (token, now + seconds, conversation_id, tenant, now),
        )
        return changed == 1

    def renew_lease(self, conversation_id: str, token: str, *, now: float, seconds: float) -> bool:
        changed = self._run(
            self.sql("UPDATE {conversations} SET lease_until = ? WHERE conversation_id = ? AND lease_token = ?"),
            (now + seconds, conversation_id, token),
        )
        return changed == 1

    def release_lease(self, conversation_id: str, token: str) -> None:
        self._run(
            self.sql(
                "UPDATE {conversations} SET lease_token = NULL, lease_until = NULL "
                "WHERE conversation_id = ? AND lease_token = ?"
            ),
            (conversation_id, token),
        )

    # -- usage and limits -----------------------------------------------------------------------------------

    def admit(self, tenant: str, limits: Limits, *, now: float) -> str | None:
        if limits.requests_per_minute is None and limits.tokens_per_minute is None:
            return None
        rows = self._rows(
            self.sql("SELECT requests, tokens FROM {minutes} WHERE tenant = ? AND minute = ?"), (tenant, int(now // 60))
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
        with self._transaction() as tx:
            self._add_to_day(tx, tenant, day, model, (input_tokens, output_tokens, usd))
            # Incremented in place, so concurrent writers (replicas) never overwrite each other's counts.
            tx.run(
                self.sql(
                    "INSERT INTO {minutes} AS m (tenant, minute, requests, tokens) VALUES (?, ?, 1, ?) "
                    "ON CONFLICT (tenant, minute) DO UPDATE SET requests = m.requests + 1, "
                    "tokens = m.tokens + excluded.tokens"
                ),
                (tenant, minute, input_tokens + output_tokens),
            )
            # Older minutes are of no further use; keep the table small.
            tx.run(self.sql("DELETE FROM {minutes} WHERE tenant = ? AND minute < ?"), (tenant, minute - 1))

    def usage(self, tenant: str, *, since: float, until: float) -> UsageTotals:
        rows = self._rows(
            self.sql(
                "SELECT requests, input_tokens, output_tokens, usd{as_text} FROM {usage} "
                "WHERE tenant = ? AND day >= ? AND day <= ?"
            ),
            (tenant, day_of(since), day_of(until)),
        )
        return UsageTotals(
            sum(int(row[0]) for row in rows),
            sum(int(row[1]) for row in rows),
            sum(int(row[2]) for row in rows),
            sum((Decimal(str(row[3])) for row in rows), Decimal(0)),  # exact: text in SQLite, numeric in PostgreSQL
        )


_TABLES = ("tenants", "keys", "conversations", "threads", "usage", "minutes")


@functools.lru_cache(maxsize=256)
def _render(dialect: Dialect, text: str) -> str:
    # Every `?` is a placeholder: no statement here holds one in a literal (nor PostgreSQL's jsonb `?` operator).
    names = {name: dialect.prefix + name for name in _TABLES}
    return text.format(as_text=dialect.as_text, json_in=dialect.json_in, **names).replace("?", dialect.placeholder)


def _tenant(row: tuple[Any, ...]) -> Tenant:
    name, limits, policy = row
    return Tenant(name, Limits.from_json(json.loads(limits)), policy)


class _SQLiteStatements:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self._db.execute(sql, args))

    def run(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        return self._db.execute(sql, args).rowcount


class SQLiteTenancy(SQLTenancy):
    """`TenancyStore` in a SQLite file (WAL; several processes may share it). Thread-safe."""

    dialect = Dialect(prefix="tk_", placeholder="?")

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.file = Path(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
            self._db.execute("PRAGMA busy_timeout = 10000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as tx:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        tx.run(statement)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the gateway tables in {str(path)!r}: {err}") from err

    @contextmanager
    def _transaction(self, *, read_only: bool = False) -> Iterator[Statements]:
        # A write takes the file's write lock at once (IMMEDIATE), so a read-modify-write cannot interleave with
        # another process's; a read only needs one snapshot.
        with self._lock:
            try:
                self._db.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
                try:
                    yield _SQLiteStatements(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as err:
                raise StorageError(f"gateway tables in {str(self.file)!r}: {err}") from err

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args))
            except sqlite3.Error as err:
                raise StorageError(f"gateway tables in {str(self.file)!r}: {err}") from err

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_tenancy(location: str | Path) -> TenancyStore:
    """The tenancy store at `location`: a `postgresql://` URL (the conversation store's database and schema), else
    a SQLite file."""
    from turnkeep.store.postgres import is_url

    if is_url(location):
        from turnkeep.server.pgtenancy import PostgresTenancy

        return PostgresTenancy(str(location))
    return SQLiteTenancy(location)
