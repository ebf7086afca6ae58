"""Small builders for store tests: nodes, ledger entries and messages with awkward content."""

from __future__ import annotations

import uuid
from typing import Any

from turnkeep.store import LedgerEntry, Node, NodeStatus

SETTINGS: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "system": None, "tools": None}


def new_id() -> str:
    return uuid.uuid4().hex


def user(text: str, parent: str | None, status: NodeStatus = "ok", node_id: str | None = None) -> Node:
    return Node(node_id or new_id(), parent, {"role": "user", "content": text}, status, {"kind": "turn"})


def assistant(text: str, parent: str | None, status: NodeStatus = "ok", node_id: str | None = None) -> Node:
    message = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    return Node(node_id or new_id(), parent, message, status, {"kind": "reply", "stop_reason": "end_turn"})


def entry(cost: str = "0.001", purpose: str = "turn") -> LedgerEntry:
    return LedgerEntry(
        purpose=purpose,
        model="claude-sonnet-4-6",
        request_id=f"req_{new_id()[:8]}",
        message_id=f"msg_{new_id()[:8]}",
        stop_reason="end_turn",
        usage={"input_tokens": 12, "output_tokens": 5, "cache_read_input_tokens": 0},
        cost_usd=cost,
        latency_ms=12.345,
        at=1_800_000_000.25,
    )


# Messages whose JSON must come back byte for byte: non-ASCII text, nested tool input with floats, key order that
# is not sorted, a thinking block with its signature, and a tool result.
AWKWARD_REPLY: dict[str, Any] = {
    "role": "assistant",
    "content": [
        {"type": "thinking", "thinking": "Ünïcödé — 思考 🧠\nline two", "signature": "EqQBCkYIBxgCKkA+/="},
        {"type": "text", "text": 'Zürich \u2028 ✓ "quoted" \\ back\tslash'},
        {
            "type": "tool_use",
            "id": "toolu_01A",
            "name": "lookup",
            "input": {"z": [1, 2.5, 1e-07, {"deep": {"deeper": [None, True, "ß"]}}], "a": -0.0, "m": 12345678901234567},
        },
    ],
}
AWKWARD_RESULT: dict[str, Any] = {
    "role": "user",
    "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "naïve café"}]},
        {"type": "text", "text": "日本語のテキスト"},
    ],
}
