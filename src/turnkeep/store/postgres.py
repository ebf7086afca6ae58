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

import asyncio
import json
import re
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

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
    ledger_row,
    nodes_from_rows,
    searchable_text,
    title_of,
)

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["MIGRATIONS", "AsyncPostgresStore", "PostgresStore", "is_url", "redact"]

T = TypeVar("T")

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
    # 3: an entry whose usage and cost are estimated (the response was lost or cut before its usage arrived).
    """
    ALTER TABLE ledger ADD COLUMN estimated boolean NOT NULL DEFAULT false;
    """,
)

_NODE_COLUMNS = "id, parent_id, message::text, status, meta::text"
_LEDGER_COLUMNS = (
    "purpose, model, request_id, message_id, stop_reason, usage, cost_usd, latency_ms, at, error, "
    "cache_miss_reason, node_id, calibration, estimated"
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
        estimated=bool(row[13]),
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


@dataclass(frozen=True, slots=True)
class _Locked:
    """A conversation's row locked by the open transaction, and one branch as it is under that lock."""

    cost: str
    exists: bool
    head: str | None

    def check(self, branch: str, expected: str | None) -> None:
        if self.head != expected:
            raise ConflictError(f"branch {branch!r} moved (expected head {expected!r}, found {self.head!r})")


# -- the store's logic, written once ----------------------------------------------------------------------------
# Each operation is a generator that yields the statements it needs (`_Op`) and receives their results, so the
# sync store (psycopg's pool) and the async store (its async pool) run the very same logic. It runs inside one
# transaction: a write (`WRITE`), a read that must see one snapshot (`SNAPSHOT`), or a single read (`READ`).

READ, SNAPSHOT, WRITE = "read", "snapshot", "write"


@dataclass(frozen=True, slots=True)
class _Op:
    sql: str
    params: Any = ()
    result: str = "none"  # "none", "one", "all", "rowcount", "many" (executemany)


Ops = Generator[_Op, Any, T]


def _one(sql: str, params: Any = ()) -> _Op:
    return _Op(sql, params, "one")


def _all(sql: str, params: Any = ()) -> _Op:
    return _Op(sql, params, "all")


def _require(conversation_id: str) -> Ops[None]:
    if (yield _one("SELECT 1 FROM conversations WHERE id = %s", (conversation_id,))) is None:
        raise UnknownConversation(f"no conversation {conversation_id!r}")


def _existing_rows(conversation_id: str, sql: str, params: Any) -> Ops[list[Any]]:
    """Rows of `sql`, after checking the conversation exists (run it as SNAPSHOT)."""
    yield from _require(conversation_id)
    rows: list[Any] = yield _all(sql, params)
    return rows


def _lock(conversation_id: str, branch: str = "") -> Ops[_Locked]:
    """Lock the conversation's row for this transaction (writers of one conversation take turns); returns its
    running cost and what `branch` points at once the lock is held.

    Two statements, not one join: a statement that waited for the lock sees the rows it joined as they were
    when it started (PostgreSQL re-reads only the locked row), so a joined head could be one a racing writer
    has just moved. The second statement starts after the lock is ours and sees the committed head."""
    row = yield _one("SELECT cost_usd FROM conversations WHERE id = %s FOR UPDATE", (conversation_id,))
    if row is None:
        raise UnknownConversation(f"no conversation {conversation_id!r}")
    if not branch:
        return _Locked(row[0], False, None)
    head = yield _one("SELECT head FROM branches WHERE conversation_id = %s AND name = %s", (conversation_id, branch))
    return _Locked(row[0], head is not None, head[0] if head is not None else None)


def _stored(conversation_id: str, candidates: Sequence[str | None]) -> Ops[set[str]]:
    """Which of `candidates` are nodes of the conversation (one query)."""
    wanted = [c for c in dict.fromkeys(candidates) if isinstance(c, str)]
    if not wanted:
        return set()
    rows = yield _all("SELECT id FROM nodes WHERE conversation_id = %s AND id = ANY(%s)", (conversation_id, wanted))
    return {row[0] for row in rows}


def _touch(conversation_id: str, *, cost: str | None = None, title: str | None = None) -> _Op:
    """The conversation was written now: most recently updated; its new cost and (if it had none) title."""
    return _Op(
        "UPDATE conversations SET updated_at = %s, touched = nextval('touches'), "
        "cost_usd = coalesce(%s, cost_usd), title = coalesce(title, %s) WHERE id = %s",
        (time.time(), cost, title, conversation_id),
    )


def _insert_nodes(conversation_id: str, nodes: Sequence[Node]) -> Ops[str | None]:
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
                dumps(node.message, f"message of node {node.id!r}", checked=True),
                node.status,
                dumps(node.meta, f"meta of node {node.id!r}", checked=True),
                searchable_text(node.message) or None,
            )
        )
        title = title or title_of(node.message)
    if rows:
        yield _Op(
            "INSERT INTO nodes (conversation_id, id, parent_id, role, message, status, meta, search_text) "
            "VALUES (%s, %s, %s, %s, %s::json, %s, %s::json, %s)",
            rows,
            "many",
        )
    return title


