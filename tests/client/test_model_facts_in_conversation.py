"""Model facts as a conversation meets them, through the real SDK against the emulator: switching models with
thinking in the history, a server that ignores `thread`, a retired model."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from turnkeep import Conversation
from turnkeep.core.messages import as_blocks
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import UsageError

ADAPTIVE = {"type": "adaptive"}


def _spied(client: anthropic.Anthropic) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    for resource in (client.messages, client.beta.messages):
        original = resource.create

        def spy(__original: Any = original, **request: Any) -> Any:
            sent.append(request)
            return __original(**request)

        resource.create = spy  # type: ignore[method-assign]
    return sent


def _thinking_blocks(request: dict[str, Any]) -> int:
    return sum(
        1
        for m in request["messages"]
        for b in as_blocks(m["content"])
        if b["type"] in ("thinking", "redacted_thinking")
    )


def test_switching_from_sonnet_5_5_drops_the_thinking_only_sonnet_5_5_can_read(
    turnkeep_emulator: EmulatorServer,
) -> None:
    client = turnkeep_emulator.client()
    sent = _spied(client)
    chat = Conversation("claude-sonnet-5-5", client=client)
    chat.send("My name is Ada.", thinking=ADAPTIVE)
    chat.set_model("claude-opus-5-5")
    assert chat.send("What is my name?", thinking=ADAPTIVE).text == "Your name is Ada."
    assert _thinking_blocks(sent[-1]) == 0  # Opus 5.5 cannot read Sonnet 5.5's thinking: not sent
    chat.set_model("claude-sonnet-5-5")
    chat.send("And again?", thinking=ADAPTIVE)
    assert _thinking_blocks(sent[-1]) == 1  # Sonnet 5.5 reads its own block again, not Opus 5.5's


def test_fable_5_2_thinking_is_kept_for_mythos_5_2(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    sent = _spied(client)
    chat = Conversation("claude-fable-5-2", client=client)
    chat.send("My name is Ada.", thinking=ADAPTIVE)
    chat.set_model("claude-mythos-5-2")
    chat.send("What is my name?", thinking=ADAPTIVE)
    assert _thinking_blocks(sent[-1]) == 1


def test_a_retired_model_is_refused_before_anything_is_sent(turnkeep_emulator: EmulatorServer) -> None:
    client = turnkeep_emulator.client()
    sent = _spied(client)
    with pytest.raises(UsageError, match="retired on 2026-11-30; use 'claude-sonnet-5-5' instead"):
        Conversation("claude-sonnet-4-5", client=client)
    chat = Conversation("claude-sonnet-5", client=client)
    with pytest.raises(UsageError, match="retired"):
        chat.set_model("claude-sonnet-4-5-20250929")
    assert sent == []


@pytest.fixture
def thread_ignoring_client(turnkeep_emulator: EmulatorServer) -> Iterator[anthropic.Anthropic]:
    """A client whose server ignores `thread`: each request is answered as if it held the whole conversation."""
    upstream = httpx2.Client(base_url=turnkeep_emulator.base_url, timeout=30.0)

    def forward(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        body.pop("thread", None)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        answer = upstream.post(request.url.path, json=body, headers=headers)
        return httpx2.Response(answer.status_code, headers={"content-type": "application/json"}, content=answer.content)

    with (
        httpx2.Client(transport=httpx2.MockTransport(forward)) as http_client,
        anthropic.Anthropic(
            api_key="test-key", base_url="http://ignores-threads.test", http_client=http_client
        ) as client,
    ):
        yield client
    upstream.close()


def test_a_server_that_ignores_thread_gets_full_requests_after_one_warning(
    thread_ignoring_client: anthropic.Anthropic,
) -> None:
    client = thread_ignoring_client
    sent = _spied(client)
    chat = Conversation("claude-opus-5", client=client, threads=True, system="Geography.")
    chat.send("The capital of France is Paris. " * 20 + "My name is Ada.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chat.send("What is the capital of France?")  # a continue: the server sees only this message
    assert [str(w.message) for w in caught if "without its history" in str(w.message)] != []
    assert sent[1]["thread"]["type"] == "continue"
    assert chat.send("What is my name?").text == "Your name is Ada."  # a full request again
    assert "thread" not in sent[2]


def test_a_stream_shows_thinking_updates_when_asked_for_them(turnkeep_emulator: EmulatorServer) -> None:
    chat = Conversation("claude-sonnet-5-5", client=turnkeep_emulator.client())
    updates = {"type": "adaptive", "display": "updates"}
    with chat.stream("My name is Ada.", thinking=updates, betas=["thinking-display-updates-2026-08-18"]) as stream:
        shown = "".join(stream)
    assert stream.reply is not None
    thinking = next(b["thinking"] for b in stream.reply.content if b["type"] == "thinking")
    assert shown == thinking + stream.reply.text  # the update first, then the reply's text
    with chat.stream("What is my name?", thinking=ADAPTIVE) as plain:
        assert "".join(plain) == "Your name is Ada."  # summarized thinking is not shown
