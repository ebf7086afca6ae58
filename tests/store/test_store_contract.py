"""The `Store` contract: every test runs against MemoryStore and SQLiteStore, which must behave the same."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from store_helpers import AWKWARD_REPLY, AWKWARD_RESULT, SETTINGS, assistant, entry, new_id, user

from turnkeep.errors import ConflictError, UnknownConversation, UsageError
from turnkeep.store import Node, Store


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def conversation(store: Store, turns: int = 2) -> tuple[str, list[Node]]:
    """A conversation with `turns` settled exchanges on main."""
    cid = new_id()
    store.create(cid, SETTINGS)
    head, nodes = None, []
    for turn in range(turns):
        question = user(f"question {turn}", head)
        answer = assistant(f"answer {turn}", question.id)
        store.append(cid, "main", expected_head=head, nodes=[question, answer])
        nodes += [question, answer]
        head = answer.id
    return cid, nodes


def snapshot(store: Store, cid: str) -> tuple[Any, ...]:
    """Everything observable about one conversation."""
    return (
        store.settings(cid),
        store.branches(cid),
        store.nodes(cid),
        store.ledger(cid),
        store.policy_state(cid),
        store.info(cid).message_count,
        store.info(cid).cost_usd,
        store.info(cid).title,
    )


# -- creating and reading ------------------------------------------------------------------------------------------


def test_a_new_conversation_has_its_settings_and_an_empty_main_branch(store: Store) -> None:
    store.create("c1", {**SETTINGS, "policy": {"name": "window", "turns": 3}})
    assert store.settings("c1") == {**SETTINGS, "policy": {"name": "window", "turns": 3}}
    assert store.branches("c1") == {"main": None}
    assert store.path("c1", None) == []
    assert store.nodes("c1") == []
    assert store.ledger("c1") == []
    assert store.policy_state("c1") == {}


def test_creating_an_existing_conversation_is_a_conflict(store: Store) -> None:
    store.create("c1", SETTINGS)
    with pytest.raises(ConflictError):
        store.create("c1", {"model": "other"})
    assert store.settings("c1") == SETTINGS


def test_settings_are_merged_by_update_settings(store: Store) -> None:
    store.create("c1", SETTINGS)
    store.update_settings("c1", {"model": "claude-opus-4-6", "system": "Be brief."})
    assert store.settings("c1") == {**SETTINGS, "model": "claude-opus-4-6", "system": "Be brief."}


@pytest.mark.parametrize("key", ["api_key", "x-api-key", "API_KEY"])
def test_settings_holding_a_credential_are_refused(store: Store, key: str) -> None:
    with pytest.raises(UsageError, match="credentials"):
        store.create("c1", {**SETTINGS, "client": {key: "sk-ant-secret"}})
    assert store.count_conversations() == 0
    store.create("c1", SETTINGS)
    with pytest.raises(UsageError, match="credentials"):
        store.update_settings("c1", {key: "sk-ant-secret"})
    assert store.settings("c1") == SETTINGS


UNKNOWN_CALLS: dict[str, Callable[[Store], object]] = {
    "settings": lambda s: s.settings("nope"),
    "update_settings": lambda s: s.update_settings("nope", {}),
    "branches": lambda s: s.branches("nope"),
    "path": lambda s: s.path("nope", None),
    "append": lambda s: s.append("nope", "main", expected_head=None, nodes=[user("hi", None)]),
    "move_head": lambda s: s.move_head("nope", "main", expected_head=None, new_head=None),
    "discard": lambda s: s.discard("nope", "main", expected_head=None, node_ids=[]),
    "record": lambda s: s.record("nope", [entry()]),
    "ledger": lambda s: s.ledger("nope"),
    "policy_state": lambda s: s.policy_state("nope"),
    "nodes": lambda s: s.nodes("nope"),
    "info": lambda s: s.info("nope"),
    "delete": lambda s: s.delete("nope"),
}


@pytest.mark.parametrize("method", sorted(UNKNOWN_CALLS))
def test_every_method_rejects_an_unknown_conversation(store: Store, method: str) -> None:
    with pytest.raises(UnknownConversation, match="nope"):
        UNKNOWN_CALLS[method](store)


def test_a_path_runs_from_the_root_to_the_head_in_order(store: Store) -> None:
    cid, nodes = conversation(store, turns=3)
    assert store.path(cid, nodes[-1].id) == nodes
    assert store.path(cid, nodes[3].id) == nodes[:4]
    assert store.branches(cid) == {"main": nodes[-1].id}


def test_a_path_to_an_unknown_node_is_a_usage_error(store: Store) -> None:
    cid, _ = conversation(store)
    with pytest.raises(UsageError, match="no node"):
        store.path(cid, "missing")


def test_message_json_comes_back_byte_for_byte(store: Store) -> None:
    cid = new_id()
    store.create(cid, SETTINGS)
    question = user("Grüße, 世界! 🌍", None)
    reply = Node(new_id(), question.id, AWKWARD_REPLY, "ok", {"kind": "reply", "note": "ø"})
    results = Node(new_id(), reply.id, AWKWARD_RESULT, "ok", {"kind": "tool_results"})
    store.append(cid, "main", expected_head=None, nodes=[question, reply, results])
    path = store.path(cid, results.id)
    assert [compact(n.message) for n in path] == [compact(m) for m in (question.message, AWKWARD_REPLY, AWKWARD_RESULT)]
    first_blocks = [list(n.message["content"][0]) for n in path[1:]]
    assert first_blocks == [["type", "thinking", "signature"], ["type", "tool_use_id", "content"]]
    assert path[1].meta == {"kind": "reply", "note": "ø"}


def test_a_path_holds_equal_metas_as_one_read_only_object(store: Store) -> None:
    """A long path repeats a few metas (every plain user message's is `{"kind": "turn"}`): loaded once each, as
    `Node.meta` is a read-only mapping."""
    cid, nodes = conversation(store, turns=3)
    path = store.path(cid, nodes[-1].id)
    assert [n.meta for n in path] == [n.meta for n in nodes]
    assert path[0].meta is path[2].meta is path[4].meta
    assert path[1].meta is path[3].meta
    assert path[0].message is not path[2].message


@pytest.mark.parametrize("collecting", [True, False])
def test_reading_a_path_leaves_the_garbage_collector_as_it_was(store: Store, collecting: bool) -> None:
    """A long path is decoded without cyclic collection (see `bulk_allocation`); the collector is then as before."""
    cid, nodes = conversation(store, turns=2)
    was = gc.isenabled()
    try:
        gc.enable() if collecting else gc.disable()
        assert len(store.path(cid, nodes[-1].id)) == 4
        assert gc.isenabled() is collecting
    finally:
        gc.enable() if was else gc.disable()


def test_a_returned_message_is_a_copy_the_caller_may_change(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    store.path(cid, nodes[-1].id)[0].message["content"] = "changed"  # type: ignore[index]
    assert store.path(cid, nodes[-1].id)[0].message["content"] == "question 0"


# -- append: atomic, optimistic ------------------------------------------------------------------------------------


def test_a_turn_is_a_pending_write_then_one_commit(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    question = user("next?", nodes[-1].id, status="pending")
    store.append(cid, "main", expected_head=nodes[-1].id, nodes=[question])
    assert store.path(cid, question.id)[-1].status == "pending"
    reply = assistant("yes", question.id)
    store.append(
        cid,
        "main",
        expected_head=question.id,
        nodes=[reply],
        settle={question.id: "ok"},
        ledger=[entry("0.25"), entry("0.5")],
        policy_state={"window_start": 2, "summary": "ß"},
    )
    assert [n.status for n in store.path(cid, reply.id)] == ["ok"] * 4
    assert store.branches(cid) == {"main": reply.id}
    assert [e.cost_usd for e in store.ledger(cid)] == ["0.25", "0.5"]
    assert store.policy_state(cid) == {"window_start": 2, "summary": "ß"}
    assert Decimal(store.info(cid).cost_usd) == Decimal("0.75")


def test_an_append_on_a_moved_head_is_a_conflict_and_writes_nothing(store: Store) -> None:
    cid, nodes = conversation(store, turns=2)
    before = snapshot(store, cid)
    with pytest.raises(ConflictError, match="moved"):
        store.append(
            cid,
            "main",
            expected_head=nodes[1].id,
            nodes=[user("late", nodes[1].id)],
            settle={nodes[0].id: "refused"},
            ledger=[entry()],
            policy_state={"x": 1},
        )
    assert snapshot(store, cid) == before


def test_settling_an_unknown_node_writes_nothing(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    question = user("q", nodes[-1].id, status="pending")
    store.append(cid, "main", expected_head=nodes[-1].id, nodes=[question])
    before = snapshot(store, cid)
    with pytest.raises(UsageError, match="no node 'ghost'"):
        store.append(
            cid,
            "main",
            expected_head=question.id,
            nodes=[assistant("a", question.id)],
            settle={question.id: "ok", "ghost": "ok"},
            ledger=[entry()],
            policy_state={"x": 1},
        )
    assert snapshot(store, cid) == before


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda head: [user("a", head, node_id="dup"), assistant("b", "dup", node_id="dup")], id="dup-id"),
        pytest.param(lambda head: [user("a", head), user("b", "nowhere")], id="missing-parent"),
        pytest.param(lambda head: [user("a", head, status="done")], id="bad-status"),  # type: ignore[arg-type]
        pytest.param(lambda head: [Node(new_id(), head, {"content": "no role"})], id="no-role"),
        pytest.param(lambda head: [Node(new_id(), head, {"role": "user", "content": {1, 2}})], id="not-json"),
    ],
)
def test_an_invalid_node_is_refused_before_anything_is_written(store: Store, bad: Callable[[str], list[Node]]) -> None:
    cid, nodes = conversation(store, turns=1)
    before = snapshot(store, cid)
    with pytest.raises(UsageError):
        store.append(cid, "main", expected_head=nodes[-1].id, nodes=bad(nodes[-1].id), ledger=[entry()])
    assert snapshot(store, cid) == before


def test_a_node_id_already_in_the_tree_is_refused(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    with pytest.raises(UsageError, match="already exists"):
        store.append(cid, "main", expected_head=nodes[-1].id, nodes=[user("again", nodes[-1].id, node_id=nodes[0].id)])


def test_node_ids_are_scoped_to_their_conversation(store: Store) -> None:
    for cid in ("c1", "c2"):
        store.create(cid, SETTINGS)
        store.append(cid, "main", expected_head=None, nodes=[user(f"in {cid}", None, node_id="same")])
    assert store.path("c1", "same")[0].message["content"] == "in c1"
    assert store.path("c2", "same")[0].message["content"] == "in c2"


def test_only_one_of_many_threads_racing_on_a_head_commits(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    head = nodes[-1].id
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def racer(number: int) -> None:
        barrier.wait()
        try:
            store.append(cid, "main", expected_head=head, nodes=[user(f"racer {number}", head)])
            outcomes.append("committed")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=racer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["committed"] + ["conflict"] * 7
    assert len(store.nodes(cid)) == 3


# -- branches, discard, record -------------------------------------------------------------------------------------


def test_move_head_creates_a_branch_and_checks_an_existing_one(store: Store) -> None:
    cid, nodes = conversation(store, turns=2)
    store.move_head(cid, "alt", expected_head=None, new_head=nodes[1].id)
    assert store.branches(cid) == {"main": nodes[-1].id, "alt": nodes[1].id}
    with pytest.raises(ConflictError):
        store.move_head(cid, "main", expected_head=nodes[1].id, new_head=nodes[1].id)
    store.move_head(cid, "main", expected_head=nodes[-1].id, new_head=None)
    assert store.branches(cid) == {"main": None, "alt": nodes[1].id}
    assert len(store.nodes(cid)) == 4  # moving a head deletes nothing


def test_a_head_cannot_point_at_a_node_that_does_not_exist(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    with pytest.raises(UsageError, match="no node"):
        store.move_head(cid, "main", expected_head=nodes[-1].id, new_head="ghost")
    assert store.branches(cid) == {"main": nodes[-1].id}


def test_branches_share_the_tree_and_nodes_lists_all_of_it_in_write_order(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    store.move_head(cid, "alt", expected_head=None, new_head=nodes[0].id)
    other = assistant("another answer", nodes[0].id)
    store.append(cid, "alt", expected_head=nodes[0].id, nodes=[other])
    assert store.path(cid, store.branches(cid)["alt"]) == [nodes[0], other]
    assert store.path(cid, store.branches(cid)["main"]) == nodes
    assert store.nodes(cid) == [*nodes, other]


def test_discard_removes_a_pending_turn_and_moves_the_head_back(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    question = user("q", nodes[-1].id, status="pending")
    partial = assistant("half", question.id, status="partial")
    store.append(cid, "main", expected_head=nodes[-1].id, nodes=[question, partial])
    with pytest.raises(ConflictError):
        store.discard(cid, "main", expected_head=question.id, node_ids=[question.id, partial.id])
    store.discard(cid, "main", expected_head=partial.id, node_ids=[question.id, partial.id])
    assert store.branches(cid) == {"main": nodes[-1].id}
    assert store.nodes(cid) == nodes


def test_discard_refuses_to_orphan_a_node_or_another_branchs_head(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    question = user("q", nodes[-1].id, status="pending")
    child = assistant("a", question.id, status="partial")
    store.append(cid, "main", expected_head=nodes[-1].id, nodes=[question, child])
    before = snapshot(store, cid)
    with pytest.raises(UsageError, match="descends"):
        store.discard(cid, "main", expected_head=child.id, node_ids=[question.id])
    store.move_head(cid, "keep", expected_head=None, new_head=child.id)
    with pytest.raises(UsageError, match="branch 'keep'"):
        store.discard(cid, "main", expected_head=child.id, node_ids=[question.id, child.id])
    with pytest.raises(UsageError, match="no node"):
        store.discard(cid, "main", expected_head=child.id, node_ids=["ghost"])
    assert snapshot(store, cid)[2:] == before[2:]


def test_record_adds_billed_requests_without_touching_messages(store: Store) -> None:
    cid, nodes = conversation(store, turns=1)
    failed = entry("0.0123")
    store.record(cid, [failed])
    assert store.ledger(cid) == [failed]
    assert store.nodes(cid) == nodes
    assert store.info(cid).cost_usd == "0.0123"


def test_an_estimated_entry_keeps_its_mark(store: Store) -> None:
    cid, _ = conversation(store, turns=1)
    lost = replace(entry("0.0042"), estimated=True, error="ReadTimeout: timed out")
    store.record(cid, [entry("0.001"), lost])
    assert [e.estimated for e in store.ledger(cid)] == [False, True]
    assert store.ledger(cid)[1] == lost


# -- listing, search, delete ---------------------------------------------------------------------------------------


def test_listing_shows_newest_first_with_title_model_count_and_cost(store: Store) -> None:
    ids = []
    for number in range(5):
        cid = f"c{number}"
        store.create(cid, {**SETTINGS, "model": f"model-{number}"})
        first = user(f"  Conversation   number {number}\nsecond line " + "long " * 30, None)
        store.append(cid, "main", expected_head=None, nodes=[first], ledger=[entry("0.1"), entry("0.02")])
        ids.append(cid)
    store.record("c1", [entry("1")])  # c1 becomes the most recently updated
    listing = store.list_conversations()
    assert [info.id for info in listing] == ["c1", "c4", "c3", "c2", "c0"]
    assert listing[0].title is not None
    assert listing[0].title.startswith("Conversation number 1 second line long")
    assert len(listing[0].title) <= 80
    assert listing[0].title.endswith("…")
    assert (listing[0].model, listing[0].message_count, listing[0].cost_usd) == ("model-1", 1, "1.12")
    assert listing[0].created_at <= listing[0].updated_at
    assert [i.id for i in store.list_conversations(limit=2, offset=1)] == ["c4", "c3"]
    assert store.count_conversations() == 5
    assert store.latest() == "c1"


def test_the_title_is_the_first_user_text_still_stored(store: Store) -> None:
    store.create("c1", SETTINGS)
    assert store.info("c1").title is None
    first = Node(new_id(), None, {"role": "user", "content": [{"type": "text", "text": "Plan my trip"}]}, "pending")
    store.append("c1", "main", expected_head=None, nodes=[first])
    assert store.info("c1").title == "Plan my trip"
    store.discard("c1", "main", expected_head=first.id, node_ids=[first.id])
    assert store.info("c1").title is None
    store.append("c1", "main", expected_head=None, nodes=[user("Plan my week instead", None)])
    assert store.info("c1").title == "Plan my week instead"


def test_an_empty_store_has_no_latest_conversation(store: Store) -> None:
    assert store.latest() is None
    assert store.list_conversations() == []
    assert store.count_conversations() == 0


def test_search_finds_text_blocks_and_tool_results_with_a_snippet(store: Store) -> None:
    cid = new_id()
    store.create(cid, SETTINGS)
    question = user("Where is the zeppelin hangar?", None)
    reply = Node(new_id(), question.id, AWKWARD_REPLY, "ok")
    results = Node(new_id(), reply.id, AWKWARD_RESULT, "ok")
    store.append(cid, "main", expected_head=None, nodes=[question, reply, results])
    [hit] = store.search("zeppelin")
    assert (hit.conversation_id, hit.node_id, hit.role) == (cid, question.id, "user")
    assert "[zeppelin]" in hit.snippet
    [from_result] = store.search("café")
    assert from_result.node_id == results.id
    assert store.search("思考") == []  # thinking is not indexed
    assert [h.node_id for h in store.search("Zürich")] == [reply.id]


def test_search_respects_its_limit_and_forgets_deleted_messages(store: Store) -> None:
    for _ in range(4):
        cid, nodes = conversation(store, turns=1)
        store.append(cid, "main", expected_head=nodes[-1].id, nodes=[user("walrus facts", nodes[-1].id)])
    assert len(store.search("walrus")) == 4
    assert len(store.search("walrus", limit=2)) == 2
    doomed = store.search("walrus")[0].conversation_id
    store.delete(doomed)
    assert doomed not in {hit.conversation_id for hit in store.search("walrus")}
    assert len(store.search("walrus")) == 3


def test_an_empty_search_query_is_a_usage_error(store: Store) -> None:
    with pytest.raises(UsageError, match="empty"):
        store.search("   ")


def test_delete_removes_a_conversation_and_leaves_the_others(store: Store) -> None:
    keep, kept_nodes = conversation(store)
    doomed, _ = conversation(store)
    store.record(doomed, [entry()])
    store.delete(doomed)
    with pytest.raises(UnknownConversation):
        store.settings(doomed)
    assert store.nodes(keep) == kept_nodes
    assert [info.id for info in store.list_conversations()] == [keep]


# -- restore (import) ----------------------------------------------------------------------------------------------


def test_restore_writes_a_whole_tree_at_once(store: Store) -> None:
    root = user("hello", None)
    left, right = assistant("left", root.id), assistant("right", root.id, status="refused")
    store.restore(
        "r1",
        settings=SETTINGS,
        nodes=[root, left, right],
        branches={"main": left.id, "other": right.id, "empty": None},
        ledger=[entry("0.3")],
        policy_states={"main": {"k": [1, 2]}, "other": {"k": [3]}},
        created_at=1_700_000_000.5,
        updated_at=1_700_000_100.25,
    )
    assert store.nodes("r1") == [root, left, right]
    assert store.branches("r1") == {"main": left.id, "other": right.id, "empty": None}
    assert store.policy_state("r1") == {"k": [1, 2]}
    assert store.policy_state("r1", "other") == {"k": [3]}
    assert store.policy_state("r1", "empty") == {}
    info = store.info("r1")
    assert (info.created_at, info.updated_at, info.cost_usd, info.title) == (
        1_700_000_000.5,
        1_700_000_100.25,
        "0.3",
        "hello",
    )


def test_restore_checks_everything_and_writes_nothing_on_error(store: Store) -> None:
    root = user("hello", None)
    with pytest.raises(UsageError, match="head 'ghost'"):
        store.restore("r1", settings=SETTINGS, nodes=[root], branches={"main": "ghost"})
    with pytest.raises(UsageError, match="parent"):
        store.restore("r1", settings=SETTINGS, nodes=[assistant("x", "nowhere")], branches={"main": None})
    assert store.count_conversations() == 0
    store.create("r1", SETTINGS)
    with pytest.raises(ConflictError):
        store.restore("r1", settings=SETTINGS, nodes=[root], branches={"main": root.id})
    assert store.nodes("r1") == []
