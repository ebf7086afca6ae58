"""Where conversations live: a small `Store` protocol and `MemoryStore`, its in-process implementation.

A conversation is a tree of nodes (each holds one `MessageParam` exactly as sent or received, plus metadata),
with named branches whose heads point into the tree, a request ledger, settings and the context policy's state.
Every write that changes a head names the head it expects (optimistic concurrency): a writer that lost a race
gets `ConflictError` and nothing is written. Multi-row writes are atomic.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from turnkeep.errors import ConflictError, UnknownConversation

__all__ = ["LedgerEntry", "MemoryStore", "Node", "NodeStatus", "Store"]

NodeStatus = Literal["ok", "pending", "partial", "refused"]


@dataclass(frozen=True, slots=True)
class Node:
    """One message in the tree. `message` is the `MessageParam` JSON; identity lives here, not in it.

    `status`: "ok" (part of the conversation), "pending" (a user message whose reply has not arrived yet),
    "partial" (a reply cut off mid-stream: kept for display, never sent), "refused" (an exchange the model refused,
    left out of later requests). `meta` holds what a reader may want (kind, stop reason, prefill ...).
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


class Store(Protocol):
    """What a conversation store provides. Methods raise `UnknownConversation` for an unknown id."""

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        """Create a conversation with one branch, "main", whose head is None (empty)."""
        ...

    def settings(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's settings (model, system, tools, max_tokens, policy ...)."""
        ...

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None: ...

    def branches(self, conversation_id: str) -> dict[str, str | None]:
        """Branch name -> head node id."""
        ...

    def path(self, conversation_id: str, head: str | None) -> list[Node]:
        """The nodes from the root to `head`, in order."""
        ...

    def append(
        self,
        conversation_id: str,
        branch: str,
        *,
        expected_head: str | None,
        nodes: Sequence[Node] = (),
        settle: Mapping[str, NodeStatus] | None = None,
        ledger: Sequence[LedgerEntry] = (),
        policy_state: Mapping[str, Any] | None = None,
    ) -> None:
        """Atomically: add `nodes` (a chain), move the branch head to the last of them, change the status of the
        nodes in `settle`, record `ledger` entries and the new policy state. ConflictError if the head moved."""
        ...

    def move_head(self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None) -> None:
        """Point a branch (existing or new) at another node. ConflictError if the head moved."""
        ...

    def discard(self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]) -> None:
        """Remove nodes that were never part of a reply (a rolled-back pending message and its partial replies)
        and move the head to the parent of the first. ConflictError if the head moved."""
        ...

    def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        """Record requests that changed no message (a failed call is still billed)."""
        ...

    def ledger(self, conversation_id: str) -> list[LedgerEntry]: ...

    def policy_state(self, conversation_id: str) -> dict[str, Any]: ...


@dataclass
class _Conversation:
    settings: dict[str, Any]
    nodes: dict[str, Node] = field(default_factory=dict)
    branches: dict[str, str | None] = field(default_factory=lambda: {"main": None})
    ledger: list[LedgerEntry] = field(default_factory=list)
    policy_state: dict[str, Any] = field(default_factory=dict)


class MemoryStore:
    """A `Store` in this process's memory: nothing survives the process. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conversations: dict[str, _Conversation] = {}

    def _get(self, conversation_id: str) -> _Conversation:
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise UnknownConversation(f"no conversation {conversation_id!r}") from None

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        with self._lock:
            if conversation_id in self._conversations:
                raise ConflictError(f"conversation {conversation_id!r} already exists")
            self._conversations[conversation_id] = _Conversation(settings=copy.deepcopy(dict(settings)))

    def settings(self, conversation_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._get(conversation_id).settings)

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        with self._lock:
            self._get(conversation_id).settings.update(copy.deepcopy(dict(changes)))

    def branches(self, conversation_id: str) -> dict[str, str | None]:
        with self._lock:
            return dict(self._get(conversation_id).branches)

    def path(self, conversation_id: str, head: str | None) -> list[Node]:
        with self._lock:
            conversation = self._get(conversation_id)
            nodes: list[Node] = []
            while head is not None:
                node = conversation.nodes[head]
                nodes.append(node)
                head = node.parent_id
            return nodes[::-1]

    def _check_head(self, conversation: _Conversation, branch: str, expected: str | None) -> None:
        if conversation.branches.get(branch) != expected:
            raise ConflictError(
                f"branch {branch!r} moved (expected head {expected!r}, found {conversation.branches.get(branch)!r})"
            )

    def append(
        self,
        conversation_id: str,
        branch: str,
        *,
        expected_head: str | None,
        nodes: Sequence[Node] = (),
        settle: Mapping[str, NodeStatus] | None = None,
        ledger: Sequence[LedgerEntry] = (),
        policy_state: Mapping[str, Any] | None = None,
    ) -> None:
        with self._lock:
            conversation = self._get(conversation_id)
            self._check_head(conversation, branch, expected_head)
            for node_id in settle or {}:
                if node_id not in conversation.nodes:
                    raise KeyError(f"no node {node_id!r} to settle")
            for node_id, status in (settle or {}).items():
                old = conversation.nodes[node_id]
                conversation.nodes[node_id] = Node(old.id, old.parent_id, old.message, status, old.meta)
            for node in nodes:
                conversation.nodes[node.id] = Node(
                    node.id, node.parent_id, copy.deepcopy(dict(node.message)), node.status, dict(node.meta)
                )
            if nodes:
                conversation.branches[branch] = nodes[-1].id
            conversation.ledger.extend(ledger)
            if policy_state is not None:
                conversation.policy_state = copy.deepcopy(dict(policy_state))

    def move_head(self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None) -> None:
        with self._lock:
            conversation = self._get(conversation_id)
            if branch in conversation.branches:
                self._check_head(conversation, branch, expected_head)
            conversation.branches[branch] = new_head

    def discard(self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]) -> None:
        with self._lock:
            conversation = self._get(conversation_id)
            self._check_head(conversation, branch, expected_head)
            if not node_ids:
                return
            parent = conversation.nodes[node_ids[0]].parent_id
            for node_id in node_ids:
                conversation.nodes.pop(node_id, None)
            conversation.branches[branch] = parent

    def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        with self._lock:
            self._get(conversation_id).ledger.extend(ledger)

    def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        with self._lock:
            return list(self._get(conversation_id).ledger)

    def policy_state(self, conversation_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._get(conversation_id).policy_state)
