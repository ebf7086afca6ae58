"""The store's value types, the `Store` protocol, and the checks every implementation shares.

Both stores (`MemoryStore`, `SQLiteStore`) run the same argument checks (`check_*`) and the same JSON encoding
(`dumps`), so they behave the same by construction: a write that names an unknown node, a missing parent or a
secret-looking setting is refused with `UsageError` before anything is written, and a head that moved gives
`ConflictError`.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from collections.abc import Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, cast

from turnkeep.core import values
from turnkeep.core.messages import block_texts
from turnkeep.core.records import NODE_STATUSES, LedgerEntry, Node, NodeStatus
from turnkeep.errors import UsageError

__all__ = [
    "NODE_STATUSES",
    "ConversationInfo",
    "LedgerEntry",
    "Node",
    "NodeStatus",
    "SearchHit",
    "Store",
    "ledger_row",
    "nodes_from_rows",
]

TITLE_LENGTH = 80
# Names that would hold a credential; a store refuses to write them (keys never reach the store).
SECRET_KEYS = values.SECRET_KEYS
_ROLES = ("user", "assistant", "system")


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    """A row of a conversation listing.

    `title` is an excerpt of the first user text (None before any); `message_count` counts every stored node of
    the tree (all branches, partial and refused replies included); `cost_usd` is the ledger's total as a decimal
    string; times are Unix seconds.
    """

    id: str
    title: str | None
    model: str | None
    created_at: float
    updated_at: float
    message_count: int
    cost_usd: str


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message that matched a search: where it is and a short excerpt around the match."""

    conversation_id: str
    node_id: str
    role: str
    snippet: str


