"""Conversations on SQLiteStore end to end: real turns through the SDK against the emulator, reopened later."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.store import SQLiteStore

MODEL = "claude-sonnet-4-6"
SECRET = "sk-ant-api03-do-not-store-me-0123456789"


def recording_client(server: EmulatorServer, bodies: list[dict[str, Any]], **options: Any) -> anthropic.Anthropic:
    """An SDK client that keeps the JSON body of every /v1/messages request it sends."""

    def keep(request: httpx2.Request) -> None:
        if request.url.path == "/v1/messages":
            bodies.append(json.loads(request.content))

    return server.client(http_client=httpx2.Client(event_hooks={"request": [keep]}), **options)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_a_reopened_conversation_resends_its_history_byte_for_byte_and_hits_the_cache(
    tmp_path: Path, turnkeep_emulator: EmulatorServer
) -> None:
    path = tmp_path / "turnkeep.db"
    bodies: list[dict[str, Any]] = []
    with SQLiteStore(path) as first_store:
        chat = Conversation(
            MODEL, store=first_store, client=recording_client(turnkeep_emulator, bodies), system="Background. " * 1500
        )
        chat.send("My name is Ada. Ünïcode: 東京 ✓")
        second = chat.send("Remember that box 1 is red.")
        before = chat.messages
    with SQLiteStore(path) as second_store:  # a new object on the same file, as after a restart
        reopened = Conversation.open(chat.id, store=second_store, client=recording_client(turnkeep_emulator, bodies))
        assert compact(reopened.messages) == compact(before)
        third = reopened.send("What is my name?")
    assert third.text == "Your name is Ada."
    assert third.usage.cache_read > 0
    assert third.usage.cache_read >= second.usage.cache_read
    sent_before, sent_after = bodies[1], bodies[2]
    assert compact(sent_after["messages"][: len(sent_before["messages"])]) == compact(sent_before["messages"])
    assert compact(sent_after["system"]) == compact(sent_before["system"])
    assert compact(sent_after["messages"][: len(before)]) == compact(before)


def test_the_store_lists_and_searches_what_the_conversation_did(
    tmp_path: Path, turnkeep_emulator: EmulatorServer
) -> None:
    with SQLiteStore(tmp_path / "turnkeep.db") as store:
        older = Conversation(MODEL, store=store, client=turnkeep_emulator.client())
        older.send("The capital of Atlantis is Poseidonia.")
        chat = Conversation(MODEL, store=store, client=turnkeep_emulator.client())
        chat.send("My favourite colour is green.")
        with chat.stream("What is my favourite colour?") as stream:
            "".join(stream)
        [newest, oldest] = store.list_conversations()
        assert (newest.id, oldest.id) == (chat.id, older.id)
        assert store.latest() == chat.id
        assert newest.title == "My favourite colour is green."
        assert newest.model == MODEL
        assert newest.message_count == 4
        assert Decimal(newest.cost_usd) == chat.cost > 0
        hits = store.search("Poseidonia")
        assert {(hit.conversation_id, hit.role) for hit in hits} >= {(older.id, "user")}


def test_no_api_key_reaches_the_database_file(tmp_path: Path, turnkeep_emulator: EmulatorServer) -> None:
    path = tmp_path / "turnkeep.db"
    with SQLiteStore(path) as store:
        chat = Conversation(MODEL, store=store, client=turnkeep_emulator.client(api_key=SECRET, max_retries=0))
        chat.send("My name is Ada.")
        turnkeep_emulator.fault("500", api_key=SECRET)
        with pytest.raises(anthropic.InternalServerError):
            chat.send("This one fails and is billed in the ledger.")
        chat.retry()
        assert all(SECRET not in repr(entry) for entry in store.ledger(chat.id))
        assert not {"api_key", "x-api-key"} & set(store.settings(chat.id))
        files = sorted(path.parent.glob("turnkeep.db*"))
        assert len(files) >= 2  # the database and its write-ahead log, both checked while in use
        for file in files:
            assert SECRET.encode() not in file.read_bytes(), file.name
