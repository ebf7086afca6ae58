"""Shared test setup: the network is closed except for loopback, so no test can reach a real API; and the
Hypothesis profiles.

Profiles (`HYPOTHESIS_PROFILE`, default `ci`):

- `ci`: deterministic (`derandomize`: the same examples on every run and machine, so a failure reproduces and a
  pass is not luck), no deadline (a busy machine is slow, not wrong), and `max_examples=100` for every property
  that does not set its own count.
- `thorough` (`make test-thorough`): random, 2,000 examples each; the policy invariants then check 20,000
  random histories (docs/benchmarks.md records a run).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=100,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", deadline=None, max_examples=2_000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_real_connect = socket.socket.connect


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return isinstance(address, str | bytes)  # AF_UNIX paths


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_loopback(address):
        raise RuntimeError(f"tests may not reach the network (tried {address!r})")
    _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "TURNKEEP_MODEL"):
        monkeypatch.delenv(name, raising=False)
