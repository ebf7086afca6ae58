"""Configuration from the environment and user files, read when asked, never at import time.

Order for every setting: explicit argument, then environment, then the user's files, then defaults.
- model: argument, then `TURNKEEP_MODEL`, then `DEFAULT_MODEL`.
- catalog: argument, then the shipped catalog with `$TURNKEEP_HOME/models.toml` laid over it when that file exists.
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

__all__ = ["DEFAULT_MODEL", "arefresh_catalog", "load_catalog", "model", "refresh_catalog", "warn_unknown_model"]

DEFAULT_MODEL = "claude-sonnet-5-5"

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
