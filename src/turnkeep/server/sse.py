"""The Messages API's server-sent events, as the gateway writes them for a streamed thread turn (no I/O here).

A streamed thread turn goes out while it runs:

```
message_start      at once (the gateway names the reply, so its id is known before upstream answers)
ping
content_block_*    the reply's text as it arrives, as block 0
…                  when the reply is complete and stored: its other blocks (tool uses, thinking), then
message_delta      stop reason and the whole usage
message_stop
```

Folded by an SDK, the events give the reply back, except that its text comes first, as one block.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["block_events", "block_stop", "encode", "message_end", "message_start", "text_delta", "text_start"]


def encode(name: str, data: Mapping[str, Any]) -> bytes:
    """One event: `event: NAME` and its JSON `data`."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def message_start(message_id: str, model: str) -> Iterator[bytes]:
    """`message_start` of an empty reply (its usage follows in `message_delta`), then a `ping`."""
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield encode("message_start", {"type": "message_start", "message": start})
    yield encode("ping", {"type": "ping"})


def text_start(index: int) -> bytes:
    block = {"type": "text", "text": ""}
    return encode("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def text_delta(index: int, text: str) -> bytes:
    delta = {"type": "text_delta", "text": text}
    return encode("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return encode("content_block_stop", {"type": "content_block_stop", "index": index})


def block_events(index: int, block: Mapping[str, Any]) -> Iterator[bytes]:
    """A finished content block as its start, delta and stop events."""

    def delta(payload: dict[str, Any]) -> bytes:
        return encode("content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})

    def start(content_block: Mapping[str, Any]) -> bytes:
        return encode(
            "content_block_start", {"type": "content_block_start", "index": index, "content_block": content_block}
        )

    kind = block.get("type")
    if kind == "text":
        yield text_start(index)
        if block.get("text"):
            yield text_delta(index, str(block["text"]))
    elif kind == "thinking":
        yield start({"type": "thinking", "thinking": "", "signature": ""})
        if block.get("thinking"):
            yield delta({"type": "thinking_delta", "thinking": block["thinking"]})
        yield delta({"type": "signature_delta", "signature": block.get("signature", "")})
    elif kind in ("tool_use", "server_tool_use"):
        yield start({**block, "input": {}})
        arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
        if arguments != "{}":
            yield delta({"type": "input_json_delta", "partial_json": arguments})
    else:
        yield start(block)
    yield block_stop(index)


def message_end(message: Mapping[str, Any]) -> Iterator[bytes]:
    """`message_delta` (stop reason, the reply's whole usage) and `message_stop`."""
    usage = message.get("usage") or {}
    delta_usage = {
        key: usage[key]
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
        if key in usage
    }
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    yield encode("message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage})
    yield encode("message_stop", {"type": "message_stop"})