def _insert_conversation(conversation_id: str, settings: str, created_at: float, updated_at: float) -> Ops[None]:
    """The conversation's own row (ConflictError if the id is taken), most recently touched."""
    inserted = yield _one(
        "INSERT INTO conversations (id, settings, created_at, updated_at) VALUES (%s, %s::json, %s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING 1",
        (conversation_id, settings, created_at, updated_at),
    )
    if inserted is None:
        raise ConflictError(f"conversation {conversation_id!r} already exists")


def _insert_ledger(conversation_id: str, cost: str, ledger: Sequence[LedgerEntry]) -> Ops[str | None]:
    """Insert ledger entries; returns the conversation's new running cost (None: unchanged)."""
    if not ledger:
        return None
    yield _Op(
        f"INSERT INTO ledger (conversation_id, {_LEDGER_COLUMNS}) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s, %s, %s, %s::json, %s)",
        [ledger_row(conversation_id, e) for e in ledger],
        "many",
    )
    return str(Decimal(cost) + sum((Decimal(e.cost_usd) for e in ledger), Decimal(0)))


def _create(conversation_id: str, encoded: str) -> Ops[None]:
    now = time.time()
    yield from _insert_conversation(conversation_id, encoded, now, now)
    yield _Op("INSERT INTO branches (conversation_id, name, head) VALUES (%s, 'main', NULL)", (conversation_id,))


def _settings(conversation_id: str) -> Ops[dict[str, Any]]:
    row = yield _one("SELECT settings::text FROM conversations WHERE id = %s", (conversation_id,))
    if row is None:
        raise UnknownConversation(f"no conversation {conversation_id!r}")
    settings: dict[str, Any] = json.loads(row[0])
    return settings


def _update_settings(conversation_id: str, changes: Mapping[str, Any]) -> Ops[None]:
    yield from _lock(conversation_id)
    settings = yield from _settings(conversation_id)
    settings.update(changes)
    yield _Op(
        "UPDATE conversations SET settings = %s::json WHERE id = %s", (dumps(settings, "settings"), conversation_id)
    )
    yield _touch(conversation_id)


def _branches(conversation_id: str) -> Ops[dict[str, str | None]]:
    rows = yield from _existing_rows(
        conversation_id,
        "SELECT name, head FROM branches WHERE conversation_id = %s ORDER BY created",
        (conversation_id,),
    )
    return dict(rows)


def _path(conversation_id: str, head: str | None) -> Ops[list[Node]]:
    if head is None:
        yield from _require(conversation_id)
        return []
    rows = yield from _existing_rows(conversation_id, _PATH, {"conversation": conversation_id, "head": head})
    if not rows:
        raise UsageError(f"conversation {conversation_id!r} has no node {head!r}")
    return nodes_from_rows(rows)


