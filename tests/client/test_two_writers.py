"""Two writers on one branch of one SQLite conversation, in two threads, sending as fast as they can against the
emulator: a writer that loses the race for the branch gets `ConflictError` before it sends anything and goes on
with the same object; nothing is lost, duplicated or interleaved. Rounds start at a barrier, never on a clock, and
run until each writer has committed and at least one race was lost, so the test does not depend on timing."""

from __future__ import annotations

import threading
from pathlib import Path

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import ConflictError
from turnkeep.store import SQLiteStore

WINS_EACH = 3
MAX_ROUNDS = 200  # a bound, so a livelock fails the test instead of hanging it


def test_two_threads_racing_on_one_conversation_each_commit_and_a_loser_continues(
    turnkeep_emulator: EmulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "chats.db"
    with SQLiteStore(path) as store:
        conversation_id = Conversation("claude-sonnet-4-6", store=store, client=turnkeep_emulator.client()).id
    wins = {"a": 0, "b": 0}
    conflicts = {"a": 0, "b": 0}
    unexpected: list[BaseException] = []
    continued: set[str] = set()  # writers that committed after losing a race
    rounds = 0
    done = threading.Event()

    def next_round() -> None:  # run by one thread once both have finished a round
        nonlocal rounds
        rounds += 1
        losers = {name for name, lost in conflicts.items() if lost}
        settled = min(wins.values()) >= WINS_EACH and losers and losers <= continued
        if settled or rounds >= MAX_ROUNDS or unexpected:
            done.set()

    barrier = threading.Barrier(2, action=next_round)
    start = threading.Barrier(2)  # both have opened the conversation before either sends

    def writer(name: str) -> None:
        with SQLiteStore(path) as own_store:  # a connection of its own, as another process would have
            chat = Conversation.open(conversation_id, store=own_store, client=turnkeep_emulator.client())
            start.wait()
            while not done.is_set():
                try:
                    chat.send(f"{name} {rounds}")
                    wins[name] += 1
                    if conflicts[name]:
                        continued.add(name)
                except ConflictError:
                    conflicts[name] += 1
                except BaseException as err:
                    unexpected.append(err)
                barrier.wait()

    threads = [threading.Thread(target=writer, args=(name,)) for name in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert unexpected == []
    assert min(wins.values()) >= WINS_EACH, (wins, rounds)
    assert sum(conflicts.values()) >= 1, rounds
    assert continued == {name for name, lost in conflicts.items() if lost}  # every loser went on and committed
    assert sum(wins.values()) + sum(conflicts.values()) == 2 * rounds  # every attempt either committed or lost
    commits = sum(wins.values())
    with SQLiteStore(path) as store:
        final = Conversation.open(conversation_id, store=store)
        nodes = final.transcript
        assert [node.status for node in nodes] == ["ok"] * (2 * commits)  # nothing pending, partial or lost
        assert [node.message["role"] for node in nodes] == ["user", "assistant"] * commits  # none interleaved
        asked = [node.message["content"] for node in nodes[0::2]]
        assert len(set(asked)) == commits  # none duplicated
        assert len(final.ledger) == commits  # a loser sent nothing: it lost before its request
