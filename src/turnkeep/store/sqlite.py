"""`SQLiteStore`: conversations in one SQLite file (stdlib `sqlite3`), durable across restarts and crashes.

- **Schema** (see `MIGRATIONS`): `conversations` (settings JSON, title, times, running cost), `nodes` (the message
  tree: message JSON exactly as given, status, meta JSON; `seq` orders writes), `branches` (name -> head),
  `ledger`, `branch_policy_state` (one per branch), and `messages_fts`, an FTS5 index over message text that
  every write keeps in step.
- **Migrations** run when the store opens: `MIGRATIONS[i]` takes the file from `PRAGMA user_version` i to i+1,
  inside one `BEGIN IMMEDIATE` transaction, so two processes opening a new file at once migrate it once.
- **Atomic writes**: each write is one `BEGIN IMMEDIATE` transaction; the expected-head check runs inside it, so
  of two writers racing on a head exactly one commits and the other gets `ConflictError` with nothing written.
- **Crash safety**: WAL journal; a process killed mid-write leaves the last committed state.
- Every `sqlite3` error becomes `StorageError` (cause kept); the file is created with mode 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

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

__all__ = ["MIGRATIONS", "SQLiteStore"]

BUSY_TIMEOUT_MS = 10_000

# Each script takes the schema from version i to i+1 (`PRAGMA user_version`). Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        settings TEXT NOT NULL,
        title TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        touched INTEGER NOT NULL,
        cost_usd TEXT NOT NULL DEFAULT '0'
    );
    CREATE INDEX conversations_recent ON conversations (updated_at, touched);
    CREATE INDEX conversations_touched ON conversations (touched);
    CREATE TABLE nodes (
        seq INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        parent_id TEXT,
        role TEXT NOT NULL,
        message TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'pending', 'partial', 'refused')),
        meta TEXT NOT NULL,
        UNIQUE (conversation_id, id),
        FOREIGN KEY (conversation_id, parent_id) REFERENCES nodes (conversation_id, id) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX nodes_parent ON nodes (conversation_id, parent_id);
    CREATE TABLE branches (
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        head TEXT,
        PRIMARY KEY (conversation_id, name),
        FOREIGN KEY (conversation_id, head) REFERENCES nodes (conversation_id, id) DEFERRABLE INITIALLY DEFERRED
    );
    CREATE INDEX branches_head ON branches (conversation_id, head);
    CREATE TABLE ledger (
        seq INTEGER PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        purpose TEXT NOT NULL,
        model TEXT NOT NULL,
        request_id TEXT,
        message_id TEXT,
        stop_reason TEXT,
        usage TEXT NOT NULL,
        cost_usd TEXT NOT NULL,
        latency_ms REAL NOT NULL,
        at REAL NOT NULL,
        error TEXT,
        cache_miss_reason TEXT,
        node_id TEXT
    );
    CREATE INDEX ledger_conversation ON ledger (conversation_id, seq);
    CREATE TABLE policy_state (
        conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
        state TEXT NOT NULL
    );
    CREATE VIRTUAL TABLE messages_fts USING fts5 (
        text, conversation_id UNINDEXED, node_id UNINDEXED, role UNINDEXED,
        tokenize = 'unicode61 remove_diacritics 2'
    );
    """,
    # 2: the policy state is kept per branch (a summary of one branch's turns must not stand in for another's).
    # The conversation's one state was written by its last turn: it goes to the branch (or branches) at the most
    # recently written head; the others plan afresh.
    """
    CREATE TABLE branch_policy_state (
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        branch TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (conversation_id, branch)
    );
    INSERT INTO branch_policy_state (conversation_id, branch, state)
        SELECT policy_state.conversation_id, branches.name, policy_state.state
        FROM policy_state
        JOIN branches ON branches.conversation_id = policy_state.conversation_id
        JOIN nodes ON nodes.conversation_id = branches.conversation_id AND nodes.id = branches.head
        WHERE nodes.seq = (
            SELECT max(latest.seq) FROM branches AS other
            JOIN nodes AS latest ON latest.conversation_id = other.conversation_id AND latest.id = other.head
            WHERE other.conversation_id = policy_state.conversation_id
        );
    DROP TABLE policy_state;
    """,
    # 3: each answered request records what it taught the token calibration ("[estimated, measured]").
    """
    ALTER TABLE ledger ADD COLUMN calibration TEXT;
    """,
    # 4: an entry whose usage and cost are estimated (the response was lost or cut before its usage arrived).
    """
    ALTER TABLE ledger ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;
    """,
)

