"""What a conversation is made of, as values: the nodes of its message tree and the entries of its ledger.

They live in `core` because deciding a turn produces them (the planner says which nodes a turn writes and what
its ledger records); the stores keep them (`turnkeep.store` re-exports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = ["NODE_STATUSES", "LedgerEntry", "Node", "NodeStatus"]

NodeStatus = Literal["ok", "pending", "partial", "refused"]
NODE_STATUSES: frozenset[str] = frozenset(get_args(NodeStatus))


@dataclass(frozen=True, slots=True)
class Node:
    """One message in the tree. `message` is the `MessageParam` JSON; identity lives here, not in it.

    `status`: "ok" (part of the conversation), "pending" (a user message whose reply has not arrived yet),
    "partial" (a reply cut off mid-stream: kept for display, never sent), "refused" (an exchange the model refused,
    left out of later requests). `meta` holds what a reader may want (kind, stop reason, prefill ...); it is
    read-only: a path loaded from a store holds equal metas as one object.
    """

    id: str
    parent_id: str | None
    message: Mapping[str, Any]
    status: NodeStatus = "ok"
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One request sent to the API: what it cost and how it went."""

    purpose: str
    model: str
    request_id: str | None
    message_id: str | None
    stop_reason: str | None
    usage: Mapping[str, Any]
    cost_usd: str
    latency_ms: float
    at: float
    error: str | None = None
    cache_miss_reason: str | None = None
    node_id: str | None = None
    calibration: tuple[int, int] | None = None
    """(estimated, measured) tokens of the part of the request that was estimated: what the conversation learned
    its token calibration from, so a reopened conversation learns the same again."""
    estimated: bool = False
    """`usage` and `cost_usd` are an estimate, not the API's figures: the response was lost, or cut, before its
    usage arrived (a timeout, a dropped connection, a truncated body, a stream the server, the network or the
    caller stopped). The request may have been billed; what it cost cannot be known from here."""
