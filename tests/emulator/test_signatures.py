"""Thinking-block signatures: bound to the whole prefix on binding models, to the text alone elsewhere."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from turnkeep.core.catalog import default_catalog
from turnkeep.emulator.signatures import (
    prefix_digest,
    prefix_digests,
    sign_thinking,
    signature_status,
    signature_valid,
)

CATALOG = default_catalog()
BINDING = CATALOG.get("claude-opus-5-5")
NON_BINDING = CATALOG.get("claude-opus-5")
THINKING = "The user wants a short answer."


def request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-opus-5-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": [{"type": "text", "text": "First answer"}]},
            {"role": "user", "content": "Second question"},
        ],
    }
    return {**base, **fields}


def conversation(model_id: str) -> tuple[dict[str, Any], int]:
    """A request whose reply (thinking + text) was appended, plus the index of that reply."""
    model = CATALOG.get(model_id)
    sent = request()
    index = len(sent["messages"])
    signature = sign_thinking(model, sent, index, 0, THINKING)
    reply = {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": THINKING, "signature": signature}, {"type": "text", "text": "Ok"}],
    }
    return {**sent, "messages": [*sent["messages"], reply, {"role": "user", "content": "Third"}]}, index


def valid(model_id: str, body: dict[str, Any], index: int) -> bool:
    block = body["messages"][index]["content"][0]
    return signature_valid(CATALOG.get(model_id), body, index, 0, block["thinking"], block["signature"])


def edit_system(body: dict[str, Any]) -> None:
    body["system"] = "You are verbose."


def edit_tools(body: dict[str, Any]) -> None:
    body["tools"][0]["description"] = "new"


def edit_earlier_message(body: dict[str, Any]) -> None:
    body["messages"][0]["content"] = "First question, reworded"


def drop_earlier_turn(body: dict[str, Any]) -> None:
    del body["messages"][:2]


EDITS = [edit_system, edit_tools, edit_earlier_message, drop_earlier_turn]


def test_an_unchanged_history_validates_on_both_kinds_of_model() -> None:
    for model_id in ("claude-opus-5-5", "claude-opus-5"):
        body, index = conversation(model_id)
        assert valid(model_id, body, index)


@pytest.mark.parametrize("edit", EDITS)
def test_a_changed_prefix_invalidates_on_a_binding_model(edit: Any) -> None:
    body, index = conversation("claude-opus-5-5")
    changed = copy.deepcopy(body)
    edit(changed)
    index -= len(body["messages"]) - len(changed["messages"])
    block = changed["messages"][index]["content"][0]
    assert not valid("claude-opus-5-5", changed, index)
    status = signature_status(BINDING, changed, index, 0, block["thinking"], block["signature"])
    assert status == "prefix_mismatch"


@pytest.mark.parametrize("edit", EDITS)
def test_a_changed_prefix_is_fine_on_a_non_binding_model(edit: Any) -> None:
    body, index = conversation("claude-opus-5")
    changed = copy.deepcopy(body)
    edit(changed)
    index -= len(body["messages"]) - len(changed["messages"])
    assert valid("claude-opus-5", changed, index)


@pytest.mark.parametrize("model_id", ["claude-opus-5-5", "claude-opus-5"])
def test_an_edited_thinking_text_is_always_invalid(model_id: str) -> None:
    body, index = conversation(model_id)
    block = body["messages"][index]["content"][0]
    model = CATALOG.get(model_id)
    assert signature_status(model, body, index, 0, THINKING + " (edited)", block["signature"]) == "invalid"


def test_cache_control_and_string_content_do_not_change_the_prefix() -> None:
    body, index = conversation("claude-opus-5-5")
    same = copy.deepcopy(body)
    same["system"] = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    same["messages"][0]["content"] = [
        {"type": "text", "text": "First question", "cache_control": {"type": "ephemeral"}}
    ]
    same["tools"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    assert valid("claude-opus-5-5", same, index)


def test_a_moved_thinking_block_is_invalid_on_a_binding_model() -> None:
    body, index = conversation("claude-opus-5-5")
    moved = copy.deepcopy(body)
    content = moved["messages"][index]["content"]
    content.reverse()
    block = content[1]
    assert not signature_valid(BINDING, moved, index, 1, block["thinking"], block["signature"])


def test_a_bound_block_is_readable_only_by_the_models_its_writer_names() -> None:
    # Opus 5.5 blocks are for Opus 5.5; Fable 5.2 blocks for Fable 5.2 and Mythos 5.2 (catalog thinking_readers).
    body, index = conversation("claude-opus-5-5")
    block = body["messages"][index]["content"][0]
    for reader in ("claude-opus-5", "claude-sonnet-5-5"):
        status = signature_status(CATALOG.get(reader), body, index, 0, block["thinking"], block["signature"])
        assert status == "model_mismatch", reader
    fable_body, fable_index = conversation("claude-fable-5-2")
    assert valid("claude-mythos-5-2", fable_body, fable_index)
    assert not valid("claude-fable-5-1", fable_body, fable_index)


def test_an_edited_reader_list_is_invalid() -> None:
    body, index = conversation("claude-sonnet-5-5")
    block = body["messages"][index]["content"][0]
    raw = base64.b64decode(block["signature"])
    forged = base64.b64encode(raw + b",claude-opus-5-5").decode()
    assert signature_status(CATALOG.get("claude-opus-5-5"), body, index, 0, block["thinking"], forged) != "valid"


def test_a_text_only_signature_is_a_prefix_mismatch_on_a_binding_model() -> None:
    body, index = conversation("claude-opus-5")
    block = body["messages"][index]["content"][0]
    assert signature_status(BINDING, body, index, 0, THINKING, block["signature"]) == "prefix_mismatch"


@pytest.mark.parametrize("garbage", ["", "not base64!", "AAAA", "Zm9yZ2Vk" * 20])
def test_garbage_is_invalid(garbage: str) -> None:
    body, index = conversation("claude-opus-5-5")
    assert signature_status(BINDING, body, index, 0, THINKING, garbage) == "invalid"
    assert signature_status(NON_BINDING, body, index, 0, THINKING, garbage) == "invalid"


def test_one_pass_digests_equal_single_digests() -> None:
    body, _ = conversation("claude-opus-5-5")
    positions = [(0, 0), (1, 0), (1, 1), (3, 0), (3, 2), (4, 0), (5, 0)]
    together = prefix_digests(body, positions)
    assert together == {position: prefix_digest(body, *position) for position in positions}
    assert len(set(together.values())) == len(positions)


def test_a_later_block_of_a_fresh_reply_needs_the_reply_so_far() -> None:
    sent = request()
    with pytest.raises(ValueError, match="earlier blocks"):
        sign_thinking(BINDING, sent, len(sent["messages"]), 1, THINKING)
    so_far = {
        **sent,
        "messages": [*sent["messages"], {"role": "assistant", "content": [{"type": "text", "text": "A"}]}],
    }
    signature = sign_thinking(BINDING, so_far, len(sent["messages"]), 1, THINKING)
    assert signature_valid(BINDING, so_far, len(sent["messages"]), 1, THINKING, signature)
