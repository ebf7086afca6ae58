"""Stores refuse what must never be stored: a credential at any depth, an invalid role, a value nested beyond
the limit or holding a lone surrogate; a refused write changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from store_helpers import SETTINGS, new_id, user

from turnkeep.core.values import ENVELOPE_DEPTH, MAX_DEPTH
from turnkeep.errors import UsageError
from turnkeep.export import InvalidExport, export_json, import_json
from turnkeep.store import Node, Store

KEY = "sk-ant-api03-" + "x" * 40
TOOL = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# Every stored field type, with a credential hidden in a list or a dict inside it.
SECRET_SETTINGS = {
    "system block (key)": {"system": [{"type": "text", "text": "hi", "extra": [{"api_key": "x"}]}]},
    "system block (value)": {"system": [{"type": "text", "text": f"use {KEY}"}]},
    "tool definition": {"tools": [{**TOOL, "headers": {"authorization": "Bearer x"}}]},
    "tool in a list of lists": {"tools": [TOOL, {**TOOL, "name": "b", "extra": [[{"X-Api-Key": "y"}]]}]},
    "metadata": {"metadata": {"tags": ["a", {"auth_token": "t"}]}},
    "setting value": {"note": KEY},
}


@pytest.mark.parametrize("changes", SECRET_SETTINGS.values(), ids=SECRET_SETTINGS.keys())
def test_settings_with_a_nested_credential_are_refused_on_create_and_update(
    store: Store, changes: dict[str, Any]
) -> None:
    cid = new_id()
    with pytest.raises(UsageError, match="credentials are never stored"):
        store.create(cid, {**SETTINGS, **changes})
    assert cid not in [info.id for info in store.list_conversations()]
    store.create(cid, SETTINGS)
    with pytest.raises(UsageError, match="credentials are never stored"):
        store.update_settings(cid, changes)
    assert store.settings(cid) == SETTINGS


MESSAGES = {
    "key in a tool input": {"role": "user", "content": [{"type": "text", "text": "x", "x": [{"api_key": "k"}]}]},
    "value in text": {"role": "user", "content": f"my key is {KEY}"},
    "value in a tool result": {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": KEY}]}],
    },
}


@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_messages_and_meta_with_a_credential_are_refused(store: Store, message: dict[str, Any]) -> None:
    cid = new_id()
    store.create(cid, SETTINGS)
    with pytest.raises(UsageError, match="credentials are never stored"):
        store.append(cid, "main", expected_head=None, nodes=[Node("n1", None, message)])
    with pytest.raises(UsageError, match="credentials are never stored"):
        store.append(
            cid, "main", expected_head=None, nodes=[Node("n1", None, user("hi", None).message, meta={"k": [KEY]})]
        )
    assert store.nodes(cid) == []


@pytest.mark.parametrize("role", ["robot", "", None, 3])
def test_append_refuses_a_role_the_api_does_not_know(store: Store, role: object) -> None:
    cid = new_id()
    store.create(cid, SETTINGS)
    with pytest.raises(UsageError, match="role user, assistant or system"):
        store.append(cid, "main", expected_head=None, nodes=[Node("n1", None, {"role": role, "content": "hi"})])
    assert store.nodes(cid) == []


def test_a_message_nested_beyond_the_limit_or_with_a_lone_surrogate_is_refused(store: Store) -> None:
    cid = new_id()
    store.create(cid, SETTINGS)
    deep = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": nested(10_000)}]}
    with pytest.raises(UsageError, match="nested more than"):
        store.append(cid, "main", expected_head=None, nodes=[Node("n1", None, deep)])
    with pytest.raises(UsageError, match=r"content\[0\]\.text: holds a lone surrogate"):
        store.append(
            cid,
            "main",
            expected_head=None,
            nodes=[Node("n1", None, {"role": "user", "content": [{"type": "text", "text": "bad \ud800"}]})],
        )
    at_limit = {
        "role": "user",
        "content": [{"type": "text", "text": "ok", "x": nested(MAX_DEPTH + ENVELOPE_DEPTH - 4)}],
    }
    store.append(cid, "main", expected_head=None, nodes=[Node("n1", None, at_limit)])
    assert store.nodes(cid)[0].message == at_limit


def test_import_refuses_a_nested_credential_and_writes_nothing(store: Store) -> None:
    cid = new_id()
    store.create(cid, {**SETTINGS, "tools": [TOOL]})
    data = json.loads(json.dumps(export_json(store, cid)))
    data["settings"]["tools"][0]["extra"] = [{"api_key": "k"}]
    before = store.count_conversations()
    with pytest.raises(InvalidExport, match=r"settings\.tools\[0\]\.extra\[0\]\.api_key"):
        import_json(store, data)
    assert store.count_conversations() == before
