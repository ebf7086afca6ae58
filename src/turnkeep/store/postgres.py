"""`PostgresStore`: conversations in a PostgreSQL database, shared by many processes and machines.

`pip install 'turnkeep[postgres]'` (psycopg 3 and psycopg_pool). `PostgresStore("postgresql://user@host/db")`.

- **Schema**: the tables live in their own schema (`turnkeep` unless told otherwise), the same shape as the SQLite
  store: `conversations`, `nodes` (the message tree), `branches`, `ledger`, `branch_policy_state`. JSON columns
  are `json`, not `jsonb`: `json` keeps the text exactly as written (key order, number spelling), and a resumed
  conversation must resend its history byte for byte. Each node's searchable text feeds a generated `tsvector`
  column with a GIN index (full-text search).
- **Migrations** run when a store opens: `MIGRATIONS[i]` takes the schema from version i to i+1, all in one
  transaction holding an advisory lock, so of several processes opening a new database at once one migrates and
  the others wait, then find it done.
- **Concurrency**: every write is one transaction that first locks its conversation's row (`FOR UPDATE`), then
  checks the expected head. Two writers racing on one conversation are serialised: one commits, the other finds
  the head moved and gets `ConflictError` with nothing written. Writers on different conversations lock different
  rows and never wait for each other. The store keeps no state of its own between calls: any number of processes
  and hosts may share the database.
- **Faults**: a broken connection (a server restart) is noticed when it is taken from the pool and replaced;
  every psycopg error becomes `StorageError` naming the server (never the password), cause kept.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from turnkeep.errors import ConflictError, StorageError, UnknownConversation, UsageError
from turnkeep.store.base import (
    ConversationInfo,
    LedgerEntry,
    Node,
    NodeStatus,
    SearchHit,
    check_discard,
    check_new_nodes,
    check_no_secrets,
    check_page,
    check_query,
    check_status,
    dumps,
    searchable_text,
    title_of,
)

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["MIGRATIONS", "PostgresStore", "is_url", "redact"]

# Each script takes the schema from version i to i+1 (the `schema_version` table). Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE SEQUENCE touches;
    CREATE TABLE conversations (
        id text PRIMARY KEY,
        settings json NOT NULL,
        title text,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        touched bigint NOT NULL DEFAULT nextval('touches'),
        cost_usd text NOT NULL DEFAULT '0'
    );
    CREATE INDEX conversations_recent ON conversations (updated_at DESC, touched DESC);
    CREATE TABLE nodes (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        id text NOT NULL,
        parent_id text,
        role text NOT NULL,
        message json NOT NULL,
        status text NOT NULL CHECK (status IN ('ok', 'pending', 'partial', 'refused')),
        meta json NOT NULL,
        search_text text,
        UNIQUE (conversation_id, id),
        FOREIGN KEY (conversation_id, parent_id) REFERENCES nodes (conversation_id, id) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX nodes_parent ON nodes (conversation_id, parent_id);
    CREATE TABLE branches (
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        name text NOT NULL,
        head text,
        created bigint GENERATED ALWAYS AS IDENTITY,
        PRIMARY KEY (conversation_id, name),
        FOREIGN KEY (conversation_id, head) REFERENCES nodes (conversation_id, id) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE TABLE ledger (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        purpose text NOT NULL,
        model text NOT NULL,
        request_id text,
        message_id text,
        stop_reason text,
        usage json NOT NULL,
        cost_usd text NOT NULL,
        latency_ms double precision NOT NULL,
        at double precision NOT NULL,
        error text,
        cache_miss_reason text,
        node_id text,
        calibration json
    );
    CREATE INDEX ledger_conversation ON ledger (conversation_id, seq);
    CREATE TABLE branch_policy_state (
        conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        branch text NOT NULL,
        state json NOT NULL,
        PRIMARY KEY (conversation_id, branch)
    );
    """,
    # 2: full-text search through a generated tsvector and a GIN index (version 1 kept only the text). The
    # 'simple' configuration lower-cases words and does not stem them, as SQLite's unicode61 tokenizer does.
    """
    ALTER TABLE nodes ADD COLUMN search tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', coalesce(search_text, ''))) STORED;
    CREATE INDEX nodes_search ON nodes USING gin (search);
    """,
)

