"""Several processes on one store (a SQLite file, a PostgreSQL database): SIGKILL at random points of real turns,
writers racing on one head, and eight processes with pools of their own writing to 200 conversations."""

from __future__ import annotations

import multiprocessing.context
import multiprocessing.process
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import store_workers
from store_helpers import SETTINGS

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.store import PostgresStore, Store, open_store
from turnkeep.store.base import searchable_text

# Kill points per store (PostgreSQL: the 50; SQLite's file-level checks are covered by fewer).
KILLS = {"sqlite": 15, "postgres": 50}
SEED = 20261122
# The PostgreSQL crash test (50 kills) took 18-26 s on two busy CPUs (load 5): the default 120 s limit is too tight.
pytestmark = pytest.mark.timeout(300)


def indexed_count(location: str) -> int:
    """How many messages the store's search index holds, after checking the database itself is sound."""
    if location.startswith("postgresql://"):
        with psycopg.connect(location) as raw:
            # Foreign keys and the generated search column are enforced by the server; count what it holds.
            orphans = raw.execute(
                "SELECT count(*) FROM turnkeep.nodes AS child WHERE parent_id IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM turnkeep.nodes AS parent WHERE parent.conversation_id = child.conversation_id "
                "AND parent.id = child.parent_id)"
            ).fetchone()
            assert orphans == (0,)
            row = raw.execute(
                "SELECT count(*) FROM turnkeep.nodes WHERE search @@ to_tsquery('simple', 'box')"
            ).fetchone()
            assert row is not None
            count: int = raw.execute("SELECT count(*) FROM turnkeep.nodes WHERE search_text IS NOT NULL").fetchone()[0]  # type: ignore[index]
            return count
    raw = sqlite3.connect(location)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        indexed: int = raw.execute("SELECT count(*) FROM messages_fts").fetchone()[0]
        return indexed
    finally:
        raw.close()


def assert_consistent(store: Store, location: str, conversation_id: str) -> None:
    """The database is sound, the tree has no orphans, heads exist, and only the last turn may be unfinished."""
    indexed = indexed_count(location)
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


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the processes' store is: a SQLite file or a new PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return str(tmp_path / "crash.db")


def test_a_process_killed_during_turns_leaves_a_consistent_store_whose_pending_turn_retries(
    location: str, forkserver: multiprocessing.context.ForkServerContext
) -> None:
    rng = random.Random(SEED)
    kills = KILLS["postgres" if location.startswith("postgresql://") else "sqlite"]
    pending_found = 0
    with EmulatorServer() as server:
        with open_store(location) as store:
            conversation_id = Conversation(store_workers.MODEL, store=store, client=server.client()).id

        def spawn(kill: int) -> tuple[multiprocessing.process.BaseProcess, Any, Any]:
            ready, go = forkserver.Event(), forkserver.Event()
            child = forkserver.Process(
                target=store_workers.chat_until_killed,
                args=(location, server.base_url, conversation_id, kill % 2 == 1, ready, go),
            )
            child.start()
            return child, ready, go

        upcoming = spawn(0)
        for kill in range(kills):
            child, ready, go = upcoming
            assert ready.wait(30), "the child did not start"
            go.set()
            if kill + 1 < kills:
                upcoming = spawn(kill + 1)  # it starts up while this one runs, and waits for its go
            time.sleep(rng.uniform(0.0, 0.25))
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)
            assert child.exitcode == -signal.SIGKILL, f"the child died before it was killed (exit {child.exitcode})"
            with open_store(location) as store:
                assert_consistent(store, location, conversation_id)
                chat = Conversation.open(conversation_id, store=store, client=server.client())
                if chat.pending:
                    pending_found += 1
                    assert chat.retry().text
                    assert not chat.pending
                    assert_consistent(store, location, conversation_id)
        with open_store(location) as store:
            main = store.path(conversation_id, store.branches(conversation_id)["main"])
    print(f"kills={kills} pending={pending_found}")
    assert pending_found > 0, "no kill landed inside a turn; the test proves nothing"
    sendable = [node for node in main if node.status == "ok"]
    assert len(sendable) >= 2 * pending_found
    assert [node.message["role"] for node in sendable] == ["user", "assistant"] * (len(sendable) // 2)


def test_two_processes_sending_on_one_head_commit_exactly_one_turn_and_the_other_sends_nothing(
    location: str, forkserver: multiprocessing.context.ForkServerContext
) -> None:
    rounds = 5
    committed: list[str] = []
    with EmulatorServer() as server:
        with open_store(location) as store:
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
                        location,
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
            assert all(ready.wait(30) for ready in readies)
            go.set()
            outcomes = dict(results.get(timeout=30) for _ in children)
            for child in children:
                child.join(30)
                assert child.exitcode == 0
            assert sorted(outcomes.values()) == ["committed", "conflict"]
            committed += [text for text, outcome in outcomes.items() if outcome == "committed"]
            # The loser raised at `begin`, before any request: the server saw one request per round.
            assert server.bill(api_key="race-test")["requests"] == number + 1
        with open_store(location) as store:
            main = store.path(conversation_id, store.branches(conversation_id)["main"])
            assert len(store.nodes(conversation_id)) == 2 + 2 * rounds
    assert [node.status for node in main] == ["ok"] * (2 + 2 * rounds)
    assert [node.message["role"] for node in main] == ["user", "assistant"] * (1 + rounds)
    assert [node.message["content"] for node in main[2::2]] == committed


def test_eight_processes_writing_to_200_conversations_lose_duplicate_and_interleave_nothing(
    postgres_url: str, forkserver: multiprocessing.context.ForkServerContext
) -> None:
    """Eight processes, each with its own pool as separate hosts would have, run turns on 200 conversations;
    then on 24 of them two processes race from the same head. Every committed turn is there exactly once, every
    reply follows its own question, and the conflicts are exactly the races."""
    workers, turns, races = 8, 3, 24
    conversations = [f"conversation-{number:03d}" for number in range(200)]
    racing = conversations[::8][:races]
    with PostgresStore(postgres_url) as store:
        for cid in conversations:
            store.create(cid, SETTINGS)
    barrier, results = forkserver.Barrier(workers), forkserver.Queue()
    children = [
        forkserver.Process(
            target=store_workers.race_turns,
            args=(postgres_url, worker, workers, conversations, racing, turns, barrier, results),
        )
        for worker in range(workers)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    committed = Counter(label for _, labels, _ in reports for _, label in labels)
    conflicts = sum(count for _, _, count in reports)
    stored: Counter[str] = Counter()
    interleaved = 0
    with PostgresStore(postgres_url) as store:
        for cid in conversations:
            main = store.path(cid, store.branches(cid)["main"])
            assert store.nodes(cid) == main  # nothing off the branch: a loser wrote nothing
            for question, answer in zip(main[::2], main[1::2], strict=True):
                stored[str(question.message["content"])] += 1
                interleaved += (question.status, answer.parent_id, answer.message["content"][0]["text"]) != (
                    "ok",
                    question.id,
                    question.message["content"],
                )
    lost = sum(1 for label in committed if label not in stored)
    duplicated = sum(count - 1 for count in stored.values() if count > 1)
    print(f"turns={sum(stored.values())} {lost=} {duplicated=} {interleaved=} {conflicts=}")
    assert (lost, duplicated, interleaved) == (0, 0, 0)
    assert conflicts == races
    assert sum(committed.values()) == sum(stored.values()) == len(conversations) * turns + races
    assert all(count == 1 for count in committed.values())
