"""Where the default store lives.

Order: `path` argument, then `$TURNKEEP_HOME/turnkeep.db`, then `turnkeep.db` in the user data directory
(`platformdirs.user_data_dir("turnkeep")`, e.g. `~/.local/share/turnkeep` on Linux). `platformdirs` comes with the
`cli` extra; without it the Linux/XDG location is used.
"""

from __future__ import annotations

import os
from pathlib import Path

from turnkeep.store.sqlite import SQLiteStore

__all__ = ["FILE_NAME", "default_path", "open_store"]

FILE_NAME = "turnkeep.db"


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


def open_store(path: str | os.PathLike[str] | None = None) -> SQLiteStore:
    """Open (creating and migrating as needed) the SQLite store at `path`, or at `default_path()`."""
    return SQLiteStore(default_path() if path is None else path)