class Store(Protocol):
    """What a conversation store provides. Methods raise `UnknownConversation` for an unknown id, `UsageError`
    for arguments naming nodes that do not exist, `ConflictError` when an expected head moved."""

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        """Create a conversation with one branch, "main", whose head is None (empty)."""
        ...

    def settings(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's settings (model, system, tools, max_tokens, policy ...)."""
        ...

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        """Merge `changes` into the settings (top-level keys replaced)."""
        ...

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
        nodes in `settle`, record `ledger` entries and the branch's new policy state. ConflictError if the head
        moved."""
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

    def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        """Every recorded request, oldest first."""
        ...

    def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        """The context policy's saved state on `branch` ({} when none): each branch has its own, written with
        its turns (a summary of one branch's turns must never stand in for another's)."""
        ...

    def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        """Every branch's saved policy state, by branch (for export)."""
        ...

    def nodes(self, conversation_id: str) -> list[Node]:
        """Every node of the tree, in the order they were written (a parent always before its children)."""
        ...

    def info(self, conversation_id: str) -> ConversationInfo:
        """The listing row of one conversation."""
        ...

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        """Conversations, most recently updated first."""
        ...

    def count_conversations(self) -> int:
        """How many conversations the store holds."""
        ...

    def latest(self) -> str | None:
        """The id of the most recently updated conversation, None when there is none."""
        ...

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages whose text (text blocks, tool results) matches `query`. UsageError for a malformed query."""
        ...

    def delete(self, conversation_id: str) -> None:
        """Remove a conversation and everything it holds."""
        ...

    def restore(
        self,
        conversation_id: str,
        *,
        settings: Mapping[str, Any],
        nodes: Sequence[Node],
        branches: Mapping[str, str | None],
        ledger: Sequence[LedgerEntry] = (),
        policy_states: Mapping[str, Mapping[str, Any]] | None = None,
        created_at: float | None = None,
        updated_at: float | None = None,
    ) -> None:
        """Write a whole conversation in one step (import): all of it or nothing. ConflictError if the id is
        taken; nodes must come parents first."""
        ...


# --------------------------------------------------------------------------------------------------------------
# Shared encoding and checks


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """No cyclic garbage collection while a long path is decoded: its tens of thousands of new dicts and lists
    would set off a full collection of the whole heap (the SDK's included) over and over, which took 40% of
    reading a 10,000-turn path. These objects hold no cycles; the collector runs again after, as it was. (The
    collector is process-wide: it is left off if something else had turned it off.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def nodes_from_rows(rows: Sequence[Sequence[Any]]) -> list[Node]:
    """Nodes from stored `(id, parent_id, message JSON, status, meta JSON)` rows, in order.

    A long path holds tens of thousands of messages that repeat the same few words: keys, roles, block types,
    statuses, meta values, and each id twice (as a node's id and its child's parent). Decoded in one pass (the JSON
    decoder shares the keys it meets within one document) and with those words shared, a 10,000-turn path takes
    about half the memory it takes decoded row by row. Equal metas (every plain user message's is `{"kind":
    "turn"}`) are one object, as nothing changes a node's meta in place."""
    if not rows:
        return []
    with bulk_allocation():
        return _nodes_from_rows(rows)


def _nodes_from_rows(rows: Sequence[Sequence[Any]]) -> list[Node]:
    messages = json.loads("[" + ",".join(row[2] for row in rows) + "]")
    meta_texts = list(dict.fromkeys(row[4] for row in rows))
    metas = dict(zip(meta_texts, json.loads("[" + ",".join(meta_texts) + "]"), strict=True))
    for meta in metas.values():
        if type(meta) is dict:
            for key, value in meta.items():
                if type(value) is str and len(value) <= 64:
                    meta[key] = sys.intern(value)
    ids: dict[str, str] = {}
    nodes: list[Node] = []
    for row, message in zip(rows, messages, strict=True):
        node_id = ids.setdefault(row[0], row[0])
        parent = None if row[1] is None else ids.get(row[1], row[1])
        if type(message) is dict:
            _share_message_words(message)
        nodes.append(Node(node_id, parent, message, cast(NodeStatus, sys.intern(row[3])), metas[row[4]]))
    return nodes


def _share_message_words(message: dict[str, Any]) -> None:
    """The role and the block types, as one string object each across the path."""
    role = message.get("role")
    if type(role) is str:
        message["role"] = sys.intern(role)
    content = message.get("content")
    if type(content) is list:
        for block in content:
            if type(block) is dict:
                kind = block.get("type")
                if type(kind) is str:
                    block["type"] = sys.intern(kind)


def dumps(value: object, what: str, *, checked: bool = False) -> str:
    """Compact JSON, non-ASCII kept as is: the exact text a reopened conversation decodes and resends. Every stored
    value passes `check_value` first (no credential, no lone surrogate, bounded depth); `checked` says it already
    did (a node's message and meta, by `check_new_nodes`), so it is not walked twice."""
    if not checked:
        check_value(value, what)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{what} is not JSON-serialisable: {err}") from err


def check_no_secrets(settings: object, where: str = "settings") -> None:
    """Refuse a value that carries a credential (a credential-named key or an `sk-ant-…` value) at any depth,
    in objects and lists alike; the walk is iterative, so a deeply nested value cannot crash it."""
    problem = values.find_problem(settings, where, depth=False, surrogates=False)
    if problem is not None:
        raise UsageError(f"{problem.path}: credentials are never stored; pass the key to the client instead")


def check_value(value: object, where: str) -> None:
    """What any stored value must be: no credential, no lone surrogate, nested at most
    `MAX_DEPTH + ENVELOPE_DEPTH` levels (so every later reader, recursive or not, can take it)."""
    problem = values.find_problem(value, where, limit=values.MAX_DEPTH + values.ENVELOPE_DEPTH)
    if problem is None:
        return
    if problem.kind.startswith("secret"):
        raise UsageError(f"{problem.path}: credentials are never stored; pass the key to the client instead")
    raise UsageError(f"{problem.path}: {problem.detail}")


def check_status(status: object, what: str) -> None:
    if status not in NODE_STATUSES:
        raise UsageError(f"{what}: status {status!r} is not one of {', '.join(sorted(NODE_STATUSES))}")


def check_new_nodes(nodes: Sequence[Node], exists: Container[str]) -> None:
    """New nodes need fresh ids, a valid status, a role, and a parent that exists or comes earlier in `nodes`.

    `exists` answers `node_id in exists` for the nodes already stored.
    """
    batch: set[str] = set()
    for node in nodes:
        if not isinstance(node.id, str) or not node.id:
            raise UsageError(f"node id must be a non-empty string, not {node.id!r}")
        if node.id in batch or node.id in exists:
            raise UsageError(f"node {node.id!r} already exists")
        if node.parent_id is not None and node.parent_id not in batch and node.parent_id not in exists:
            raise UsageError(f"parent {node.parent_id!r} of node {node.id!r} does not exist")
        check_status(node.status, f"node {node.id!r}")
        if not isinstance(node.message, Mapping) or node.message.get("role") not in _ROLES:
            role = node.message.get("role") if isinstance(node.message, Mapping) else None
            raise UsageError(
                f"node {node.id!r}: a message is an object with role user, assistant or system, not {role!r}"
            )
        check_value(node.message, f"node {node.id!r}.message")
        check_value(node.meta, f"node {node.id!r}.meta")
        batch.add(node.id)


def check_discard(
    node_ids: Sequence[str], branch: str, children: Mapping[str, Sequence[str]], heads: Mapping[str, str | None]
) -> None:
    """Discarded nodes may not leave an orphan behind or pull the head from under another branch.

    `children` maps each discarded node to its children; `heads` is every branch's head.
    """
    doomed = set(node_ids)
    for node_id in node_ids:
        kept = [child for child in children.get(node_id, ()) if child not in doomed]
        if kept:
            raise UsageError(f"cannot discard node {node_id!r}: node {kept[0]!r} descends from it")
    for name, head in heads.items():
        if name != branch and head in doomed:
            raise UsageError(f"cannot discard node {head!r}: it is the head of branch {name!r}")


def check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise UsageError(f"limit and offset must not be negative (got {limit}, {offset})")


def check_query(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise UsageError("the search query is empty")
    return query.strip()


def searchable_text(message: Mapping[str, Any]) -> str:
    """The text a search looks at: text blocks and the text of tool results."""
    return "\n".join(block_texts(message.get("content"), tool_results=True, compaction=False))


def title_of(message: Mapping[str, Any]) -> str | None:
    """An excerpt of a user message's own text (tool results left out), or None when it has none."""
    if message.get("role") != "user":
        return None
    text = re.sub(
        r"\s+", " ", " ".join(block_texts(message.get("content"), tool_results=False, compaction=False))
    ).strip()
    if not text:
        return None
    return text if len(text) <= TITLE_LENGTH else text[: TITLE_LENGTH - 1].rstrip() + "…"


def ledger_row(conversation_id: str, e: LedgerEntry) -> tuple[Any, ...]:
    """A ledger entry as the SQL stores insert it: the conversation, then the columns in the stores' order."""
    return (
        conversation_id,
        e.purpose,
        e.model,
        e.request_id,
        e.message_id,
        e.stop_reason,
        dumps(e.usage, "ledger usage"),
        e.cost_usd,
        e.latency_ms,
        e.at,
        e.error,
        e.cache_miss_reason,
        e.node_id,
        json.dumps(list(e.calibration)) if e.calibration is not None else None,
        e.estimated,
    )


def ledger_dict(entry: LedgerEntry) -> dict[str, Any]:
    """A ledger entry as JSON-ready data (export)."""
    return {
        "purpose": entry.purpose,
        "model": entry.model,
        "request_id": entry.request_id,
        "message_id": entry.message_id,
        "stop_reason": entry.stop_reason,
        "usage": dict(entry.usage),
        "cost_usd": entry.cost_usd,
        "latency_ms": entry.latency_ms,
        "at": entry.at,
        "error": entry.error,
        "cache_miss_reason": entry.cache_miss_reason,
        "node_id": entry.node_id,
        "calibration": list(entry.calibration) if entry.calibration is not None else None,
        "estimated": entry.estimated,
    }
