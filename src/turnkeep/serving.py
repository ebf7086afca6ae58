"""Serving an ASGI app with uvicorn on a socket turnkeep binds itself: the emulator and the gateway, in the
foreground (`turnkeep emulate`, `turnkeep serve`) or from a thread of this process (`EmulatorServer`,
`GatewayServer`: tests, demos, benchmarks).

Binding first tells the port before anything is served (port 0 picks a free one), and a bad host or a taken port
fails here, as an `OSError` the command turns into one line.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from turnkeep.errors import StartupError

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ServerThread", "listening_socket", "uvicorn_config"]

_START_SECONDS = 60.0


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` (0: a free port). Nagle is off: accepted connections inherit it, and without
    it small responses wait ~40 ms for a delayed ACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def uvicorn_config(app: Any, *, lifespan: Literal["on", "off"], **options: Any) -> uvicorn.Config:
    """uvicorn's settings for a turnkeep server: quiet (the servers log what matters themselves), h11 on asyncio."""
    import uvicorn

    settings: dict[str, Any] = {"log_level": "warning", "access_log": False, "loop": "asyncio", "http": "h11"}
    return uvicorn.Config(app, lifespan=lifespan, **{**settings, **options})


class ServerThread:
    """`config`'s app served on `sock` from a daemon thread, from `start()` (which returns once it accepts
    requests) until `stop()` (which lets the requests in flight finish and frees the port)."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, *, name: str) -> None:
        import uvicorn

        self._server = uvicorn.Server(config)
        self._socket = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def _serve(self) -> None:
        # uvicorn exits (SystemExit) when the app fails to start, after logging why: `start` reports it.
        with contextlib.suppress(SystemExit):
            self._server.run(sockets=[self._socket])

    def start(self, what: str) -> ServerThread:
        """Serve, and wait until it does; StartupError (naming `what` and where) if it does not within a minute
        (it takes well under a second: the limit is only for a start that hangs, on however busy a machine)."""
        self._thread.start()
        deadline = time.monotonic() + _START_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop(timeout=10.0)  # nothing left running on a closed socket
                raise StartupError(f"{what} did not start on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float) -> None:
        """Stop serving: the requests in flight finish (for up to `timeout` seconds), then the port is freed."""
        self._server.should_exit = True
        self._thread.join(timeout=timeout)
        self._socket.close()
