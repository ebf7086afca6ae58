"""pytest fixtures for testing code that talks to Claude, against the offline emulator.

Installed with `pip install turnkeep[cli]` (a `pytest11` entry point), so any project gets:

- `turnkeep_emulator_server` (session): one `EmulatorServer` on a free loopback port, virtual clock.
- `turnkeep_emulator` (function): the same server, reset before the test (cache, bill, queues, threads, clock);
  the clients the test made with `.client()` are closed after it.

```python
def test_my_app_remembers(turnkeep_emulator):
    client = turnkeep_emulator.client()
    ...
```

Nothing heavy is imported until a fixture is used, so the plugin costs nothing where turnkeep is installed
without the `cli` extra (starlette, uvicorn).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from turnkeep.emulator.server import EmulatorServer

__all__ = ["turnkeep_emulator", "turnkeep_emulator_server"]


@pytest.fixture(scope="session")
def turnkeep_emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the whole test session (virtual clock, recall responder)."""
    from turnkeep.emulator.server import EmulatorServer

    with EmulatorServer(clock="virtual") as server:
        yield server


@pytest.fixture
def turnkeep_emulator(turnkeep_emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session's emulator, with its state reset and its virtual clock rewound before the test; the clients the
    test made with `.client()` are closed after it."""
    turnkeep_emulator_server.reset(clock=True)
    yield turnkeep_emulator_server
    turnkeep_emulator_server.close_clients()
