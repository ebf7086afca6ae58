"""Random sequences of store operations on each store, checked after every step against a small dict model."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from store_helpers import entry

from turnkeep.errors import ConflictError, UnknownConversation, UsageError
from turnkeep.store import LedgerEntry, MemoryStore, Node, NodeStatus, PostgresStore, SQLiteStore, Store

IDS = ["a", "b", "c"]
BRANCHES = ["main", "side", "try"]
STATUSES: list[NodeStatus] = ["ok", "pending", "partial", "refused"]
texts = st.text(alphabet="ab é€🐍\n", min_size=1, max_size=12)


@dataclass
class ModelConversation:
    settings: dict[str, Any]
    nodes: dict[str, Node] = field(default_factory=dict)
    branches: dict[str, str | None] = field(default_factory=lambda: {"main": None})
    ledger: list[LedgerEntry] = field(default_factory=list)
    policy_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # by branch

    def path(self, head: str | None) -> list[Node]:
        path = []
        while head is not None:
            path.append(self.nodes[head])
            head = self.nodes[head].parent_id
        return path[::-1]


class StoreMatchesModel(RuleBasedStateMachine):
    def __init__(self, store: Store, cleanup: Callable[[], None]) -> None:
        super().__init__()
        self.store = store
        self.cleanup = cleanup
        self.model: dict[str, ModelConversation] = {}
        self.counter = 0

    def teardown(self) -> None:
        self.cleanup()

    def fresh_id(self) -> str:
        self.counter += 1
        return f"n{self.counter}"

    def pick_node(self, conversation: ModelConversation | None, choice: int) -> str | None:
        """None, or one of the conversation's nodes, or (rarely) one that does not exist."""
        options: list[str | None] = [None, *(conversation.nodes if conversation else ()), "ghost"]
        return options[choice % len(options)]

    @rule(cid=st.sampled_from(IDS), model=st.sampled_from(["m1", "m2"]))
    def create(self, cid: str, model: str) -> None:
        if cid in self.model:
            try:
                self.store.create(cid, {"model": model})
            except ConflictError:
                return
            raise AssertionError("creating an existing conversation must conflict")
        self.store.create(cid, {"model": model})
        self.model[cid] = ModelConversation({"model": model})

    @rule(
        cid=st.sampled_from(IDS),
        branch=st.sampled_from(BRANCHES),
        stale=st.booleans(),
        stale_choice=st.integers(0, 50),
        parent_choice=st.integers(0, 50),
        new=st.lists(st.tuples(texts, st.sampled_from(STATUSES), st.sampled_from(["user", "assistant"])), max_size=3),
        settle=st.lists(st.tuples(st.integers(0, 50), st.sampled_from(STATUSES)), max_size=2),
        costs=st.lists(st.decimals(0, 1, places=4).map(str), max_size=2),
        state=st.none() | st.dictionaries(st.sampled_from(["x", "y"]), st.integers()),
    )
    def append(
        self,
        cid: str,
        branch: str,
        stale: bool,
        stale_choice: int,
        parent_choice: int,
        new: list[tuple[str, NodeStatus, str]],
        settle: list[tuple[int, NodeStatus]],
        costs: list[str],
        state: dict[str, Any] | None,
    ) -> None:
        conversation = self.model.get(cid)
        head = conversation.branches.get(branch) if conversation else None
        expected = self.pick_node(conversation, stale_choice) if stale else head
        parent = head if parent_choice % 3 else self.pick_node(conversation, parent_choice)
        nodes = []
        for text, status, role in new:
            nodes.append(Node(self.fresh_id(), parent, {"role": role, "content": text}, status, {"t": text}))
            parent = nodes[-1].id
        settles = {self.pick_node(conversation, choice) or "ghost": status for choice, status in settle}
        ledger = [entry(cost) for cost in costs]
        call = {"expected_head": expected, "nodes": nodes, "settle": settles, "ledger": ledger, "policy_state": state}
        if conversation is None:
            error: type[Exception] | None = UnknownConversation
        elif expected != head:
            error = ConflictError
        elif any(node_id not in conversation.nodes for node_id in settles) or (
            nodes and nodes[0].parent_id is not None and nodes[0].parent_id not in conversation.nodes
        ):
            error = UsageError
        else:
            error = None
        if error is not None:
            try:
                self.store.append(cid, branch, **call)
            except error:
                return
            raise AssertionError(f"expected {error.__name__}")
        assert conversation is not None
        self.store.append(cid, branch, **call)
        for node_id, status in settles.items():
            old = conversation.nodes[node_id]
            conversation.nodes[node_id] = Node(old.id, old.parent_id, old.message, status, old.meta)
        conversation.nodes.update((node.id, node) for node in nodes)
        if nodes:
            conversation.branches[branch] = nodes[-1].id
        conversation.ledger += ledger
        if state is not None:
            conversation.policy_states[branch] = state

    @rule(
        cid=st.sampled_from(IDS),
        branch=st.sampled_from(BRANCHES),
        stale=st.booleans(),
        choice=st.integers(0, 50),
        new_choice=st.integers(0, 50),
    )
    def move_head(self, cid: str, branch: str, stale: bool, choice: int, new_choice: int) -> None:
        conversation = self.model.get(cid)
        head = conversation.branches.get(branch) if conversation else None
        expected = self.pick_node(conversation, choice) if stale else head
        new_head = self.pick_node(conversation, new_choice)
        if conversation is None:
            error: type[Exception] | None = UnknownConversation
        elif branch in conversation.branches and expected != head:
            error = ConflictError
        elif new_head is not None and new_head not in conversation.nodes:
            error = UsageError
        else:
            error = None
        if error is not None:
            try:
                self.store.move_head(cid, branch, expected_head=expected, new_head=new_head)
            except error:
                return
            raise AssertionError(f"expected {error.__name__}")
        assert conversation is not None
        self.store.move_head(cid, branch, expected_head=expected, new_head=new_head)
        conversation.branches[branch] = new_head

    @rule(cid=st.sampled_from(IDS), branch=st.sampled_from(BRANCHES), depth=st.integers(1, 3))
    def discard_the_tip(self, cid: str, branch: str, depth: int) -> None:
        """Discard the last `depth` nodes of a branch (refused when that would orphan a node or another head)."""
        conversation = self.model.get(cid)
        if conversation is None or conversation.branches.get(branch) is None:
            return
        head = conversation.branches[branch]
        doomed = [node.id for node in conversation.path(head)[-depth:]]
        blocked = any(
            node.parent_id in doomed and node.id not in doomed for node in conversation.nodes.values()
        ) or any(name != branch and other in doomed for name, other in conversation.branches.items())
        if blocked:
            try:
                self.store.discard(cid, branch, expected_head=head, node_ids=doomed)
            except UsageError:
                return
            raise AssertionError("expected UsageError")
        self.store.discard(cid, branch, expected_head=head, node_ids=doomed)
        conversation.branches[branch] = conversation.nodes[doomed[0]].parent_id
        for node_id in doomed:
            del conversation.nodes[node_id]

    @rule(cid=st.sampled_from(IDS), costs=st.lists(st.decimals(0, 1, places=6).map(str), min_size=1, max_size=2))
    def record(self, cid: str, costs: list[str]) -> None:
        ledger = [entry(cost, purpose="failed") for cost in costs]
        if cid not in self.model:
            try:
                self.store.record(cid, ledger)
            except UnknownConversation:
                return
            raise AssertionError("expected UnknownConversation")
        self.store.record(cid, ledger)
        self.model[cid].ledger += ledger

    @rule(cid=st.sampled_from(IDS), changes=st.dictionaries(st.sampled_from(["model", "system", "k"]), texts))
    def update_settings(self, cid: str, changes: dict[str, str]) -> None:
        if cid not in self.model:
            return
        self.store.update_settings(cid, changes)
        self.model[cid].settings.update(changes)

    @rule(cid=st.sampled_from(IDS))
    def delete(self, cid: str) -> None:
        if cid not in self.model:
            return
        self.store.delete(cid)
        del self.model[cid]

    @invariant()
    def the_store_matches_the_model(self) -> None:
        assert self.store.count_conversations() == len(self.model)
        assert {info.id for info in self.store.list_conversations()} == set(self.model)
        for cid, conversation in self.model.items():
            assert self.store.settings(cid) == conversation.settings
            assert self.store.branches(cid) == conversation.branches
            assert self.store.nodes(cid) == list(conversation.nodes.values())
            assert self.store.ledger(cid) == conversation.ledger
            assert self.store.policy_states(cid) == conversation.policy_states
            for branch in conversation.branches:
                assert self.store.policy_state(cid, branch) == conversation.policy_states.get(branch, {})
            for head in conversation.branches.values():
                assert self.store.path(cid, head) == conversation.path(head)
            info = self.store.info(cid)
            assert info.message_count == len(conversation.nodes)
            assert Decimal(info.cost_usd) == sum((Decimal(e.cost_usd) for e in conversation.ledger), Decimal(0))


