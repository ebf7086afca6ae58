"""Two writers on one branch of one SQLite conversation, in two threads, against the emulator: a writer that loses
the race for the branch gets `ConflictError` before it sends anything and goes on with the same object; nothing is
lost, duplicated or interleaved. Which thread wins a free race is up to the scheduler (on an idle machine one of
them can win every time), so each round makes the race happen: the leader sends, and the follower sends as soon
as the leader's turn is in the store (an event it waits for, never a clock). The lead alternates, so each writer
both wins and loses."""

from __future__ import annotations

import threading
from pathlib import Path

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import ConflictError
from turnkeep.store import SQLiteStore

ROUNDS = 6
WAIT_S = 120.0  # a bound on waiting for the other thread, so a hang fails the test instead


def test_two_threads_racing_on_one_conversation_each_commit_and_a_loser_continues(
    turnkeep_emulator: EmulatorServer, tmp_path: Path
) -> None:
    path = tmp_path / "chats.db"
    with SQLiteStore(path) as store:
        conversation_id = Conversation("claude-sonnet-4-6", store=store, client=turnkeep_emulator.client()).id
    names = ("a", "b")
    wins = dict.fromkeys(names, 0)
    conflicts = dict.fromkeys(names, 0)
    continued: set[str] = set()  # writers that committed after losing a race
    unexpected: list[BaseException] = []
    stored = [threading.Event() for _ in range(ROUNDS)]  # the round's leader has its turn in the store
    barrier = threading.Barrier(2, timeout=WAIT_S)

    def writer(name: str) -> None:
        with SQLiteStore(path) as own_store:  # a connection of its own, as another process would have
            chat = Conversation.open(conversation_id, store=own_store, client=turnkeep_emulator.client())
            barrier.wait()  # both have opened the conversation before either sends
            for round_ in range(ROUNDS):
                leads = names[round_ % 2] == name
                if leads:
                    # The turn is stored before its request goes out: tell the follower as soon as it is.
                    head = own_store.branches(conversation_id)["main"]
                    watcher = threading.Thread(
                        target=_signal_when_moved, args=(path, conversation_id, head, stored[round_])
                    )
                    watcher.start()
                else:
                    assert stored[round_].wait(WAIT_S), "the leader's turn never reached the store"
                try:
                    chat.send(f"{name} {round_}")
                    wins[name] += 1
                    if conflicts[name]:
                        continued.add(name)
                except ConflictError:
                    conflicts[name] += 1
                except BaseException as err:
                    unexpected.append(err)
                if leads:
                    watcher.join()
                barrier.wait()

    threads = [threading.Thread(target=writer, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert unexpected == []
    assert wins == dict.fromkeys(names, ROUNDS // 2)  # each led half the rounds, and won those
    assert conflicts == dict.fromkeys(names, ROUNDS // 2)  # and lost the others, promptly
    assert continued == set(names)  # every loser went on and committed
    commits = sum(wins.values())
    with SQLiteStore(path) as store:
        final = Conversation.open(conversation_id, store=store)
        nodes = final.transcript
        assert [node.status for node in nodes] == ["ok"] * (2 * commits)  # nothing pending, partial or lost
        assert [node.message["role"] for node in nodes] == ["user", "assistant"] * commits  # none interleaved
        asked = [node.message["content"] for node in nodes[0::2]]
        assert asked == [f"{names[round_ % 2]} {round_}" for round_ in range(ROUNDS)]  # the leaders', in order
        assert len(final.ledger) == commits  # a loser sent nothing: it lost before its request


def _signal_when_moved(path: Path, conversation_id: str, head: str | None, moved: threading.Event) -> None:
    """Set `moved` once the branch's head is no longer `head` (the leader's pending turn is stored)."""
    with SQLiteStore(path) as store:
        waited = threading.Event()
        for _ in range(int(WAIT_S / 0.001)):
            if store.branches(conversation_id)["main"] != head:
                moved.set()
                return
            waited.wait(0.001)
