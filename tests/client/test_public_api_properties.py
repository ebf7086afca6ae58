"""Property: a history built only through the public API always yields requests the API accepts.

Random sequences of public operations (send, tool calls and results, refusals, truncation with continuation,
paused turns, failures with retry or rollback, synthetic messages, undo, instructions) run against the scripted
fake server. Every request that leaves the process must pass both turnkeep's own rules and the emulator's
validator, which re-implements the API's rules independently.
"""

from __future__ import annotations

import itertools
from typing import Any

import anthropic
import pytest
from fake_api import FakeAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnkeep import Conversation, UsageError
from turnkeep.core import rules
from turnkeep.core.catalog import default_catalog
from turnkeep.emulator.validation import validate_request
from turnkeep.store import MemoryStore

TOOL = {"name": "lookup", "description": "Look up a fact", "input_schema": {"type": "object", "properties": {}}}

OPERATIONS = st.sampled_from(
    [
        "send_text",
        "send_tools",
        "send_refused",
        "send_truncated",
        "send_paused",
        "send_failing",
        "add_user",
        "add_assistant",
        "undo",
        "instruct",
        "stream_text",
    ]
)


def check_sent(api: FakeAPI, model: str) -> None:
    info = default_catalog().get(model)
    for request in api.requests:
        body = {key: value for key, value in request.items() if key != "stream"}
        rules.validate(body, info)
        validate_request(request, model=info, api_version="2026-10-21", betas=frozenset())


@settings(suppress_health_check=[HealthCheck.too_slow])  # examples: the Hypothesis profile's
@given(
    model=st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-5"]),
    operations=st.lists(OPERATIONS, min_size=1, max_size=12),
)
def test_histories_built_through_the_public_api_always_validate(model: str, operations: list[str]) -> None:
    api = FakeAPI()
    counter = itertools.count()
    store = MemoryStore()
    conversation = Conversation(model, client=api.client(), tools=[TOOL], auto_continue=1, max_resumes=1, store=store)
    for operation in operations:
        n = next(counter)
        if conversation.pending:
            if n % 2:
                api.reply(f"retried {n}")
                conversation.retry()
            else:
                conversation.rollback()
        calls = [b for b in conversation.messages[-1:] if b["role"] == "assistant"]
        waiting = rules.unanswered_tool_calls(conversation.messages) if calls else []
        if waiting:
            api.reply(f"thanks {n}")
            conversation.send_tool_results(dict.fromkeys(waiting, f"result {n}"))
            continue
        perform(conversation, api, operation, n)
    check_sent(api, model)
    # What the conversation holds in memory is exactly what a reopened one reads from the store.
    reopened = Conversation.open(conversation.id, store=store, client=api.client())
    assert reopened.transcript == conversation.transcript
    assert reopened.messages == conversation.messages


def perform(conversation: Conversation, api: FakeAPI, operation: str, n: int) -> None:
    if operation == "send_text":
        api.reply(f"answer {n}")
        conversation.send(f"question {n}")
    elif operation == "send_tools":
        api.tool_call(("lookup", {"n": n}), ("lookup", {"n": n + 1}), text="Looking.")
        conversation.send(f"look up {n}")
    elif operation == "send_refused":
        api.reply("", stop_reason="refusal", stop_details={"type": "refusal", "category": None, "explanation": None})
        conversation.send(f"refuse {n}")
    elif operation == "send_truncated":
        api.reply(f"part {n} ", stop_reason="max_tokens").reply(f"rest {n}")
        conversation.send(f"long {n}")
    elif operation == "send_paused":
        paused: list[dict[str, Any]] = [
            {"type": "server_tool_use", "id": f"srvtoolu_{n}", "name": "web_search", "input": {"query": "q"}}
        ]
        api.reply(content=paused, stop_reason="pause_turn").reply(f"found {n}")
        conversation.send(f"search {n}")
    elif operation == "send_failing":
        api.fail(529, "overloaded_error")
        with pytest.raises(anthropic.APIStatusError):
            conversation.send(f"fails {n}")
    elif operation == "add_user":
        conversation.add_user(f"note {n}")
    elif operation == "add_assistant":
        try:
            conversation.add_assistant(f"said {n}")
        except UsageError:
            assert not conversation.messages  # only refused as the first message
    elif operation == "undo":
        try:
            conversation.undo()
        except UsageError:
            assert not conversation.transcript
    elif operation == "instruct":
        if conversation.model_info.system_messages:
            conversation.instruct(f"Be brief {n}.")
    elif operation == "stream_text":
        api.reply(f"streamed {n}")
        with conversation.stream(f"stream {n}") as stream:
            list(stream)
