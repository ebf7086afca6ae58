"""A branch's path: its nodes from the root to the head, as the store holds them, mirrored in memory.

The conversation reads its path on every turn (what to send, whether a turn is pending, which tool calls wait for
results), so the path keeps what those questions need up to date as each store write is mirrored, instead of
recomputing it from every node: the messages later requests carry, and the conversation's history normalised and
validated so far. Mirroring a write costs what the write changed, not the length of the path.

Messages are never changed in place once they are in a path (a change is a new node or a new message object),
so lists handed out share the message objects instead of copying them.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import cast

from anthropic.types import MessageParam

from turnkeep.core import rules
from turnkeep.store import Node, NodeStatus

__all__ = ["BranchPath"]


class BranchPath:
    """The nodes of one branch, root first, and the messages of its `ok` nodes (what later requests carry)."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self._nodes: list[Node] = list(nodes)
        self._ok: list[MessageParam] = []
        self._ok_at = array("q")  # the node index of each message in `_ok`
        self._ok_writers: list[str | None] = []  # the model that wrote each message in `_ok` (None: unknown)
        self._writer_counts: Counter[str] = Counter()  # how many of `_ok` each model wrote
        self._count_ok(0)
        # `normalize` of the ok messages and the checkpoint validating them left, kept while only appends happen.
        # Tagged with how many ok messages it covers; any cut of the ok messages forgets it.
        self._history: tuple[int, list[MessageParam], rules.Checkpoint | None] | None = None

    # -- reading -----------------------------------------------------------------------------------------------

    @property
    def nodes(self) -> Sequence[Node]:
        """The nodes, root first (a read-only view: do not keep it across writes)."""
        return self._nodes

    @property
    def head(self) -> str | None:
        return self._nodes[-1].id if self._nodes else None

    def __len__(self) -> int:
        return len(self._nodes)

    def ok_messages(self, before: int | None = None) -> list[MessageParam]:
        """The messages of the `ok` nodes (among the first `before` nodes): what later requests carry."""
        if before is None or before >= len(self._nodes):
            return list(self._ok)
        return self._ok[: bisect.bisect_left(self._ok_at, before)]

    def ok_models(self, before: int | None = None) -> list[str | None]:
        """The model that wrote each of `ok_messages(before)` (None where unknown, as for user messages)."""
        if before is None or before >= len(self._nodes):
            return list(self._ok_writers)
        return self._ok_writers[: bisect.bisect_left(self._ok_at, before)]

    def written_only_by(self, model: str) -> bool:
        """No ok message was written by a model other than `model`: the usual case, answered without a walk."""
        return all(writer == model for writer in self._writer_counts)

    def pending_index(self) -> int | None:
        """Where the pending user message (and anything after it) starts; None when no turn is pending."""
        nodes = self._nodes
        for index in range(len(nodes) - 1, -1, -1):
            status = nodes[index].status
            if status == "pending":
                while index > 0 and nodes[index - 1].status == "pending":
                    index -= 1
                return index
            if status in ("ok", "refused"):
                return None
        return None

    def unanswered(self) -> list[str]:
        """The tool calls of the last reply still waiting for their results."""
        return rules.unanswered_tool_calls(self._ok)

    def find(self, node_id: str) -> Node:
        """A node of the path by id (searched from the head: the nodes a turn settles are the last ones)."""
        for node in reversed(self._nodes):
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def history(self) -> tuple[list[MessageParam], rules.Checkpoint | None]:
        """The ok messages normalised, with the checkpoint their last validation left (None: not validated)."""
        if self._history is None or self._history[0] != len(self._ok):
            self._history = (len(self._ok), rules.normalize(self._ok), None)
        return self._history[1], self._history[2]

    def extended_history(self, message: MessageParam) -> list[MessageParam]:
        """`history()` with `message` appended, normalised: only the last message and `message` can change, so
        this costs what is new."""
        normal, _ = self.history()
        return [*normal[:-1], *rules.normalize([*normal[-1:], message])]

    # -- mirroring writes --------------------------------------------------------------------------------------

    def advance(self, nodes: Sequence[Node], settle: Mapping[str, NodeStatus] | None = None) -> None:
        """Mirror a store write: `nodes` were appended under their parent (not always the old head: a retried
        reply hangs under its pending message, not under a partial reply) and `settle` changed statuses."""
        if not nodes:
            return
        parent = nodes[0].parent_id
        keep = len(self._nodes)
        while keep and self._nodes[keep - 1].id != parent:
            keep -= 1
        if parent is None:
            keep = 0
        first_changed = keep
        if settle:
            for index in range(keep - 1, -1, -1):
                node = self._nodes[index]
                if node.id in settle:
                    self._nodes[index] = replace(node, status=settle[node.id])
                    first_changed = index
                elif node.status != "pending":
                    break  # settled nodes are the pending ones at the end of the path
        self._truncate(keep, first_changed)
        self._nodes.extend(nodes)
        self._count_ok(first_changed)

    def cut(self, index: int) -> None:
        """Mirror a write that moved the head back to before node `index` (a rollback or an undo)."""
        self._truncate(index, index)

    def appended_history(self, normal: list[MessageParam], checkpoint: rules.Checkpoint | None) -> None:
        """After `advance` appended one ok message: its normalised history and checkpoint, as the caller built
        and validated them (`extended_history`), so the next addition validates only what is new."""
        self._history = (len(self._ok), normal, checkpoint)

    def _truncate(self, keep: int, first_changed: int) -> None:
        del self._nodes[keep:]
        cut = bisect.bisect_left(self._ok_at, first_changed)
        if cut < len(self._ok):
            self._writer_counts.subtract(writer for writer in self._ok_writers[cut:] if writer is not None)
            self._writer_counts += Counter()  # drop the models no kept message was written by
            del self._ok[cut:]
            del self._ok_at[cut:]
            del self._ok_writers[cut:]
            self._history = None

    def _count_ok(self, start: int) -> None:
        """Add the ok messages of the nodes from `start` on (everything before is counted)."""
        for index in range(start, len(self._nodes)):
            node = self._nodes[index]
            if node.status == "ok":
                self._ok.append(cast(MessageParam, node.message))
                self._ok_at.append(index)
                writer = node.meta.get("model")
                self._ok_writers.append(writer if isinstance(writer, str) else None)
                if isinstance(writer, str):
                    self._writer_counts[writer] += 1
