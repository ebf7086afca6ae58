"""Where the default store lives: `turnkeep.config.store_location()` reads the environment ($TURNKEEP_DATABASE_URL,
else $TURNKEEP_HOME, else the user data directory: platformdirs, else XDG); the store package opens what it is
given and reads nothing from the environment."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import platformdirs
import pytest
from click.testing import CliRunner

import turnkeep.store
from turnkeep.cli import main
from turnkeep.config import store_location, store_path
from turnkeep.errors import ConfigError
from turnkeep.store import open_store


def test_turnkeep_home_decides_where_the_store_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURNKEEP_DATABASE_URL", raising=False)
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path / "home"))
    assert store_path() == store_location() == tmp_path / "home" / "turnkeep.db"
    with open_store(store_location()) as store:
        store.create("c1", {"model": "m"})
    assert (tmp_path / "home" / "turnkeep.db").is_file()
    with open_store(tmp_path / "home" / "turnkeep.db") as again:
        assert again.settings("c1") == {"model": "m"}


def test_without_turnkeep_home_the_user_data_directory_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURNKEEP_HOME", raising=False)
    assert store_path() == Path(platformdirs.user_data_dir("turnkeep", appauthor=False)) / "turnkeep.db"


def test_without_platformdirs_the_xdg_data_directory_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TURNKEEP_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # as if the `cli` extra were not installed
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert store_path() == tmp_path / "data" / "turnkeep" / "turnkeep.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert store_path() == tmp_path / "user" / ".local" / "share" / "turnkeep" / "turnkeep.db"


def test_the_location_is_the_argument_then_the_database_url_then_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path))
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", " postgresql://ada:hunter2@db/chats ")
    assert store_location() == "postgresql://ada:hunter2@db/chats"
    assert store_location("chats.db") == "chats.db"
    assert store_location(tmp_path / "other.db") == tmp_path / "other.db"
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", "")
    assert store_location() == tmp_path / "turnkeep.db"


def test_a_file_path_in_the_database_url_variable_is_named_as_the_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", "chats.db")
    with pytest.raises(ConfigError, match=r"TURNKEEP_DATABASE_URL must be a postgresql:// URL, not 'chats.db'"):
        store_location()
    assert store_location("given.db") == "given.db"  # an explicit location never reads the variable


def test_the_store_package_reads_nothing_from_the_environment() -> None:
    package = Path(turnkeep.store.__file__).parent
    readers = {"environ", "getenv", "environb"}
    found = [
        f"{path.name}:{node.lineno}"
        for path in sorted(package.glob("*.py"))
        if path.name != "pgserver.py"  # the test-support PostgreSQL server, which finds its binaries
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute | ast.Name)
        and (node.attr if isinstance(node, ast.Attribute) else node.id) in readers
    ]
    assert found == []


def test_the_cli_finds_its_store_by_the_environment_as_before(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TURNKEEP_DATABASE_URL", raising=False)
    with open_store(tmp_path / "home" / "turnkeep.db") as store:
        store.create("in-the-home-file", {"model": "claude-sonnet-4-6"})
    runner = CliRunner()
    assert "in-the-home-file" in runner.invoke(main, ["ls"]).stdout
    with open_store(postgres_url) as store:  # a database of this test's own
        store.create("in-postgres", {"model": "claude-sonnet-4-6"})
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", postgres_url)
    listed = runner.invoke(main, ["ls"]).stdout
    assert "in-postgres" in listed
    assert "in-the-home-file" not in listed
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", "chats.db")
    refused = runner.invoke(main, ["ls"])
    assert refused.exit_code != 0
    assert refused.output.count("\n") == 1
    assert "TURNKEEP_DATABASE_URL must be a postgresql:// URL, not 'chats.db'" in refused.output
    assert not (tmp_path / "chats.db").exists()
