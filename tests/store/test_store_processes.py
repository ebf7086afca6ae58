"""Several processes on one SQLite file: SIGKILL at random points of real turns, and two writers racing."""

from __future__ import annotations

import multiprocessing.context
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import store_workers

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.store import SQLiteStore, Store
from turnkeep.store.base import searchable_text

pytestmark = pytest.mark.slow

KILLS = 15
SEED = 20261122


def assert_consistent(store: Store, path: Path, conversation_id: str) -> None:
    """The file is sound, the tree has no orphans, heads exist, and only the last turn may be unfinished."""
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        indexed = raw.execute("SELECT count(*) FROM messages_fts").fetchone()[0]
    finally:
        raw.close()
    nodes = store.nodes(conversation_id)
    ids = {node.id for node in nodes}
    assert all(node.parent_id is None or node.parent_id in ids for node in nodes)
    assert indexed == sum(1 for node in nodes if searchable_text(node.message))
    branches = store.branches(conversation_id)
    assert all(head is None or head in ids for head in branches.values())
    statuses = [node.status for node in store.path(conversation_id, branches["main"])]
    if "pending" in statuses:
        tail = statuses[statuses.index("pending") :]
        assert set(tail) <= {"pending", "partial"}, statuses
    assert all(status in ("ok", "pending", "partial") for status in statuses)


def test_a_process_killed_during_turns_leaves_a_consistent_store_whose_pending_turn_retries(
    tmp_path: Path, forkserver: multiprocessing.context.ForkServerContext
) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "crash.db"
    pending_found = 0
    with EmulatorServer() as server:
        with SQLiteStore(path) as store:
            conversation_id = Conversation(store_workers.MODEL, store=store, client=server.client()).id
        for kill in range(KILLS):
            ready, turned = forkserver.Event(), forkserver.Event()
            child = forkserver.Process(
                target=store_workers.chat_until_killed,
                args=(str(path), server.base_url, conversation_id, kill % 2 == 1, ready, turned),
            )
            child.start()
            assert ready.wait(120), "the child did not start"
            # At least one turn of its own, however slow the machine; then a kill at a random point of the next.
            assert turned.wait(120), "the child committed no turn"
            time.sleep(rng.uniform(0.0, 0.3))
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            assert child.exitcode == -signal.SIGKILL, f"the child died before it was killed (exit {child.exitcode})"
            with SQLiteStore(path) as store:
                assert_consistent(store, path, conversation_id)
                chat = Conversation.open(conversation_id, store=store, client=server.client())
                if chat.pending:
                    pending_found += 1
                    assert chat.retry().text
                    assert not chat.pending
                    assert_consistent(store, path, conversation_id)
        with SQLiteStore(path) as store:
            main = store.path(conversation_id, store.branches(conversation_id)["main"])
    assert pending_found > 0, "no kill landed inside a turn; the test proves nothing"
    sendable = [node for node in main if node.status == "ok"]
    assert len(sendable) >= 2 * KILLS  # every child committed a turn before it was killed: none was lost
    assert [node.message["role"] for node in sendable] == ["user", "assistant"] * (len(sendable) // 2)


def test_two_processes_sending_on_one_head_commit_exactly_one_turn_and_the_other_sends_nothing(
    tmp_path: Path, forkserver: multiprocessing.context.ForkServerContext
) -> None:
    path = tmp_path / "race.db"
    rounds = 5
    committed: list[str] = []
    with EmulatorServer() as server:
        with SQLiteStore(path) as store:
            chat = Conversation(store_workers.MODEL, store=store, client=server.client())
            chat.send("My name is Ada.")
            conversation_id = chat.id
        for number in range(rounds):
            go, results = forkserver.Event(), forkserver.Queue()
            readies = [forkserver.Event(), forkserver.Event()]
            children = [
                forkserver.Process(
                    target=store_workers.send_when_told,
                    args=(
                        str(path),
                        server.base_url,
                        conversation_id,
                        f"round {number} from {who}",
                        ready,
                        go,
                        results,
                    ),
                )
                for who, ready in zip("AB", readies, strict=True)
            ]
            for child in children:
                child.start()
            assert all(ready.wait(120) for ready in readies)
            go.set()
            outcomes = dict(results.get(timeout=120) for _ in children)
            for child in children:
                child.join(30)
                assert child.exitcode == 0
            assert sorted(outcomes.values()) == ["committed", "conflict"]
            committed += [text for text, outcome in outcomes.items() if outcome == "committed"]
            # The loser raised at `begin`, before any request: the server saw one request per round.
            assert server.bill(api_key="race-test")["requests"] == number + 1
        with SQLiteStore(path) as store:
            main = store.path(conversation_id, store.branches(conversation_id)["main"])
            assert len(store.nodes(conversation_id)) == 2 + 2 * rounds
    assert [node.status for node in main] == ["ok"] * (2 + 2 * rounds)
    assert [node.message["role"] for node in main] == ["user", "assistant"] * (1 + rounds)
    assert [node.message["content"] for node in main[2::2]] == committed
