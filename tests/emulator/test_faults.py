"""Injected faults: how they are written, and what the official SDK makes of each one."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import anthropic
import httpx2
import pytest

from turnkeep.emulator.app import create_app
from turnkeep.emulator.faults import Fault, RandomFaults, parse_fault, parse_fault_header
from turnkeep.emulator.server import EmulatorServer

MODEL = "claude-sonnet-5"
ECHO = {"x-emulator-responder": "echo"}
HELLO = [{"role": "user", "content": "Hello there, how are you doing today?"}]
LONG_REPLY = {"text": " ".join(f"word{i}" for i in range(60))}


# --- parsing ---


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("529", Fault(kind="status", status=529, error_type="overloaded_error", message="Overloaded (emulated fault)")),
        (
            504,
            Fault(kind="status", status=504, error_type="timeout_error", message="Request timed out (emulated fault)"),
        ),
        ("slow:0.25", Fault(kind="slow", seconds=0.25)),
        ("drop:5", Fault(kind="drop", after=5)),
        ({"kind": "truncate"}, Fault(kind="truncate")),
    ],
)
def test_short_and_object_forms_parse(spec: Any, expected: Fault) -> None:
    assert parse_fault(spec) == expected


def test_a_429_has_a_retry_after_even_when_none_was_given() -> None:
    fault = parse_fault("429")
    assert fault.error_type == "rate_limit_error"
    # Never 0: the SDK ignores a zero wait; 1 ms is the shortest it honours.
    assert fault.headers() == {"retry-after": "1", "retry-after-ms": "1"}


def test_an_sse_error_fault_defaults_to_overloaded() -> None:
    fault = parse_fault({"kind": "sse_error", "after": 2})
    assert fault.error_body("req_1") == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded (emulated fault)"},
        "request_id": "req_1",
    }


def test_an_error_code_goes_into_error_details() -> None:
    fault = parse_fault({"status": 529, "error_code": "compaction_unavailable"})
    assert fault.error_body("req_1")["error"]["details"] == {"error_code": "compaction_unavailable"}


def test_the_header_takes_json_or_a_short_form() -> None:
    assert parse_fault_header("529") == parse_fault(529)
    assert parse_fault_header('{"status": 500}') == parse_fault({"status": 500})


@pytest.mark.parametrize(
    "spec", ["418", "explode", {"kind": "meteor"}, {"status": "500"}, {"kind": "slow", "seconds": -1}, True]
)
def test_bad_faults_are_value_errors(spec: Any) -> None:
    with pytest.raises(ValueError):
        parse_fault(spec)


def test_random_faults_are_reproducible_for_a_seed_and_near_the_rate() -> None:
    draws_a = RandomFaults(0.2, seed=7)
    draws_b = RandomFaults(0.2, seed=7)
    a = [draws_a.draw() for _ in range(2000)]
    b = [draws_b.draw() for _ in range(2000)]
    assert a == b
    assert a != [RandomFaults(0.2, seed=8).draw() for _ in range(2000)]
    failures = [fault for fault in a if fault is not None]
    assert 300 < len(failures) < 500
    assert {fault.status for fault in failures} == {429, 500, 504, 529}


def test_a_zero_rate_never_faults() -> None:
    draws = RandomFaults(0.0, seed=1)
    assert all(draws.draw() is None for _ in range(100))


def test_a_rate_outside_zero_to_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        RandomFaults(1.5)


# --- through the SDK ---


def test_sdk_retries_a_single_529_and_succeeds(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault({"status": 529, "retry_after": 0.001})
    message = turnkeep_emulator.client(max_retries=2).messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message.stop_reason == "end_turn"
    assert turnkeep_emulator.bill()["requests"] == 1  # the failed attempt is not billed


def test_sdk_gives_up_after_its_retries(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault(*[{"status": 429, "retry_after": 0.001}] * 3)
    with pytest.raises(anthropic.RateLimitError):
        turnkeep_emulator.client(max_retries=2).messages.create(model=MODEL, max_tokens=50, messages=HELLO)


def test_an_sse_error_event_mid_stream_raises_with_status_200(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script(LONG_REPLY)
    turnkeep_emulator.fault({"kind": "sse_error", "after": 5})
    received: list[str] = []
    client = turnkeep_emulator.client(max_retries=2)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model=MODEL, max_tokens=500, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error"
    assert received  # some text arrived before the error


def test_a_connection_dropped_mid_stream_is_a_transport_error(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.script(LONG_REPLY)
    turnkeep_emulator.fault({"kind": "drop", "after": 5})
    received: list[str] = []
    client = turnkeep_emulator.client()
    with (
        pytest.raises((httpx2.TransportError, anthropic.APIConnectionError)),
        client.messages.stream(model=MODEL, max_tokens=500, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)
    assert received


def test_a_dropped_non_streamed_reply_is_retried_by_the_sdk(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault("drop")
    message = turnkeep_emulator.client(max_retries=1).messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message.content


def test_a_dropped_non_streamed_reply_without_retries_is_a_connection_error(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault("drop")
    with pytest.raises(anthropic.APIConnectionError):
        turnkeep_emulator.client(max_retries=0).messages.create(model=MODEL, max_tokens=50, messages=HELLO)


def test_a_truncated_body_cannot_be_parsed(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault("truncate")
    response = httpx2.post(
        f"{turnkeep_emulator.base_url}/v1/messages",
        headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 50, "messages": HELLO},
    )
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    turnkeep_emulator.fault("truncate")
    client = turnkeep_emulator.client(max_retries=0)
    with pytest.raises(json.JSONDecodeError):  # the SDK does not catch it either
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)


def test_a_slow_reply_trips_the_client_timeout(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault({"kind": "slow", "seconds": 0.5})
    with pytest.raises(anthropic.APITimeoutError):
        turnkeep_emulator.client(max_retries=0, timeout=0.1).messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    # The reply was worked out and billed before the delay: the client that gave up was still billed.
    assert turnkeep_emulator.bill()["requests"] == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", ["drop", "truncate", "sse_error", "429", "500", "529"])
def test_a_reply_is_billed_as_far_as_it_was_generated_and_an_error_status_costs_nothing(
    turnkeep_emulator: EmulatorServer, fault: str, stream: bool
) -> None:
    client = turnkeep_emulator.client(max_retries=0)
    clean = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    turnkeep_emulator.reset()
    body = {"model": MODEL, "max_tokens": 50, "messages": HELLO, "stream": stream}
    headers = {"x-emulator-fault": fault, "x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    with httpx2.Client(base_url=turnkeep_emulator.base_url) as http, contextlib.suppress(httpx2.TransportError):
        http.post("/v1/messages", json=body, headers=headers).read()
    bill = turnkeep_emulator.bill()
    if fault.isdigit():
        assert bill["requests"] == 0
        assert bill["usd"]["total"] == "0"
    else:
        assert bill["requests"] == 1
        assert bill["input_tokens"] == clean.usage.input_tokens
        if stream and fault in ("drop", "sse_error"):  # cut after 3 events, before any text: 1 token
            assert bill["output_tokens"] == 1
        else:  # a JSON reply was generated whole, whatever became of its body
            assert bill["output_tokens"] == clean.usage.output_tokens


def test_a_slow_reply_also_advances_a_virtual_clock(turnkeep_emulator: EmulatorServer) -> None:
    before = turnkeep_emulator.now()
    turnkeep_emulator.fault({"kind": "slow", "seconds": 0.05})
    turnkeep_emulator.client().messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert turnkeep_emulator.now() == pytest.approx(before + 0.05)


def test_the_fault_header_applies_to_one_request(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client(max_retries=0)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=50, messages=HELLO, extra_headers={"x-emulator-fault": "500"})
    assert client.messages.create(model=MODEL, max_tokens=50, messages=HELLO).content


def test_faults_are_queued_per_api_key(turnkeep_emulator: EmulatorServer) -> None:
    turnkeep_emulator.fault("529", api_key="unlucky")
    assert (
        turnkeep_emulator.client(api_key="lucky", max_retries=0)
        .messages.create(model=MODEL, max_tokens=50, messages=HELLO)
        .content
    )
    with pytest.raises(anthropic.OverloadedError):
        turnkeep_emulator.client(api_key="unlucky", max_retries=0).messages.create(
            model=MODEL, max_tokens=50, messages=HELLO
        )


def test_queueing_a_bad_fault_is_a_400(turnkeep_emulator: EmulatorServer) -> None:
    with pytest.raises(httpx2.HTTPStatusError) as caught:
        turnkeep_emulator.fault("explode")
    assert caught.value.response.status_code == 400


def test_a_seeded_fault_rate_fails_some_requests_and_the_sdk_retries_them() -> None:
    with EmulatorServer(fault_rate=0.3, seed=11) as server:
        client = server.client(max_retries=8)
        replies = [client.messages.create(model=MODEL, max_tokens=20, messages=HELLO) for _ in range(30)]
        assert len(replies) == 30
        assert server.bill()["requests"] == 30


def test_create_app_rejects_an_unknown_responder() -> None:
    with pytest.raises(ValueError, match="unknown responder"):
        create_app(responder="poetry")


def test_a_stream_cut_part_way_bills_the_output_it_had_sent(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client(max_retries=0)
    long_question = [{"role": "user", "content": "Tell me about the attic. " * 40}]
    whole = client.messages.create(model=MODEL, max_tokens=500, messages=long_question, extra_headers=ECHO)
    outputs = []
    for after in (6, 12):
        turnkeep_emulator.reset()
        turnkeep_emulator.fault({"kind": "drop", "after": after})
        with (
            pytest.raises(httpx2.TransportError),
            client.messages.stream(model=MODEL, max_tokens=500, messages=long_question, extra_headers=ECHO) as stream,
        ):
            stream.until_done()
        outputs.append(turnkeep_emulator.bill()["output_tokens"])
    assert 1 < outputs[0] < outputs[1] < whole.usage.output_tokens


def test_a_client_that_stops_reading_is_billed_for_what_was_sent_to_it(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client(max_retries=0)
    question = [{"role": "user", "content": "Tell me about the attic. " * 40}]
    with client.messages.stream(model=MODEL, max_tokens=500, messages=question, extra_headers=ECHO) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    deadline = time.monotonic() + 60
    while turnkeep_emulator.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
    bill = turnkeep_emulator.bill()
    assert bill["requests"] == 1
    assert bill["output_tokens"] >= 1
