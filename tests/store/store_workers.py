"""Code the crash and race tests run in child processes (started through a multiprocessing forkserver that has
already imported the SDK, so a child starts in milliseconds instead of a second)."""

from __future__ import annotations

import multiprocessing.synchronize
from typing import Any

import anthropic

from turnkeep import Conversation
from turnkeep.errors import ConflictError
from turnkeep.store import SQLiteStore

MODEL = "claude-sonnet-4-6"


def chat_until_killed(
    path: str,
    base_url: str,
    conversation_id: str,
    streaming: bool,
    ready: multiprocessing.synchronize.Event,
    turned: multiprocessing.synchronize.Event,
) -> None:
    """Run turns on a stored conversation forever (the test kills this process): finish a pending turn first,
    then send new ones; every request is slowed a little so kills also land while a reply is on its way.
    `turned` is set once a new turn is committed, so the test can wait for progress instead of for time."""
    store = SQLiteStore(path)
    client = anthropic.Anthropic(
        api_key="crash-test", base_url=base_url, max_retries=0, default_headers={"x-emulator-fault": "slow:0.01"}
    )
    ready.set()
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
        turned.set()


def send_when_told(
    path: str,
    base_url: str,
    conversation_id: str,
    text: str,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    results: Any,
) -> None:
    """Open the conversation, wait for the start signal, send one turn; report "committed" or "conflict"."""
    store = SQLiteStore(path)
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
