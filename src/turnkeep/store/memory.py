"""`MemoryStore`: the `Store` in this process's memory, for tests and throw-away conversations."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from turnkeep.errors import ConflictError, UnknownConversation, UsageError
from turnkeep.store.base import (
    ConversationInfo,
    LedgerEntry,
    Node,
    NodeStatus,
    SearchHit,
    check_discard,
    check_new_nodes,
    check_no_secrets,
    check_page,
    check_query,
    check_status,
    dumps,
    nodes_from_rows,
    searchable_text,
    title_of,
)

__all__ = ["MemoryStore"]

SNIPPET_CONTEXT = 40


@dataclass(frozen=True, slots=True)
class _Kept:
    """A stored node as a database row keeps it: its message and meta as JSON text, decoded only when read (so
    readers get fresh copies they may change, and a long conversation is held once, compactly)."""

    id: str
    parent_id: str | None
    status: NodeStatus
    message_text: str
    meta_text: str

    @property
    def message(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.message_text)
        return decoded

    def settled(self, status: NodeStatus) -> _Kept:
        return _Kept(self.id, self.parent_id, status, self.message_text, self.meta_text)


@dataclass
class _Conversation:
    settings: dict[str, Any]
    created_at: float
    updated_at: float
    touched: int
    nodes: dict[str, _Kept] = field(default_factory=dict)
    branches: dict[str, str | None] = field(default_factory=lambda: {"main": None})
    ledger: list[LedgerEntry] = field(default_factory=list)
    policy_states: dict[str, str] = field(default_factory=dict)  # by branch, as JSON text
    title: str | None = None
    cost: Decimal = Decimal(0)


def _copy(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """A private copy that went through the same JSON encoding as the SQLite store (same accepted values)."""
    decoded: dict[str, Any] = json.loads(dumps(dict(value), what))
    return decoded


def _keep(node: Node) -> _Kept:
    """`node` as kept: its message and meta as JSON (the same encoding as SQLite's; `check_new_nodes` checked
    the values)."""
    return _Kept(
        node.id,
        node.parent_id,
        node.status,
        dumps(node.message, f"message of node {node.id!r}", checked=True),
        dumps(node.meta, f"meta of node {node.id!r}", checked=True),
    )


def _decoded(nodes: Sequence[_Kept]) -> list[Node]:
    """Copies of kept nodes that the caller may change freely (decoded as a database's rows are)."""
    return nodes_from_rows([(n.id, n.parent_id, n.message_text, n.status, n.meta_text) for n in nodes])


class MemoryStore:
    """A `Store` in this process's memory: nothing survives the process. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conversations: dict[str, _Conversation] = {}
        self._counter = itertools.count(1)

    def _get(self, conversation_id: str) -> _Conversation:
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise UnknownConversation(f"no conversation {conversation_id!r}") from None

    def _touch(self, conversation: _Conversation, at: float | None = None) -> None:
        conversation.updated_at = time.time() if at is None else at
        conversation.touched = next(self._counter)

    def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        check_no_secrets(settings)
        stored = _copy(settings, "settings")
        with self._lock:
            if conversation_id in self._conversations:
                raise ConflictError(f"conversation {conversation_id!r} already exists")
            now = time.time()
            self._conversations[conversation_id] = _Conversation(stored, now, now, next(self._counter))

    def settings(self, conversation_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._get(conversation_id).settings)

    def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        check_no_secrets(changes)
        stored = _copy(changes, "settings")
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.settings.update(stored)
            self._touch(conversation)

    def branches(self, conversation_id: str) -> dict[str, str | None]:
        with self._lock:
            return dict(self._get(conversation_id).branches)

    def path(self, conversation_id: str, head: str | None) -> list[Node]:
        with self._lock:
            conversation = self._get(conversation_id)
            if head is not None and head not in conversation.nodes:
                raise UsageError(f"conversation {conversation_id!r} has no node {head!r}")
            nodes: list[_Kept] = []
            while head is not None:
                node = conversation.nodes[head]
                nodes.append(node)
                head = node.parent_id
            return _decoded(nodes[::-1])

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
        new_state = dumps(dict(policy_state), "policy state") if policy_state is not None else None
        with self._lock:
            conversation = self._get(conversation_id)
            self._check_head(conversation, branch, expected_head)
            for node_id, status in (settle or {}).items():
                if node_id not in conversation.nodes:
                    raise UsageError(f"no node {node_id!r} to settle in conversation {conversation_id!r}")
                check_status(status, f"settle of node {node_id!r}")
            check_new_nodes(nodes, conversation.nodes)  # before encoding: `_keep` writes the values unchecked
            new_nodes = [_keep(n) for n in nodes]
            # Every check passed: from here on nothing can fail half-way.
            for node_id, status in (settle or {}).items():
                conversation.nodes[node_id] = conversation.nodes[node_id].settled(status)
            for node, kept in zip(nodes, new_nodes, strict=True):
                conversation.nodes[kept.id] = kept
                if conversation.title is None:
                    conversation.title = title_of(node.message)
            if new_nodes:
                conversation.branches[branch] = new_nodes[-1].id
            conversation.ledger.extend(ledger)
            conversation.cost += sum((Decimal(e.cost_usd) for e in ledger), Decimal(0))
            if new_state is not None:
                conversation.policy_states[branch] = new_state
            self._touch(conversation)

    def move_head(self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None) -> None:
        with self._lock:
            conversation = self._get(conversation_id)
            if branch in conversation.branches:
                self._check_head(conversation, branch, expected_head)
            if new_head is not None and new_head not in conversation.nodes:
                raise UsageError(f"conversation {conversation_id!r} has no node {new_head!r}")
            if not isinstance(branch, str) or not branch:
                raise UsageError(f"a branch name is a non-empty string, not {branch!r}")
            conversation.branches[branch] = new_head
            self._touch(conversation)

    def discard(self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]) -> None:
        with self._lock:
            conversation = self._get(conversation_id)
            self._check_head(conversation, branch, expected_head)
            if not node_ids:
                return
            for node_id in node_ids:
                if node_id not in conversation.nodes:
                    raise UsageError(f"no node {node_id!r} to discard in conversation {conversation_id!r}")
            doomed = set(node_ids)
            children: dict[str, list[str]] = {}
            for node in conversation.nodes.values():
                if node.parent_id in doomed:
                    children.setdefault(node.parent_id, []).append(node.id)
            check_discard(node_ids, branch, children, conversation.branches)
            parent = conversation.nodes[node_ids[0]].parent_id
            for node_id in node_ids:
                conversation.nodes.pop(node_id)
            conversation.branches[branch] = parent
            conversation.title = next(
                (t for t in (title_of(n.message) for n in conversation.nodes.values()) if t is not None), None
            )
            self._touch(conversation)

    def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        with self._lock:
            conversation = self._get(conversation_id)
            conversation.ledger.extend(ledger)
            conversation.cost += sum((Decimal(e.cost_usd) for e in ledger), Decimal(0))
            self._touch(conversation)

    def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        with self._lock:
            return list(self._get(conversation_id).ledger)

    def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        with self._lock:
            text = self._get(conversation_id).policy_states.get(branch)
        state: dict[str, Any] = json.loads(text) if text is not None else {}
        return state

    def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            texts = dict(self._get(conversation_id).policy_states)
        return {branch: json.loads(text) for branch, text in texts.items()}

    def nodes(self, conversation_id: str) -> list[Node]:
        with self._lock:
            conversation = self._get(conversation_id)
            return _decoded(list(conversation.nodes.values()))

    def _info(self, conversation_id: str, conversation: _Conversation) -> ConversationInfo:
        model = conversation.settings.get("model")
        return ConversationInfo(
            id=conversation_id,
            title=conversation.title,
            model=model if isinstance(model, str) else None,
            created_at=conversation.created_at,
            updated_at=conversation.updated_at,
            message_count=len(conversation.nodes),
            cost_usd=str(conversation.cost),
        )

    def _newest_first(self) -> list[tuple[str, _Conversation]]:
        return sorted(self._conversations.items(), key=lambda item: (item[1].updated_at, item[1].touched), reverse=True)

    def info(self, conversation_id: str) -> ConversationInfo:
        with self._lock:
            return self._info(conversation_id, self._get(conversation_id))

    def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        check_page(limit, offset)
        with self._lock:
            return [self._info(cid, c) for cid, c in self._newest_first()[offset : offset + limit]]

    def count_conversations(self) -> int:
        with self._lock:
            return len(self._conversations)

    def latest(self) -> str | None:
        with self._lock:
            newest = self._newest_first()
            return newest[0][0] if newest else None

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Case-insensitive substring match over message text (the SQLite store uses full-text search)."""
        needle = check_query(query).casefold()
        check_page(limit, 0)
        hits: list[SearchHit] = []
        with self._lock:
            for conversation_id, conversation in self._newest_first():
                for node in conversation.nodes.values():
                    message = node.message
                    text = searchable_text(message)
                    at = text.casefold().find(needle)
                    if at < 0:
                        continue
                    if len(hits) == limit:
                        return hits
                    hits.append(
                        SearchHit(conversation_id, node.id, str(message["role"]), _snippet(text, at, len(needle)))
                    )
        return hits

    def delete(self, conversation_id: str) -> None:
        with self._lock:
            self._get(conversation_id)
            del self._conversations[conversation_id]

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
        check_no_secrets(settings)
        stored_settings = _copy(settings, "settings")
        check_new_nodes(nodes, ())  # before encoding: it checks the values `_keep` then writes unchecked
        new_nodes = [_keep(n) for n in nodes]
        ids = {n.id for n in new_nodes}
        for name, head in branches.items():
            if head is not None and head not in ids:
                raise UsageError(f"head {head!r} of branch {name!r} is not a node")
        states = {name: dumps(dict(state), "policy state") for name, state in (policy_states or {}).items()}
        unknown = sorted(set(states) - set(branches))
        if unknown:
            raise UsageError(f"policy state for {unknown[0]!r}, which is not a branch")
        now = time.time()
        conversation = _Conversation(
            stored_settings,
            created_at if created_at is not None else now,
            updated_at if updated_at is not None else now,
            0,
            nodes={n.id: n for n in new_nodes},
            branches=dict(branches),
            ledger=list(ledger),
            policy_states=states,
            title=next((t for t in (title_of(n.message) for n in nodes) if t is not None), None),
            cost=sum((Decimal(e.cost_usd) for e in ledger), Decimal(0)),
        )
        with self._lock:
            if conversation_id in self._conversations:
                raise ConflictError(f"conversation {conversation_id!r} already exists")
            conversation.touched = next(self._counter)
            self._conversations[conversation_id] = conversation


def _snippet(text: str, at: int, length: int) -> str:
    """The match in brackets with some context either side, on one line (like the SQLite store's snippet)."""
    start, end = max(0, at - SNIPPET_CONTEXT), min(len(text), at + length + SNIPPET_CONTEXT)
    snippet = f"{text[start:at]}[{text[at : at + length]}]{text[at + length : end]}"
    snippet = " ".join(snippet.split())
    return ("…" if start > 0 else "") + snippet + ("…" if end < len(text) else "")
