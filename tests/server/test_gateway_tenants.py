"""Tenants: keys, isolation, budgets, rate limits, size and time limits; hostile requests change nothing."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest
from gateway_helpers import MODEL, add_key, rows, user

from conftest import Clock
from turnkeep.emulator import EmulatorServer
from turnkeep.server import Gateway, Limits, create_app
from turnkeep.server.runner import EMULATOR_UPSTREAM_KEY

pytestmark = pytest.mark.anyio

PLAIN = {"model": MODEL, "max_tokens": 50, "messages": [user("Hello there.")]}


def error_of(response: httpx2.Response) -> tuple[int, str]:
    body = response.json()
    assert body["type"] == "error"
    assert body["request_id"] == response.headers["request-id"]
    return response.status_code, body["error"]["type"]


async def test_requests_without_a_valid_key_are_refused_like_the_api(
    gateway: Gateway, http: httpx2.AsyncClient
) -> None:
    add_key(gateway, "acme")
    for headers in ({}, {"x-api-key": "tk-not-a-key"}, {"authorization": "Bearer sk-ant-whatever"}):
        assert error_of(await http.post("/v1/messages", headers=headers, json=PLAIN)) == (401, "authentication_error")
    assert error_of(await http.get("/v1/models", headers={"x-api-key": ""})) == (401, "authentication_error")


async def test_a_revoked_key_stops_working(gateway: Gateway, http: httpx2.AsyncClient) -> None:
    key = add_key(gateway, "acme")
    assert (await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN)).status_code == 200
    assert gateway.tenancy.revoke_key(key[:11], now=0) == 1
    assert error_of(await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN))[0] == 401


async def test_keys_are_stored_only_as_digests_and_the_upstream_key_never_leaves(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path, upstream: EmulatorServer
) -> None:
    key = add_key(gateway, "acme")
    answers = [
        await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN),
        await http.post("/v1/messages", headers={"x-api-key": key}, json={**PLAIN, "stream": True}),
        await http.post("/v1/messages", headers={"x-api-key": key}, json={**PLAIN, "thread": {"type": "create"}}),
        await http.post("/v1/messages", headers={"x-api-key": key}, json={**PLAIN, "model": "no-such-model"}),
        await http.get("/v1/models", headers={"x-api-key": key}),
        await http.get("/metrics"),
    ]
    for answer in answers:
        assert EMULATOR_UPSTREAM_KEY not in answer.text
        assert EMULATOR_UPSTREAM_KEY not in json.dumps(dict(answer.headers))
    stored = b"".join(path.read_bytes() for path in database.parent.glob("gateway.db*"))
    assert key.encode() not in stored
    assert EMULATOR_UPSTREAM_KEY.encode() not in stored
    # Upstream billed the gateway's key, never the tenant's.
    assert upstream.bill(api_key=EMULATOR_UPSTREAM_KEY)["requests"] == 3
    assert upstream.bill(api_key=key)["requests"] == 0


async def test_pass_through_requests_are_accounted_to_their_tenant(
    gateway: Gateway, http: httpx2.AsyncClient, upstream: EmulatorServer, clock: Clock
) -> None:
    acme, other = add_key(gateway, "acme"), add_key(gateway, "other")
    await http.post("/v1/messages", headers={"x-api-key": acme}, json=PLAIN)
    streamed = await http.post("/v1/messages", headers={"x-api-key": acme}, json={**PLAIN, "stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "message_stop" in streamed.text
    await http.post("/v1/messages", headers={"x-api-key": other}, json=PLAIN)
    acme_usage = gateway.tenancy.usage("acme", since=clock.now, until=clock.now)
    other_usage = gateway.tenancy.usage("other", since=clock.now, until=clock.now)
    assert (acme_usage.requests, other_usage.requests) == (2, 1)
    bill = upstream.bill(api_key=EMULATOR_UPSTREAM_KEY)
    assert acme_usage.usd + other_usage.usd == Decimal(bill["usd"]["total"])
    assert acme_usage.input_tokens + other_usage.input_tokens == bill["input_tokens"]
    assert acme_usage.output_tokens + other_usage.output_tokens == bill["output_tokens"]


async def test_a_spent_daily_budget_answers_429_until_the_next_day(
    gateway: Gateway, http: httpx2.AsyncClient, clock: Clock, database: Path
) -> None:
    key = add_key(gateway, "acme", Limits(usd_per_day=Decimal("0.0000001")))
    assert (await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN)).status_code == 200
    before = rows(database)
    refused = await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN)
    assert error_of(refused) == (429, "rate_limit_error")
    assert "per day" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) == int(86400 - clock.now % 86400 + 0.999)
    assert rows(database) == before
    clock.now += 86400
    assert (await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN)).status_code == 200


async def test_a_monthly_budget_counts_every_day_of_the_month(
    gateway: Gateway, http: httpx2.AsyncClient, clock: Clock
) -> None:
    key = add_key(gateway, "acme", Limits(usd_per_month=Decimal("0.0000001")))
    assert (await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN)).status_code == 200
    clock.now += 86400  # the next day, same month (the clock starts mid-January 2027)
    refused = await http.post("/v1/messages", headers={"x-api-key": key}, json=PLAIN)
    assert error_of(refused) == (429, "rate_limit_error")
    assert "per month" in refused.json()["error"]["message"]


async def test_rate_limits_answer_429_with_retry_after_and_reset_each_minute(
    gateway: Gateway, http: httpx2.AsyncClient, clock: Clock
) -> None:
    clock.now = 1_800_000_000.0 - 1_800_000_000.0 % 60 + 15  # 15 s into a minute
    requests = add_key(gateway, "requests", Limits(requests_per_minute=2))
    tokens = add_key(gateway, "tokens", Limits(tokens_per_minute=10))
    for _ in range(2):
        assert (await http.post("/v1/messages", headers={"x-api-key": requests}, json=PLAIN)).status_code == 200
    refused = await http.post("/v1/messages", headers={"x-api-key": requests}, json=PLAIN)
    assert error_of(refused) == (429, "rate_limit_error")
    assert refused.headers["retry-after"] == "45"
    assert (await http.post("/v1/messages", headers={"x-api-key": tokens}, json=PLAIN)).status_code == 200
    assert error_of(await http.post("/v1/messages", headers={"x-api-key": tokens}, json=PLAIN))[0] == 429
    clock.now += 60
    assert (await http.post("/v1/messages", headers={"x-api-key": requests}, json=PLAIN)).status_code == 200
    assert (await http.post("/v1/messages", headers={"x-api-key": tokens}, json=PLAIN)).status_code == 200


async def test_the_sdk_retries_a_429_after_its_retry_after(gateway: Gateway, clock: Clock) -> None:
    import anthropic
    from gateway_helpers import sdk

    key = add_key(gateway, "acme", Limits(requests_per_minute=1))
    client = sdk(gateway, key)
    await client.messages.create(**PLAIN)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(**PLAIN)  # type: ignore[arg-type]
    await client.close()
    del clock


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind"),
    [
        (b"{not json", {}, 400, "invalid_request_error"),
        (b"[1, 2]", {}, 400, "invalid_request_error"),
        (b"x" * 2048, {}, 413, "request_too_large"),
        (
            json.dumps({**PLAIN, "thread": {"type": "create"}, "messages": "hi"}).encode(),
            {},
            400,
            "invalid_request_error",
        ),
        (json.dumps({**PLAIN, "thread": "create"}).encode(), {}, 400, "invalid_request_error"),
        (
            json.dumps({**PLAIN, "thread": {"type": "continue", "previous_message_id": "msg_forged"}}).encode(),
            {},
            404,
            "not_found_error",
        ),
        (json.dumps(PLAIN).encode(), {"x-turnkeep-policy": "no-such-policy(x=1)"}, 200, None),
    ],
)
async def test_hostile_requests_get_api_shaped_errors_and_change_nothing(
    make_gateway: type[Gateway],
    database: Path,
    body: bytes,
    headers: dict[str, str],
    status: int,
    kind: str | None,
) -> None:
    gateway = make_gateway(max_request_bytes=1024)  # type: ignore[call-arg]
    key = add_key(gateway, "acme")
    before = rows(database)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app(gateway)), base_url="http://g") as http:
        response = await http.post(
            "/v1/messages", content=body, headers={"x-api-key": key, "content-type": "application/json", **headers}
        )
    if kind is None:  # a policy header on an unthreaded request is simply not used
        assert response.status_code == status
        return
    assert error_of(response) == (status, kind)
    assert rows(database) == before


async def test_a_bad_policy_header_on_a_create_is_refused(
    gateway: Gateway, http: httpx2.AsyncClient, database: Path
) -> None:
    key = add_key(gateway, "acme")
    before = rows(database)
    response = await http.post(
        "/v1/messages",
        headers={"x-api-key": key, "x-turnkeep-policy": "no-such-policy(x=1)"},
        json={**PLAIN, "thread": {"type": "create"}},
    )
    assert error_of(response) == (400, "invalid_request_error")
    assert "x-turnkeep-policy" in response.json()["error"]["message"]
    assert rows(database) == before


async def test_a_body_that_arrives_too_slowly_times_out_with_408(make_gateway: type[Gateway], database: Path) -> None:
    gateway = make_gateway(body_timeout=0.2)  # type: ignore[call-arg]
    key = add_key(gateway, "acme")
    before = rows(database)
    app = create_app(gateway)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        if not sent:
            sent.append({})
            return {"type": "http.request", "body": b'{"model":', "more_body": True}
        await asyncio.sleep(3600)  # the rest never comes (slow loris)
        raise AssertionError("unreachable")

    answer: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"x-api-key", key.encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert answer[0]["status"] == 408
    body = json.loads(b"".join(m.get("body", b"") for m in answer[1:]))  # type: ignore[misc]
    assert body["error"]["type"] == "timeout_error"
    assert body["error"]["details"]["error_code"] == "request_body_timeout"
    assert rows(database) == before
