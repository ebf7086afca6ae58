"""Run the emulator in-process: uvicorn on a loopback port in a background thread.

```python
from turnkeep.emulator import EmulatorServer

with EmulatorServer(clock="virtual") as server:
    client = server.client()                     # anthropic.Anthropic(base_url=server.base_url, ...)
    server.script({"text": "Hello from the script."})
    reply = client.messages.create(model="claude-sonnet-5", max_tokens=100,
                                   messages=[{"role": "user", "content": "Hi"}])
    server.advance(360)                          # six virtual minutes: 5-minute caches expire
    print(server.bill()["usd"]["total"])
```
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import anthropic
import httpx2

from turnkeep.core import values
from turnkeep.emulator.app import create_app, quiet_deliberate_drops
from turnkeep.errors import InvalidValue, UsageError
from turnkeep.serving import ServerThread, listening_socket, uvicorn_config

__all__ = ["EmulatorServer"]


class EmulatorServer:
    """The emulator served on `host:port` (port 0 = a free port) for the life of a `with` block.

    Keyword options go to `create_app` (`clock`, `responder`, `catalog`, `fault_rate`, `seed`). The control
    helpers call the `/_emulator/...` endpoints over HTTP, so they work the same against a separate process.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **create_app_options: Any) -> None:
        self.host = host
        self.app = create_app(**create_app_options)
        self._requested_port = port
        self.port = port
        self._serving: ServerThread | None = None
        self._control: httpx2.Client | None = None
        self._clients: list[anthropic.Anthropic] = []

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server (give it to the SDK as `base_url`)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        """Start serving and wait until the port accepts requests."""
        if self._serving is not None:
            return self
        sock = listening_socket(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        quiet_deliberate_drops()
        config = uvicorn_config(self.app, lifespan="off")
        self._serving = ServerThread(config, sock, name="turnkeep-emulator").start("the emulator")
        self._control = httpx2.Client(base_url=self.base_url, timeout=30.0)
        return self

    def stop(self) -> None:
        """Stop serving, finishing the requests in flight, and free the port; closes the clients made by `client()`."""
        self.close_clients()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._serving is not None:
            self._serving.stop(timeout=10.0)
            self._serving = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- clients ---

    def client(self, api_key: str = "test-key", **options: Any) -> anthropic.Anthropic:
        """An `anthropic.Anthropic` talking to this server (`options` go to its constructor).

        The server keeps it and closes it in `close_clients()` (the pytest fixture calls that after each test) or
        when it stops, so a test need not close its clients itself.
        """
        client = anthropic.Anthropic(api_key=api_key, base_url=self.base_url, **options)
        self._clients.append(client)
        return client

    def async_client(self, api_key: str = "test-key", **options: Any) -> anthropic.AsyncAnthropic:
        """An `anthropic.AsyncAnthropic` talking to this server (close it yourself: `await client.close()`)."""
        return anthropic.AsyncAnthropic(api_key=api_key, base_url=self.base_url, **options)

    def close_clients(self) -> None:
        """Close every client `client()` made so far."""
        clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # --- control ---

    def _call(self, method: str, path: str, *, api_key: str | None = None, **kwargs: Any) -> dict[str, Any]:
        if self._control is None:
            raise UsageError("the emulator is not running; use `with EmulatorServer() as server:`")
        headers = {"x-api-key": api_key} if api_key else {}
        response = self._control.request(method, path, headers=headers, **kwargs)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def now(self) -> float:
        """The emulator clock's current time (seconds)."""
        return float(self._call("GET", "/_emulator/clock")["now"])

    def advance(self, seconds: float) -> float:
        """Move the emulator clock forward; returns the new time."""
        return float(self._call("POST", "/_emulator/clock", json={"advance": seconds})["now"])

    def set_time(self, timestamp: float) -> float:
        """Jump a virtual clock to `timestamp`."""
        return float(self._call("POST", "/_emulator/clock", json={"set": timestamp})["now"])

    def script(self, *replies: Mapping[str, Any], api_key: str = "test-key") -> int:
        """Queue scripted replies for `api_key` (see `turnkeep.emulator.responders`); returns the queue length.
        A reply nested deeper than the emulator accepts raises `InvalidValue` (a `ValueError`) naming where, before
        anything is sent."""
        where = values.depth_exceeds(list(replies), values.MAX_DEPTH + values.ENVELOPE_DEPTH)
        if where is not None:
            raise InvalidValue(f"replies{where}: nested more than {values.MAX_DEPTH} levels deep")
        return int(self._call("POST", "/_emulator/script", api_key=api_key, json={"replies": list(replies)})["queued"])

    def fault(self, *faults: str | int | Mapping[str, Any], api_key: str = "test-key") -> int:
        """Queue faults for `api_key` (see `turnkeep.emulator.faults`); returns the queue length."""
        return int(self._call("POST", "/_emulator/faults", api_key=api_key, json={"faults": list(faults)})["queued"])

    def bill(self, api_key: str | None = "test-key") -> dict[str, Any]:
        """The bill of `api_key`, or of every key (`api_key=None`)."""
        params = {"key": api_key} if api_key is not None else {"all": "1"}
        return self._call("GET", "/_emulator/bill", params=params)

    def stats(self) -> dict[str, Any]:
        """What the emulator holds in memory (cache entries, threads, diagnostics fingerprints)."""
        return self._call("GET", "/_emulator/stats")

    def reset(self, *, clock: bool = False) -> None:
        """Forget cache, bill, queues and threads; with `clock`, rewind a virtual clock to its start."""
        self._call("POST", "/_emulator/reset", json={"clock": clock})