_NODE_COLUMNS = "id, parent_id, message, status, meta"
_LEDGER_COLUMNS = (
    "purpose, model, request_id, message_id, stop_reason, usage, cost_usd, latency_ms, at, error, "
    "cache_miss_reason, node_id, calibration, estimated"
)
_PATH = """
WITH RECURSIVE path (seq, parent_id, depth) AS (
    SELECT seq, parent_id, 0 FROM nodes WHERE conversation_id = :conversation AND id = :head
    UNION ALL
    SELECT nodes.seq, nodes.parent_id, path.depth + 1
    FROM nodes JOIN path ON nodes.conversation_id = :conversation AND nodes.id = path.parent_id
)
SELECT nodes.id, nodes.parent_id, nodes.message, nodes.status, nodes.meta
FROM path JOIN nodes ON nodes.seq = path.seq ORDER BY path.depth DESC
"""
_INFO = """
SELECT c.id, c.title, json_extract(c.settings, '$.model'), c.created_at, c.updated_at,
       (SELECT count(*) FROM nodes WHERE nodes.conversation_id = c.id), c.cost_usd
FROM conversations AS c
"""


def _statements(script: str) -> list[str]:
    """Split a migration script into complete statements (so they run inside our own transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _malformed(query: str) -> bool:
    """Whether FTS5 rejects `query` itself (as opposed to the store failing): try it on an empty index."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5 (text, conversation_id, node_id, role)")
        probe.execute("SELECT * FROM probe WHERE probe MATCH ?", (query,)).fetchall()
    except sqlite3.Error:
        return True
    finally:
        probe.close()
    return False


def _entry(row: Sequence[Any]) -> LedgerEntry:
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
        calibration=_pair(row[12]),
        estimated=bool(row[13]),
    )


