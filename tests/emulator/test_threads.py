"""Message threads: the server-held conversation, its errors and its expiry, alone and under the real SDK helper."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import httpx2
import pytest

from turnkeep.emulator.clock import Clock
from turnkeep.emulator.errors import ApiError
from turnkeep.emulator.threads import ThreadStore, ThreadTurn, ThreadUnsupportedRequest

MODEL = "claude-opus-5-5"
SYSTEM = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
TOOLS = [{"name": "lookup", "description": "Look a word up.", "input_schema": {"type": "object"}}]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def reply(message_id: str, text: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def create_body(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": list(messages),
        "thread": {"type": "create"},
        **fields,
    }


def continue_body(previous: str, *messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "messages": list(messages),
        "thread": {"type": "continue", "previous_message_id": previous},
        **fields,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock("virtual")


@pytest.fixture
def store(clock: Clock) -> ThreadStore:
    return ThreadStore(clock)


def run(store: ThreadStore, body: dict[str, Any], reply_id: str, text: str = "ok", scope: str = "key") -> ThreadTurn:
    turn = store.begin(scope, body)
    store.complete(scope, turn, reply(reply_id, text))
    return turn


def error_of(excinfo: pytest.ExceptionInfo[ApiError]) -> tuple[int, str | None]:
    return excinfo.value.status, excinfo.value.error_code


# --------------------------------------------------------------------------------------------------- the store


def test_create_then_two_continues_rebuild_the_unthreaded_conversation(store: ThreadStore) -> None:
    first = run(store, create_body(user("My name is Ada.")), "msg_1", "Hello Ada.")
    second = run(store, continue_body("msg_1", user("What is 2+2?")), "msg_2", "4.")
    third = store.begin("key", continue_body("msg_2", user("And my name?")))

    assert first.body == {key: value for key, value in create_body(user("My name is Ada.")).items() if key != "thread"}
    assert second.thread_id == first.thread_id == third.thread_id
    assert third.previous_message_id == "msg_2"
    assert third.body == {
        "model": MODEL,
        "max_tokens": 100,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": [
            user("My name is Ada."),
            {"role": "assistant", "content": [{"type": "text", "text": "Hello Ada."}]},
            user("What is 2+2?"),
            {"role": "assistant", "content": [{"type": "text", "text": "4."}]},
            user("And my name?"),
        ],
    }


def test_stored_turns_lose_their_breakpoints_and_the_new_turn_keeps_its_own(store: ThreadStore) -> None:
    marked = {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
    run(store, create_body(marked), "msg_1")
    turn = store.begin("key", continue_body("msg_1", marked))

    assert turn.body["messages"][0] == {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert turn.body["messages"][2] == marked
    assert turn.body["system"] == SYSTEM  # the thread's system keeps the breakpoint it was created with


def test_a_reply_can_be_continued_only_once(store: ThreadStore) -> None:
    run(store, create_body(user("a")), "msg_1")
    run(store, continue_body("msg_1", user("b")), "msg_2")

    with pytest.raises(ApiError) as excinfo:
        store.begin("key", continue_body("msg_1", user("b again")))
    assert error_of(excinfo) == (400, "thread_already_continued")


def test_a_second_continue_while_the_first_is_in_flight_is_refused(store: ThreadStore) -> None:
    run(store, create_body(user("a")), "msg_1")
    store.begin("key", continue_body("msg_1", user("b")))

    with pytest.raises(ApiError) as excinfo:
        store.begin("key", continue_body("msg_1", user("b")))
    assert error_of(excinfo) == (400, "thread_continue_in_flight")


def test_an_aborted_continue_releases_the_reply(store: ThreadStore) -> None:
    run(store, create_body(user("a")), "msg_1")
    failed = store.begin("key", continue_body("msg_1", user("b")))
    store.abort("key", failed)

    retried = store.begin("key", continue_body("msg_1", user("b")))
    assert [m["content"] for m in retried.body["messages"]][-1] == "b"


def test_a_thread_expires_five_minutes_after_its_last_request(store: ThreadStore, clock: Clock) -> None:
    run(store, create_body(user("a")), "msg_1")
    clock.advance(299)
    run(store, continue_body("msg_1", user("b")), "msg_2")  # refreshes the thread
    clock.advance(299)
    run(store, continue_body("msg_2", user("c")), "msg_3")
    clock.advance(301)

    with pytest.raises(ApiError) as excinfo:
        store.begin("key", continue_body("msg_3", user("d")))
    assert error_of(excinfo) == (404, "thread_not_found")
    assert excinfo.value.error_type == "not_found_error"


def test_expired_threads_are_freed(store: ThreadStore, clock: Clock) -> None:
    for n in range(50):
        run(store, create_body(user(f"conversation {n}")), f"msg_{n}")
    assert store.entry_count() == 50

    clock.advance(301)
    run(store, create_body(user("fresh")), "msg_fresh")
    assert store.entry_count() == 1


def test_a_thread_with_a_request_in_flight_does_not_expire(store: ThreadStore, clock: Clock) -> None:
    run(store, create_body(user("a")), "msg_1")
    slow = store.begin("key", continue_body("msg_1", user("b")))
    clock.advance(600)
    assert store.entry_count() == 1
    store.complete("key", slow, reply("msg_2", "late"))

    assert store.begin("key", continue_body("msg_2", user("c"))).thread_id == slow.thread_id


def test_unknown_ids_and_other_keys_find_no_thread(store: ThreadStore) -> None:
    run(store, create_body(user("a")), "msg_1", scope="alice")
    for scope, previous in (("alice", "msg_unknown"), ("bob", "msg_1")):
        with pytest.raises(ApiError) as excinfo:
            store.begin(scope, continue_body(previous, user("b")))
        assert error_of(excinfo) == (404, "thread_not_found")


@pytest.mark.parametrize("field", ["system", "tools"])
def test_system_and_tools_cannot_be_sent_on_a_continue(store: ThreadStore, field: str) -> None:
    run(store, create_body(user("a")), "msg_1")
    value = SYSTEM if field == "system" else TOOLS

    with pytest.raises(ApiError) as excinfo:
        store.begin("key", continue_body("msg_1", user("b"), **{field: value}))
    assert error_of(excinfo) == (400, None)
    assert f"`{field}`" in excinfo.value.message
    # Nothing was marked in flight by the refused request.
    assert store.begin("key", continue_body("msg_1", user("b"))).previous_message_id == "msg_1"


@pytest.mark.parametrize(
    ("field", "value"),
    [("model", "claude-sonnet-5-5"), ("speed", "fast"), ("thinking", {"type": "adaptive"})],
)
def test_a_continue_that_changes_a_fixed_field_is_a_fingerprint_mismatch(
    store: ThreadStore, field: str, value: Any
) -> None:
    run(store, create_body(user("a")), "msg_1")

    with pytest.raises(ApiError) as excinfo:
        store.begin("key", continue_body("msg_1", user("b"), **{field: value}))
    assert error_of(excinfo) == (400, "thread_fingerprint_mismatch")
    assert f"`{field}`" in excinfo.value.message


def test_per_turn_fields_may_change_on_a_continue(store: ThreadStore) -> None:
    run(store, create_body(user("a"), speed="standard"), "msg_1")
    turn = store.begin(
        "key", continue_body("msg_1", user("b"), max_tokens=7, tool_choice={"type": "none"}, stop_sequences=["X"])
    )
    assert (turn.body["max_tokens"], turn.body["stop_sequences"]) == (7, ["X"])


@pytest.mark.parametrize(
    ("fields", "unsupported"),
    [
        ({"context_management": {"edits": []}}, ["context_management"]),
        ({"fallbacks": [{"model": "claude-sonnet-5-5"}]}, ["fallbacks"]),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, ["thinking"]),
        ({"compaction": {"type": "summarize"}}, None),
    ],
)
def test_unsupported_request_fields_name_themselves(
    store: ThreadStore, fields: dict[str, Any], unsupported: list[str] | None
) -> None:
    with pytest.raises(ThreadUnsupportedRequest) as excinfo:
        store.begin("key", create_body(user("a"), **fields))
    body = excinfo.value.body("req_1")
    assert excinfo.value.status == 400
    assert body["error"]["details"]["error_code"] == "thread_unsupported_request"
    assert body["error"]["details"].get("unsupported") == unsupported


@pytest.mark.parametrize(
    "thread",
    [{"type": "resume"}, {"type": "continue"}, {"type": "continue", "previous_message_id": ""}, "create"],
)
def test_a_malformed_thread_is_a_bad_request(store: ThreadStore, thread: Any) -> None:
    with pytest.raises(ApiError) as excinfo:
        store.begin("key", {**create_body(user("a")), "thread": thread})
    assert error_of(excinfo) == (400, None)


def test_a_request_without_thread_passes_through_and_is_not_stored(store: ThreadStore) -> None:
    body = {key: value for key, value in create_body(user("a")).items() if key != "thread"}
    turn = store.begin("key", body)
    store.complete("key", turn, reply("msg_1", "ok"))

    assert turn == ThreadTurn(body=body, thread_id=None, previous_message_id=None)
    assert store.response_fields(turn) == {}
    assert store.entry_count() == 0


def test_an_empty_reply_adds_no_assistant_message(store: ThreadStore) -> None:
    turn = store.begin("key", create_body(user("warm the cache")))
    store.complete("key", turn, {**reply("msg_1", ""), "content": []})

    assert store.begin("key", continue_body("msg_1", user("now answer"))).body["messages"] == [
        user("warm the cache"),
        user("now answer"),
    ]


def test_a_paused_turn_is_resumed_by_a_continue_without_messages(store: ThreadStore) -> None:
    turn = store.begin("key", create_body(user("Search the web.")))
    store.complete("key", turn, {**reply("msg_1", "Searching"), "stop_reason": "pause_turn"})

    resumed = store.begin("key", continue_body("msg_1"))
    assert resumed.body["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "Searching"}]}


# --------------------------------------------------------------------------------------------------- the SDK


class ThreadServer:
    """A minimal Messages endpoint around a `ThreadStore`, for the SDK's thread helper to talk to."""

    def __init__(self, clock: Clock) -> None:
        self.store = ThreadStore(clock)
        self.seen: list[dict[str, Any]] = []  # (the request as sent, the body the store rebuilt)
        self._ids = itertools.count(1)

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        sent = json.loads(request.content)
        scope = request.headers.get("authorization") or request.headers.get("x-api-key") or ""
        try:
            turn = self.store.begin(scope, sent)
        except ApiError as error:
            return httpx2.Response(error.status, json=error.body("req_test"))
        self.seen.append({"sent": sent, "rebuilt": turn.body})
        texts = [
            m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in turn.body["messages"]
        ]
        answer = reply(f"msg_{next(self._ids)}", f"I have seen: {' | '.join(texts)}")
        self.store.complete(scope, turn, answer)
        return httpx2.Response(200, json=answer)


