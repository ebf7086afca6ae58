"""Fixtures of the command-line tests: an isolated TURNKEEP_HOME, and the CLI pointed at the test emulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from turnkeep.cli import main
from turnkeep.emulator.server import EmulatorServer

Run = Callable[..., Result]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TURNKEEP_HOME in a temporary directory: the store and the chat history go there, never to the user's."""
    path = tmp_path / "home"
    monkeypatch.setenv("TURNKEEP_HOME", str(path))
    monkeypatch.delenv("COLUMNS", raising=False)
    return path


def _invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def online(turnkeep_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> EmulatorServer:
    """The CLI as it runs with a key: `anthropic.Anthropic()` from the environment, here aimed at the test
    emulator (so a test can queue faults for the key and read its bill)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", turnkeep_emulator.base_url)
    return turnkeep_emulator


@pytest.fixture
def run(home: Path, online: EmulatorServer) -> Run:
    """Invoke `turnkeep ARGS...` in-process (`input=` feeds stdin), with a key aimed at the shared test emulator:
    fast, because no invocation starts an emulator of its own."""
    del home, online
    return _invoke


@pytest.fixture
def run_offline(home: Path) -> Run:
    """Invoke `turnkeep ARGS...` as on a machine without ANTHROPIC_API_KEY: each invocation that sends starts
    its own in-process emulator."""
    del home
    return _invoke
