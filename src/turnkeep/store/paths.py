"""Opening a store from a file path or a database URL: a `postgresql://` URL is a PostgreSQL database, anything
else a SQLite file; a URL of another kind is refused, never taken for a file path.

The location is always given: where the store is by default (`$TURNKEEP_DATABASE_URL`, `$TURNKEEP_HOME` ...) is
configuration, resolved by `turnkeep.config.store_location()` at the edge that needs it, not read here.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from turnkeep.errors import UsageError
from turnkeep.store.postgres import is_url, redact
from turnkeep.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from turnkeep.store.postgres import AsyncPostgresStore, PostgresStore

__all__ = ["open_async_store", "open_store"]

_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def open_store(location: str | os.PathLike[str]) -> SQLiteStore | PostgresStore:
    """Open (creating and migrating as needed) the store at `location`: a `postgresql://` URL opens a
    `PostgresStore`, anything else is a SQLite file. The default location: `turnkeep.config.store_location()`."""
    if isinstance(location, str) and is_url(location):
        from turnkeep.store.postgres import PostgresStore

        return PostgresStore(location)
    if isinstance(location, str) and _ANY_URL.match(location):
        raise UsageError(
            f"{redact(location)!r} is a URL turnkeep cannot open: a store is a postgresql:// URL or a SQLite file path"
        )
    return SQLiteStore(location)


async def open_async_store(url: str) -> AsyncPostgresStore:
    """Open (creating and migrating as needed) the `AsyncStore` at a `postgresql://` URL, for asyncio code such as
    `AsyncConversation`. Close it with `await store.close()` or `async with`. A SQLite file has no async store: open
    it with `open_store` (an `AsyncConversation` takes either)."""
    if not is_url(url):
        raise UsageError(
            f"{redact(str(url))!r} is not a postgresql:// URL: an async store is a PostgreSQL database "
            "(for a SQLite file use open_store(), which an AsyncConversation accepts too)"
        )
    from turnkeep.store.postgres import AsyncPostgresStore

    return await AsyncPostgresStore.open(url)
