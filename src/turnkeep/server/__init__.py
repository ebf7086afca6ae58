"""The turnkeep gateway: durable conversations over HTTP, in the Messages API's own shapes.

`turnkeep serve` runs it; `create_app(Gateway(...))` builds the ASGI app; `GatewayServer` runs one on a loopback
port in a background thread (tests, examples, benchmarks). See docs/gateway.md.
"""

from __future__ import annotations

from turnkeep.server.app import Gateway, GatewayConfig, create_app
from turnkeep.server.runner import GatewayServer
from turnkeep.server.tenancy import Limits, SQLiteTenancy, TenancyStore, Tenant

__all__ = [
    "Gateway",
    "GatewayConfig",
    "GatewayServer",
    "Limits",
    "SQLiteTenancy",
    "TenancyStore",
    "Tenant",
    "create_app",
]