_NODE_COLUMNS = "id, parent_id, message::text, status, meta::text"
_LEDGER_COLUMNS = (
    "purpose, model, request_id, message_id, stop_reason, usage, cost_usd, latency_ms, at, error, "
    "cache_miss_reason, node_id, calibration"
)
_LEDGER_SELECT = _LEDGER_COLUMNS.replace("usage", "usage::text").replace("calibration", "calibration::text")
_PATH = """
WITH RECURSIVE path (seq, parent_id, depth) AS (
    SELECT seq, parent_id, 0 FROM nodes WHERE conversation_id = %(conversation)s AND id = %(head)s
    UNION ALL
    SELECT nodes.seq, nodes.parent_id, path.depth + 1
    FROM nodes JOIN path ON nodes.conversation_id = %(conversation)s AND nodes.id = path.parent_id
)
SELECT nodes.id, nodes.parent_id, nodes.message::text, nodes.status, nodes.meta::text
FROM path JOIN nodes ON nodes.seq = path.seq ORDER BY path.depth DESC
"""
_INFO = """
SELECT c.id, c.title,
       CASE WHEN json_typeof(c.settings -> 'model') = 'string' THEN c.settings ->> 'model' END,
       c.created_at, c.updated_at,
       (SELECT count(*) FROM nodes WHERE nodes.conversation_id = c.id), c.cost_usd
FROM conversations AS c
"""
_SNIPPET = "StartSel=[, StopSel=], MaxWords=16, MinWords=6, ShortWord=2, MaxFragments=1, FragmentDelimiter=…"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: object) -> bool:
    """Whether `location` is a PostgreSQL URL (`postgresql://` or `postgres://`) rather than a file path."""
    return isinstance(location, str) and location.lower().startswith(_URL_SCHEMES)


def redact(conninfo: str) -> str:
    """`conninfo` without its password, fit to print: `postgresql://ada:***@db.example:5432/chats`."""
    return re.sub(r"(?i)((?:^|[?&\s])password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", r"\1***", _redact_userinfo(conninfo))


def _redact_userinfo(conninfo: str) -> str:
    match = re.match(r"(?i)([a-z][a-z0-9+.-]*://)([^@/?#]*)@", conninfo)
    if match is None or ":" not in match.group(2):
        return conninfo
    user = match.group(2).split(":", 1)[0]
    return f"{match.group(1)}{user}:***@{conninfo[match.end() :]}"


def _driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as err:
        raise StorageError(
            "a postgresql:// store needs psycopg and psycopg_pool: pip install 'turnkeep[postgres]'"
        ) from err
    return psycopg, psycopg_pool


def _server(conninfo: str, psycopg: Any) -> str:
    """Where `conninfo` points, as "host:port/dbname" (defaults filled in as libpq would; no credentials)."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.Error as err:
        raise UsageError(f"not a valid PostgreSQL connection string {redact(conninfo)!r}: {err}") from err
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


def _node(row: Sequence[Any]) -> Node:
    return Node(row[0], row[1], json.loads(row[2]), cast(NodeStatus, row[3]), json.loads(row[4]))


def _entry(row: Sequence[Any]) -> LedgerEntry:
    calibration = json.loads(row[12]) if row[12] is not None else None
    return LedgerEntry(
        purpose=row[0],
        model=row[1],
        request_id=row[2],
        message_id=row[3],
        stop_reason=row[4],
        usage=json.loads(row[5]),
        cost_usd=row[6],
        latency_ms=row[7],
        at=row[8],
        error=row[9],
        cache_miss_reason=row[10],
        node_id=row[11],
        calibration=(int(calibration[0]), int(calibration[1])) if calibration is not None else None,
    )


def _info(row: Sequence[Any]) -> ConversationInfo:
    return ConversationInfo(
        id=row[0],
        title=row[1],
        model=row[2],
        created_at=row[3],
        updated_at=row[4],
        message_count=row[5],
        cost_usd=row[6],
    )


def _stored(cursor: psycopg.Cursor[Any], conversation_id: str, candidates: Sequence[str | None]) -> set[str]:
    """Which of `candidates` are nodes of the conversation (one query, in the open transaction)."""
    wanted = [c for c in dict.fromkeys(candidates) if isinstance(c, str)]
    if not wanted:
        return set()
    rows = cursor.execute(
        "SELECT id FROM nodes WHERE conversation_id = %s AND id = ANY(%s)", (conversation_id, wanted)
    ).fetchall()
    return {row[0] for row in rows}


@dataclass(frozen=True, slots=True)
class _Locked:
    """A conversation's row locked by the open transaction, and one branch as it is under that lock."""

    cost: str
    exists: bool
    head: str | None

    def check(self, branch: str, expected: str | None) -> None:
        if self.head != expected:
            raise ConflictError(f"branch {branch!r} moved (expected head {expected!r}, found {self.head!r})")


