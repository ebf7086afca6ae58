"""The emulator over HTTP, driven by the official `anthropic` SDK (the issue's "Done when" list)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic import omit

from turnkeep.core.values import ENVELOPE_DEPTH, MAX_DEPTH
from turnkeep.emulator.server import EmulatorServer

MODEL = "claude-sonnet-5"  # minimum cacheable prefix 1024 tokens; rejects prefill
LONG_SYSTEM = " ".join(f"Rule {i}: answer politely and cite the handbook section {i}." for i in range(200))


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def without_ids(message: anthropic.BaseModel) -> dict[str, Any]:
    data = message.model_dump(exclude_none=True)
    data.pop("id")
    return data


# --- messages.create, stream, count_tokens, models ---


def test_messages_create_answers_with_a_message_usage_and_request_id(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=[user("Hello")])
    message = raw.parse()

    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_")
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.service_tier == "standard"


def test_message_ids_are_unique(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    ids = {client.messages.create(model=MODEL, max_tokens=20, messages=[user("Hi")]).id for _ in range(5)}
    assert len(ids) == 5


SCRIPTED_REPLY = {
    "content": [
        {"type": "thinking", "thinking": "The user wants the weather in two cities; I will call the tool twice."},
        {"type": "text", "text": "Let me look up both cities for you, one after the other, right now."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris", "unit": "C"}},
        {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome", "days": [1, 2]}},
    ]
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_streamed_final_message_equals_the_non_streamed_reply(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    turnkeep_emulator.script(SCRIPTED_REPLY, SCRIPTED_REPLY)
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 2000,
        "tools": [WEATHER_TOOL],
        "thinking": {"type": "adaptive"},
        "messages": [user("What is the weather in Paris and Rome?")],
    }

    created = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        events = [event.type for event in stream]
        streamed = stream.get_final_message()

    assert created.stop_reason == "tool_use"
    assert [block.type for block in created.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert without_ids(streamed) == without_ids(created)
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "input_json" in events
    assert "thinking" in events
    assert "signature" in events
    assert events.count("text") >= 2  # the text arrives in several deltas


def test_raw_sse_events_follow_the_reference_order(turnkeep_emulator: EmulatorServer) -> None:
    response = httpx2.post(
        f"{turnkeep_emulator.base_url}/v1/messages",
        headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 50, "stream": True, "messages": [user("Hello")]},
    )
    names = [line.removeprefix("event: ") for line in response.text.splitlines() if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in response.text.splitlines() if line.startswith("data: ")]

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    assert names[0] == "message_start"
    assert "ping" in names
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.index("content_block_start") < names.index("content_block_delta") < names.index("content_block_stop")
    start = data[0]["message"]
    assert start["content"] == []
    assert start["usage"]["output_tokens"] == 1
    assert start["usage"]["input_tokens"] > 0
    assert data[-2]["usage"]["output_tokens"] > 1


def test_count_tokens_equals_the_billed_input(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    request: dict[str, Any] = {
        "model": MODEL,
        "system": [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        "tools": [WEATHER_TOOL],
        "messages": [user("My name is Ada."), assistant("Noted: your name is Ada."), user("What is my name?")],
    }

    counted = client.messages.count_tokens(**request).input_tokens
    for _ in range(2):  # the second one reads the cache: the total input stays the same
        usage = client.messages.create(max_tokens=100, **request).usage
        billed = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        assert billed == counted


def test_models_retrieve_reports_limits_and_capabilities_from_the_catalog(turnkeep_emulator: EmulatorServer) -> None:
    model = turnkeep_emulator.client().models.retrieve("claude-opus-4-5")

    assert model.id == "claude-opus-4-5"
    assert model.display_name == "Claude Opus 4.5"
    assert model.max_input_tokens == 200_000
    assert model.max_tokens == 64_000
    assert model.lifecycle == "deprecated"
    assert str(model.retires_at)[:10] == "2027-01-22"
    assert str(model.deprecated_at)[:10] == "2026-11-23"
    assert model.capabilities is not None
    assert model.capabilities.context_management.compact_20260112 is not None
    assert model.capabilities.context_management.compact_20260112.supported is False
    assert model.capabilities.thinking.types.enabled.supported is True
    assert model.capabilities.thinking.types.adaptive.supported is False


def test_models_list_pages_through_the_whole_catalog(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    first_page = client.models.list(limit=3)
    every_id = [model.id for model in client.models.list(limit=3)]  # auto-pagination follows after_id

    assert len(first_page.data) == 3
    assert first_page.has_more is True
    assert first_page.first_id == first_page.data[0].id
    assert first_page.last_id == first_page.data[-1].id
    assert len(every_id) == len(set(every_id))
    assert {"claude-sonnet-5", "claude-opus-4-5", "claude-haiku-4-5"} <= set(every_id)
    assert [model.id for model in client.models.list(limit=1000)] == every_id


def test_beta_messages_with_betas_header_and_beta_query_work(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    message = client.beta.messages.create(
        model=MODEL,
        max_tokens=100,
        betas=["context-management-2025-06-27"],
        context_management={"edits": [{"type": "clear_tool_uses_20250919"}]},
        messages=[user("Hello")],
    )
    assert message.context_management is not None
    assert message.context_management.applied_edits == []
    with pytest.raises(anthropic.BadRequestError):  # the same field without the beta header is rejected
        client.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[user("Hello")],
            extra_body={"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
        )


# --- errors ---


def test_missing_credentials_is_a_401_authentication_error(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client(max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("Hi")], extra_headers={"Authorization": omit})
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.request_id is not None
    assert caught.value.request_id.startswith("req_")
    assert caught.value.body["request_id"] == caught.value.request_id  # type: ignore[index]


def test_x_api_key_header_authenticates_too(turnkeep_emulator: EmulatorServer) -> None:
    response = httpx2.post(
        f"{turnkeep_emulator.base_url}/v1/messages",
        headers={"x-api-key": "curl-key", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 20, "messages": [user("Hi")]},
    )
    assert response.status_code == 200
    assert turnkeep_emulator.bill("curl-key")["requests"] == 1


@pytest.mark.parametrize(
    ("fault", "error_class", "status", "error_type", "error_code"),
    [
        ({"status": 429, "retry_after": 0.001}, anthropic.RateLimitError, 429, "rate_limit_error", None),
        ({"status": 500}, anthropic.InternalServerError, 500, "api_error", None),
        ({"status": 504}, anthropic.GatewayTimeoutError, 504, "timeout_error", None),
        ({"status": 529}, anthropic.OverloadedError, 529, "overloaded_error", None),
        (
            {"status": 529, "error_code": "compaction_unavailable"},
            anthropic.OverloadedError,
            529,
            "overloaded_error",
            "compaction_unavailable",
        ),
    ],
)
def test_injected_status_faults_raise_the_sdks_own_error_classes(
    turnkeep_emulator: EmulatorServer,
    fault: dict[str, Any],
    error_class: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
    error_code: str | None,
) -> None:
    turnkeep_emulator.fault(fault)
    with pytest.raises(error_class) as caught:
        turnkeep_emulator.client(max_retries=0).messages.create(model=MODEL, max_tokens=10, messages=[user("Hi")])
    assert caught.value.status_code == status
    assert caught.value.type == error_type
    assert caught.value.error_code == error_code
    assert caught.value.request_id is not None


def test_a_429_carries_retry_after(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault({"status": 429, "retry_after": 2.5})
    with pytest.raises(anthropic.RateLimitError) as caught:
        turnkeep_emulator.client(max_retries=0).messages.create(model=MODEL, max_tokens=10, messages=[user("Hi")])
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.response.headers["retry-after-ms"] == "2500"


def test_invalid_request_is_a_400_with_the_api_wording(turnkeep_emulator: EmulatorServer) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        turnkeep_emulator.client().messages.create(model=MODEL, max_tokens=10, messages=[user("")])
    assert caught.value.status_code == 400
    assert caught.value.type == "invalid_request_error"


def test_unknown_model_is_a_404_not_found_error(turnkeep_emulator: EmulatorServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        turnkeep_emulator.client().messages.create(model="claude-nonexistent-9", max_tokens=10, messages=[user("x")])
    assert caught.value.type == "not_found_error"
    assert caught.value.api_message == "model: claude-nonexistent-9"


def test_unknown_thread_is_a_404_with_error_code_thread_not_found(turnkeep_emulator: EmulatorServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        turnkeep_emulator.client().beta.messages.create(
            model=MODEL,
            max_tokens=10,
            betas=["message-threads-2026-08-12"],
            thread={"type": "continue", "previous_message_id": "msg_unknown"},
            messages=[user("Still there?")],
        )
    assert caught.value.status_code == 404
    assert caught.value.error_code == "thread_not_found"


def test_a_body_over_32_mb_is_a_413_request_too_large(turnkeep_emulator: EmulatorServer) -> None:
    huge = "x" * (32 * 1024 * 1024 + 1)
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        turnkeep_emulator.client(max_retries=0).messages.create(model=MODEL, max_tokens=10, messages=[user(huge)])
    assert caught.value.status_code == 413
    assert caught.value.type == "request_too_large"


def test_a_body_nested_past_the_depth_limit_is_a_400_naming_where_and_one_at_the_limit_is_answered(
    turnkeep_emulator: EmulatorServer,
) -> None:
    limit = MAX_DEPTH + ENVELOPE_DEPTH  # containers below the body's top level, the top at depth 0

    def metadata_nested(depth: int) -> dict[str, Any]:
        """`metadata` whose innermost object sits at `depth` in the body."""
        inner: dict[str, Any] = {}
        for _ in range(depth - 1):
            inner = {"a": inner}
        return inner

    client = turnkeep_emulator.client(max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model=MODEL, max_tokens=10, messages=[user("Hi")], extra_body={"metadata": metadata_nested(limit + 1)}
        )
    assert caught.value.api_message.startswith("metadata.a.a.")
    assert caught.value.api_message.endswith(f"nested more than {MAX_DEPTH} levels deep")
    reply = client.messages.create(
        model=MODEL, max_tokens=10, messages=[user("Hi")], extra_body={"metadata": metadata_nested(limit)}
    )
    assert reply.content


def test_removed_sampling_parameters_are_rejected_on_the_new_api_version(turnkeep_emulator: EmulatorServer) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        turnkeep_emulator.client().messages.create(
            model=MODEL, max_tokens=10, messages=[user("Hi")], extra_body={"temperature": 0.5}
        )
    assert caught.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error_type"),
    [
        ("GET", "/v1/nowhere", None, 404, "not_found_error"),
        ("POST", "/v1/messages", b"{not json", 400, "invalid_request_error"),
        ("POST", "/v1/messages", b"[1, 2]", 400, "invalid_request_error"),
    ],
)
def test_every_error_response_has_a_request_id_header_and_body(
    turnkeep_emulator: EmulatorServer, method: str, path: str, body: bytes | None, status: int, error_type: str
) -> None:
    response = httpx2.request(
        method,
        turnkeep_emulator.base_url + path,
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        content=body,
    )
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type
    assert response.headers["request-id"] == response.json()["request_id"]


# --- caching, clock, diagnostics ---


def cached_request(client: anthropic.Anthropic, question: str = "What is my name?") -> anthropic.types.Usage:
    return client.messages.create(
        model=MODEL,
        max_tokens=100,
        system=[{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}],
        messages=[user(question)],
    ).usage


def test_a_second_identical_request_over_the_minimum_reads_the_cache(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    first = cached_request(client)
    second = cached_request(client)

    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens is not None
    assert first.cache_creation_input_tokens > 1024
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0


def test_caches_are_scoped_by_api_key(turnkeep_emulator: EmulatorServer) -> None:
    cached_request(turnkeep_emulator.client(api_key="alice"))
    assert cached_request(turnkeep_emulator.client(api_key="bob")).cache_read_input_tokens == 0


def test_a_virtual_gap_past_five_minutes_expires_the_cache(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    cached_request(client)
    turnkeep_emulator.advance(299)
    assert cached_request(client).cache_read_input_tokens > 0  # type: ignore[operator]  # a hit refreshes the TTL
    turnkeep_emulator.advance(301)
    assert cached_request(client).cache_read_input_tokens == 0


def test_the_advance_header_moves_the_virtual_clock_before_the_request(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    before = turnkeep_emulator.now()
    cached_request(client)
    late = client.with_options(default_headers={"x-emulator-advance": "1200"})
    assert cached_request(late).cache_read_input_tokens == 0
    assert turnkeep_emulator.now() == before + 1200


def test_the_clock_endpoint_sets_and_reads_a_virtual_clock(turnkeep_emulator: EmulatorServer) -> None:
    assert turnkeep_emulator.set_time(1_900_000_000) == 1_900_000_000
    assert turnkeep_emulator.advance(60) == 1_900_000_060
    assert turnkeep_emulator.now() == 1_900_000_060


def test_diagnostics_explain_a_cache_miss_after_the_system_prompt_changed(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    first = client.messages.create(
        model=MODEL, max_tokens=50, system="You are terse.", messages=[user("Hello")], diagnostics={}
    )
    second = client.messages.create(
        model=MODEL,
        max_tokens=50,
        system="You are verbose.",
        messages=[user("Hello")],
        diagnostics={"previous_message_id": first.id},
    )
    unknown = client.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[user("Hello")],
        diagnostics={"previous_message_id": "msg_never_sent"},
    )
    assert second.diagnostics is not None
    assert second.diagnostics.cache_miss_reason is not None
    assert second.diagnostics.cache_miss_reason.type == "system_changed"
    assert unknown.diagnostics is not None
    assert unknown.diagnostics.cache_miss_reason is not None
    assert unknown.diagnostics.cache_miss_reason.type == "previous_message_not_found"


# --- threads ---


def test_a_thread_continues_with_only_new_messages_and_replays_after_a_six_minute_gap(
    turnkeep_emulator: EmulatorServer,
) -> None:
    sent: list[dict[str, Any]] = []

    def record(request: httpx2.Request) -> None:
        if request.url.path == "/v1/messages":
            sent.append(json.loads(request.read()))

    client = turnkeep_emulator.client(http_client=httpx2.Client(event_hooks={"request": [record]}))
    thread = client.beta.messages.thread(model=MODEL, max_tokens=200, system="You remember facts.")

    first = thread.send(user("My name is Ada."))
    second = thread.send(user("What is my name?"))
    turnkeep_emulator.advance(6 * 60)
    third = thread.send(user("Please tell me my name again: what is my name?"))

    assert first.content[0].type == "text"
    assert first.content[0].text == "Noted: your name is Ada."
    assert second.content[0].type == "text"
    assert second.content[0].text == "Your name is Ada."
    assert third.content[0].type == "text"
    assert third.content[0].text == "Your name is Ada."
    kinds = [(body["thread"]["type"], len(body["messages"])) for body in sent]
    # create (1 message) → continue (only the new one) → continue refused after expiry → replayed create (all 5)
    assert kinds == [("create", 1), ("continue", 1), ("continue", 1), ("create", 5)]
    assert "system" not in sent[1]


# --- bill ---


def test_the_bill_is_the_sum_of_the_usages(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client(api_key="billing-key")
    usages = [cached_request(client, question) for question in ("Hi", "Hi", "What is my name?")]
    bill = turnkeep_emulator.bill("billing-key")

    assert bill["requests"] == 3
    assert bill["input_tokens"] == sum(u.input_tokens for u in usages)
    assert bill["cache_creation_input_tokens"] == sum(u.cache_creation_input_tokens or 0 for u in usages)
    assert bill["cache_read_input_tokens"] == sum(u.cache_read_input_tokens or 0 for u in usages)
    assert bill["output_tokens"] == sum(u.output_tokens for u in usages)
    assert float(bill["usd"]["total"]) > 0
    assert turnkeep_emulator.bill("someone-else")["requests"] == 0
    everyone = turnkeep_emulator.bill(None)["scopes"]
    assert len(everyone) == 1
    assert "billing-key" not in json.dumps(everyone)  # the unauthenticated all-keys bill never shows a key


def test_reset_forgets_the_bill_and_the_cache(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    cached_request(client)
    turnkeep_emulator.reset()
    assert turnkeep_emulator.bill()["requests"] == 0
    assert turnkeep_emulator.stats()["cache_entries"] == 0
    assert cached_request(client).cache_read_input_tokens == 0


# --- replies ---


def test_recall_proves_memory_only_when_the_earlier_turn_is_in_the_request(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    first = client.messages.create(model=MODEL, max_tokens=100, messages=[user("What is the capital of France?")])
    assert first.content[0].type == "text"
    history = [user("What is the capital of France?"), assistant(first.content[0].text)]

    with_memory = client.messages.create(
        model=MODEL, max_tokens=100, messages=[*history, user("What is its population?")]
    )
    without_memory = client.messages.create(model=MODEL, max_tokens=100, messages=[user("What is its population?")])

    assert first.content[0].text == "The capital of France is Paris."
    assert with_memory.content[0].type == "text"
    assert with_memory.content[0].text == "Paris has a population of about 2.1 million."
    assert without_memory.content[0].type == "text"
    assert "don't know" in without_memory.content[0].text


def test_the_responder_header_switches_to_echo(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client(default_headers={"x-emulator-responder": "echo"})
    reply = client.messages.create(model=MODEL, max_tokens=100, messages=[user("Say this back")])
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "Say this back"


def test_a_script_header_plays_one_reply(turnkeep_emulator: EmulatorServer) -> None:
    script = json.dumps({"refusal": {"category": "cyber", "explanation": "Not that."}})
    reply = turnkeep_emulator.client().messages.create(
        model=MODEL, max_tokens=100, messages=[user("Hi")], extra_headers={"x-emulator-script": script}
    )
    assert reply.stop_reason == "refusal"
    assert reply.stop_details is not None
    assert reply.stop_details.category == "cyber"


def test_scripted_replies_are_queued_per_api_key(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script({"text": "for alice"}, api_key="alice")
    bob = turnkeep_emulator.client(api_key="bob").messages.create(model=MODEL, max_tokens=50, messages=[user("Hi")])
    alice = turnkeep_emulator.client(api_key="alice").messages.create(model=MODEL, max_tokens=50, messages=[user("Hi")])
    assert bob.content[0].type == "text"
    assert bob.content[0].text != "for alice"
    assert alice.content[0].type == "text"
    assert alice.content[0].text == "for alice"


def test_explicit_compaction_streams_like_it_answers(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1000,
        "betas": ["compact-2026-09-04"],
        "compaction": {"type": "summarize"},
        "messages": [user("My name is Ada."), assistant("Noted: your name is Ada."), user("I live in Rome.")],
    }
    created = client.beta.messages.create(**request)
    with client.beta.messages.stream(**request) as stream:
        events = [event.type for event in stream]
        streamed = stream.get_final_message()

    assert created.stop_reason == "compaction"
    assert [block.type for block in created.content] == ["compaction"]
    assert created.usage.iterations is not None
    assert "compaction" in events
    assert without_ids(streamed) == without_ids(created)
    later = client.beta.messages.create(
        model=MODEL,
        max_tokens=100,
        betas=["compact-2026-09-04"],
        messages=[{"role": "user", "content": [created.content[0].to_dict()]}, user("What is my name?")],
    )
    assert later.content[0].type == "text"
    assert later.content[0].text == "Your name is Ada."


def test_a_rejected_request_does_not_use_up_the_queued_script(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    turnkeep_emulator.script({"text": "kept for the valid request"})
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[user("   ")])
    reply = client.messages.create(model=MODEL, max_tokens=50, messages=[user("Hi")])
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "kept for the valid request"


def test_a_thread_without_its_beta_header_is_rejected(turnkeep_emulator: EmulatorServer) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        turnkeep_emulator.client().messages.create(
            model=MODEL, max_tokens=10, messages=[user("Hi")], extra_body={"thread": {"type": "create"}}
        )
    assert "message-threads-2026-08-12" in str(caught.value.api_message)


def test_beta_count_tokens_matches_the_plain_one(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    plain = client.messages.count_tokens(model=MODEL, messages=[user("Count me, please.")])
    beta = client.beta.messages.count_tokens(model=MODEL, messages=[user("Count me, please.")])
    assert beta.input_tokens == plain.input_tokens


def test_the_async_client_creates_and_streams(turnkeep_emulator: EmulatorServer) -> None:
    async def converse() -> tuple[str, str]:
        async with turnkeep_emulator.async_client() as client:
            created = await client.messages.create(model=MODEL, max_tokens=50, messages=[user("My name is Ada.")])
            async with client.messages.stream(
                model=MODEL, max_tokens=50, messages=[user("My name is Ada. What is my name?")]
            ) as stream:
                streamed = await stream.get_final_text()
        assert created.content[0].type == "text"
        return created.content[0].text, streamed

    assert asyncio.run(converse()) == ("Noted: your name is Ada.", "Your name is Ada.")


def test_count_tokens_equals_billed_input_with_a_compaction_block(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    history = [user("My name is Ada. " * 50), assistant("Noted: your name is Ada."), user("I live in Rome.")]
    compacted = client.beta.messages.create(
        model=MODEL, max_tokens=1000, betas=["compact-2026-09-04"], compaction={"type": "summarize"}, messages=history
    )
    # Later requests send the block first, in place of the messages it summarises.
    block = compacted.content[0].to_dict()
    request: dict[str, Any] = {
        "model": MODEL,
        "betas": ["compact-2026-09-04"],
        "messages": [{"role": "user", "content": [block, {"type": "text", "text": "What is my name?"}]}],
    }
    counted = client.beta.messages.count_tokens(**request).input_tokens
    reply = client.beta.messages.create(max_tokens=100, **request)
    usage = reply.usage
    assert counted == usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (
        usage.cache_read_input_tokens or 0
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text == "Your name is Ada."