def _pair(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    first, second = json.loads(text)
    return int(first), int(second)


def _info(row: Sequence[Any]) -> ConversationInfo:
    model = row[2]
    return ConversationInfo(
        id=row[0],
        title=row[1],
        model=model if isinstance(model, str) else None,
        created_at=row[3],
        updated_at=row[4],
        message_count=row[5],
        cost_usd=row[6],
    )


class _StoredIds:
    """`node_id in ids` for the nodes of one conversation, answered by the open transaction."""

    def __init__(self, connection: sqlite3.Connection, conversation_id: str, known: str | None = None) -> None:
        self._connection = connection
        self._conversation_id = conversation_id
        self._known = known  # a node this transaction already found (a branch's head): not looked up again

    def __contains__(self, node_id: object) -> bool:
        if node_id is not None and node_id == self._known:
            return True
        row = self._connection.execute(
            "SELECT 1 FROM nodes WHERE conversation_id = ? AND id = ?", (self._conversation_id, node_id)
        ).fetchone()
        return row is not None


class SQLiteStore:
    """A `Store` in a SQLite file: `SQLiteStore("chats.db")`. Thread-safe (one connection behind a lock);
    several processes may share the file (WAL, `busy_timeout`, optimistic concurrency on heads).

    `synchronous="FULL"` (default) fsyncs every commit, so a committed turn also survives a power cut; "NORMAL"
    is faster and still survives a crash of the process.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        self.file: Path = Path(path)
        """The database file (`:memory:` for a private in-memory database, gone when closed)."""
        self._lock = threading.RLock()
        if synchronous not in ("FULL", "NORMAL"):
            raise UsageError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        in_memory = str(path) == ":memory:"
        if not in_memory:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Create the file ourselves so it is private from the first byte (sqlite would use 0644 & ~umask).
                os.close(os.open(self.file, os.O_RDWR | os.O_CREAT, 0o600))
            except OSError as err:
                raise StorageError(f"cannot create the store at {str(self.file)!r}: {err}") from err
        try:
            self._connection = sqlite3.connect(
                ":memory:" if in_memory else self.file,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the store at {str(self.file)!r}: {err}") from err
        try:
            with self._guard():
                self._connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                self._connection.execute("PRAGMA journal_mode = WAL")
                self._connection.execute(f"PRAGMA synchronous = {synchronous}")
                self._connection.execute("PRAGMA foreign_keys = ON")
                self._migrate()
        except BaseException:
            self._connection.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Hold the lock; turn sqlite errors into StorageError."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as err:
                raise StorageError(f"store {str(self.file)!r}: {err}") from err

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` write transaction: committed if the block succeeds, rolled back otherwise."""
        with self._guard():
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    def _migrate(self) -> None:
        with self._transaction() as db:
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"store {str(self.file)!r} has schema version {version}; this turnkeep knows up to "
                    f"{len(MIGRATIONS)}: upgrade turnkeep"
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        """Close the connection (the store cannot be used afterwards)."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, query: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._guard():
            rows: list[Any] = self._connection.execute(query, parameters).fetchall()
            return rows

    @staticmethod
    def _require(db: sqlite3.Connection, conversation_id: str) -> None:
        if db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone() is None:
            raise UnknownConversation(f"no conversation {conversation_id!r}")

    def _read_existing(
        self, conversation_id: str, query: str, parameters: Sequence[Any] | Mapping[str, Any]
    ) -> list[Any]:
        """Rows of `query`, after checking the conversation exists (one snapshot: a read transaction)."""
        with self._guard():
            db = self._connection
            db.execute("BEGIN")
            try:
                self._require(db, conversation_id)
                rows: list[Any] = db.execute(query, parameters).fetchall()
                return rows
            finally:
                db.execute("COMMIT")

    @staticmethod
    def _touch(
        db: sqlite3.Connection, conversation_id: str, at: float | None = None, *, cost: str | None = None
    ) -> None:
        """Mark the conversation updated (most recently touched); `cost`: its new total, set in the same statement."""
        db.execute(
            f"UPDATE conversations SET {'cost_usd = ?, ' if cost is not None else ''}updated_at = ?, "
            "touched = (SELECT coalesce(max(touched), 0) + 1 FROM conversations) WHERE id = ?",
            (*((cost,) if cost is not None else ()), time.time() if at is None else at, conversation_id),
        )

    @staticmethod
    def _head(db: sqlite3.Connection, conversation_id: str, branch: str) -> tuple[bool, str | None]:
        row = db.execute(
            "SELECT head FROM branches WHERE conversation_id = ? AND name = ?", (conversation_id, branch)
        ).fetchone()
        return (False, None) if row is None else (True, row[0])

    def _check_head(self, db: sqlite3.Connection, conversation_id: str, branch: str, expected: str | None) -> None:
        exists, head = self._head(db, conversation_id, branch)
        if not exists:
            self._require(db, conversation_id)  # an unknown conversation is said as such, not as a moved head
        if head != expected:
            raise ConflictError(f"branch {branch!r} moved (expected head {expected!r}, found {head!r})")

    @staticmethod
    def _insert_nodes(db: sqlite3.Connection, conversation_id: str, nodes: Sequence[Node]) -> str | None:
        """Insert nodes and their search text; returns the first title found among them."""
        title = None
        for node in nodes:
            message = dumps(node.message, f"message of node {node.id!r}", checked=True)
            meta = dumps(node.meta, f"meta of node {node.id!r}", checked=True)
            role = str(node.message["role"])
            cursor = db.execute(
                "INSERT INTO nodes (conversation_id, id, parent_id, role, message, status, meta) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, node.id, node.parent_id, role, message, node.status, meta),
            )
            text = searchable_text(node.message)
            if text:
                db.execute(
                    "INSERT INTO messages_fts (rowid, text, conversation_id, node_id, role) VALUES (?, ?, ?, ?, ?)",
                    (cursor.lastrowid, text, conversation_id, node.id, role),
                )
            title = title or title_of(node.message)
        return title

    @staticmethod
    def _insert_conversation(
        db: sqlite3.Connection, conversation_id: str, settings: str, created_at: float, updated_at: float
    ) -> None:
        """The conversation's own row (ConflictError if the id is taken), most recently touched."""
        if db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)).fetchone():
            raise ConflictError(f"conversation {conversation_id!r} already exists")
        db.execute(
            "INSERT INTO conversations (id, settings, created_at, updated_at, touched) "
            "VALUES (?, ?, ?, ?, (SELECT coalesce(max(touched), 0) + 1 FROM conversations))",
            (conversation_id, settings, created_at, updated_at),
        )

    @staticmethod
    def _insert_ledger(db: sqlite3.Connection, conversation_id: str, ledger: Sequence[LedgerEntry]) -> str | None:
        """Insert the entries; returns the conversation's new total cost for the caller to store (None: no entry)."""
        if not ledger:
            return None
        db.executemany(
            f"INSERT INTO ledger (conversation_id, {_LEDGER_COLUMNS}) VALUES ({', '.join('?' * 15)})",
            [ledger_row(conversation_id, e) for e in ledger],
        )
        (cost,) = db.execute("SELECT cost_usd FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return str(Decimal(cost) + sum((Decimal(e.cost_usd) for e in ledger), Decimal(0)))

    # -- the Store protocol ---------------------------------------------------------------------------------------

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        check_no_secrets(settings)
        encoded = dumps(dict(settings), "settings")
        now = time.time()
        with self._transaction() as db:
            self._insert_conversation(db, conversation_id, encoded, now, now)
            db.execute(
                "INSERT INTO branches (conversation_id, name, head) VALUES (?, 'main', NULL)", (conversation_id,)
            )

    def settings(self, conversation_id: str) -> dict[str, Any]:
        rows = self._read("SELECT settings FROM conversations WHERE id = ?", (conversation_id,))
        if not rows:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        settings: dict[str, Any] = json.loads(rows[0][0])
        return settings

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        check_no_secrets(changes)
        dumps(dict(changes), "settings")
        with self._transaction() as db:
            row = db.execute("SELECT settings FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            if row is None:
                raise UnknownConversation(f"no conversation {conversation_id!r}")
            settings = json.loads(row[0])
            settings.update(changes)
            db.execute(
                "UPDATE conversations SET settings = ? WHERE id = ?", (dumps(settings, "settings"), conversation_id)
            )
            self._touch(db, conversation_id)

    def branches(self, conversation_id: str) -> dict[str, str | None]:
        rows = self._read_existing(
            conversation_id,
            "SELECT name, head FROM branches WHERE conversation_id = ? ORDER BY rowid",
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
        return nodes_from_rows(rows)

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
        with self._transaction() as db:
            self._check_head(db, conversation_id, branch, expected_head)  # also: the conversation exists
            for node_id, status in (settle or {}).items():
                check_status(status, f"settle of node {node_id!r}")
                updated = db.execute(
                    "UPDATE nodes SET status = ? WHERE conversation_id = ? AND id = ?",
                    (status, conversation_id, node_id),
                ).rowcount
                if updated != 1:
                    raise UsageError(f"no node {node_id!r} to settle in conversation {conversation_id!r}")
            check_new_nodes(nodes, _StoredIds(db, conversation_id, known=expected_head))
            title = self._insert_nodes(db, conversation_id, nodes)
            if nodes:
                db.execute(
                    "INSERT INTO branches (conversation_id, name, head) VALUES (?, ?, ?) "
                    "ON CONFLICT (conversation_id, name) DO UPDATE SET head = excluded.head",
                    (conversation_id, branch, nodes[-1].id),
                )
            if title is not None:
                db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND title IS NULL", (title, conversation_id)
                )
            if state is not None:
                db.execute(
                    "INSERT INTO branch_policy_state (conversation_id, branch, state) VALUES (?, ?, ?) "
                    "ON CONFLICT (conversation_id, branch) DO UPDATE SET state = excluded.state",
                    (conversation_id, branch, state),
                )
            self._touch(db, conversation_id, cost=self._insert_ledger(db, conversation_id, ledger))

    def move_head(self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None) -> None:
        if not isinstance(branch, str) or not branch:
            raise UsageError(f"a branch name is a non-empty string, not {branch!r}")
        with self._transaction() as db:
            self._require(db, conversation_id)
            exists, _ = self._head(db, conversation_id, branch)
            if exists:
                self._check_head(db, conversation_id, branch, expected_head)
            if new_head is not None and new_head not in _StoredIds(db, conversation_id):
                raise UsageError(f"conversation {conversation_id!r} has no node {new_head!r}")
            db.execute(
                "INSERT INTO branches (conversation_id, name, head) VALUES (?, ?, ?) "
                "ON CONFLICT (conversation_id, name) DO UPDATE SET head = excluded.head",
                (conversation_id, branch, new_head),
            )
            self._touch(db, conversation_id)

    def discard(self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]) -> None:
        with self._transaction() as db:
            self._check_head(db, conversation_id, branch, expected_head)  # also: the conversation exists
            if not node_ids:
                return
            found: dict[str, tuple[int, str | None]] = {}
            children: dict[str, list[str]] = {}
            for node_id in node_ids:
                row = db.execute(
                    "SELECT seq, parent_id FROM nodes WHERE conversation_id = ? AND id = ?", (conversation_id, node_id)
                ).fetchone()
                if row is None:
                    raise UsageError(f"no node {node_id!r} to discard in conversation {conversation_id!r}")
                found[node_id] = (row[0], row[1])
                children[node_id] = [
                    child
                    for (child,) in db.execute(
                        "SELECT id FROM nodes WHERE conversation_id = ? AND parent_id = ?", (conversation_id, node_id)
                    )
                ]
            heads = dict(db.execute("SELECT name, head FROM branches WHERE conversation_id = ?", (conversation_id,)))
            check_discard(node_ids, branch, children, heads)
            db.execute(
                "UPDATE branches SET head = ? WHERE conversation_id = ? AND name = ?",
                (found[node_ids[0]][1], conversation_id, branch),
            )
            for seq, _ in found.values():
                db.execute("DELETE FROM messages_fts WHERE rowid = ?", (seq,))
                db.execute("DELETE FROM nodes WHERE seq = ?", (seq,))
            title = None
            for (message,) in db.execute(
                "SELECT message FROM nodes WHERE conversation_id = ? AND role = 'user' ORDER BY seq",
                (conversation_id,),
            ):
                title = title_of(json.loads(message))
                if title is not None:
                    break
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))
            self._touch(db, conversation_id)

    def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        with self._transaction() as db:
            self._require(db, conversation_id)
            self._touch(db, conversation_id, cost=self._insert_ledger(db, conversation_id, ledger))

    def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        rows = self._read_existing(
            conversation_id,
            f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE conversation_id = ? ORDER BY seq",
            (conversation_id,),
        )
        return [_entry(row) for row in rows]

    def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        rows = self._read_existing(
            conversation_id,
            "SELECT state FROM branch_policy_state WHERE conversation_id = ? AND branch = ?",
            (conversation_id, branch),
        )
        state: dict[str, Any] = json.loads(rows[0][0]) if rows else {}
        return state

    def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        rows = self._read_existing(
            conversation_id,
            "SELECT branch, state FROM branch_policy_state WHERE conversation_id = ? ORDER BY branch",
            (conversation_id,),
        )
        return {branch: json.loads(state) for branch, state in rows}

    def nodes(self, conversation_id: str) -> list[Node]:
        rows = self._read_existing(
            conversation_id,
            f"SELECT {_NODE_COLUMNS} FROM nodes WHERE conversation_id = ? ORDER BY seq",
            (conversation_id,),
        )
        return nodes_from_rows(rows)

    def info(self, conversation_id: str) -> ConversationInfo:
        rows = self._read(f"{_INFO} WHERE c.id = ?", (conversation_id,))
        if not rows:
            raise UnknownConversation(f"no conversation {conversation_id!r}")
        return _info(rows[0])

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        check_page(limit, offset)
        rows = self._read(f"{_INFO} ORDER BY c.updated_at DESC, c.touched DESC LIMIT ? OFFSET ?", (limit, offset))
        return [_info(row) for row in rows]

    def count_conversations(self) -> int:
        count: int = self._read("SELECT count(*) FROM conversations")[0][0]
        return count

    def latest(self) -> str | None:
        rows = self._read("SELECT id FROM conversations ORDER BY updated_at DESC, touched DESC LIMIT 1")
        return rows[0][0] if rows else None

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Full-text search (SQLite FTS5 query syntax: words, "phrases", AND/OR/NOT, prefix*), best match first."""
        text = check_query(query)
        check_page(limit, 0)
        with self._lock:
            try:
                rows = self._connection.execute(
                    "SELECT conversation_id, node_id, role, snippet(messages_fts, 0, '[', ']', '…', 16) "
                    "FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rank LIMIT ?",
                    (text, limit),
                ).fetchall()
            except sqlite3.Error as err:
                if _malformed(text):
                    raise UsageError(f"bad search query {query!r}: {err}") from err
                raise StorageError(f"store {str(self.file)!r}: {err}") from err
        return [SearchHit(c, n, r, " ".join(s.split())) for c, n, r, s in rows]

    def delete(self, conversation_id: str) -> None:
        with self._transaction() as db:
            self._require(db, conversation_id)
            db.execute(
                "DELETE FROM messages_fts WHERE rowid IN (SELECT seq FROM nodes WHERE conversation_id = ?)",
                (conversation_id,),
            )
            # Heads first, then children before parents is not needed: the tree's keys are checked at commit.
            db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

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
        with self._transaction() as db:
            created = created_at if created_at is not None else now
            self._insert_conversation(
                db, conversation_id, encoded, created, updated_at if updated_at is not None else now
            )
            title = self._insert_nodes(db, conversation_id, nodes)
            cost = self._insert_ledger(db, conversation_id, ledger) or "0"
            # The restored times are kept as given (no touch): title and cost in one statement.
            db.execute("UPDATE conversations SET title = ?, cost_usd = ? WHERE id = ?", (title, cost, conversation_id))
            db.executemany(
                "INSERT INTO branches (conversation_id, name, head) VALUES (?, ?, ?)",
                [(conversation_id, name, head) for name, head in branches.items()],
            )
            db.executemany(
                "INSERT INTO branch_policy_state (conversation_id, branch, state) VALUES (?, ?, ?)",
                [(conversation_id, name, state) for name, state in states],
            )
