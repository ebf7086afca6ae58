"""Observing the SDK's HTTP attempts: the tag routes a call's attempts to its log and never reaches the wire;
anything untagged passes through untouched; compressed bodies are read; an unobservable client still works."""

from __future__ import annotations

import gzip
import json
from typing import Any

import anthropic
import httpx2
from anthropic.types import Message

from turnkeep.attempts import TAG_HEADER, Attempt, AttemptLog, ObservingTransport

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


def _sse(*events: tuple[str | None, dict[str, Any]]) -> bytes:
    """SSE text for `(event name or None, data)` pairs (None: a data line without its `event:` line)."""
    return b"".join(
        ((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n").encode() for name, data in events
    )


def _delta(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


BLOCK_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
START = {
    "type": "message_start",
    "message": {**REPLY, "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}},
}


def streamed(body: bytes) -> tuple[Attempt, Message]:
    """The attempt an observed stream answered with `body` made, and the message the SDK made of it."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        del request
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = client_over(handler)
    log = AttemptLog()
    with client.messages.stream(**log.tag(client, REQUEST)) as stream:
        final = stream.get_final_message()
    [attempt] = log.take()
    return attempt, final


def test_a_stream_of_many_events_in_one_chunk_is_read_whole_and_its_deltas_when_asked() -> None:
    words = [f"w{n} " for n in range(300)]
    body = _sse(
        ("message_start", START),
        ("content_block_start", BLOCK_START),
        *[("content_block_delta", _delta(word)) for word in words[:-1]],
        (None, _delta(words[-1])),  # no `event:` line: told by its type
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 300}},
        ),
        ("message_stop", {"type": "message_stop"}),
    )

    attempt, final = streamed(body)
    assert final.usage.output_tokens == 300
    assert attempt.streamed
    assert attempt.finished
    assert attempt.stop_reason == "end_turn"
    assert attempt.usage == {"input_tokens": 12, "output_tokens": 300}
    assert attempt.output_text == words


def test_the_deltas_of_a_stream_cut_mid_event_are_those_that_arrived_whole() -> None:
    body = _sse(
        ("message_start", START),
        ("content_block_start", BLOCK_START),
        ("content_block_delta", _delta("Hello")),
        ("content_block_delta", _delta(" there")),
    )
    cut = body[: -len(b'there"}}\n\n')]  # the last delta's data is cut mid-way

    attempt, _ = streamed(cut)  # the SDK ends the stream where the bytes end
    assert not attempt.finished
    assert attempt.output_text == ["Hello"]
