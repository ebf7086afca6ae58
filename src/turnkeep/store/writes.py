"""Applying writes-as-data (`turnkeep.core.writes`) to a store: the only difference between the sync and the
async edge is the `await`. And the replica an `AsyncStore`'s conversation is read from."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, assert_never

from turnkeep.core.writes import Append, Create, Discard, MoveHead, Record, UpdateSettings, Write
from turnkeep.store.aio import AsyncStore
from turnkeep.store.base import Store
from turnkeep.store.memory import MemoryStore

__all__ = ["apply", "apply_async", "is_async_store", "load_replica"]


def apply(store: Store, writes: Sequence[Write]) -> None:
    """Apply `writes` in order; the first that fails raises (the store's own error) and stops the rest."""
    for write in writes:
        _call(store, write)


async def apply_async(store: AsyncStore, writes: Sequence[Write]) -> None:
    """`apply` on an `AsyncStore`."""
    for write in writes:
        await _call(store, write)


def _call(store: Store | AsyncStore, write: Write) -> Any:
    """The store method `write` stands for, called: its result (None, or a coroutine on an `AsyncStore`)."""
    match write:
        case Create():
            return store.create(write.conversation_id, write.settings)
        case Append():
            return store.append(
                write.conversation_id,
                write.branch,
                expected_head=write.expected_head,
                nodes=write.nodes,
                settle=write.settle,
                ledger=write.ledger,
                policy_state=write.policy_state,
            )
        case Record():
            return store.record(write.conversation_id, write.ledger)
        case UpdateSettings():
            return store.update_settings(write.conversation_id, write.changes)
        case MoveHead():
            return store.move_head(
                write.conversation_id, write.branch, expected_head=write.expected_head, new_head=write.new_head
            )
        case Discard():
            return store.discard(
                write.conversation_id, write.branch, expected_head=write.expected_head, node_ids=write.node_ids
            )
    assert_never(write)


def is_async_store(store: object) -> bool:
    """Whether `store` is an `AsyncStore` (its methods are coroutines) rather than a `Store`."""
    return inspect.iscoroutinefunction(getattr(store, "append", None))


async def load_replica(store: AsyncStore, conversation_id: str, *, into: MemoryStore | None = None) -> MemoryStore:
    """One conversation of an async store, read with `await` into a `MemoryStore` (`into` replaces its copy):
    what a conversation on an `AsyncStore` reads without blocking, kept current by applying its writes to both."""
    replica = into if into is not None else MemoryStore()
    settings = await store.settings(conversation_id)  # UnknownConversation first, before anything else is read
    branches = await store.branches(conversation_id)
    nodes = await store.nodes(conversation_id)
    ledger = await store.ledger(conversation_id)
    policy_states = await store.policy_states(conversation_id)
    info = await store.info(conversation_id)
    if conversation_id in {row.id for row in replica.list_conversations(limit=replica.count_conversations())}:
        replica.delete(conversation_id)
    replica.restore(
        conversation_id,
        settings=settings,
        nodes=nodes,
        branches=branches,
        ledger=ledger,
        policy_states=policy_states,
        created_at=info.created_at,
        updated_at=info.updated_at,
    )
    return replica
