"""Run the gateway: build it from a database and an upstream, and serve it with uvicorn.

```python
from turnkeep.server import GatewayServer

with GatewayServer(database="gateway.db", upstream="emulator") as server:
    key = server.create_key("acme")                       # a gateway key of tenant "acme", shown once
    client = anthropic.Anthropic(api_key=key, base_url=server.base_url)
    thread = client.beta.messages.thread(model="claude-sonnet-5", max_tokens=200)
    thread.send({"role": "user", "content": "My name is Ada."})
```

`upstream="emulator"` starts turnkeep's emulator in the same process (on its own loopback port) and gives the
gateway a key for it; any other value is the base URL of the real API, used with `upstream_key`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from turnkeep.server.app import Gateway, GatewayConfig, create_app
from turnkeep.server.tenancy import Limits, SQLiteTenancy, Tenant, new_key
from turnkeep.serving import ServerThread, listening_socket, uvicorn_config

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "EMULATOR_UPSTREAM_KEY",
    "WORKER_VARIABLE",
    "GatewayServer",
    "build_gateway",
    "close_stores",
    "log_access",
    "worker_app",
    "worker_spec",
]

EMULATOR_UPSTREAM_KEY = "turnkeep-gateway"
"""The key the gateway uses with an in-process emulator (the emulator accepts any key and bills by key)."""


def build_gateway(database: str | Path, config: GatewayConfig) -> Gateway:
    """A gateway whose conversations and tenancy rows live in `database`: a `postgresql://` URL (any number of
    replicas may share it) or a SQLite file (replicas on one machine)."""
    from turnkeep.store import SQLiteStore
    from turnkeep.store.postgres import PostgresStore, is_url

    if is_url(database):
        from turnkeep.server.pgtenancy import PostgresTenancy

        postgres = PostgresStore(str(database))
        try:
            tenancy = PostgresTenancy(str(database))
        except BaseException:
            postgres.close()
            raise
        return Gateway(config, store=postgres, tenancy=tenancy)
    store = SQLiteStore(database, synchronous="NORMAL")
    return Gateway(config, store=store, tenancy=SQLiteTenancy(database))


def close_stores(gateway: Gateway) -> None:
    """Close the gateway's conversation store and tenancy store."""
    close = getattr(gateway.store, "close", None)
    if close is not None:
        close()
    gateway.tenancy.close()


def log_access() -> None:
    """Access-log lines (one JSON object per request, see `turnkeep.server.app`) on stderr."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("turnkeep.gateway.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)


WORKER_VARIABLE = "TURNKEEP_GATEWAY_WORKER"
"""How `turnkeep serve --workers N` tells its worker processes what to serve (no secret in it: a worker reads
the upstream key from `ANTHROPIC_API_KEY`, as its parent did, or uses the in-process emulator's)."""


def worker_spec(database: str | Path, config: GatewayConfig, *, access_log: bool) -> str:
    """What a worker process needs to build the same gateway, as JSON."""
    settings = {name: value for name, value in asdict(config).items() if name != "upstream_key"}
    return json.dumps(
        {
            "database": str(database),
            "config": settings,
            "emulator_key": config.upstream_key == EMULATOR_UPSTREAM_KEY,
            "access_log": access_log,
        }
    )


def worker_app() -> Starlette:
    """The app of one worker of `turnkeep serve --workers N` (uvicorn calls this factory in each process)."""
    spec = json.loads(os.environ[WORKER_VARIABLE])
    key = EMULATOR_UPSTREAM_KEY if spec["emulator_key"] else os.environ.get("ANTHROPIC_API_KEY", "")
    gateway = build_gateway(spec["database"], GatewayConfig(**spec["config"], upstream_key=key))
    if spec["access_log"]:
        log_access()
    return create_app(gateway)


class GatewayServer:
    """The gateway on a loopback port in a background thread, for the life of a `with` block."""

    def __init__(
        self,
        *,
        database: str | Path,
        upstream: str = "emulator",
        upstream_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        config: GatewayConfig | None = None,
        emulator_options: dict[str, Any] | None = None,
    ) -> None:
        self.database: str | Path = database if isinstance(database, str) and "://" in database else Path(database)
        self.upstream = upstream
        self.host = host
        self.port = port
        self._upstream_key = upstream_key
        self._config = config or GatewayConfig()
        self._emulator_options = emulator_options or {}
        self.emulator: Any = None  # the EmulatorServer when upstream == "emulator"
        self.gateway: Gateway | None = None
        self._serving: ServerThread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> GatewayServer:
        """Serve; a start that fails closes what it had opened (the emulator, the stores) before it raises."""
        try:
            if self.upstream == "emulator":
                from turnkeep.emulator import EmulatorServer

                self.emulator = EmulatorServer(**self._emulator_options).start()
                upstream = self.emulator.base_url
                config = replace(self._config, upstream_url=upstream, upstream_key=EMULATOR_UPSTREAM_KEY)
            else:
                config = replace(self._config, upstream_url=self.upstream, upstream_key=self._upstream_key or "")
            self.gateway = build_gateway(self.database, config)
            sock = listening_socket(self.host, self.port)
            self.port = sock.getsockname()[1]
            served = uvicorn_config(create_app(self.gateway), lifespan="on")
            self._serving = ServerThread(served, sock, name="turnkeep-gateway").start("the gateway")
        except BaseException:
            self.stop()
            raise
        return self

    def create_key(self, tenant: str, limits: Limits | None = None, policy: str | None = None) -> str:
        """Create (or update) `tenant` and return a new key for it."""
        assert self.gateway is not None, "start the server first"
        tenancy = self.gateway.tenancy
        if tenancy.tenant(tenant) is None or limits is not None or policy is not None:
            tenancy.put_tenant(Tenant(tenant, limits or Limits(), policy))
        key = new_key()
        tenancy.add_key(tenant, key, now=time.time())
        return key

    def stop(self) -> None:
        """Stop serving (requests in flight finish first), then the emulator; close the stores."""
        if self._serving is not None:
            self._serving.stop(timeout=30.0)
            self._serving = None
        if self.gateway is not None:
            close_stores(self.gateway)
            self.gateway = None
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
