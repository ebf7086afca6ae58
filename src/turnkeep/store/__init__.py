"""Where conversations live: a small `Store` protocol, `MemoryStore` (in-process), `SQLiteStore` (durable, one
machine) and `PostgresStore` (shared by many processes and machines; `turnkeep.store.postgres`).

A conversation is a tree of nodes (each holds one `MessageParam` exactly as sent or received, plus metadata),
with named branches whose heads point into the tree, a request ledger, settings and the context policy's state.
Every write that changes a head names the head it expects (optimistic concurrency): a writer that lost a race
gets `ConflictError` and nothing is written. Multi-row writes are atomic.

`open_store(location)` opens a `postgresql://` URL or a SQLite file (`await open_async_store(url)`: the
`AsyncStore` on PostgreSQL, for `AsyncConversation`); the default location (`$TURNKEEP_DATABASE_URL`, else
`$TURNKEEP_HOME/turnkeep.db`, else the user data directory) is configuration: `turnkeep.config.store_location()`;
`turnkeep.export` (above the store: it reads policies and the catalog) turns a conversation into versioned JSON
or Markdown and back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from turnkeep.store.aio import AsyncStore
from turnkeep.store.base import ConversationInfo, LedgerEntry, Node, NodeStatus, SearchHit, Store
from turnkeep.store.memory import MemoryStore
from turnkeep.store.paths import open_async_store, open_store
from turnkeep.store.postgres import AsyncPostgresStore, PostgresStore
from turnkeep.store.sqlite import SQLiteStore

__all__ = [
    "AsyncPostgresStore",
    "AsyncStore",
    "ConversationInfo",
    "LedgerEntry",
    "MemoryStore",
    "Node",
    "NodeStatus",
    "PostgresStore",
    "SQLiteStore",
    "SearchHit",
    "Store",
    "open_async_store",
    "open_store",
]

if TYPE_CHECKING:

    def _all_are_stores(
        memory: MemoryStore, sqlite: SQLiteStore, postgres: PostgresStore, async_postgres: AsyncPostgresStore
    ) -> tuple[Store, Store, Store, AsyncStore]:
        """mypy checks here that every implementation satisfies its protocol."""
        return memory, sqlite, postgres, async_postgres
