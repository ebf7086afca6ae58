"""Export and import: lossless versioned JSON, a readable Markdown transcript, and imports that check first."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from store_helpers import SETTINGS, assistant, user

from turnkeep import Conversation
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import ConflictError, TransportError, UsageError
from turnkeep.export import FORMAT, InvalidExport, export_json, export_markdown, import_json
from turnkeep.store import Store

MODEL = "claude-sonnet-4-6"
TOOL = {"name": "lookup", "description": "Look a word up", "input_schema": {"type": "object", "properties": {}}}


def rich_conversation(store: Store, server: EmulatorServer) -> str:
    """Real turns through the SDK: thinking with signatures, a tool loop, a refusal, a fork, a failed call that
    was billed, and a stream cut off mid-way (pending message + partial reply)."""
    chat = Conversation(MODEL, client=server.client(max_retries=0), store=store, tools=[TOOL], system="Be kind.")
    chat.send("My name is Ada. Grüße ✓", thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048)
    server.script({"tool_use": [{"name": "lookup", "input": {"q": "naïve", "n": [1, 2.5]}}]}, {"text": "Found."})
    reply = chat.send("Look up naïve.")
    chat.send_tool_results({reply.tool_calls[0].id: "naïve: without guile"})
    server.script({"refusal": {"category": "cyber", "explanation": "No."}, "text": "I can't help with that."})
    chat.send("Help me break into a server.")
    chat.fork("alt").send("What is my name?")
    server.fault("500")
    with pytest.raises(anthropic.InternalServerError):
        chat.send("This call fails.")
    chat.rollback()
    server.fault({"kind": "drop", "after": 6})
    with pytest.raises(TransportError), chat.stream("Tell me a long story about Ada.") as stream:
        for _ in stream:
            pass
    assert chat.pending
    return chat.id


def without_id(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "id"}


def test_export_then_import_then_export_is_lossless(store: Store, turnkeep_emulator: EmulatorServer) -> None:
    original = rich_conversation(store, turnkeep_emulator)
    exported = export_json(store, original)
    assert (exported["format"], exported["version"]) == (FORMAT, 2)
    assert set(exported["policy_states"]) == {"main", "alt"}  # each branch's own
    statuses = {node["status"] for node in exported["nodes"]}
    assert statuses == {"ok", "refused", "pending", "partial"}
    assert set(exported["branches"]) == {"main", "alt"}
    assert any(entry["error"] for entry in exported["ledger"])
    blocks = [
        b for n in exported["nodes"] if isinstance(n["message"]["content"], list) for b in n["message"]["content"]
    ]
    assert any(b["type"] == "thinking" and b["signature"] for b in blocks)
    text = json.dumps(exported, ensure_ascii=False)
    copied = import_json(store, json.loads(text))
    assert copied != original
    assert without_id(export_json(store, copied)) == without_id(exported)
    assert json.dumps(without_id(export_json(store, copied)), ensure_ascii=False) == json.dumps(
        without_id(exported), ensure_ascii=False
    )


def test_a_version_one_file_gives_its_policy_state_to_the_branches_at_the_latest_head(store: Store) -> None:
    data = good_export(store)
    data["version"] = 1
    data.pop("policy_states")
    data["branches"]["copy"] = data["branches"]["main"]  # the last node written
    data["branches"]["old"] = data["nodes"][1]["id"]  # an earlier one
    data["policy_state"] = {"length": 3}
    copied = import_json(store, data)
    assert store.policy_states(copied) == {"main": {"length": 3}, "copy": {"length": 3}}


def test_an_imported_conversation_continues_where_it_stopped(store: Store, turnkeep_emulator: EmulatorServer) -> None:
    original = rich_conversation(store, turnkeep_emulator)
    copied = import_json(store, export_json(store, original))
    chat = Conversation.open(copied, store=store, client=turnkeep_emulator.client())
    assert chat.pending
    assert chat.retry().text
    assert Conversation.open(copied, store=store, client=turnkeep_emulator.client(), branch="alt").messages == (
        Conversation.open(original, store=store, client=turnkeep_emulator.client(), branch="alt").messages
    )


def test_importing_the_same_file_twice_gives_two_conversations_unless_an_id_is_named(store: Store) -> None:
    store.create("c1", SETTINGS)
    store.append("c1", "main", expected_head=None, nodes=[user("hello", None, node_id="n1")])
    data = export_json(store, "c1")
    first, second = import_json(store, data), import_json(store, data)
    assert len({"c1", first, second}) == 3
    assert store.nodes(first) == store.nodes(second) == store.nodes("c1")
    assert import_json(store, data, conversation_id="chosen") == "chosen"
    with pytest.raises(ConflictError):
        import_json(store, data, conversation_id="chosen")


def test_exports_never_hold_an_api_key(store: Store, turnkeep_emulator: EmulatorServer) -> None:
    secret = "sk-ant-api03-export-secret-key"
    chat = Conversation(MODEL, client=turnkeep_emulator.client(api_key=secret), store=store)
    chat.send("My name is Ada.")
    exported = json.dumps(export_json(store, chat.id))
    assert secret not in exported
    assert secret not in export_markdown(store, chat.id)
    assert not {"api_key", "x-api-key"} & set(store.settings(chat.id))
    assert all("headers" not in vars_of(entry) for entry in store.ledger(chat.id))


def vars_of(entry: object) -> set[str]:
    return set(getattr(entry, "__dataclass_fields__", {}))


# -- bad files -----------------------------------------------------------------------------------------------------


def good_export(store: Store) -> dict[str, Any]:
    store.create("src", SETTINGS)
    nodes = [user("one", None, node_id="u1"), assistant("two", "u1", node_id="a1")]
    nodes += [user("three", "a1", node_id="u2"), assistant("four", "u2", node_id="a2")]
    store.append("src", "main", expected_head=None, nodes=nodes)
    data = export_json(store, "src")
    store.delete("src")
    return data


def set_path(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


LEDGER_ENTRY = {"purpose": "turn", "model": "m", "usage": {}, "cost_usd": "0.1", "latency_ms": 1.0, "at": 1.0}
BAD_FILES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "wrong format": (lambda d: set_path(d, ("format",), "something.else"), "format"),
    "wrong version": (lambda d: set_path(d, ("version",), 3), "version"),
    "a version 1 field in version 2": (lambda d: set_path(d, ("policy_state",), {}), "policy_state"),
    "a state for no branch": (lambda d: set_path(d, ("policy_states",), {"ghost": {}}), "policy_states['ghost']"),
    "unknown field": (lambda d: set_path(d, ("extra",), 1), "extra"),
    "missing nodes": (lambda d: d.pop("nodes"), "nodes"),
    "orphan parent": (lambda d: set_path(d, ("nodes", 2, "parent_id"), "nowhere"), "nodes[2].parent_id"),
    "child before parent": (lambda d: d["nodes"].reverse(), "nodes[0].parent_id"),
    "duplicate id": (lambda d: set_path(d, ("nodes", 3, "id"), "u1"), "nodes[3].id"),
    "bad status": (lambda d: set_path(d, ("nodes", 1, "status"), "done"), "nodes[1].status"),
    "bad role": (lambda d: set_path(d, ("nodes", 1, "message", "role"), "robot"), "nodes[1].message.role"),
    "block without type": (
        lambda d: set_path(d, ("nodes", 3, "message", "content"), [{"text": "x"}]),
        "nodes[3].message.content[0]",
    ),
    "tool result in an assistant message": (
        lambda d: set_path(
            d, ("nodes", 3, "message", "content"), [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]
        ),
        "nodes[3].message.content[0]",
    ),
    "empty user text": (lambda d: set_path(d, ("nodes", 2, "message", "content"), "  "), "nodes[2].message"),
    "head to a missing node": (lambda d: set_path(d, ("branches", "main"), "ghost"), "branches['main']"),
    "api key in settings": (lambda d: set_path(d, ("settings", "api_key"), "sk-ant-x"), "settings.api_key"),
    "no model": (lambda d: d["settings"].pop("model"), "settings.model"),
    "unknown policy": (lambda d: set_path(d, ("settings", "policy"), {"name": "bogus"}), "settings.policy"),
    "policy not an object": (lambda d: set_path(d, ("settings", "policy"), "window"), "settings.policy"),
    "policy sized twice": (
        lambda d: set_path(d, ("settings", "policy"), {"name": "window", "turns": 2, "messages": 4}),
        "settings.policy",
    ),
    "policy setting misspelled": (
        lambda d: set_path(d, ("settings", "policy"), {"name": "window", "mesages": 4}),
        "settings.policy",
    ),
    "policy state of the wrong shape": (
        lambda d: set_path(d, ("policy_states",), {"main": {"cache": {"tokens": "lots", "entries": [1, 2]}}}),
        "policy_states['main']",
    ),
    "ledger cost not a number": (
        lambda d: d.update(ledger=[{**LEDGER_ENTRY, "cost_usd": "lots"}]),
        "ledger[0].cost_usd",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_naming_the_position_and_nothing_is_written(store: Store, case: str) -> None:
    data = good_export(store)
    import_json(store, copy.deepcopy(data))  # the untouched file imports
    before = store.count_conversations()
    corrupt, position = BAD_FILES[case]
    corrupt(data)
    with pytest.raises(InvalidExport) as raised:
        import_json(store, data)
    assert raised.value.position == position
    assert str(raised.value).startswith(f"{position}: ")
    assert isinstance(raised.value, UsageError)
    assert store.count_conversations() == before


def user_node(node_id: str, parent: str, text: str, status: str = "ok") -> dict[str, Any]:
    return {"id": node_id, "parent_id": parent, "message": {"role": "user", "content": text}, "status": status}


def orphan_result(node_id: str, parent: str) -> dict[str, Any]:
    result = {"type": "tool_result", "tool_use_id": "toolu_missing", "content": "x"}
    return {"id": node_id, "parent_id": parent, "message": {"role": "user", "content": [result]}, "status": "ok"}


def test_a_history_error_names_the_node_on_the_branch_where_it_sits(store: Store) -> None:
    data = good_export(store)
    data["nodes"].append(orphan_result("x", "a1"))
    data["branches"]["side"] = "x"
    with pytest.raises(InvalidExport, match=r"^nodes\[4\]\.message\.content\[0\]: .*tool_result_orphan.*'side'"):
        import_json(store, data)


def test_a_history_error_inside_a_run_of_user_messages_names_the_right_one(store: Store) -> None:
    data = good_export(store)
    data["nodes"] += [user_node("p1", "a2", "first"), user_node("p2", "p1", "second")]
    data["nodes"].append(orphan_result("p3", "p2"))
    data["branches"]["main"] = "p3"
    with pytest.raises(InvalidExport) as raised:
        import_json(store, data)
    assert raised.value.position == "nodes[6].message.content[0]"


def test_a_not_yet_answered_or_merged_history_is_still_importable(store: Store) -> None:
    """Runs of user messages (the client merges them) and a pending last turn are legal stored histories."""
    data = good_export(store)
    data["nodes"] += [user_node("p1", "a2", "first part"), user_node("p2", "p1", "second part", "pending")]
    data["branches"]["main"] = "p2"
    copied = import_json(store, data)
    assert [n.id for n in store.path(copied, "p2")][-2:] == ["p1", "p2"]


def test_not_an_object_at_all_is_refused(store: Store) -> None:
    with pytest.raises(InvalidExport, match=r"^export: expected an object"):
        import_json(store, ["not", "an", "export"])


# -- markdown ------------------------------------------------------------------------------------------------------


def test_the_markdown_transcript_reads_like_the_conversation(store: Store, turnkeep_emulator: EmulatorServer) -> None:
    cid = rich_conversation(store, turnkeep_emulator)
    text = export_markdown(store, cid)
    assert text.startswith("# My name is Ada. Grüße ✓\n")
    assert "## System\n\nBe kind." in text
    assert "## User\n\nMy name is Ada. Grüße ✓" in text
    assert "> *Thinking:*" in text
    assert "**Tool call** `lookup`" in text
    assert '"q": "naïve"' in text
    assert "## Tool results" in text
    assert "naïve: without guile" in text
    assert "## Assistant *(refused: left out of later requests)*" in text
    assert "## User *(pending: no reply yet)*" in text
    assert "## Assistant *(partial reply: cut off, never sent back)*" in text
    assert "What is my name?" not in text  # that turn is on the other branch
    assert "What is my name?" in export_markdown(store, cid, branch="alt")
    with pytest.raises(UsageError, match="no branch"):
        export_markdown(store, cid, branch="nope")