def _append(
    conversation_id: str,
    branch: str,
    expected_head: str | None,
    nodes: Sequence[Node],
    settle: Mapping[str, NodeStatus] | None,
    ledger: Sequence[LedgerEntry],
    state: str | None,
) -> Ops[None]:
    locked = yield from _lock(conversation_id, branch)
    locked.check(branch, expected_head)
    for node_id, status in (settle or {}).items():
        check_status(status, f"settle of node {node_id!r}")
        updated = yield _Op(
            "UPDATE nodes SET status = %s WHERE conversation_id = %s AND id = %s",
            (status, conversation_id, node_id),
            "rowcount",
        )
        if updated != 1:
            raise UsageError(f"no node {node_id!r} to settle in conversation {conversation_id!r}")
    ids = [node.id for node in nodes] + [node.parent_id for node in nodes if node.parent_id is not None]
    check_new_nodes(nodes, (yield from _stored(conversation_id, ids)))
    title = yield from _insert_nodes(conversation_id, nodes)
    if nodes:
        yield _Op(
            "INSERT INTO branches (conversation_id, name, head) VALUES (%s, %s, %s) "
            "ON CONFLICT (conversation_id, name) DO UPDATE SET head = excluded.head",
            (conversation_id, branch, nodes[-1].id),
        )
    cost = yield from _insert_ledger(conversation_id, locked.cost, ledger)
    if state is not None:
        yield _Op(
            "INSERT INTO branch_policy_state (conversation_id, branch, state) VALUES (%s, %s, %s::json) "
            "ON CONFLICT (conversation_id, branch) DO UPDATE SET state = excluded.state",
            (conversation_id, branch, state),
        )
    yield _touch(conversation_id, cost=cost, title=title)


def _move_head(conversation_id: str, branch: str, expected_head: str | None, new_head: str | None) -> Ops[None]:
    if not isinstance(branch, str) or not branch:
        raise UsageError(f"a branch name is a non-empty string, not {branch!r}")
    locked = yield from _lock(conversation_id, branch)
    if locked.exists:
        locked.check(branch, expected_head)
    if new_head is not None and new_head not in (yield from _stored(conversation_id, [new_head])):
        raise UsageError(f"conversation {conversation_id!r} has no node {new_head!r}")
    yield _Op(
        "INSERT INTO branches (conversation_id, name, head) VALUES (%s, %s, %s) "
        "ON CONFLICT (conversation_id, name) DO UPDATE SET head = excluded.head",
        (conversation_id, branch, new_head),
    )
    yield _touch(conversation_id)


def _discard(conversation_id: str, branch: str, expected_head: str | None, node_ids: Sequence[str]) -> Ops[None]:
    (yield from _lock(conversation_id, branch)).check(branch, expected_head)
    if not node_ids:
        return
    found: dict[str, tuple[int, str | None]] = {}
    children: dict[str, list[str]] = {}
    for node_id in node_ids:
        row = yield _one(
            "SELECT seq, parent_id FROM nodes WHERE conversation_id = %s AND id = %s", (conversation_id, node_id)
        )
        if row is None:
            raise UsageError(f"no node {node_id!r} to discard in conversation {conversation_id!r}")
        found[node_id] = (row[0], row[1])
        rows = yield _all(
            "SELECT id FROM nodes WHERE conversation_id = %s AND parent_id = %s", (conversation_id, node_id)
        )
        children[node_id] = [child for (child,) in rows]
    heads = dict((yield _all("SELECT name, head FROM branches WHERE conversation_id = %s", (conversation_id,))))
    check_discard(node_ids, branch, children, heads)
    yield _Op(
        "UPDATE branches SET head = %s WHERE conversation_id = %s AND name = %s",
        (found[node_ids[0]][1], conversation_id, branch),
    )
    yield _Op("DELETE FROM nodes WHERE seq = ANY(%s)", ([seq for seq, _ in found.values()],))
    title = None
    users = yield _all(
        "SELECT message::text FROM nodes WHERE conversation_id = %s AND role = 'user' ORDER BY seq", (conversation_id,)
    )
    for (message,) in users:
        title = title_of(json.loads(message))
        if title is not None:
            break
    yield _Op("UPDATE conversations SET title = %s WHERE id = %s", (title, conversation_id))
    yield _touch(conversation_id)


def _record(conversation_id: str, ledger: Sequence[LedgerEntry]) -> Ops[None]:
    locked = yield from _lock(conversation_id)
    yield _touch(conversation_id, cost=(yield from _insert_ledger(conversation_id, locked.cost, ledger)))


def _ledger(conversation_id: str) -> Ops[list[LedgerEntry]]:
    rows = yield from _existing_rows(
        conversation_id,
        f"SELECT {_LEDGER_SELECT} FROM ledger WHERE conversation_id = %s ORDER BY seq",
        (conversation_id,),
    )
    return [_entry(row) for row in rows]


def _policy_state(conversation_id: str, branch: str) -> Ops[dict[str, Any]]:
    rows = yield from _existing_rows(
        conversation_id,
        "SELECT state::text FROM branch_policy_state WHERE conversation_id = %s AND branch = %s",
        (conversation_id, branch),
    )
    state: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
    return state