class PostgresStore:
    """A `Store` in a PostgreSQL database: `PostgresStore("postgresql://user@host:5432/db")`. Thread-safe (a
    connection pool); any number of processes and hosts may share the database.

    `schema` names the PostgreSQL schema holding the tables (created if missing). `max_connections` bounds the
    pool; `timeout` is how long (seconds) a call waits for a connection, e.g. while the server restarts, before
    it fails with `StorageError`.
    """

    def __init__(
        self, conninfo: str, *, schema: str = "turnkeep", max_connections: int = 10, timeout: float = 10.0
    ) -> None:
        driver, _ = _driver()
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise UsageError(f"schema must be a lower-case SQL name (letters, digits, _), not {schema!r}")
        if max_connections < 1:
            raise UsageError(f"max_connections must be at least 1, not {max_connections}")
        self._psycopg = driver
        self.url: str = redact(conninfo)
        """The connection string with any password replaced by ***."""
        self.server: str = _server(conninfo, driver)
        """Where the database is: "host:port/dbname"."""
        self.schema = schema
        self._timeout = timeout
        self._max_connections = max_connections
        self._conninfo = conninfo  # kept for reconnecting; never shown (see `url`)
        self._revive_lock = threading.Lock()
        self._connect(conninfo)
        self._pool = self._new_pool()

    def _new_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        pools = _driver()[1]
        pool: psycopg_pool.ConnectionPool[Any] = pools.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._max_connections,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=pools.ConnectionPool.check_connection,  # a connection broken by a restart is replaced, not used
            timeout=self._timeout,
            open=False,
            name=f"turnkeep-{self.schema}",
        )
        try:
            pool.open(wait=True, timeout=self._timeout)
        except pools.PoolTimeout as err:
            pool.close()
            raise StorageError(f"cannot connect to PostgreSQL at {self.server}: {err}") from err
        return pool

    def _configure(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute(f"SET search_path TO {self.schema}")

    def _connect(self, conninfo: str) -> None:
        """The first connection: proves the server answers (one clear error if not) and migrates the schema."""
        psycopg = self._psycopg
        try:
            connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, round(self._timeout)))
        except psycopg.Error as err:
            raise StorageError(f"cannot connect to PostgreSQL at {self.server}: {_reason(err)}") from err
        try:
            with connection:
                self._configure(connection)
                self._migrate(connection)
        except psycopg.Error as err:
            raise StorageError(f"PostgreSQL at {self.server}: {_reason(err)}") from err

    def _migrate(self, connection: psycopg.Connection[Any]) -> None:
        with connection.transaction():
            # One process migrates; the others wait here, then find the work done.
            connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"turnkeep schema {self.schema}",))
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            connection.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = connection.execute("SELECT version FROM schema_version").fetchone()
            version: int = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"the store at {self.server} (schema {self.schema}) has schema version {version}; this "
                    f"turnkeep knows up to {len(MIGRATIONS)}: upgrade turnkeep"
                )
            for number in range(version, len(MIGRATIONS)):
                connection.execute(MIGRATIONS[number].encode())
            if row is None:
                connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS),))
            elif version < len(MIGRATIONS):
                connection.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))

    def close(self) -> None:
        """Close the pool's connections (the store cannot be used afterwards)."""
        with self._revive_lock:
            self._pool.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, schema={self.schema!r})"

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _checkout(self) -> tuple[psycopg_pool.ConnectionPool[Any], psycopg.Connection[Any]]:
        """A connection from the pool, waiting up to `timeout` for one.

        The pool retries a lost server with a growing back-off (up to minutes between attempts); so the wait is
        cut into short slices, and after each empty one the server is asked directly: once it answers again, a
        fresh pool takes over at once. Still down at the end: StorageError with libpq's reason.
        """
        pools = _driver()[1]
        deadline = time.monotonic() + self._timeout
        while True:
            pool = self._pool
            try:
                return pool, pool.getconn(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except pools.PoolTimeout:
                reason = self._revive(pool)
                if reason is not None and time.monotonic() >= deadline:
                    raise StorageError(f"PostgreSQL at {self.server} is unreachable: {reason}") from None

    def _revive(self, failed: psycopg_pool.ConnectionPool[Any]) -> str | None:
        """Replace `failed` with a new pool if the server answers now; else why it does not."""
        psycopg = self._psycopg
        with self._revive_lock:
            if self._pool is not failed:
                return None  # another thread already did
            try:
                psycopg.connect(self._conninfo, connect_timeout=max(1, round(self._timeout))).close()
            except psycopg.Error as err:
                return _reason(err)
            self._pool = self._new_pool()
        failed.close(timeout=1)
        return None

    @contextmanager
    def _cursor(self, *, write: bool = False, snapshot: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor inside one transaction (a write, or a read that must see one snapshot) or in autocommit
        (a single read); psycopg errors become StorageError."""
        psycopg = self._psycopg
        pool, connection = self._checkout()
        try:
            if not (write or snapshot):
                with connection.cursor() as cursor:
                    yield cursor
                return
            with connection.transaction(), connection.cursor() as cursor:
                if snapshot:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield cursor
        except psycopg.Error as err:
            raise StorageError(f"PostgreSQL at {self.server}: {_reason(err)}") from err
        finally:
            pool.putconn(connection)

    def _read(self, query: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._cursor() as cursor:
            return cursor.execute(query, parameters).fetchall()

    def _read_existing(
        self, conversation_id: str, query: str, parameters: Sequence[Any] | Mapping[str, Any]
    ) -> list[Any]:
        """Rows of `query`, after checking the conversation exists (one snapshot)."""
        with self._cursor(snapshot=True) as cursor:
            if cursor.execute("SELECT 1 FROM conversations WHERE id = %s", (conversation_id,)).fetchone() is None:
                raise UnknownConversation(f"no conversation {conversation_id!r}")
            return cursor.execute(query, parameters).fetchall()

    @staticmethod
    def _lock(cursor: psycopg.Cursor[Any], conversation_id: str, branch: str = "") -> _Locked:
        """Lock the conversation's row for this transaction (writers of one conversation take turns); returns its
        running cost and what `branch` points at once the lock is held.

        Two statements, not one join: a statement that waited for the lock sees the rows it joined as they were
        when it started (PostgreSQL re-reads only the locked row), so a joined head could be one a racing writer
        has just moved. The second statement starts after the lock is ours and sees the committed head."""
        row = cursor.execute(
            "SELECT cost_usd FROM conversations WHERE id = %s FOR UPDATE", (conversation_id,)
        ).fetchone()
        if row is None:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        if not branch:
            return _Locked(row[0], False, None)
        head = cursor.execute(
            "SELECT head FROM branches WHERE conversation_id = %s AND name = %s", (conversation_id, branch)
        ).fetchone()
        return _Locked(row[0], head is not None, head[0] if head is not None else None)

    @staticmethod
    def _touch(
        cursor: psycopg.Cursor[Any], conversation_id: str, *, cost: str | None = None, title: str | None = None
    ) -> None:
        """The conversation was written now: most recently updated; its new cost and (if it had none) title."""
        cursor.execute(
            "UPDATE conversations SET updated_at = %s, touched = nextval('touches'), "
            "cost_usd = coalesce(%s, cost_usd), title = coalesce(title, %s) WHERE id = %s",
            (time.time(), cost, title, conversation_id),
        )

    @staticmethod
    def _insert_nodes(cursor: psycopg.Cursor[Any], conversation_id: str, nodes: Sequence[Node]) -> str | None:
        """Insert nodes with their search text; returns the first title found among them."""
        title = None
        rows = []
        for node in nodes:
            rows.append(
                (
                    conversation_id,
                    node.id,
                    node.parent_id,
                    str(node.message["role"]),
                    dumps(node.message, f"message of node {node.id!r}"),
                    node.status,
                    dumps(node.meta, f"meta of node {node.id!r}"),
                    searchable_text(node.message) or None,
                )
            )
            title = title or title_of(node.message)
        if rows:
            cursor.executemany(
                "INSERT INTO nodes (conversation_id, id, parent_id, role, message, status, meta, search_text) "
                "VALUES (%s, %s, %s, %s, %s::json, %s, %s::json, %s)",
                rows,
            )
        return title

    @staticmethod
    def _insert_conversation(
        cursor: psycopg.Cursor[Any], conversation_id: str, settings: str, created_at: float, updated_at: float
    ) -> None:
        """The conversation's own row (ConflictError if the id is taken), most recently touched."""
        inserted = cursor.execute(
            "INSERT INTO conversations (id, settings, created_at, updated_at) VALUES (%s, %s::json, %s, %s) "
            "ON CONFLICT (id) DO NOTHING RETURNING 1",
            (conversation_id, settings, created_at, updated_at),
        ).fetchone()
        if inserted is None:
            raise ConflictError(f"conversation {conversation_id!r} already exists")

    @staticmethod
    def _insert_ledger(
        cursor: psycopg.Cursor[Any], conversation_id: str, cost: str, ledger: Sequence[LedgerEntry]
    ) -> str | None:
        """Insert ledger entries; returns the conversation's new running cost (None: unchanged)."""
        if not ledger:
            return None
        cursor.executemany(
            f"INSERT INTO ledger (conversation_id, {_LEDGER_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s, %s, %s, %s::json)",
            [
                (
                    conversation_id,
                    e.purpose,
                    e.model,
                    e.request_id,
                    e.message_id,
                    e.stop_reason,
                    dumps(e.usage, "ledger usage"),
                    e.cost_usd,
                    e.latency_ms,
                    e.at,
                    e.error,
                    e.cache_miss_reason,
                    e.node_id,
                    json.dumps(list(e.calibration)) if e.calibration is not None else None,
                )
                for e in ledger
            ],
        )
        return str(Decimal(cost) + sum((Decimal(e.cost_usd) for e in ledger), Decimal(0)))

    # -- the Store protocol ---------------------------------------------------------------------------------------

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        check_no_secrets(settings)
        encoded = dumps(dict(settings), "settings")
        now = time.time()
        with self._cursor(write=True) as cursor:
            self._insert_conversation(cursor, conversation_id, encoded, now, now)
            cursor.execute(
                "INSERT INTO branches (conversation_id, name, head) VALUES (%s, 'main', NULL)", (conversation_id,)
            )

    def settings(self, conversation_id: str) -> dict[str, Any]:
        rows = self._read("SELECT settings::text FROM conversations WHERE id = %s", (conversation_id,))
        if not rows:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        settings: dict[str, Any] = json.loads(rows[0][0])
        return settings

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        check_no_secrets(changes)
        dumps(dict(changes), "settings")
        with self._cursor(write=True) as cursor:
            self._lock(cursor, conversation_id)
            (text,) = cursor.execute(
                "SELECT settings::text FROM conversations WHERE id = %s", (conversation_id,)
            ).fetchone() or ("{}",)
            settings = json.loads(text)
            settings.update(changes)
            cursor.execute(
                "UPDATE conversations SET settings = %s::json WHERE id = %s",
                (dumps(settings, "settings"), conversation_id),
            )
            self._touch(cursor, conversation_id)

    def branches(self, conversation_id: str) -> dict[str, str | None]:
        rows = self._read_existing(
            conversation_id,
            "SELECT name, head FROM branches WHERE conversation_id = %s ORDER BY created",
            (conversation_id,),
        )
        return dict(rows)

    def path(self, conversation_id: str, head: str | None) -> list[Node]:
        if head is None:
            self._read_existing(conversation_id, "SELECT 1", ())
            return []
        rows = self._read_existing(conversation_id, _PATH, {"conversation": conversation_id, "head": head})
        if not rows:
            raise UsageError(f"conversation {conversation_id!r} has no node {head!r}")
        return [_node(row) for row in rows]

    def append(
        self,
        conversation_id: str,
        branch: str,
        *,
        expected_head: str | None,
        nodes: Sequence[Node] = (),
        settle: Mapping[str, NodeStatus] | None = None,
        ledger: Sequence[LedgerEntry] = (),
        policy_state: Mapping[str, Any] | None = None,
    ) -> None:
        state = dumps(dict(policy_state), "policy state") if policy_state is not None else None
        with self._cursor(write=True) as cursor:
            locked = self._lock(cursor, conversation_id, branch)
            locked.check(branch, expected_head)
            for node_id, status in (settle or {}).items():
                check_status(status, f"settle of node {node_id!r}")
                cursor.execute(
                    "UPDATE nodes SET status = %s WHERE conversation_id = %s AND id = %s",
                    (status, conversation_id, node_id),
                )
                if cursor.rowcount != 1:
                    raise UsageError(f"no node {node_id!r} to settle in conversation {conversation_id!r}")
            ids = [node.id for node in nodes] + [node.parent_id for node in nodes if node.parent_id is not None]
            check_new_nodes(nodes, _stored(cursor, conversation_id, ids))
            title = self._insert_nodes(cursor, conversation_id, nodes)
            if nodes:
                cursor.execute(
                    "INSERT INTO branches (conversation_id, name, head) VALUES (%s, %s, %s) "
                    "ON CONFLICT (conversation_id, name) DO UPDATE SET head = excluded.head",
                    (conversation_id, branch, nodes[-1].id),
                )
            cost = self._insert_ledger(cursor, conversation_id, locked.cost, ledger)
            if state is not None:
                cursor.execute(
                    "INSERT INTO branch_policy_state (conversation_id, branch, state) VALUES (%s, %s, %s::json) "
                    "ON CONFLICT (conversation_id, branch) DO UPDATE SET state = excluded.state",
                    (conversation_id, branch, state),
                )
            self._touch(cursor, conversation_id, cost=cost, title=title)

    def move_head(self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None) -> None:
        if not isinstance(branch, str) or not branch:
            raise UsageError(f"a branch name is a non-empty string, not {branch!r}")
        with self._cursor(write=True) as cursor:
            locked = self._lock(cursor, conversation_id, branch)
            if locked.exists:
                locked.check(branch, expected_head)
            if new_head is not None and new_head not in _stored(cursor, conversation_id, [new_head]):
                raise UsageError(f"conversation {conversation_id!r} has no node {new_head!r}")
            cursor.execute(
                "INSERT INTO branches (conversation_id, name, head) VALUES (%s, %s, %s) "
                "ON CONFLICT (conversation_id, name) DO UPDATE SET head = excluded.head",
                (conversation_id, branch, new_head),
            )
            self._touch(cursor, conversation_id)

    def discard(self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]) -> None:
        with self._cursor(write=True) as cursor:
            self._lock(cursor, conversation_id, branch).check(branch, expected_head)
            if not node_ids:
                return
            found: dict[str, tuple[int, str | None]] = {}
            children: dict[str, list[str]] = {}
            for node_id in node_ids:
                row = cursor.execute(
                    "SELECT seq, parent_id FROM nodes WHERE conversation_id = %s AND id = %s",
                    (conversation_id, node_id),
                ).fetchone()
                if row is None:
                    raise UsageError(f"no node {node_id!r} to discard in conversation {conversation_id!r}")
                found[node_id] = (row[0], row[1])
                children[node_id] = [
                    child
                    for (child,) in cursor.execute(
                        "SELECT id FROM nodes WHERE conversation_id = %s AND parent_id = %s", (conversation_id, node_id)
                    ).fetchall()
                ]
            heads = dict(
                cursor.execute(
                    "SELECT name, head FROM branches WHERE conversation_id = %s", (conversation_id,)
                ).fetchall()
            )
            check_discard(node_ids, branch, children, heads)
            cursor.execute(
                "UPDATE branches SET head = %s WHERE conversation_id = %s AND name = %s",
                (found[node_ids[0]][1], conversation_id, branch),
            )
            cursor.execute("DELETE FROM nodes WHERE seq = ANY(%s)", ([seq for seq, _ in found.values()],))
            title = None
            for (message,) in cursor.execute(
                "SELECT message::text FROM nodes WHERE conversation_id = %s AND role = 'user' ORDER BY seq",
                (conversation_id,),
            ).fetchall():
                title = title_of(json.loads(message))
                if title is not None:
                    break
            cursor.execute("UPDATE conversations SET title = %s WHERE id = %s", (title, conversation_id))
            self._touch(cursor, conversation_id)

    def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        with self._cursor(write=True) as cursor:
            locked = self._lock(cursor, conversation_id)
            self._touch(cursor, conversation_id, cost=self._insert_ledger(cursor, conversation_id, locked.cost, ledger))

    def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        rows = self._read_existing(
            conversation_id,
            f"SELECT {_LEDGER_SELECT} FROM ledger WHERE conversation_id = %s ORDER BY seq",
            (conversation_id,),
        )
        return [_entry(row) for row in rows]

    def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        rows = self._read_existing(
            conversation_id,
            "SELECT state::text FROM branch_policy_state WHERE conversation_id = %s AND branch = %s",
            (conversation_id, branch),
        )
        state: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
        return state

    def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        rows = self._read_existing(
            conversation_id,
            "SELECT branch, state::text FROM branch_policy_state WHERE conversation_id = %s "
            'ORDER BY branch COLLATE "C"',
            (conversation_id,),
        )
        return {branch: json.loads(state) for branch, state in rows}

    def nodes(self, conversation_id: str) -> list[Node]:
        rows = self._read_existing(
            conversation_id,
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE conversation_id = %s ORDER BY seq",
            (conversation_id,),
        )
        return [_node(row) for row in rows]

    def info(self, conversation_id: str) -> ConversationInfo:
        rows = self._read(f"{_INFO} WHERE c.id = %s", (conversation_id,))
        if not rows:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        return _info(rows[0])

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        check_page(limit, offset)
        rows = self._read(f"{_INFO} ORDER BY c.updated_at DESC, c.touched DESC LIMIT %s OFFSET %s", (limit, offset))
        return [_info(row) for row in rows]

    def count_conversations(self) -> int:
        count: int = self._read("SELECT count(*) FROM conversations")[0][0]
        return count

    def latest(self) -> str | None:
        rows = self._read("SELECT id FROM conversations ORDER BY updated_at DESC, touched DESC LIMIT 1")
        return rows[0][0] if rows else None

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Full-text search (PostgreSQL web-search syntax: words, "phrases", OR, -word), best match first.
        Words are matched whole and case-insensitively, not stemmed."""
        text = check_query(query)
        check_page(limit, 0)
        rows = self._read(
            "WITH q AS (SELECT websearch_to_tsquery('simple', %(query)s) AS query) "
            "SELECT nodes.conversation_id, nodes.id, nodes.role, ts_headline('simple', nodes.search_text, q.query, "
            "%(options)s) FROM nodes, q WHERE nodes.search @@ q.query "
            "ORDER BY ts_rank(nodes.search, q.query) DESC, nodes.seq DESC LIMIT %(limit)s",
            {"query": text, "options": _SNIPPET, "limit": limit},
        )
        return [SearchHit(c, n, r, " ".join(s.split())) for c, n, r, s in rows]

    def delete(self, conversation_id: str) -> None:
        with self._cursor(write=True) as cursor:
            self._lock(cursor, conversation_id)
            cursor.execute("DELETE FROM conversations WHERE id = %s", (conversation_id,))

    def restore(
        self,
        conversation_id: str,
        *,
        settings: Mapping[str, Any],
        nodes: Sequence[Node],
        branches: Mapping[str, str | None],
        ledger: Sequence[LedgerEntry] = (),
        policy_states: Mapping[str, Mapping[str, Any]] | None = None,
        created_at: float | None = None,
        updated_at: float | None = None,
    ) -> None:
        check_no_secrets(settings)
        encoded = dumps(dict(settings), "settings")
        check_new_nodes(nodes, ())
        ids = {n.id for n in nodes}
        for name, head in branches.items():
            if head is not None and head not in ids:
                raise UsageError(f"head {head!r} of branch {name!r} is not a node")
            if not isinstance(name, str) or not name:
                raise UsageError(f"a branch name is a non-empty string, not {name!r}")
        states = [(name, dumps(dict(state), "policy state")) for name, state in (policy_states or {}).items()]
        unknown = sorted({name for name, _ in states} - set(branches))
        if unknown:
            raise UsageError(f"policy state for {unknown[0]!r}, which is not a branch")
        now = time.time()
        with self._cursor(write=True) as cursor:
            created = created_at if created_at is not None else now
            self._insert_conversation(
                cursor, conversation_id, encoded, created, updated_at if updated_at is not None else now
            )
            title = self._insert_nodes(cursor, conversation_id, nodes)
            cursor.execute("UPDATE conversations SET title = %s WHERE id = %s", (title, conversation_id))
            cursor.executemany(
                "INSERT INTO branches (conversation_id, name, head) VALUES (%s, %s, %s)",
                [(conversation_id, name, head) for name, head in branches.items()],
            )
            cost = self._insert_ledger(cursor, conversation_id, "0", ledger)
            if cost is not None:
                cursor.execute("UPDATE conversations SET cost_usd = %s WHERE id = %s", (cost, conversation_id))
            cursor.executemany(
                "INSERT INTO branch_policy_state (conversation_id, branch, state) VALUES (%s, %s, %s::json)",
                [(conversation_id, name, state) for name, state in states],
            )


def _reason(err: BaseException) -> str:
    """The first line of a driver error (libpq's messages name host and port, never the password)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