# Each example starts from an empty store; PostgreSQL examples cost more (a round trip per read), so fewer.
EXAMPLES = {"memory": 60, "sqlite": 60, "postgres": 30}


def sqlite_machine() -> StoreMatchesModel:
    directory = tempfile.mkdtemp()
    store = SQLiteStore(Path(directory) / "model.db", synchronous="NORMAL")

    def cleanup() -> None:
        store.close()
        shutil.rmtree(directory, ignore_errors=True)

    return StoreMatchesModel(store, cleanup)


@pytest.mark.timeout(300)  # 12-25 s on PostgreSQL on two busy CPUs (load 5)
@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_the_store_matches_a_dict_model(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "memory":
        factory: Callable[[], StoreMatchesModel] = lambda: StoreMatchesModel(MemoryStore(), lambda: None)  # noqa: E731
    elif kind == "sqlite":
        factory = sqlite_machine
    else:
        # One schema for the whole test, emptied after each example (cheaper than a schema per example).
        store: PostgresStore = request.getfixturevalue("postgres_store")
        server = request.getfixturevalue("postgres_server")

        def empty() -> None:
            with psycopg.connect(server.url, autocommit=True) as connection:
                connection.execute(f"TRUNCATE {store.schema}.conversations CASCADE")

        factory = lambda: StoreMatchesModel(store, empty)  # noqa: E731
    run_state_machine_as_test(
        factory,
        settings=settings(
            max_examples=EXAMPLES[kind],
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
