"""Code the crash and race tests run in child processes (started through a multiprocessing forkserver that has
already imported the SDK, so a child starts in milliseconds instead of a second)."""

from __future__ import annotations

import multiprocessing.synchronize
from typing import Any

import anthropic

from turnkeep import Conversation
from turnkeep.errors import ConflictError
from turnkeep.store import Node, open_store

MODEL = "claude-sonnet-4-6"


def chat_until_killed(
    location: str,
    base_url: str,
    conversation_id: str,
    streaming: bool,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
) -> None:
    """Run turns on a stored conversation (a SQLite file or a postgresql:// URL) forever (the test kills this
    process): finish a pending turn first, then send new ones; every request is slowed a little so kills also land
    while a reply is on its way. Starts when `go` is set (so the next child can get ready while one runs)."""
    store = open_store(location)
    client = anthropic.Anthropic(
        api_key="crash-test", base_url=base_url, max_retries=0, default_headers={"x-emulator-fault": "slow:0.01"}
    )
    ready.set()
    go.wait()
    turn = 0
    while True:
        chat = Conversation.open(conversation_id, store=store, client=client)
        if chat.pending:
            chat.retry()
            continue
        turn += 1
        text = f"Remember that box {turn} is red, and that this is message number {turn} of the run."
        if streaming and turn % 2:
            with chat.stream(text) as stream:
                for _ in stream:
                    pass
        else:
            chat.send(text)


def send_when_told(
    location: str,
    base_url: str,
    conversation_id: str,
    text: str,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    results: Any,
) -> None:
    """Open the conversation, wait for the start signal, send one turn; report "committed" or "conflict"."""
    store = open_store(location)
    with anthropic.Anthropic(api_key="race-test", base_url=base_url, max_retries=0) as client:
        chat = Conversation.open(conversation_id, store=store, client=client)
        ready.set()
        go.wait()
        try:
            chat.send(text)
        except ConflictError:
            results.put((text, "conflict"))
        else:
            results.put((text, "committed"))
    store.close()


def race_turns(
    url: str,
    worker: int,
    workers: int,
    conversations: list[str],
    racing: list[str],
    turns: int,
    barrier: multiprocessing.synchronize.Barrier,
    results: Any,
) -> None:
    """Append `turns` turns to each conversation this worker owns (index % workers == worker), the way a
    conversation does: a pending user message, then the reply settling it. Then, for every conversation in
    `racing` (each owned by one worker and raced by the next), owner and racer both try to start a turn from the
    head they read before anybody raced. Reports (worker, committed turns, conflicts)."""
    committed: list[tuple[str, str]] = []
    conflicts = 0
    with open_store(url) as store:  # a pool of its own, as another host would have

        def turn(cid: str, label: str, head: str | None) -> bool:
            question = Node(f"{label}-q", head, {"role": "user", "content": label}, "pending")
            try:
                store.append(cid, "main", expected_head=head, nodes=[question])
            except ConflictError:
                return False
            answer = Node(
                f"{label}-a", question.id, {"role": "assistant", "content": [{"type": "text", "text": label}]}
            )
            store.append(cid, "main", expected_head=question.id, nodes=[answer], settle={question.id: "ok"})
            committed.append((cid, label))
            return True

        mine = [cid for number, cid in enumerate(conversations) if number % workers == worker]
        for number in range(turns):
            for cid in mine:
                assert turn(cid, f"{cid}-w{worker}-t{number}", store.branches(cid)["main"])
        barrier.wait()  # every conversation has its turns: the races start from settled heads
        heads = {cid: store.branches(cid)["main"] for cid in racing}
        barrier.wait()  # everybody has read the heads
        for cid in racing:
            owner = conversations.index(cid) % workers
            if worker in (owner, (owner + 1) % workers) and not turn(cid, f"{cid}-w{worker}-race", heads[cid]):
                conflicts += 1
    results.put((worker, committed, conflicts))
