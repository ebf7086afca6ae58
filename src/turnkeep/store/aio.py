"""`AsyncStore`: the `Store` protocol for asyncio code (implemented by `AsyncPostgresStore`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from turnkeep.store.base import ConversationInfo, LedgerEntry, Node, NodeStatus, SearchHit

__all__ = ["AsyncStore"]


class AsyncStore(Protocol):
    """`Store` for asyncio code: the same methods, contracts and errors, each a coroutine (so a store on an async
    driver, like `AsyncPostgresStore` on psycopg's async pool, never blocks the event loop)."""

    async def create(self, conversation_id: str, settings: Mapping[str, Any]) -> None:
        """Create a conversation with one branch, "main", whose head is None (empty)."""
        ...

    async def settings(self, conversation_id: str) -> dict[str, Any]:
        """The conversation's settings (model, system, tools, max_tokens, policy ...)."""
        ...

    async def update_settings(self, conversation_id: str, changes: Mapping[str, Any]) -> None:
        """Merge `changes` into the settings (top-level keys replaced)."""
        ...

    async def branches(self, conversation_id: str) -> dict[str, str | None]:
        """Branch name -> head node id."""
        ...

    async def path(self, conversation_id: str, head: str | None) -> list[Node]:
        """The nodes from the root to `head`, in order."""
        ...

    async def append(
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

    async def move_head(
        self, conversation_id: str, branch: str, *, expected_head: str | None, new_head: str | None
    ) -> None:
        """Point a branch (existing or new) at another node. ConflictError if the head moved."""
        ...

    async def discard(
        self, conversation_id: str, branch: str, *, expected_head: str | None, node_ids: Sequence[str]
    ) -> None:
        """Remove nodes that were never part of a reply (a rolled-back pending message and its partial replies)
        and move the head to the parent of the first. ConflictError if the head moved."""
        ...

    async def record(self, conversation_id: str, ledger: Sequence[LedgerEntry]) -> None:
        """Record requests that changed no message (a failed call is still billed)."""
        ...

    async def ledger(self, conversation_id: str) -> list[LedgerEntry]:
        """Every recorded request, oldest first."""
        ...

    async def policy_state(self, conversation_id: str, branch: str = "main") -> dict[str, Any]:
        """The context policy's saved state on `branch` ({} when none): each branch has its own, written with
        its turns (a summary of one branch's turns must never stand in for another's)."""
        ...

    async def policy_states(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        """Every branch's saved policy state, by branch (for export)."""
        ...

    async def nodes(self, conversation_id: str) -> list[Node]:
        """Every node of the tree, in the order they were written (a parent always before its children)."""
        ...

    async def info(self, conversation_id: str) -> ConversationInfo:
        """The listing row of one conversation."""
        ...

    async def list_conversations(self, limit: int = 50, offset: int = 0) -> list[ConversationInfo]:
        """Conversations, most recently updated first."""
        ...

    async def count_conversations(self) -> int:
        """How many conversations the store holds."""
        ...

    async def latest(self) -> str | None:
        """The id of the most recently updated conversation, None when there is none."""
        ...

    async def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages whose text (text blocks, tool results) matches `query`. UsageError for a malformed query."""
        ...

    async def delete(self, conversation_id: str) -> None:
        """Remove a conversation and everything it holds."""
        ...

    async def restore(
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
