"""A send that is refused changes nothing, in memory or in the store; a broken connection leaves a pending turn
that `retry()` completes; adding history costs what is added; a writer that lost a race can continue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import pytest
from fake_api import FakeAPI

from turnkeep import Budget, Conversation
from turnkeep.core import rules
from turnkeep.core.policies import FullHistory, Policy, Window
from turnkeep.errors import (
    BudgetExceeded,
    ConflictError,
    ContextWindowExceeded,
    PrefillNotSupported,
    TransportError,
    TurnkeepError,
    UsageError,
)
from turnkeep.store import MemoryStore, SQLiteStore, Store


def snapshot(store: Store, conversation_id: str) -> dict[str, Any]:
    """Everything the store holds about a conversation."""
    branches = store.branches(conversation_id)
    return {
        "settings": store.settings(conversation_id),
        "branches": branches,
        "paths": {name: store.path(conversation_id, head) for name, head in branches.items()},
        "ledger": store.ledger(conversation_id),
        "policy_states": store.policy_states(conversation_id),
    }


def memory_view(chat: Conversation) -> dict[str, Any]:
    return {"model": chat.model, "transcript": chat.transcript, "pending": chat.pending, "cost": chat.cost}


def test_a_budget_degrade_to_a_model_that_refuses_the_prefill_changes_nothing(api: FakeAPI) -> None:
    store = MemoryStore()
    budget = Budget(max_cost_usd=Decimal("0.003"), degrade_to="claude-haiku-5-5")
    chat = Conversation("claude-haiku-4-5", client=api.client(), store=store, budget=budget)
    api.reply("Noted.")
    chat.send("Remember the word cobalt.")
    before, in_memory = snapshot(store, chat.id), memory_view(chat)

    with pytest.raises(PrefillNotSupported):
        chat.send("Write a long story about cobalt. " * 400, prefill="Once upon a time")

    assert chat.model == "claude-haiku-4-5"
    assert memory_view(chat) == in_memory
    assert snapshot(store, chat.id) == before
    assert len(api.requests) == 1
    assert Conversation.open(chat.id, store=store, client=api.client()).model == "claude-haiku-4-5"


def test_a_budget_degrade_that_is_accepted_stores_the_cheaper_model(api: FakeAPI) -> None:
    store = MemoryStore()
    budget = Budget(max_cost_usd=Decimal("0.003"), degrade_to="claude-haiku-5-5")
    chat = Conversation("claude-haiku-4-5", client=api.client(), store=store, budget=budget)
    api.reply("Noted.").reply("A story.")
    chat.send("Remember the word cobalt.")
    chat.send("Write a long story about cobalt. " * 400)
    assert api.requests[-1]["model"] == "claude-haiku-5-5"
    assert store.settings(chat.id)["model"] == "claude-haiku-5-5"


def test_a_budget_exceeded_changes_nothing(api: FakeAPI) -> None:
    store = MemoryStore()
    chat = Conversation(
        "claude-sonnet-4-6", client=api.client(), store=store, budget=Budget(max_cost_usd=Decimal("0.001"))
    )
    before, in_memory = snapshot(store, chat.id), memory_view(chat)
    with pytest.raises(BudgetExceeded):
        chat.send("Explain the history of navigation in depth. " * 300)
    assert snapshot(store, chat.id) == before
    assert memory_view(chat) == in_memory
    assert api.requests == []


def _pending(chat: Conversation, api: FakeAPI) -> None:
    api.fail(500, "api_error")
    with pytest.raises(anthropic.APIStatusError):
        chat.send("This one fails.")


def _waiting_for_tools(chat: Conversation, api: FakeAPI) -> None:
    api.tool_call(("lookup", {"q": "x"}))
    chat.send("Look it up.")


USAGE_ERRORS = {
    "an unknown option": (None, lambda chat: chat.send("hi", bogus_field=1)),
    "a reserved option": (None, lambda chat: chat.send("hi", model="claude-opus-4-1")),
    "empty content": (None, lambda chat: chat.send("")),
    "content of the wrong type": (None, lambda chat: chat.send(42)),
    "a prefill on a model that refuses it": (None, lambda chat: chat.send("hi", prefill="{")),
    "a send while a turn is pending": (_pending, lambda chat: chat.send("again")),
    "a send while tool calls wait for results": (_waiting_for_tools, lambda chat: chat.send("next")),
    "tool results for an unknown call": (_waiting_for_tools, lambda chat: chat.send_tool_results({"nope": 1})),
    "a retry with nothing pending": (None, lambda chat: chat.retry()),
    "a rollback with nothing pending": (None, lambda chat: chat.rollback()),
    "an invalid max_tokens override": (None, lambda chat: chat.send("hi", max_tokens=0.5)),
    "a removed sampling parameter": (None, lambda chat: chat.send("hi", temperature=0.2)),
    "a system override that is not text": (None, lambda chat: chat.send("hi", system=42)),
    "tool results missing a call": (_waiting_for_tools, lambda chat: chat.send_tool_results({})),
    "tool results with nothing waiting": (None, lambda chat: chat.send_tool_results({"toolu_1": "x"})),
    "a retry while tool calls wait for results": (_waiting_for_tools, lambda chat: chat.retry()),
    "a stream while a turn is pending": (_pending, lambda chat: chat.stream("again")),
    "a history value nested too deep": (None, lambda chat: chat.send([{"type": "text", "text": "x"}] * 2 + [_deep()])),
}


def _deep() -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(200):
        value = {"nested": value}
    return {"type": "text", "text": "deep", "citations": [value]}


HISTORY_EDIT_ERRORS = {
    "an undo with nothing to undo": (None, lambda chat: chat.undo()),
    "a fork onto a branch that exists": (None, lambda chat: chat.fork("main")),
    "an empty system prompt": (None, lambda chat: chat.set_system("   ")),
    "an added message while a turn is pending": (_pending, lambda chat: chat.add_user("more")),
    "an added assistant message that is empty": (None, lambda chat: chat.add_assistant("")),
    "an instruction on a model without system messages": (None, lambda chat: chat.instruct("be brief")),
    "a switch to a retired model": (None, lambda chat: chat.set_model("claude-sonnet-4-5")),
}


@pytest.mark.parametrize("case", sorted(HISTORY_EDIT_ERRORS))
def test_every_usage_error_of_a_history_edit_changes_nothing(case: str, api: FakeAPI, tmp_path: Any) -> None:
    setup, action = HISTORY_EDIT_ERRORS[case]
    with SQLiteStore(tmp_path / "chat.db") as store:
        chat = Conversation("claude-sonnet-4-6", client=api.client(), store=store, tools=[_TOOL])
        if setup is not None:
            setup(chat, api)
        before, in_memory = snapshot(store, chat.id), memory_view(chat)
        with pytest.raises(UsageError):
            action(chat)
        assert snapshot(store, chat.id) == before
        assert memory_view(chat) == in_memory


@pytest.mark.parametrize("case", sorted(USAGE_ERRORS))
def test_every_usage_error_of_a_send_changes_nothing(case: str, api: FakeAPI, tmp_path: Any) -> None:
    setup, action = USAGE_ERRORS[case]
    with SQLiteStore(tmp_path / "chat.db") as store:
        model = "claude-haiku-5-5" if "prefill" in case else "claude-sonnet-4-6"
        chat = Conversation(model, client=api.client(), store=store, tools=[_TOOL])
        if setup is not None:
            setup(chat, api)
        before, in_memory = snapshot(store, chat.id), memory_view(chat)
        sent = len(api.requests)
        with pytest.raises(UsageError):
            action(chat)
        assert snapshot(store, chat.id) == before
        assert memory_view(chat) == in_memory
        assert len(api.requests) == sent


_TOOL = {"name": "lookup", "description": "Look something up.", "input_schema": {"type": "object"}}


def test_an_unknown_request_option_is_named_and_nothing_is_stored(api: FakeAPI) -> None:
    store = MemoryStore()
    chat = Conversation("claude-sonnet-4-6", client=api.client(), store=store)
    with pytest.raises(UsageError, match="bogus_field=1"):
        chat.send("hi", bogus_field=1)
    assert chat.transcript == []
    assert not chat.pending


# -- raw transport failures -----------------------------------------------------------------------------------


class _Peer:
    """A server whose first answer is broken (`broken`), then answers normally."""

    def __init__(self, broken: str) -> None:
        self.broken = broken
        self.calls = 0
        self.api = FakeAPI()

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.calls += 1
        if self.calls == 1:
            if self.broken == "truncated-json":
                return httpx2.Response(
                    200, content=b'{"id": "msg_1", "type": "mess', headers={"content-type": "application/json"}
                )
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Closed(json.loads(request.content))
            )
        self.api.reply("Here it is.")
        return self.api._handle(request)

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key="test-key", http_client=httpx2.Client(transport=httpx2.MockTransport(self.handle)), max_retries=0
        )


class _Closed(httpx2.SyncByteStream):
    """A stream whose peer closes the connection after its first event."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        start = {
            "id": "msg_cut",
            "type": "message",
            "role": "assistant",
            "model": self.body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        }
        yield f"event: message_start\ndata: {json.dumps({'type': 'message_start', 'message': start})}\n\n".encode()
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")


