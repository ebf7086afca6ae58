"""Copying conversations between stores (SQLite ↔ PostgreSQL, or any two `Store`s), losslessly and resumably.

Each conversation is read whole and written with one `restore()` (all of it or nothing), keeping its ids, times,
branches, ledger and policy states. A conversation the target already holds is compared, not rewritten: the
same content is "already there" (so an interrupted copy is finished by running it again), different content is
reported as a conflict and left alone. Every written conversation is read back and compared with the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from turnkeep.errors import StorageError, UnknownConversation
from turnkeep.store.base import Store

__all__ = ["CopyReport", "copy_conversations", "snapshot"]

PAGE = 500


@dataclass
class CopyReport:
    """What a copy did, by conversation id."""

    copied: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    """Ids the target holds with different content: left as they were."""


def snapshot(store: Store, conversation_id: str) -> dict[str, Any]:
    """Everything a store holds about one conversation (what a copy must carry over unchanged)."""
    info = store.info(conversation_id)
    return {
        "settings": store.settings(conversation_id),
        "nodes": store.nodes(conversation_id),
        "branches": store.branches(conversation_id),
        "ledger": store.ledger(conversation_id),
        "policy_states": store.policy_states(conversation_id),
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }


def _all_ids(store: Store) -> Iterator[str]:
    """Every conversation id, oldest page last; collected first so that writes during the copy do not shift pages."""
    ids: list[str] = []
    offset = 0
    while True:
        page = store.list_conversations(limit=PAGE, offset=offset)
        ids += [info.id for info in page]
        if len(page) < PAGE:
            break
        offset += PAGE
    return iter(dict.fromkeys(ids))


def copy_conversations(
    source: Store,
    target: Store,
    conversation_ids: Iterable[str] | None = None,
    *,
    progress: Callable[[str, str], None] | None = None,
) -> CopyReport:
    """Copy `conversation_ids` (default: all) from `source` to `target`. `progress(id, outcome)` is told each
    outcome ("copied", "already there", "conflict"). UnknownConversation if a named id is not in the source."""
    report = CopyReport()
    for conversation_id in _all_ids(source) if conversation_ids is None else conversation_ids:
        data = snapshot(source, conversation_id)
        try:
            existing: dict[str, Any] | None = snapshot(target, conversation_id)
        except UnknownConversation:
            existing = None
        if existing is None:
            target.restore(conversation_id, **data)
            if snapshot(target, conversation_id) != data:
                raise StorageError(f"conversation {conversation_id!r} reads back different from what was copied")
            report.copied.append(conversation_id)
            outcome = "copied"
        elif existing == data:
            report.already_there.append(conversation_id)
            outcome = "already there"
        else:
            report.conflicts.append(conversation_id)
            outcome = "conflict"
        if progress is not None:
            progress(conversation_id, outcome)
    return report