def _policy_states(conversation_id: str) -> Ops[dict[str, dict[str, Any]]]:
    rows = yield from _existing_rows(
        conversation_id,
        'SELECT branch, state::text FROM branch_policy_state WHERE conversation_id = %s ORDER BY branch COLLATE "C"',
        (conversation_id,),
    )
    return {branch: json.loads(state) for branch, state in rows}


def _nodes(conversation_id: str) -> Ops[list[Node]]:
    rows = yield from _existing_rows(
        conversation_id,
        f"SELECT {_NODE_COLUMNS} FROM nodes WHERE conversation_id = %s ORDER BY seq",
        (conversation_id,),
    )
    return nodes_from_rows(rows)


def _info_of(conversation_id: str) -> Ops[ConversationInfo]:
    row = yield _one(f"{_INFO} WHERE c.id = %s", (conversation_id,))
    if row is None:
        raise UnknownConversation(f"no conversation {conversation_id!r}")
    return _info(row)


def _list(limit: int, offset: int) -> Ops[list[ConversationInfo]]:
    check_page(limit, offset)
    rows = yield _all(f"{_INFO} ORDER BY c.updated_at DESC, c.touched DESC LIMIT %s OFFSET %s", (limit, offset))
    return [_info(row) for row in rows]


def _count() -> Ops[int]:
    row = yield _one("SELECT count(*) FROM conversations")
    count: int = row[0]
    return count


def _latest() -> Ops[str | None]:
    row = yield _one("SELECT id FROM conversations ORDER BY updated_at DESC, touched DESC LIMIT 1")
    return row[0] if row else None


def _search(query: str, limit: int) -> Ops[list[SearchHit]]:
    text = check_query(query)
    check_page(limit, 0)
    rows = yield _all(
        "WITH q AS (SELECT websearch_to_tsquery('simple', %(query)s) AS query) "
        "SELECT nodes.conversation_id, nodes.id, nodes.role, ts_headline('simple', nodes.search_text, q.query, "
        "%(options)s) FROM nodes, q WHERE nodes.search @@ q.query "
        "ORDER BY ts_rank(nodes.search, q.query) DESC, nodes.seq DESC LIMIT %(limit)s",
        {"query": text, "options": _SNIPPET, "limit": limit},
    )
    return [SearchHit(c, n, r, " ".join(s.split())) for c, n, r, s in rows]


def _delete(conversation_id: str) -> Ops[None]:
    yield from _lock(conversation_id)
    yield _Op("DELETE FROM conversations WHERE id = %s", (conversation_id,))


def _restore(
    conversation_id: str,
    settings: Mapping[str, Any],
    nodes: Sequence[Node],
    branches: Mapping[str, str | None],
    ledger: Sequence[LedgerEntry],
    policy_states: Mapping[str, Mapping[str, Any]] | None,
    created_at: float | None,
    updated_at: float | None,
) -> Ops[None]:
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
    created = created_at if created_at is not None else now
    yield from _insert_conversation(conversation_id, encoded, created, updated_at if updated_at is not None else now)
    title = yield from _insert_nodes(conversation_id, nodes)
    yield _Op("UPDATE conversations SET title = %s WHERE id = %s", (title, conversation_id))
    yield _Op(
        "INSERT INTO branches (conversation_id, name, head) VALUES (%s, %s, %s)",
        [(conversation_id, name, head) for name, head in branches.items()],
        "many",
    )
    cost = yield from _insert_ledger(conversation_id, "0", ledger)
    if cost is not None:
        yield _Op("UPDATE conversations SET cost_usd = %s WHERE id = %s", (cost, conversation_id))
    if states:
        yield _Op(
            "INSERT INTO branch_policy_state (conversation_id, branch, state) VALUES (%s, %s, %s::json)",
            [(conversation_id, name, state) for name, state in states],
            "many",
        )


