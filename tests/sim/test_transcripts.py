"""`load_transcript`: exported conversations and JSON lists of turns become workloads; bad files get one clear
error naming the file and the position of the first problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import UsageError
from turnkeep.export import export_json
from turnkeep.sim import Turn, load_transcript
from turnkeep.store import MemoryStore


def write(tmp_path: Path, data: Any, name: str = "chat.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_a_list_of_strings_is_a_list_of_user_turns_with_median_replies(tmp_path: Path) -> None:
    loaded = load_transcript(write(tmp_path, ["Hello there.", "What is my name?"]))
    assert loaded.name == "chat"
    assert loaded.turns == (Turn("Hello there.", 215), Turn("What is my name?", 215))


def test_turn_objects_carry_replies_lengths_facts_and_gaps_from_timestamps(tmp_path: Path) -> None:
    data = {
        "system": "Be brief.",
        "turns": [
            {"user": "My name is Ada.", "assistant": "Nice to meet you, Ada.", "timestamp": "2026-01-01T10:00:00Z"},
            {"text": "Plan my day.", "reply_tokens": 300, "timestamp": "2026-01-01T10:07:30Z"},
            {"user": "What is my name?", "expect": "Ada", "timestamp": 1767262200},
            {"user": "Thanks.", "gap": 12.5},
        ],
    }
    loaded = load_transcript(write(tmp_path, data))
    assert loaded.system == "Be brief."
    assert loaded.turns == (
        Turn("My name is Ada.", None, 0.0, "Nice to meet you, Ada."),
        Turn("Plan my day.", 300, 450.0),
        Turn("What is my name?", None, 150.0, expect="Ada"),
        Turn("Thanks.", 215, 12.5),
    )
    assert loaded.reply(0) == "Nice to meet you, Ada."
    assert loaded.reply(2) is None


def test_a_list_of_messages_is_paired_into_turns(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": [{"type": "text", "text": "Bye."}]},
    ]
    loaded = load_transcript(write(tmp_path, messages))
    assert loaded.turns == (Turn("Hi.", None, 0.0, "Hello!"), Turn("Bye.", 215))


def test_an_exported_conversation_replays_its_user_turns_and_replies_with_the_ledgers_gaps(tmp_path: Path) -> None:
    store = MemoryStore()
    with EmulatorServer(clock="virtual") as server:
        chat = Conversation("claude-sonnet-4-6", client=server.client(max_retries=0), store=store, clock=server.now)
        chat.send("My name is Ada.")
        server.advance(90)
        chat.send("What is my name?")
    loaded = load_transcript(write(tmp_path, export_json(store, chat.id), "export.json"))
    assert [turn.user for turn in loaded.turns] == ["My name is Ada.", "What is my name?"]
    assert loaded.reply(0) == "Noted: your name is Ada."
    assert loaded.reply(1) == "Your name is Ada."
    assert loaded.turns[1].gap == pytest.approx(90.0)


def test_an_export_after_an_undo_replays_the_gaps_of_the_turns_that_stayed(tmp_path: Path) -> None:
    store = MemoryStore()
    with EmulatorServer(clock="virtual") as server:
        chat = Conversation("claude-sonnet-4-6", client=server.client(max_retries=0), store=store, clock=server.now)
        chat.send("Turn A.")
        server.advance(100)
        chat.send("Turn B.")
        server.advance(100)
        chat.send("Turn C, undone.")
        server.advance(3_000)
        chat.undo()
        chat.send("Turn C again.")
        server.advance(100)
        chat.send("Turn D.")
    loaded = load_transcript(write(tmp_path, export_json(store, chat.id), "export.json"))
    assert [turn.user for turn in loaded.turns] == ["Turn A.", "Turn B.", "Turn C again.", "Turn D."]
    assert [turn.gap for turn in loaded.turns] == pytest.approx([0, 100, 3_100, 100])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2", "not valid JSON: Expecting ',' delimiter at line 1 column 6"),
        ("42", "expected a list of turns or an object with `turns`, got a number"),
        ("[]", "turns: empty; a transcript needs at least one turn"),
        ('{"turns": "hi"}', "turns: expected a list, got a string"),
        ('{"system": "x", "turn": []}', "turn: unknown field (expected system, turns)"),
        ('["Hi.", {"user": 3}]', "turns[1].user: expected a string, got a number"),
        ('["Hi.", {"text": "  "}]', "turns[1].text: empty text"),
        ('["Hi.", {"user": "x", "gap": -1}]', "turns[1].gap: must be at least 0, got -1"),
        ('["Hi.", {"user": "x", "reply_tokens": 0}]', "turns[1].reply_tokens: expected an integer from 1 to 12,000"),
        ('["Hi.", {"user": "x", "colour": 1}]', "turns[1].colour: unknown field"),
        ('[{"reply": "x"}]', "turns[0].user: missing"),
        ('[{"user": "a", "timestamp": 10}, {"user": "b", "timestamp": 5}]', "turns[1].timestamp: earlier than"),
        ('[{"user": "a", "timestamp": "yesterday"}]', "turns[0].timestamp: not an ISO-8601 time"),
        ('[{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]', "turns[1].role: expected"),
        ('[{"role": "assistant", "content": "a"}]', "turns[0]: an assistant message must follow a user message"),
        ('{"format": "turnkeep.conversation", "version": 9}', "version: unsupported version 9"),
    ],
)
def test_a_bad_transcript_gets_one_error_naming_the_file_and_the_position(
    tmp_path: Path, content: str, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(UsageError) as caught:
        load_transcript(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_file_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"missing\.json: cannot read the transcript"):
        load_transcript(tmp_path / "missing.json")


def test_a_reply_too_long_to_replay_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, [{"user": "Hi.", "assistant": "word " * 20_000}])
    with pytest.raises(UsageError, match=r"turns\[0\]\.assistant: a reply of 100,000 characters"):
        load_transcript(path)
