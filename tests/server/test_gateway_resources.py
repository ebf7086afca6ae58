"""Conversation resources: import (the export format, tenant-scoped, all-or-nothing), and an OpenAPI document
whose schemas describe what the resources actually answer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx2
import pytest
from gateway_helpers import MODEL, add_key, rows, user

from turnkeep.server import Gateway
from turnkeep.server.resources import OPENAPI, ROUTES

pytestmark = pytest.mark.anyio

BASE = "/v1/turnkeep/conversations"


async def two_turns(http: httpx2.AsyncClient, key: str) -> str:
    """A thread of two turns; returns its conversation id."""
    first = await http.post(
        "/v1/messages",
        headers={"x-api-key": key},
        json={"model": MODEL, "max_tokens": 100, "messages": [user("My name is Ada.")], "thread": {"type": "create"}},
    )
    second = await http.post(
        "/v1/messages",
        headers={"x-api-key": key},
        json={
            "model": MODEL,
            "max_tokens": 100,
            "messages": [user("I live in Paris.")],
            "thread": {"type": "continue", "previous_message_id": first.json()["id"]},
        },
    )
    assert second.status_code == 200
    return str(second.headers["x-turnkeep-conversation-id"])


async def test_an_export_imported_by_another_tenant_is_its_own_conversation_and_continues_as_a_thread(
    gateway: Gateway, http: httpx2.AsyncClient
) -> None:
    alice, bob = {"x-api-key": add_key(gateway, "alice")}, {"x-api-key": add_key(gateway, "bob")}
    original = await two_turns(http, alice["x-api-key"])
    exported = (await http.get(f"{BASE}/{original}/export", headers=alice)).json()

    imported = await http.post(f"{BASE}/import", headers=bob, json=exported)
    assert imported.status_code == 201
    copy_id, previous = imported.json()["id"], imported.json()["previous_message_id"]
    assert copy_id != original
    assert [row["id"] for row in (await http.get(BASE, headers=bob)).json()["data"]] == [copy_id]
    assert (await http.get(f"{BASE}/{copy_id}", headers=alice)).status_code == 404  # bob's, not alice's
    theirs = (await http.get(f"{BASE}/{original}", headers=alice)).json()["messages"]
    ours = (await http.get(f"{BASE}/{copy_id}", headers=bob)).json()["messages"]
    assert ours == theirs

    continued = await http.post(
        "/v1/messages",
        headers=bob,
        json={
            "model": MODEL,
            "max_tokens": 100,
            "messages": [user("What is my name?")],
            "thread": {"type": "continue", "previous_message_id": previous},
        },
    )
    assert continued.status_code == 200
    assert continued.json()["content"][0]["text"] == "Your name is Ada."
    assert continued.headers["x-turnkeep-conversation-id"] == copy_id


def broken(export: dict[str, Any], how: str) -> Any:
    data = copy.deepcopy(export)
    if how == "orphan":
        data["nodes"][1]["parent_id"] = "no-such-node"
    elif how == "role":
        data["nodes"][0]["message"]["role"] = "robot"
    elif how == "format":
        data["format"] = "something.else"
    elif how == "secret":
        data["settings"]["api_key"] = "sk-ant-api03-" + "x" * 40
    elif how == "not-an-object":
        data = [data]
    return data


@pytest.mark.parametrize("how", ["orphan", "role", "format", "secret", "not-an-object"])
async def test_a_refused_import_names_the_problem_and_changes_nothing(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path, how: str
) -> None:
    headers = {"x-api-key": add_key(gateway, "acme")}
    exported = (await http.get(f"{BASE}/{await two_turns(http, headers['x-api-key'])}/export", headers=headers)).json()
    before = rows(database)
    refused = await http.post(f"{BASE}/import", headers=headers, json=broken(exported, how))
    assert refused.status_code == 400
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert "sk-ant-api03" not in refused.text
    assert rows(database) == before


async def test_an_import_without_a_key_or_with_malformed_json_is_refused(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path
) -> None:
    add_key(gateway, "acme")
    before = rows(database)
    assert (await http.post(f"{BASE}/import", json={})).status_code == 401
    malformed = await http.post(f"{BASE}/import", headers={"x-api-key": add_key(gateway, "acme")}, content=b"{")
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["error"]["message"]
    assert {k: v for k, v in rows(database).items() if k != "tk_keys"} == {
        k: v for k, v in before.items() if k != "tk_keys"
    }


# -- the OpenAPI document -----------------------------------------------------------------------------------------


def conforms(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Check `value` against the subset of JSON Schema the document uses (type, enum, required, properties,
    items, additionalProperties, $ref)."""
    if "$ref" in schema:
        schema = OPENAPI["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kinds = schema.get("type")
    if kinds is not None:
        names = {
            "string": str,
            "integer": int,
            "number": (int, float),
            "boolean": bool,
            "object": dict,
            "array": list,
            "null": type(None),
        }
        allowed = [kinds] if isinstance(kinds, str) else kinds
        assert any(isinstance(value, names[kind]) for kind in allowed), f"{where}: {value!r} is not {allowed}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, f"{where}: {name} is required"
        for name, item in value.items():
            if name in schema.get("properties", {}):
                conforms(item, schema["properties"][name], f"{where}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                conforms(item, schema["additionalProperties"], f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            conforms(item, schema["items"], f"{where}[{index}]")


def answer_schema(path: str, method: str, status: int) -> dict[str, Any]:
    operation = OPENAPI["paths"][path][method]
    response = operation["responses"][str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


async def test_every_resource_answers_as_its_openapi_schema_says(gateway: Gateway, http: httpx2.AsyncClient) -> None:
    headers = {"x-api-key": add_key(gateway, "acme")}
    conversation_id = await two_turns(http, headers["x-api-key"])
    one = BASE + "/{conversation_id}"
    calls: list[tuple[str, str, str, dict[str, Any]]] = [
        ("get", BASE, BASE, {}),
        ("get", one, f"{BASE}/{conversation_id}", {}),
        ("get", one + "/cost", f"{BASE}/{conversation_id}/cost", {}),
        ("get", one + "/explain", f"{BASE}/{conversation_id}/explain", {"params": {"message": "And now?"}}),
        ("post", one + "/fork", f"{BASE}/{conversation_id}/fork", {"json": {"name": "alt"}}),
        ("get", one + "/export", f"{BASE}/{conversation_id}/export", {}),
        ("get", one, f"{BASE}/{'0' * 32}", {}),  # an error answer
        ("delete", one, f"{BASE}/{conversation_id}", {}),
    ]
    for method, template, url, options in calls:
        if method == "post" and template.endswith("/fork"):
            exported = (await http.get(f"{BASE}/{conversation_id}/export", headers=headers)).json()
            imported = await http.post(f"{BASE}/import", headers=headers, json=exported)
            conforms(imported.json(), answer_schema(BASE + "/import", "post", imported.status_code))
            conforms(exported, OPENAPI["components"]["schemas"]["Export"])
        answer = await http.request(method.upper(), url, headers=headers, **options)
        conforms(answer.json(), answer_schema(template, method, answer.status_code), f"{method} {url}")


def test_the_openapi_document_covers_every_route_and_every_reference_resolves() -> None:
    documented = {
        (path, method.upper()) for path, item in OPENAPI["paths"].items() for method in item if method != "parameters"
    }
    routed = {(path.replace(":path", ""), method) for path, _, methods in ROUTES for method in methods}
    assert routed - {("/v1/turnkeep/openapi.json", "GET")} == documented

    def references(value: Any) -> list[str]:
        if isinstance(value, dict):
            return [value["$ref"]] if "$ref" in value else [r for item in value.values() for r in references(item)]
        if isinstance(value, list):
            return [r for item in value for r in references(item)]
        return []

    for reference in references(OPENAPI):
        _, section, kind, name = reference.split("/")
        assert name in OPENAPI[section][kind], reference
