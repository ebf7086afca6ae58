"""`turnkeep.serving`: how the emulator and the gateway are served from a thread of this process."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from turnkeep.errors import StartupError
from turnkeep.server import GatewayServer
from turnkeep.serving import ServerThread, listening_socket, uvicorn_config


async def hello(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_a_served_app_answers_until_stopped_and_then_frees_its_port() -> None:
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    served = ServerThread(uvicorn_config(Starlette(routes=[Route("/", hello)]), lifespan="off"), sock, name="t")
    assert served.url == f"http://127.0.0.1:{port}"
    served.start("the test app")
    try:
        assert httpx2.get(served.url + "/", timeout=30).text == "hello"
    finally:
        served.stop(timeout=10)
    again = listening_socket("127.0.0.1", port)  # the port is free again
    again.close()


def test_an_app_that_cannot_start_is_named_with_where_it_was_to_listen() -> None:
    @asynccontextmanager
    async def failing(_app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield  # pragma: no cover

    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    served = ServerThread(uvicorn_config(Starlette(lifespan=failing), lifespan="on"), sock, name="t")
    with pytest.raises(StartupError, match=rf"^the test app did not start on http://127\.0\.0\.1:{port}$"):
        served.start("the test app")
    assert sock.fileno() == -1  # its socket is closed, not leaked


def test_a_taken_port_is_an_os_error_and_leaves_no_socket_open() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_a_gateway_that_cannot_listen_closes_its_emulator_and_stores(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    gateway = GatewayServer(database=tmp_path / "gateway.db", port=taken.getsockname()[1])
    try:
        with pytest.raises(OSError):
            gateway.start()
    finally:
        taken.close()
    assert gateway.emulator is None
    assert gateway.gateway is None
