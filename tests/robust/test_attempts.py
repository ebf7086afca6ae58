"""Observing the SDK's HTTP attempts: the tag routes a call's attempts to its log and never reaches the wire;
anything untagged passes through untouched; compressed bodies are read; an unobservable client still works."""

from __future__ import annotations

import gzip
import json
from typing import Any

import anthropic
import httpx2

from turnkeep.attempts import TAG_HEADER, AttemptLog, ObservingTransport

MODEL = "claude-sonnet-4-6"
REPLY: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 3, "cache_read_input_tokens": 0},
}
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}


def client_over(handler: Any, **options: Any) -> anthropic.Anthropic:
    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="k", base_url="http://api.test", http_client=http, **options)


def test_the_tag_never_reaches_the_wire_and_untagged_requests_pass_untouched() -> None:
    headers: list[httpx2.Headers] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers.append(request.headers)
        return httpx2.Response(200, json=REPLY, headers={"request-id": "req_1"})

    client = client_over(handler)
    log = AttemptLog()
    client.messages.create(**log.tag(client, REQUEST))
    assert TAG_HEADER not in headers[0]
    [attempt] = log.take()
    assert (attempt.status, attempt.request_id, attempt.finished) == (200, "req_1", True)
    assert attempt.usage == REPLY["usage"]
    client.messages.create(**REQUEST)  # not tagged: not observed, not changed
    assert log.take() == []
    assert isinstance(client._client._transport, ObservingTransport)
    log.tag(client, REQUEST)
    assert not isinstance(client._client._transport.inner, ObservingTransport)  # wrapped once


def test_a_compressed_body_is_read() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        del request
        body = gzip.compress(json.dumps(REPLY).encode())
        return httpx2.Response(
            200, content=body, headers={"content-encoding": "gzip", "content-type": "application/json"}
        )

    client = client_over(handler)
    log = AttemptLog()
    assert client.messages.create(**log.tag(client, REQUEST)).usage.output_tokens == 3
    [attempt] = log.take()
    assert attempt.finished
    assert attempt.usage == REPLY["usage"]


def test_each_retry_of_the_sdk_is_an_attempt() -> None:
    answers = iter([httpx2.Response(529, json={"type": "error", "error": {"type": "overloaded_error"}})])

    def handler(request: httpx2.Request) -> httpx2.Response:
        del request
        return next(answers, httpx2.Response(200, json=REPLY))

    client = client_over(handler, max_retries=1)
    log = AttemptLog()
    client.with_options(max_retries=1).messages.create(**log.tag(client, REQUEST))
    overloaded, answered = log.take()
    assert overloaded.answered_with_error
    assert overloaded.error_type == "overloaded_error"
    assert answered.finished


def test_a_client_that_cannot_be_observed_is_used_as_it_is() -> None:
    class Elsewhere:
        pass

    request = AttemptLog().tag(Elsewhere(), REQUEST)
    assert request == REQUEST
