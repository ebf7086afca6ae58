"""Streaming: text as it arrives, the reply committed at the end, and a broken stream never sent back."""

from __future__ import annotations

import anthropic
import httpx2
import pytest
from fake_api import FakeAPI

from turnkeep import Conversation
from turnkeep.errors import TransportError


def test_stream_yields_text_and_commits_the_reply(api: FakeAPI) -> None:
    api.reply("The capital of France is Paris.")
    conversation = Conversation("claude-sonnet-4-6", client=api.client())
    with conversation.stream("Capital of France?") as stream:
        chunks = list(stream)
    assert len(chunks) > 1
    assert stream.reply is not None
    assert "".join(chunks) == stream.reply.text == "The capital of France is Paris."
    assert api.requests[0]["stream"] is True
    assert [n.status for n in conversation.transcript] == ["ok", "ok"]
    assert len(conversation.ledger) == 1


def test_a_stream_cut_mid_way_keeps_a_partial_reply_that_is_never_sent_back(api: FakeAPI) -> None:
    api.reply("one two three four five", cut_after_events=5)
    api.reply("one two three four five")
    conversation = Conversation("claude-sonnet-4-6", client=api.client())
    received = []
    with pytest.raises(TransportError) as caught, conversation.stream("Count") as stream:
        received.extend(stream)
    assert isinstance(caught.value.__cause__, httpx2.ReadError)  # the dropped connection, as turnkeep's error
    assert received
    assert conversation.pending
    user, partial = conversation.transcript
    assert (user.status, partial.status) == ("pending", "partial")
    assert partial.message["content"][0]["text"].startswith("one")
    reply = conversation.retry()
    assert api.requests[1]["messages"] == [{"role": "user", "content": "Count"}]
    assert reply.text == "one two three four five"
    assert [n.status for n in conversation.transcript] == ["ok", "ok"]


def test_leaving_a_stream_early_keeps_the_partial_reply(api: FakeAPI) -> None:
    api.reply("alpha beta gamma delta")
    conversation = Conversation("claude-sonnet-4-6", client=api.client())
    with conversation.stream("Words") as stream:
        for chunk in stream:
            assert chunk == "alpha "
            break
    assert stream.reply is not None
    assert stream.reply.partial
    assert conversation.pending
    assert conversation.transcript[-1].status == "partial"


def test_streamed_native_prefill_starts_with_the_prefill(api: FakeAPI) -> None:
    api.reply('"a": 1}')
    conversation = Conversation("claude-haiku-4-5", client=api.client())
    with conversation.stream("JSON", prefill="{") as stream:
        text = "".join(stream)
    assert stream.reply is not None
    assert text == stream.reply.text == '{"a": 1}'


@pytest.mark.parametrize("model_text", ['{"a": 1}', '"a": 1}'])
def test_streamed_instructed_prefill_matches_the_stored_reply(api: FakeAPI, model_text: str) -> None:
    api.reply(model_text)
    conversation = Conversation("claude-sonnet-4-6", client=api.client())
    with conversation.stream("JSON", prefill="{", prefill_fallback="instruct") as stream:
        text = "".join(stream)
    assert stream.reply is not None
    assert text == stream.reply.text == '{"a": 1}'


def test_streamed_continuations_read_as_one_reply(api: FakeAPI) -> None:
    api.reply("Once upon a", stop_reason="max_tokens").reply(" time.")
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), auto_continue=1)
    with conversation.stream("Story") as stream:
        text = "".join(stream)
    assert stream.reply is not None
    assert text == stream.reply.text == "Once upon a time."
    assert [e.purpose for e in conversation.ledger] == ["reply", "continue"]


def test_streamed_requests_keep_their_request_id_in_the_ledger(api: FakeAPI) -> None:
    api.reply("hello there")
    conversation = Conversation("claude-sonnet-4-6", client=api.client())
    with conversation.stream("Hi") as stream:
        list(stream)
    assert conversation.ledger[0].request_id == "req_0001"


def test_a_pending_turn_can_be_retried_as_a_stream(api: FakeAPI) -> None:
    api.fail(500, "api_error").reply("second try")
    conversation = Conversation("claude-sonnet-4-6", client=api.client())
    with pytest.raises(anthropic.InternalServerError):
        conversation.send("Hi")
    with conversation.stream_retry() as stream:
        text = "".join(stream)
    assert text == "second try"
    assert not conversation.pending
