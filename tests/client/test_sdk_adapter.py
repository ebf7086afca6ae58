"""What turnkeep uses of the `anthropic` SDK beyond calling it (`turnkeep.sdk`): each fails here first when the
SDK changes it."""

from __future__ import annotations

import json

import httpx2
from fake_api import FakeAPI

from turnkeep import sdk


def test_the_request_parameters_are_read_from_the_sdk() -> None:
    parameters = sdk.request_parameters()
    assert {"model", "messages", "max_tokens", "system", "tools", "thinking", "stop_sequences"} <= parameters
    assert {"betas", "extra_headers", "extra_body", "timeout"} <= parameters
    assert "bogus_field" not in parameters


def test_a_non_streamed_message_carries_its_request_id(api: FakeAPI) -> None:
    api.reply("Hi.")
    message = api.client().messages.create(
        model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    )
    assert sdk.request_id(message) == "req_0001"


def test_a_stream_shows_what_it_received_before_it_stopped(api: FakeAPI) -> None:
    api.reply("one two three")
    request = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}
    with api.client().messages.stream(**request) as stream:  # type: ignore[arg-type]
        assert sdk.stream_snapshot(stream) is None
        events = iter(stream)
        next(events)  # message_start
        next(events)  # the text block starts
        next(events)  # "one "
        snapshot = sdk.stream_snapshot(stream)
        assert snapshot is not None
        assert snapshot.content[0].type == "text"
        assert snapshot.content[0].text == "one "


def test_raw_transport_failures_are_recognised() -> None:
    assert sdk.is_transport_failure(httpx2.RemoteProtocolError("peer closed connection"))
    assert sdk.is_transport_failure(json.JSONDecodeError("Unterminated string", '{"a', 2))
    assert not sdk.is_transport_failure(ValueError("something else"))


def test_betas_choose_the_beta_resource(api: FakeAPI) -> None:
    client = api.client()
    request, betas = sdk.split_betas({"model": "m", "betas": ["x-2026"]})
    assert request == {"model": "m"}
    assert sdk.messages_resource(client, betas) is client.beta.messages
    assert sdk.messages_resource(client, None) is client.messages
