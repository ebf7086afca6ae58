"""Operations and our own resources: health, readiness, metrics, content-free access logs, conversations."""

from __future__ import annotations

import json
import logging

import httpx2
import pytest
from gateway_helpers import MODEL, add_key, user

from turnkeep.server import Gateway

pytestmark = pytest.mark.anyio

SECRET = "The launch code is swordfish."


async def thread_turns(http: httpx2.AsyncClient, key: str) -> tuple[str, str]:
    first = await http.post(
        "/v1/messages",
        headers={"x-api-key": key},
        json={"model": MODEL, "max_tokens": 100, "messages": [user(SECRET)], "thread": {"type": "create"}},
    )
    second = await http.post(
        "/v1/messages",
        headers={"x-api-key": key},
        json={
            "model": MODEL,
            "max_tokens": 100,
            "messages": [user("What is the launch code?")],
            "thread": {"type": "continue", "previous_message_id": first.json()["id"]},
        },
    )
    assert second.status_code == 200
    return second.headers["x-turnkeep-conversation-id"], second.json()["id"]


async def test_health_and_readiness(http: httpx2.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}


async def test_metrics_count_requests_tokens_and_dollars_by_tenant_and_model(
    gateway: Gateway, http: httpx2.AsyncClient
) -> None:
    key = add_key(gateway, "acme")
    await thread_turns(http, key)
    text = (await http.get("/metrics")).text
    assert 'turnkeep_gateway_requests_total{route="/v1/messages",status="200"} 2.0' in text
    assert 'turnkeep_gateway_upstream_tokens_total{kind="output",model="claude-sonnet-5",tenant="acme"}' in text
    assert 'turnkeep_gateway_upstream_usd_total{model="claude-sonnet-5",tenant="acme"}' in text
    assert 'turnkeep_gateway_cache_read_share{model="claude-sonnet-5",tenant="acme"}' in text
    assert "turnkeep_gateway_request_seconds_bucket" in text


async def test_access_logs_name_the_request_but_hold_no_content_and_no_key(
    gateway: Gateway, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    key = add_key(gateway, "acme")
    with caplog.at_level(logging.INFO, logger="turnkeep.gateway.access"):
        await thread_turns(http, key)
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "turnkeep.gateway.access"]
    assert [(line["tenant"], line["thread"], line["status"]) for line in lines] == [
        ("acme", "create", 200),
        ("acme", "continue", 200),
    ]
    assert all(line["request_id"].startswith("req_") for line in lines)
    logged = caplog.text
    assert "swordfish" not in logged
    assert key not in logged


async def test_conversations_are_listed_read_costed_explained_forked_exported_and_deleted(
    gateway: Gateway, http: httpx2.AsyncClient
) -> None:
    key = add_key(gateway, "acme")
    headers = {"x-api-key": key}
    conversation_id, _ = await thread_turns(http, key)
    listing = (await http.get("/v1/turnkeep/conversations", headers=headers)).json()
    assert [row["id"] for row in listing["data"]] == [conversation_id]
    assert listing["total"] == 1
    assert listing["has_more"] is False
    base = f"/v1/turnkeep/conversations/{conversation_id}"
    detail = (await http.get(base, headers=headers)).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant", "user", "assistant"]
    assert detail["messages"][0]["content"] == SECRET
    cost = (await http.get(base + "/cost", headers=headers)).json()
    assert cost["requests"] == 2
    assert float(cost["cost_usd"]) > 0
    explained = (await http.get(base + "/explain", headers=headers, params={"message": "And now?"})).json()
    assert explained["request"]["messages"][-1]["role"] == "user"
    assert explained["explanation"]
    forked = await http.post(base + "/fork", headers=headers, json={"name": "alt"})
    assert forked.status_code == 201
    assert set((await http.get(base, headers=headers)).json()["branches"]) == {"main", "alt"}
    exported = (await http.get(base + "/export", headers=headers)).json()
    assert exported["id"] == conversation_id
    assert (await http.delete(base, headers=headers)).json() == {"id": conversation_id, "deleted": True}
    assert (await http.get(base, headers=headers)).status_code == 404
    assert gateway.store.count_conversations() == 0


async def test_another_tenants_conversation_is_indistinguishable_from_an_unknown_one(
    gateway: Gateway, http: httpx2.AsyncClient
) -> None:
    conversation_id, _ = await thread_turns(http, add_key(gateway, "alice"))
    bob = {"x-api-key": add_key(gateway, "bob")}
    assert (await http.get("/v1/turnkeep/conversations", headers=bob)).json()["data"] == []
    for method, suffix in [("GET", ""), ("GET", "/cost"), ("GET", "/export"), ("POST", "/fork"), ("DELETE", "")]:
        foreign = await http.request(method, f"/v1/turnkeep/conversations/{conversation_id}{suffix}", headers=bob)
        unknown = await http.request(method, f"/v1/turnkeep/conversations/{'0' * 32}{suffix}", headers=bob)
        assert foreign.status_code == unknown.status_code == 404
        assert foreign.json()["error"]["message"].replace(conversation_id, "X") == unknown.json()["error"][
            "message"
        ].replace("0" * 32, "X")
    assert gateway.store.count_conversations() == 1


async def test_the_openapi_document_lists_every_resource(http: httpx2.AsyncClient) -> None:
    document = (await http.get("/v1/turnkeep/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert "/v1/turnkeep/conversations/{conversation_id}/fork" in document["paths"]