def _migrate(schema: str, server: str) -> Ops[None]:
    # One process migrates; the others wait here, then find the work done.
    yield _Op("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"turnkeep schema {schema}",))
    yield _Op(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    yield _Op("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
    row = yield _one("SELECT version FROM schema_version")
    version: int = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise StorageError(
            f"the store at {server} (schema {schema}) has schema version {version}; this turnkeep knows up to "
            f"{len(MIGRATIONS)}: upgrade turnkeep"
        )
    for number in range(version, len(MIGRATIONS)):
        yield _Op(MIGRATIONS[number], None)
    if row is None:
        yield _Op("INSERT INTO schema_version (version) VALUES (%s)", (len(MIGRATIONS),))
    elif version < len(MIGRATIONS):
        yield _Op("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))


def _execute(cursor: psycopg.Cursor[Any], op: _Op) -> Any:
    if op.result == "many":
        cursor.executemany(op.sql, op.params)
        return None
    if op.params is None:  # a script of several statements (no parameters: the simple query protocol)
        cursor.execute(op.sql.encode())
        return None
    cursor.execute(op.sql, op.params)
    if op.result == "one":
        return cursor.fetchone()
    if op.result == "all":
        return cursor.fetchall()
    return cursor.rowcount if op.result == "rowcount" else None


async def _execute_async(cursor: psycopg.AsyncCursor[Any], op: _Op) -> Any:
    if op.result == "many":
        await cursor.executemany(op.sql, op.params)
        return None
    if op.params is None:
        await cursor.execute(op.sql.encode())
        return None
    await cursor.execute(op.sql, op.params)
    if op.result == "one":
        return await cursor.fetchone()
    if op.result == "all":
        return await cursor.fetchall()
    return cursor.rowcount if op.result == "rowcount" else None


def _drive(cursor: psycopg.Cursor[Any], ops: Ops[T]) -> T:
    """Run an operation's statements on `cursor`, feeding each result back; returns what the operation returns."""
    try:
        op = next(ops)
        while True:
            op = ops.send(_execute(cursor, op))
    except StopIteration as done:
        result: T = done.value
        return result


async def _drive_async(cursor: psycopg.AsyncCursor[Any], ops: Ops[T]) -> T:
    try:
        op = next(ops)
        while True:
            op = ops.send(await _execute_async(cursor, op))
    except StopIteration as done:
        result: T = done.value
        return result


class _Options:
    """What both stores check and keep when they are made."""

    def __init__(self, conninfo: str, schema: str, max_connections: int, timeout: float) -> None:
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

    def _unreachable(self, err: BaseException) -> StorageError:
        return StorageError(f"cannot connect to PostgreSQL at {self.server}: {_reason(err)}")

    def _failed(self, err: BaseException) -> StorageError:
        return StorageError(f"PostgreSQL at {self.server}: {_reason(err)}")


class PostgresStore(_Options):
    """A `Store` in a PostgreSQL database: `PostgresStore("postgresql://user@host:5432/db")`. Thread-safe (a
    connection pool); any number of processes and hosts may share the database.

    `schema` names the PostgreSQL schema holding the tables (created if missing). `max_connections` bounds the
    pool; `timeout` is how long (seconds) a call waits for a connection, e.g. while the server restarts, before
    it fails with `StorageError`. `AsyncPostgresStore` is the same store for asyncio code.
    """

    def __init__(
        self, conninfo: str, *, schema: str = "turnkeep", max_connections: int = 10, timeout: float = 10.0
    ) -> None:
        super().__init__(conninfo, schema, max_connections, timeout)
        self._revive_lock = threading.Lock()
        self._connect()
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

    def _connect(self) -> None:
        """The first connection: proves the server answers (one clear error if not) and migrates the schema."""
        psycopg = self._psycopg
        try:
            connection = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=max(1, round(self._timeout)))
        except psycopg.Error as err:
            raise self._unreachable(err) from err
        try:
            with connection:
                self._configure(connection)
                with connection.transaction(), connection.cursor() as cursor:
                    _drive(cursor, _migrate(self.schema, self.server))
        except psycopg.Error as err:
            raise self._failed(err) from err

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

    def _run(self, ops: Ops[T], mode: str = WRITE) -> T:
        """Run an operation in one transaction (or, for READ, one statement in autocommit)."""
        psycopg = self._psycopg
        pool, connection = self._checkout()
        try:
            if mode == READ:
                with connection.cursor() as cursor:
                    return _drive(cursor, ops)
            with connection.transaction(), connection.cursor() as cursor:
                if mode == SNAPSHOT:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return _drive(cursor, ops)
        except psycopg.Error as err:
            raise self._failed(err) from err
        finally:
            pool.putconn(connection)

    # -- the Store protocol ---------------------------------------------------------------------------------------

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        check_no_secrets(settings)
        self._run(_create(conversation_id, dumps(dict(settings), "settings")))

    def settings(self, conversation_id: str) -> dict[str, Any]:
        return self._run(_settings(conversation_id), READ)

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        check_no_secrets(changes)
        dumps(dict(changes), "settings")
        self._run(_update_settings(conversation_id, changes))

    def branches(self, conversation_id: str) -> dict[str, str | None]:
        return self._run(_branches(conversation_id), SNAPSHOT)

    def path(self, conversation_id: str, head: str | None) -> list[Node]:
        return self._run(_path(conversation_id, head), SNAPSHOT)

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
        self._run(_append(conversation_id, branch, expected_head, nodes, settle, ledger, state))

    def move_head(self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None) -> None:
        self._run(_move_head(conversation_id, branch, expected_head, new_head))

    def discard(self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]) -> None:
        self._run(_discard(conversation_id, branch, expected_head, node_ids))

    def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        self._run(_record(conversation_id, ledger))

    def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        return self._run(_ledger(conversation_id), SNAPSHOT)

    def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        return self._run(_policy_state(conversation_id, branch), SNAPSHOT)

    def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        return self._run(_policy_states(conversation_id), SNAPSHOT)

    def nodes(self, conversation_id: str) -> list[Node]:
        return self._run(_nodes(conversation_id), SNAPSHOT)

    def info(self, conversation_id: str) -> ConversationInfo:
        return self._run(_info_of(conversation_id), READ)

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        return self._run(_list(limit, offset), READ)

    def count_conversations(self) -> int:
        return self._run(_count(), READ)

    def latest(self) -> str | None:
        return self._run(_latest(), READ)

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Full-text search (PostgreSQL web-search syntax: words, "phrases", OR, -word), best match first.
        Words are matched whole and case-insensitively, not stemmed."""
        return self._run(_search(query, limit), READ)

    def delete(self, conversation_id: str) -> None:
        self._run(_delete(conversation_id))

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
        self._run(_restore(conversation_id, settings, nodes, branches, ledger, policy_states, created_at, updated_at))


class AsyncPostgresStore(_Options):
    """The `AsyncStore` on PostgreSQL, for asyncio code: the same tables, logic and guarantees as
    `PostgresStore`, on psycopg's async pool (no thread per call). Make one with `await
    AsyncPostgresStore.open(url)`; close it with `await store.close()` or `async with`."""

    def __init__(self, conninfo: str, *, schema: str, max_connections: int, timeout: float) -> None:
        super().__init__(conninfo, schema, max_connections, timeout)
        self._pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self._revive_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, conninfo: str, *, schema: str = "turnkeep", max_connections: int = 10, timeout: float = 10.0
    ) -> AsyncPostgresStore:
        """Connect (one clear StorageError if the server is not there), migrate the schema, open the pool."""
        store = cls(conninfo, schema=schema, max_connections=max_connections, timeout=timeout)
        psycopg = store._psycopg
        try:
            connection = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, connect_timeout=max(1, round(timeout))
            )
        except psycopg.Error as err:
            raise store._unreachable(err) from err
        try:
            async with connection:
                await store._configure(connection)
                async with connection.transaction(), connection.cursor() as cursor:
                    await _drive_async(cursor, _migrate(store.schema, store.server))
        except psycopg.Error as err:
            raise store._failed(err) from err
        store._pool = await store._new_pool()
        return store

    async def _new_pool(self) -> psycopg_pool.AsyncConnectionPool[Any]:
        pools = _driver()[1]
        pool: psycopg_pool.AsyncConnectionPool[Any] = pools.AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self._max_connections,
            kwargs={"autocommit": True},
            configure=self._configure,
            check=pools.AsyncConnectionPool.check_connection,
            timeout=self._timeout,
            open=False,
            name=f"turnkeep-async-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=self._timeout)
        except pools.PoolTimeout as err:
            await pool.close()
            raise StorageError(f"cannot connect to PostgreSQL at {self.server}: {err}") from err
        return pool

    async def _configure(self, connection: psycopg.AsyncConnection[Any]) -> None:
        await connection.execute(f"SET search_path TO {self.schema}")

    async def close(self) -> None:
        """Close the pool's connections (the store cannot be used afterwards)."""
        async with self._revive_lock:
            if self._pool is not None:
                await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncPostgresStore({self.url!r}, schema={self.schema!r})"

    async def _checkout(self) -> tuple[psycopg_pool.AsyncConnectionPool[Any], psycopg.AsyncConnection[Any]]:
        """As `PostgresStore._checkout`: short waits, and a direct probe of the server between them."""
        pools = _driver()[1]
        deadline = time.monotonic() + self._timeout
        while True:
            pool = self._pool
            if pool is None:
                raise UsageError("an AsyncPostgresStore is made with `await AsyncPostgresStore.open(url)`")
            try:
                return pool, await pool.getconn(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
            except pools.PoolTimeout:
                reason = await self._revive(pool)
                if reason is not None and time.monotonic() >= deadline:
                    raise StorageError(f"PostgreSQL at {self.server} is unreachable: {reason}") from None

    async def _revive(self, failed: psycopg_pool.AsyncConnectionPool[Any]) -> str | None:
        psycopg = self._psycopg
        async with self._revive_lock:
            if self._pool is not failed:
                return None
            try:
                probe = await psycopg.AsyncConnection.connect(
                    self._conninfo, connect_timeout=max(1, round(self._timeout))
                )
                await probe.close()
            except psycopg.Error as err:
                return _reason(err)
            self._pool = await self._new_pool()
        await failed.close(timeout=1)
        return None

    async def _run(self, ops: Ops[T], mode: str = WRITE) -> T:
        psycopg = self._psycopg
        pool, connection = await self._checkout()
        try:
            if mode == READ:
                async with connection.cursor() as cursor:
                    return await _drive_async(cursor, ops)
            async with connection.transaction(), connection.cursor() as cursor:
                if mode == SNAPSHOT:
                    await cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                return await _drive_async(cursor, ops)
        except psycopg.Error as err:
            raise self._failed(err) from err
        finally:
            await pool.putconn(connection)

    # -- the AsyncStore protocol ----------------------------------------------------------------------------------

    async def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        check_no_secrets(settings)
        await self._run(_create(conversation_id, dumps(dict(settings), "settings")))

    async def settings(self, conversation_id: str) -> dict[str, Any]:
        return await self._run(_settings(conversation_id), READ)

    async def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        check_no_secrets(changes)
        dumps(dict(changes), "settings")
        await self._run(_update_settings(conversation_id, changes))

    async def branches(self, conversation_id: str) -> dict[str, str | None]:
        return await self._run(_branches(conversation_id), SNAPSHOT)

    async def path(self, conversation_id: str, head: str | None) -> list[Node]:
        return await self._run(_path(conversation_id, head), SNAPSHOT)

    async def append(
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
        await self._run(_append(conversation_id, branch, expected_head, nodes, settle, ledger, state))

    async def move_head(
        self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None
    ) -> None:
        await self._run(_move_head(conversation_id, branch, expected_head, new_head))

    async def discard(
        self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]
    ) -> None:
        await self._run(_discard(conversation_id, branch, expected_head, node_ids))

    async def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        await self._run(_record(conversation_id, ledger))

    async def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        return await self._run(_ledger(conversation_id), SNAPSHOT)

    async def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        return await self._run(_policy_state(conversation_id, branch), SNAPSHOT)

    async def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        return await self._run(_policy_states(conversation_id), SNAPSHOT)

    async def nodes(self, conversation_id: str) -> list[Node]:
        return await self._run(_nodes(conversation_id), SNAPSHOT)

    async def info(self, conversation_id: str) -> ConversationInfo:
        return await self._run(_info_of(conversation_id), READ)

    async def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        return await self._run(_list(limit, offset), READ)

    async def count_conversations(self) -> int:
        return await self._run(_count(), READ)

    async def latest(self) -> str | None:
        return await self._run(_latest(), READ)

    async def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """As `PostgresStore.search`."""
        return await self._run(_search(query, limit), READ)

    async def delete(self, conversation_id: str) -> None:
        await self._run(_delete(conversation_id))

    async def restore(
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
        await self._run(
            _restore(conversation_id, settings, nodes, branches, ledger, policy_states, created_at, updated_at)
        )


def _reason(err: BaseException) -> str:
    """The first line of a driver error (libpq's messages name host and port, never the password)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
