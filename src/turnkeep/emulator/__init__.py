"""An offline emulator of Anthropic's Messages API: validation, prompt-cache billing, streaming, threads,
compaction and faults, answering from the request's own context. See `docs/emulator.md`.

`EmulatorServer` runs it in-process (`with EmulatorServer() as server: server.client()...`); `create_app` builds
the ASGI app; `turnkeep emulate` serves it from the command line; the `turnkeep_emulator` pytest fixture gives a
test a fresh instance. Both public names are imported lazily, so the pure modules (tokenizer, cache, ...) do not
pull in starlette or uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from turnkeep.emulator.app import create_app
    from turnkeep.emulator.server import EmulatorServer

__all__ = ["EmulatorServer", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from turnkeep.emulator.app import create_app

        return create_app
    if name == "EmulatorServer":
        from turnkeep.emulator.server import EmulatorServer

        return EmulatorServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