def test_a_truncated_json_body_is_a_turnkeep_error_and_the_turn_can_be_retried() -> None:
    peer = _Peer("truncated-json")
    chat = Conversation("claude-sonnet-4-6", client=peer.client())
    with pytest.raises(TransportError) as caught:
        chat.send("Hello?")
    assert isinstance(caught.value, TurnkeepError)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)
    assert chat.pending
    assert chat.retry().text == "Here it is."
    assert not chat.pending


def test_a_stream_whose_peer_closes_the_connection_is_a_turnkeep_error_and_can_be_retried() -> None:
    peer = _Peer("closed-stream")
    chat = Conversation("claude-sonnet-4-6", client=peer.client())
    with pytest.raises(TransportError) as caught, chat.stream("Hello?") as stream:
        for _ in stream:
            pass
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    assert chat.pending
    assert chat.retry().text == "Here it is."


# -- adding history, racing writers ---------------------------------------------------------------------------


def test_adding_history_validates_only_what_is_added(monkeypatch: pytest.MonkeyPatch) -> None:
    checked = 0
    check_message = rules._Validator._check_message

    def counting(self: Any, messages: Any, index: int) -> None:
        nonlocal checked
        checked += 1
        check_message(self, messages, index)

    monkeypatch.setattr(rules._Validator, "_check_message", counting)
    chat = Conversation("claude-sonnet-4-6", client=FakeAPI().client())
    adds = 2_000
    for turn in range(adds // 2):
        chat.add_user(f"question {turn}")
        chat.add_assistant(f"answer {turn}")
    assert len(chat.transcript) == adds
    assert checked <= 3 * adds  # each addition checks itself and its neighbour, not the whole history


def test_a_writer_that_lost_a_race_gets_a_conflict_and_can_continue(api: FakeAPI, tmp_path: Any) -> None:
    with SQLiteStore(tmp_path / "chat.db") as store:
        first = Conversation("claude-sonnet-4-6", client=api.client(), store=store)
        second = Conversation.open(first.id, store=store, client=api.client())
        api.reply("One.").reply("Two.").reply("Three.")
        first.send("first writer")
        with pytest.raises(ConflictError):
            second.send("second writer, stale")
        assert not second.pending
        assert second.send("second writer again").text == "Two."
        with pytest.raises(ConflictError):
            first.send("first writer, now stale")
        assert first.send("first writer again").text == "Three."
        texts = [node.message["content"] for node in Conversation.open(first.id, store=store).transcript]
        assert texts[0] == "first writer"
        assert texts[2] == "second writer again"
        assert texts[4] == "first writer again"


@pytest.mark.parametrize("policy", [FullHistory(), Window(turns=4)], ids=["full-history", "window"])
def test_a_message_far_larger_than_the_context_window_is_refused_before_any_upload(
    policy: Policy, api: FakeAPI
) -> None:
    store = MemoryStore()
    chat = Conversation("claude-sonnet-4-6", client=api.client(), store=store, policy=policy)
    api.reply("Hello.")
    chat.send("Hi")
    before, in_memory = snapshot(store, chat.id), memory_view(chat)
    huge = "word " * 6_000_000  # 30 MB: millions of tokens, many times any model's window
    with pytest.raises(ContextWindowExceeded, match="nothing was sent"):
        chat.send(huge)
    assert len(api.requests) == 1
    assert snapshot(store, chat.id) == before
    assert memory_view(chat) == in_memory


def test_a_request_over_the_window_is_shrunk_by_the_policy_before_it_is_sent(api: FakeAPI) -> None:
    chat = Conversation("claude-haiku-4-5", client=api.client(), policy=Window(turns=50))
    window = chat.model_info.context_window
    page = "word " * (window // 3)  # each turn about a third of the window in tokens, or more
    for _ in range(4):
        api.reply("Noted.")
        chat.send(page)
    sent = api.requests[-1]["messages"]
    assert len(sent) < 7  # older turns were left out so the request fits, not uploaded to be refused
    assert sent[-1]["role"] == "user"
