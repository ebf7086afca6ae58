"""Configuration from the environment and user files, read when asked, never at import time.

Order for every setting: explicit argument, then environment, then the user's files, then defaults.
- model: argument, then `TURNKEEP_MODEL`, then `DEFAULT_MODEL`.
- catalog: argument, then the shipped catalog with `$TURNKEEP_HOME/models.toml` laid over it when that file exists.
- store location: argument, then `TURNKEEP_DATABASE_URL` (a `postgresql://` URL), then
  `$TURNKEEP_HOME/turnkeep.db`, then `turnkeep.db` in the user data directory. The store package itself reads
  nothing from the environment: it opens the location it is given.
- API key and base URL: the `anthropic` SDK reads `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL` itself.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from turnkeep.core.catalog import Catalog, default_catalog
from turnkeep.errors import ConfigError

if TYPE_CHECKING:
    import anthropic

__all__ = [
    "DATABASE_URL_VARIABLE",
    "DEFAULT_MODEL",
    "arefresh_catalog",
    "database_url",
    "load_catalog",
    "model",
    "refresh_catalog",
    "store_location",
    "store_path",
    "warn_unknown_model",
]

DEFAULT_MODEL = "claude-sonnet-5-5"
DATABASE_URL_VARIABLE = "TURNKEEP_DATABASE_URL"
STORE_FILE_NAME = "turnkeep.db"

_warned: set[str] = set()


def model(explicit: str | None = None) -> str:
    """The model id to use: the argument, else `TURNKEEP_MODEL`, else `DEFAULT_MODEL`."""
    chosen = explicit if explicit is not None else os.environ.get("TURNKEEP_MODEL") or DEFAULT_MODEL
    if not isinstance(chosen, str) or not chosen.strip():
        raise ConfigError(f"model must be a non-empty model id, not {chosen!r}")
    return chosen


def home() -> Path | None:
    """`TURNKEEP_HOME`, when set."""
    value = os.environ.get("TURNKEEP_HOME")
    return Path(value).expanduser() if value else None


def store_path() -> Path:
    """The default store file: `$TURNKEEP_HOME/turnkeep.db`, else `turnkeep.db` in the user data directory
    (`platformdirs.user_data_dir("turnkeep")`, e.g. `~/.local/share/turnkeep` on Linux; without the `cli` extra's
    `platformdirs`, `$XDG_DATA_HOME` or `~/.local/share`)."""
    if (base := home()) is not None:
        return base / STORE_FILE_NAME
    try:
        import platformdirs
    except ImportError:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(data) / "turnkeep" / STORE_FILE_NAME
    return Path(platformdirs.user_data_dir("turnkeep", appauthor=False)) / STORE_FILE_NAME


def database_url() -> str | None:
    """The PostgreSQL URL of the store in `$TURNKEEP_DATABASE_URL` (it must be a URL: a file path there is a
    mistake worth naming), or None when it is not set."""
    from turnkeep.store.postgres import is_url, redact

    url = os.environ.get(DATABASE_URL_VARIABLE, "").strip()
    if not url:
        return None
    if not is_url(url):
        raise ConfigError(
            f"${DATABASE_URL_VARIABLE} must be a postgresql:// URL, not {redact(url)!r} "
            "(for a SQLite file, set TURNKEEP_HOME or pass the path)"
        )
    return url


def store_location(explicit: str | os.PathLike[str] | None = None) -> str | Path:
    """Where the conversations are, for `turnkeep.store.open_store`: the argument (a file path or a
    `postgresql://` URL), else `$TURNKEEP_DATABASE_URL`, else `store_path()`."""
    if explicit is not None:
        return explicit if isinstance(explicit, str) else Path(explicit)
    return database_url() or store_path()


def load_catalog(user_file: str | os.PathLike[str] | None = None) -> Catalog:
    """The shipped catalog with the user's overrides: `user_file`, else `$TURNKEEP_HOME/models.toml` if present."""
    path = Path(user_file) if user_file is not None else None
    if path is None and (base := home()) is not None and (base / "models.toml").is_file():
        path = base / "models.toml"
    catalog = default_catalog()
    if path is None:
        return catalog
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read model catalog {path}: {err.strerror}") from err
    return catalog.merged(text, source=str(path))


def warn_unknown_model(model_id: str) -> None:
    """Warn once per process that a model is not in the catalog (its facts are conservative guesses)."""
    if model_id in _warned:
        return
    _warned.add(model_id)
    warnings.warn(
        f"model {model_id!r} is not in turnkeep's catalog: using conservative defaults (no prefill, "
        "200K window, highest known prices); add it to $TURNKEEP_HOME/models.toml or call refresh_catalog()",
        UserWarning,
        stacklevel=4,
    )


def refresh_catalog(client: anthropic.Anthropic, catalog: Catalog | None = None) -> Catalog:
    """The catalog updated from `GET /v1/models` (limits, lifecycle, capabilities; prices stay)."""
    models = [info.to_dict() for info in client.models.list()]
    return (catalog or load_catalog()).refreshed(models)


async def arefresh_catalog(client: anthropic.AsyncAnthropic, catalog: Catalog | None = None) -> Catalog:
    """The async twin of `refresh_catalog`."""
    models = [info.to_dict() async for info in client.models.list()]
    return (catalog or load_catalog()).refreshed(models)
