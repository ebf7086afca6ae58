"""The gateway under test: its ASGI app in-process (httpx2's ASGI transport), the emulator as its upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from gateway_helpers import Clock

from turnkeep.emulator import EmulatorServer
from turnkeep.server import Gateway, GatewayConfig, SQLiteTenancy, create_app
from turnkeep.server.runner import EMULATOR_UPSTREAM_KEY
from turnkeep.store import SQLiteStore

MODEL = "claude-sonnet-5"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def upstream(turnkeep_emulator: EmulatorServer) -> EmulatorServer:
    return turnkeep_emulator


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
async def make_gateway(upstream: EmulatorServer, database: Path, clock: Clock) -> AsyncIterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(**config: Any) -> Gateway:
        gateway = Gateway(
            GatewayConfig(upstream_url=upstream.base_url, upstream_key=EMULATOR_UPSTREAM_KEY, **config),
            store=SQLiteStore(database, synchronous="NORMAL"),
            tenancy=SQLiteTenancy(database, clock=clock),
            clock=clock,
        )
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        await gateway.aclose()
        gateway.store.close()  # type: ignore[attr-defined]
        gateway.tenancy.close()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx2.AsyncClient]:
    """Raw HTTP to the gateway app, in-process."""
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(gateway)), base_url="http://gateway"
    ) as client:
        yield client