def test_the_sdk_thread_helper_creates_continues_and_replays_after_expiry(clock: Clock) -> None:
    server = ThreadServer(clock)
    client = anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://127.0.0.1:9",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server.handle)),
    )
    thread = client.beta.messages.thread(model=MODEL, max_tokens=100, system="You are terse.")

    first = thread.send({"role": "user", "content": "My name is Ada."})
    second = thread.send({"role": "user", "content": "I live in Paris."})
    clock.advance(301)
    third = thread.send({"role": "user", "content": "Who am I?"})

    kinds = [entry["sent"]["thread"]["type"] for entry in server.seen]
    assert kinds == ["create", "continue", "create"]  # the expired thread was replayed with `create`
    assert server.seen[1]["sent"]["messages"] == [{"role": "user", "content": "I live in Paris."}]
    assert "system" not in server.seen[1]["sent"]
    assert server.seen[1]["rebuilt"]["system"] == "You are terse."
    assert second.content[0].text == "I have seen: My name is Ada. | I have seen: My name is Ada. | I live in Paris."  # type: ignore[union-attr]
    assert [m["content"] for m in server.seen[2]["sent"]["messages"]][::2] == [
        "My name is Ada.",
        "I live in Paris.",
        "Who am I?",
    ]
    assert thread.previous_message_id == third.id != first.id
    assert server.store.entry_count() == 1  # the expired thread is gone, the replayed one is held
