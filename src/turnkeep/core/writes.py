"""Store writes as data: what a turn or a history edit will change, decided before anything is changed.

The planner and the conversation's pieces return these; an edge applies them in order to a `Store` or an
`AsyncStore` (`turnkeep.store.writes`) and only then mirrors them in memory, so sync and async code share every
decision and differ only in whether they `await` the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from turnkeep.core.records import LedgerEntry, Node, NodeStatus

__all__ = ["Append", "Create", "Discard", "MoveHead", "Record", "UpdateSettings", "Write"]


@dataclass(frozen=True, slots=True)
class Create:
    """A new conversation with these settings (one empty branch, "main")."""

    conversation_id: str
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Append:
    """Nodes added under a branch head (which must still be `expected_head`), statuses settled, requests recorded
    and the branch's policy state replaced, in one transaction."""

    conversation_id: str
    branch: str
    expected_head: str | None
    nodes: Sequence[Node] = ()
    settle: Mapping[str, NodeStatus] = field(default_factory=dict)
    ledger: Sequence[LedgerEntry] = ()
    policy_state: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """Requests that changed no message (a failed call is still billed)."""

    conversation_id: str
    ledger: Sequence[LedgerEntry]


@dataclass(frozen=True, slots=True)
class UpdateSettings:
    """Top-level settings replaced (a model switch, a new system prompt)."""

    conversation_id: str
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class MoveHead:
    """A branch (existing or new) pointed at another node."""

    conversation_id: str
    branch: str
    expected_head: str | None
    new_head: str | None


@dataclass(frozen=True, slots=True)
class Discard:
    """Nodes that were never part of a reply removed (a rolled-back pending message and its partial replies)."""

    conversation_id: str
    branch: str
    expected_head: str | None
    node_ids: Sequence[str]


Write = Create | Append | Record | UpdateSettings | MoveHead | Discard
