"""Where the default store lives, and opening a store from a file path or a database URL.

Order: the `location` argument, then `$TURNKEEP_DATABASE_URL` (a `postgresql://` URL), then
`$TURNKEEP_HOME/turnkeep.db`, then `turnkeep.db` in the user data directory
(`platformdirs.user_data_dir("turnkeep")`, e.g. `~/.local/share/turnkeep` on Linux). `platformdirs` comes with the
`cli` extra; without it the Linux/XDG location is used. A URL is never taken for a file path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from turnkeep.errors import ConfigError, UsageError
from turnkeep.store.postgres import is_url, redact
from turnkeep.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from turnkeep.store.postgres import AsyncPostgresStore, PostgresStore

__all__ = ["DATABASE_URL_VARIABLE", "FILE_NAME", "default_path", "open_async_store", "open_store"]

FILE_NAME = "turnkeep.db"
DATABASE_URL_VARIABLE = "TURNKEEP_DATABASE_URL"
_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def default_path() -> Path:
    """The default database file: `$TURNKEEP_HOME/turnkeep.db`, else in the user data directory."""
    home = os.environ.get("TURNKEEP_HOME")
    if home:
        return Path(home).expanduser() / FILE_NAME
    try:
        import platformdirs
    except ImportError:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "turnkeep" / FILE_NAME
    return Path(platformdirs.user_data_dir("turnkeep", appauthor=False)) / FILE_NAME


def open_store(location: str | os.PathLike[str] | None = None) -> SQLiteStore | PostgresStore:
    """Open (creating and migrating as needed) the store at `location`: a `postgresql://` URL opens a
    `PostgresStore`, anything else is a SQLite file. None: `$TURNKEEP_DATABASE_URL`, else `default_path()`."""
    if location is None:
        location = _environment_url() or default_path()
    if isinstance(location, str) and is_url(location):
        from turnkeep.store.postgres import PostgresStore

        return PostgresStore(location)
    if isinstance(location, str) and _ANY_URL.match(location):
        raise UsageError(
            f"{redact(location)!r} is a URL turnkeep cannot open: a store is a postgresql:// URL or a SQLite file path"
        )
    return SQLiteStore(location)


async def open_async_store(url: str | None = None) -> AsyncPostgresStore:
    """Open (creating and migrating as needed) the `AsyncStore` at a `postgresql://` URL, for asyncio code such as
    `AsyncConversation`; None: `$TURNKEEP_DATABASE_URL`. Close it with `await store.close()` or `async with`. A
    SQLite file has no async store: open it with `open_store` (an `AsyncConversation` takes either)."""
    location = url if url is not None else _environment_url()
    if location is None:
        raise ConfigError(f"no database URL: pass a postgresql:// URL or set ${DATABASE_URL_VARIABLE}")
    if not (isinstance(location, str) and is_url(location)):
        raise UsageError(
            f"{redact(str(location))!r} is not a postgresql:// URL: an async store is a PostgreSQL database "
            "(for a SQLite file use open_store(), which an AsyncConversation accepts too)"
        )
    from turnkeep.store.postgres import AsyncPostgresStore

    return await AsyncPostgresStore.open(location)


def _environment_url() -> str | None:
    """`$TURNKEEP_DATABASE_URL`, when set (it must be a URL: a file path there is a mistake worth naming)."""
    url = os.environ.get(DATABASE_URL_VARIABLE, "").strip()
    if not url:
        return None
    if not is_url(url):
        raise ConfigError(
            f"${DATABASE_URL_VARIABLE} must be a postgresql:// URL, not {redact(url)!r} "
            "(for a SQLite file, set TURNKEEP_HOME or pass the path)"
        )
    return url
