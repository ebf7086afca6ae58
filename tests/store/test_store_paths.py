"""Where the default store lives: TURNKEEP_HOME, else the user data directory (platformdirs, else XDG)."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from turnkeep.store import default_path, open_store


def test_turnkeep_home_decides_where_the_store_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / "turnkeep.db"
    with open_store() as store:
        store.create("c1", {"model": "m"})
    assert (tmp_path / "home" / "turnkeep.db").is_file()
    with open_store(tmp_path / "home" / "turnkeep.db") as again:
        assert again.settings("c1") == {"model": "m"}


def test_without_turnkeep_home_the_user_data_directory_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURNKEEP_HOME", raising=False)
    assert default_path() == Path(platformdirs.user_data_dir("turnkeep", appauthor=False)) / "turnkeep.db"


def test_without_platformdirs_the_xdg_data_directory_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURNKEEP_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # as if the `cli` extra were not installed
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "turnkeep" / "turnkeep.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_path() == tmp_path / "user" / ".local" / "share" / "turnkeep" / "turnkeep.db"
