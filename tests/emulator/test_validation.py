"""The emulator's request rules: each rule, a minimal body that breaks it, and the API's answer."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.core.catalog import ModelInfo, default_catalog
from turnkeep.emulator.errors import ApiError
from turnkeep.emulator.history import History
from turnkeep.emulator.signatures import sign_thinking
from turnkeep.emulator.validation import CHECKS, MAX_REQUEST_BYTES, validate_request

CATALOG = default_catalog()
analyse = History().analyse  # one memo for this module's requests, as one emulator holds it
NEW_API = "2026-10-21"
OLD_API = "2023-06-01"

Body = dict[str, Any]


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def system_message(content: Any) -> dict[str, Any]:
    return {"role": "system", "content": content}


def body(*messages: dict[str, Any], model: str = "claude-opus-5-5", **fields: Any) -> Body:
    return {"model": model, "max_tokens": 1024, "messages": list(messages or [user("Hello")]), **fields}


def tool_use(tool_id: str = "toolu_01", name: str = "lookup") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {"q": "x"}}


def tool_result(tool_id: str = "toolu_01") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "42"}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def compaction_block(content: str | None = "Summary of earlier turns.") -> dict[str, Any]:
    return {"type": "compaction", "content": content}


def ephemeral(ttl: str = "5m") -> dict[str, Any]:
    return {"type": "ephemeral", "ttl": ttl}


def with_signed_thinking(request: Body, model_id: str, thinking: str = "Let me think.") -> Body:
    """`request` plus an assistant turn opening with a thinking block signed where it sits, and a user turn."""
    model = CATALOG.get(model_id)
    index = len(request["messages"])
    block = {"type": "thinking", "thinking": thinking, "signature": ""}
    block["signature"] = sign_thinking(model, request, index, 0, thinking)
    return {**request, "messages": [*request["messages"], assistant([block, text("Hi.")]), user("And then?")]}


@dataclass(frozen=True)
class Case:
    """One rule: the body that breaks it and what the API answers (status 200 = accepted)."""

    id: str
    request: Body
    message: str = ""
    status: int = 400
    error_code: str | None = None
    api_version: str = NEW_API
    betas: frozenset[str] = field(default_factory=frozenset)
    endpoint: str = "messages"


def _invalidate_thinking_by_editing_system() -> Body:
    signed = with_signed_thinking(body(system="You are terse."), "claude-opus-5-5")
    return {**signed, "system": "You are verbose."}


def _edited_thinking(model_id: str) -> Body:
    signed = with_signed_thinking(body(model=model_id), model_id)
    edited = copy.deepcopy(signed)
    edited["messages"][1]["content"][0]["thinking"] = "Something else."
    return edited


DROP_BLOCK = {"type": "adaptive", "block_binding": {"prefix_mismatch_behavior": "drop_block"}}
MANY_TOKENS = "word " * 210_000

CASES = [
    # --- valid requests -----------------------------------------------------------------------------------
    Case("minimal request", body(), status=200),
    Case("multi-turn with tools", body(user("Hi"), assistant([tool_use()]), user([tool_result()])), status=200),
    Case(
        "consecutive same-role messages are merged, not rejected",
        body(user("One"), user("Two"), assistant([tool_use()]), user([tool_result()]), user("Three")),
        status=200,
    ),
    Case(
        "prefill accepted on a model that supports it",
        body(user("Hi"), assistant("The answer is"), model="claude-haiku-4-5"),
        status=200,
    ),
    Case(
        "count_tokens needs no max_tokens",
        {"model": "claude-opus-5-5", "messages": [user("Hi")]},
        status=200,
        endpoint="count_tokens",
    ),
    Case(
        "sampling parameters accepted on the old API", body(temperature=0.5, top_k=5), status=200, api_version=OLD_API
    ),
    Case(
        "thinking disabled is always accepted",
        body(thinking={"type": "disabled"}, model="claude-haiku-4-5"),
        status=200,
    ),
    Case("signed thinking sent back unchanged", with_signed_thinking(body(system="S"), "claude-opus-5-5"), status=200),
    Case(
        "binding mismatch tolerated with drop_block and its beta",
        {**_invalidate_thinking_by_editing_system(), "thinking": DROP_BLOCK},
        status=200,
        betas=frozenset({"thinking-binding-controls-2026-08-01"}),
    ),
    Case(
        "paused turn ending in a server tool block may be sent back",
        body(
            user("Search"),
            assistant(
                [text("Searching."), {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]
            ),
        ),
        status=200,
    ),
    Case(
        "a compaction request may end on a finished assistant turn",
        body(user("Hi"), assistant("Hello."), compaction={"type": "summarize"}),
        status=200,
        betas=frozenset({"compact-2026-09-04"}),
    ),
    Case(
        "a turn paused after compaction may be sent back",
        body(user("Hi"), assistant([compaction_block()])),
        status=200,
    ),
    Case(
        "conversation may start with a compaction block",
        body(assistant([compaction_block()]), user("Go on")),
        status=200,
    ),
    Case(
        "system message after a user turn, before an assistant turn",
        body(user("Hi"), system_message("Be brief."), assistant("Ok."), user("Next")),
        status=200,
    ),
    Case(
        "four breakpoints, 1h before 5m",
        body(
            user(
                [
                    text("a", cache_control=ephemeral("1h")),
                    text("b", cache_control=ephemeral()),
                    text("c", cache_control=ephemeral()),
                ]
            ),
            system=[text("S", cache_control=ephemeral("1h"))],
        ),
        status=200,
    ),
    # --- shape and parameters -----------------------------------------------------------------------------
    Case(
        "max_tokens is required", {"model": "claude-opus-5-5", "messages": [user("Hi")]}, "max_tokens: Field required"
    ),
    Case("max_tokens is an integer", body(max_tokens="10"), "max_tokens: Input should be a valid integer"),
    Case("max_tokens is not negative", body(max_tokens=-1), "max_tokens: Input should be greater than or equal to 0"),
    Case("messages is required", {"model": "claude-opus-5-5", "max_tokens": 5}, "messages: Field required"),
    Case(
        "messages is not empty", {"model": "claude-opus-5-5", "max_tokens": 5, "messages": []}, "at least one message"
    ),
    Case("messages holds at most 100,000", {**body(), "messages": [user("Hi")] * 100_001}, "too many messages"),
    Case(
        "role is user, assistant or system", body({"role": "tool", "content": "x"}), "messages.0.role: Input should be"
    ),
    Case("unknown block type", body(user([{"type": "video"}])), "messages.0.content.0.type: Input tag 'video'"),
    Case(
        "max_tokens above the model's maximum",
        body(max_tokens=200_000),
        "max_tokens: 200000 > 128000, which is the maximum allowed number of output tokens for claude-opus-5-5",
    ),
    Case(
        "max_tokens 0 with stream", body(max_tokens=0, stream=True), "max_tokens: must be greater than 0 when `stream`"
    ),
    Case(
        "max_tokens 0 with adaptive thinking", body(max_tokens=0, thinking={"type": "adaptive"}), "thinking is enabled"
    ),
    Case(
        "max_tokens 0 with output format",
        body(max_tokens=0, output_config={"format": {"type": "json_schema", "schema": {}}}),
        "output_config.format",
    ),
    Case(
        "max_tokens 0 with a forced tool",
        body(max_tokens=0, tool_choice={"type": "any"}, tools=[{"name": "t", "input_schema": {"type": "object"}}]),
        "tool_choice",
    ),
    Case("temperature removed in 2026-10-21", body(temperature=1.0), "temperature: this parameter was removed"),
    Case("top_p removed even at its default", body(top_p=1), "top_p:"),
    Case("top_k removed", body(top_k=0), "top_k:"),
    Case("context_management needs its beta", body(context_management={"edits": []}), "context-management-2025-06-27"),
    Case("compaction needs its beta", body(compaction={"type": "summarize"}), "compact-2026-09-04"),
    Case("thread needs its beta", body(thread={"type": "create"}), "message-threads-2026-08-12"),
    Case("fallbacks need their beta", body(fallbacks="default"), "fallbacks: this parameter requires the beta header"),
    Case("mcp_servers need their beta", body(mcp_servers=[]), "mcp_servers: this parameter requires the beta header"),
    Case(
        "compaction cannot be combined with context_management",
        body(compaction={"type": "summarize"}, context_management={"edits": []}),
        "cannot be combined with `context_management`",
        betas=frozenset({"compact-2026-09-04", "context-management-2025-06-27"}),
    ),
    Case(
        "compaction request rejects stop_sequences",
        body(compaction={"type": "summarize"}, stop_sequences=["END"]),
        "cannot be combined with `stop_sequences`",
        betas=frozenset({"compact-2026-09-04"}),
    ),
    Case(
        "compact edit needs compact-2026-01-12",
        body(context_management={"edits": [{"type": "compact_20260112"}]}),
        "requires the beta header `anthropic-beta: compact-2026-01-12`",
        betas=frozenset({"context-management-2025-06-27"}),
    ),
    Case(
        "compact edit trigger is at least 50,000",
        body(
            context_management={
                "edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 1000}}]
            }
        ),
        "trigger.value: Input should be greater than or equal to 50000",
        betas=frozenset({"compact-2026-01-12"}),
    ),
    Case(
        "compact edit on a model without compaction",
        body(context_management={"edits": [{"type": "compact_20260112"}]}, model="claude-haiku-4-5"),
        "not supported on this model",
        betas=frozenset({"compact-2026-01-12"}),
    ),
    # --- thinking config ----------------------------------------------------------------------------------
    Case("thinking type must be known", body(thinking={"type": "maximal"}), "thinking.type: Input tag"),
    Case(
        "enabled thinking on an adaptive-only model",
        body(thinking={"type": "enabled", "budget_tokens": 2000}),
        "thinking.type.enabled is not supported for this model",
    ),
    Case(
        "adaptive thinking on an enabled-only model",
        body(thinking={"type": "adaptive"}, model="claude-haiku-4-5"),
        "thinking.type.adaptive is not supported",
    ),
    Case(
        "budget_tokens at least 1024",
        body(thinking={"type": "enabled", "budget_tokens": 1000}, model="claude-haiku-4-5"),
        "budget_tokens: Input should be greater than or equal to 1024",
    ),
    Case(
        "budget_tokens below max_tokens",
        body(thinking={"type": "enabled", "budget_tokens": 2048}, max_tokens=2048, model="claude-haiku-4-5"),
        "`max_tokens` must be greater than `thinking.budget_tokens`",
    ),
    Case("block_binding needs its beta", body(thinking=DROP_BLOCK), "thinking-binding-controls-2026-08-01"),
    # --- system, tools ------------------------------------------------------------------------------------
    Case("system must be non-empty", body(system=""), "system: text content blocks must be non-empty"),
    Case(
        "system must not be whitespace",
        body(system=[text("  \n")]),
        "system.0.text: text content blocks must contain non-whitespace text",
    ),
    Case(
        "tool names are unique",
        body(tools=[{"name": "t", "input_schema": {}}, {"name": "t", "input_schema": {}}]),
        "tools: Tool names must be unique.",
    ),
    Case(
        "custom tools need an input_schema", body(tools=[{"name": "t"}]), "tools.0.custom.input_schema: Field required"
    ),
    # --- messages -----------------------------------------------------------------------------------------
    Case(
        "first message an assistant turn",
        body(assistant("Hi"), user("Hello")),
        'messages.0.role: the first message must use the "user" role',
    ),
    Case(
        "user content must not be an empty string",
        body(user("")),
        "messages.0: user messages must have non-empty content",
    ),
    Case("user content must not be an empty list", body(user([])), "user messages must have non-empty content"),
    Case(
        "user text block must be non-empty",
        body(user([text("")])),
        "messages.0.content.0.text: text content blocks must be non-empty",
    ),
    Case("user text must contain non-whitespace", body(user([text(" \t")])), "must contain non-whitespace text"),
    Case(
        "user string content must contain non-whitespace",
        body(user("   ")),
        "messages.0.content: text content blocks must contain non-whitespace text",
    ),
    Case(
        "assistant text must be non-empty",
        body(user("Hi"), assistant([text("")]), user("Ok")),
        "messages.1.content.0.text: text content blocks must be non-empty",
    ),
    Case(
        "only the final assistant message may be empty",
        body(user("Hi"), assistant([]), user("Ok")),
        "messages.1: all messages must have non-empty content except for the optional final assistant message",
    ),
    Case(
        "tool_result only in user messages",
        body(user("Hi"), assistant([tool_result()])),
        "`tool_result` blocks may only appear in user messages",
    ),
    Case(
        "thinking only in assistant messages",
        body(user([{"type": "thinking", "thinking": "x", "signature": "y"}])),
        "may only appear in assistant messages",
    ),
    Case(
        "tool_use id must match the pattern",
        body(user("Hi"), assistant([tool_use("bad id!")]), user([tool_result("bad id!")])),
        "messages.1.content.0.tool_use.id: String should match pattern",
    ),
    Case(
        "tool_use ids are unique",
        body(user("Hi"), assistant([tool_use("a"), tool_use("a")]), user([tool_result("a")])),
        "`tool_use` ids must be unique",
    ),
    Case(
        "tool_use needs a tool_result in the next message",
        body(user("Hi"), assistant([tool_use("toolu_A"), tool_use("toolu_B")]), user([tool_result("toolu_A")])),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_B. Each "
        "`tool_use` block must have a corresponding `tool_result` block in the next message.",
    ),
    Case(
        "tool_result must answer the previous assistant message",
        body(user("Hi"), assistant("Sure."), user([tool_result("toolu_X")])),
        "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_X. Each `tool_result` "
        "block must have a corresponding `tool_use` block in the previous message.",
    ),
    Case(
        "tool_result two turns late",
        body(user("Hi"), assistant([tool_use()]), user([tool_result()]), assistant("Done."), user([tool_result()])),
        "messages.4.content.0: unexpected `tool_use_id`",
    ),
    Case(
        "prefill on a model without prefill",
        body(user("Hi"), assistant("The answer is")),
        "This model does not support assistant message prefill. The conversation must end with a user message.",
    ),
    Case(
        "prefill with trailing whitespace",
        body(user("Hi"), assistant("The answer is "), model="claude-haiku-4-5"),
        "final assistant content cannot end with trailing whitespace",
    ),
    Case(
        "document in an assistant message (2026-10-21)",
        body(
            user("Hi"),
            assistant([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "d"}}]),
            user("Ok"),
        ),
        "`document` blocks are not allowed in assistant messages",
    ),
    Case(
        "user text with citations (2026-10-21)",
        body(user([text("quoted", citations=[{"type": "char_location", "cited_text": "q"}])])),
        "messages.0.content.0.text.citations",
    ),
    # --- role system --------------------------------------------------------------------------------------
    Case(
        "system messages on a model without them",
        body(user("Hi"), system_message("Be brief."), model="claude-sonnet-5"),
        "messages.1.role: role 'system' is not supported on this model",
    ),
    Case("system message first", body(system_message("Be brief."), user("Hi")), "cannot be the first message"),
    Case(
        "system message after an assistant turn",
        body(user("Hi"), assistant("Ok."), system_message("Be brief.")),
        "must follow a 'user' message",
    ),
    Case(
        "system message before a user turn",
        body(user("Hi"), system_message("Be brief."), user("Again")),
        "followed by an 'assistant' message",
    ),
    Case(
        "system message with an image",
        body(user("Hi"), system_message([{"type": "image", "source": {}}])),
        "may only contain text, tool_addition and tool_removal blocks",
    ),
    # --- cache_control ------------------------------------------------------------------------------------
    Case(
        "at most four breakpoints",
        body(user([text(str(i), cache_control=ephemeral()) for i in range(5)])),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    Case(
        "the top-level cache_control counts as one",
        body(user([text(str(i), cache_control=ephemeral()) for i in range(4)]), cache_control=ephemeral()),
        "Found 5.",
    ),
    Case(
        "ttl is 5m or 1h",
        body(user([text("a", cache_control={"type": "ephemeral", "ttl": "10m"})])),
        "cache_control.ttl: Input should be '5m' or '1h'",
    ),
    Case(
        "1h must not follow 5m",
        body(user([text("a", cache_control=ephemeral("1h"))]), system=[text("S", cache_control=ephemeral("5m"))]),
        "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block",
    ),
    Case(
        "no cache_control on thinking blocks",
        body(
            user("Hi"),
            assistant(
                [{"type": "thinking", "thinking": "x", "signature": "s", "cache_control": ephemeral()}, text("Ok")]
            ),
            user("Go"),
        ),
        "cache_control cannot be set on thinking blocks",
    ),
    # --- thinking signatures ------------------------------------------------------------------------------
    Case(
        "a thinking block needs a signature",
        body(user("Hi"), assistant([{"type": "thinking", "thinking": "x"}, text("Ok")]), user("Go")),
        "messages.1.content.0.thinking.signature: Field required",
    ),
    Case(
        "a forged signature is invalid",
        body(
            user("Hi"),
            assistant([{"type": "thinking", "thinking": "x", "signature": "Zm9yZ2Vk"}, text("Ok")]),
            user("Go"),
        ),
        "messages.1.content.0: Invalid `signature` in `thinking` block",
    ),
    Case(
        "a changed system prompt breaks a bound thinking block",
        _invalidate_thinking_by_editing_system(),
        "Invalid `signature` in `thinking` block. The block is bound to a different conversation",
    ),
    Case(
        "drop_block needs the beta to be honoured",
        {**_invalidate_thinking_by_editing_system(), "thinking": DROP_BLOCK},
        "thinking-binding-controls-2026-08-01",
    ),
    Case(
        "an edited thinking block is invalid on a binding model",
        _edited_thinking("claude-opus-5-5"),
        "Invalid `signature`",
    ),
    Case(
        "an edited thinking block is invalid on a non-binding model",
        _edited_thinking("claude-opus-5"),
        "Invalid `signature`",
    ),
    # --- compaction blocks --------------------------------------------------------------------------------
    Case(
        "two compaction blocks with content",
        body(assistant([compaction_block()]), user("Hi"), assistant([compaction_block("Another.")]), user("Go")),
        "more than one `compaction` block with content",
        error_code="compaction_block_ambiguous",
    ),
    Case(
        "compaction block not first in its message",
        body(user("Hi"), assistant([text("Hello"), compaction_block()]), user("Go")),
        "must be the first block",
        error_code="compaction_block_misplaced",
    ),
    Case(
        "compaction block in a system message",
        body(user("Hi"), system_message([compaction_block()])),
        "cannot be placed in a system message",
        error_code="compaction_block_misplaced",
    ),
    Case(
        "compaction request on an unanswered tool call",
        body(user("Hi"), assistant([tool_use()]), compaction={"type": "summarize"}),
        "not finished",
        error_code="compaction_incomplete_turn",
        betas=frozenset({"compact-2026-09-04"}),
    ),
    # --- as strict as the API (probed with the official SDKs) ------------------------------------------------
    Case("an unknown top-level field", body(foo=1), "foo: Extra inputs are not permitted"),
    Case("removed sampling on an old version is still known", body(temperature=0.5), status=200, api_version=OLD_API),
    Case(
        "text before a tool_result",
        body(user("Hi"), assistant([tool_use()]), user([text("Here:"), tool_result()])),
        "`tool_result` blocks must come first",
    ),
    Case(
        "an image without source", body(user([{"type": "image"}, text("What is it?")])), "image.source: Field required"
    ),
    Case(
        "an image of an unsupported type",
        body(user([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}])),
        "media_type: Input should be 'image/jpeg'",
    ),
    Case(
        "a base64 image without data",
        body(user([{"type": "image", "source": {"type": "base64", "media_type": "image/png"}}])),
        "source.base64.data: Field required",
    ),
    Case(
        "a url image",
        body(user([{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, text("Hi")])),
        status=200,
    ),
    Case(
        "a document without source",
        body(user([{"type": "document"}, text("Sum up.")])),
        "document.source: Field required",
    ),
    Case(
        "a text document",
        body(user([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A."}}])),
        status=200,
    ),
    Case(
        "tool_choice naming a tool not in tools",
        body(
            model="claude-opus-5",
            tools=[{"name": "lookup", "input_schema": {}}],
            tool_choice={"type": "tool", "name": "search"},
        ),
        "no tool named 'search'",
    ),
    Case("tool_choice any without tools", body(model="claude-opus-5", tool_choice={"type": "any"}), "requires `tools`"),
    Case(
        "a forced tool_choice on Opus 5.5",
        body(tools=[{"name": "lookup", "input_schema": {}}], tool_choice={"type": "any"}),
        "'any' is not supported for this model",
    ),
    Case(
        "thinking display updates without its beta",
        body(thinking={"type": "adaptive", "display": "updates"}),
        "requires the beta header `anthropic-beta: thinking-display-updates-2026-08-18`",
    ),
    Case(
        "thinking display updates with its beta",
        body(thinking={"type": "adaptive", "display": "updates"}),
        status=200,
        betas=frozenset({"thinking-display-updates-2026-08-18"}),
    ),
    # --- context window -----------------------------------------------------------------------------------
    Case("prompt too long", body(user(MANY_TOKENS), model="claude-haiku-4-5"), "prompt is too long: "),
    Case(
        "prompt too long on count_tokens too",
        {"model": "claude-haiku-4-5", "messages": [user(MANY_TOKENS)]},
        "prompt is too long",
        endpoint="count_tokens",
    ),
]


@pytest.mark.parametrize("remembered", [False, True], ids=["read in full", "from remembered facts"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_rule(case: Case, remembered: bool) -> None:
    model = CATALOG.get(case.request["model"])
    run: Callable[[], None] = lambda: validate_request(  # noqa: E731
        case.request,
        model=model,
        api_version=case.api_version,
        betas=case.betas,
        endpoint=case.endpoint,  # type: ignore[arg-type]
        history=analyse(case.request) if remembered else None,
    )
    if case.status == 200:
        run()
        return
    with pytest.raises(ApiError) as caught:
        run()
    error = caught.value
    assert (error.status, error.error_type) == (case.status, "invalid_request_error")
    assert case.message in error.message
    assert error.error_code == case.error_code


def test_prompt_too_long_names_both_sizes() -> None:
    model = CATALOG.get("claude-haiku-4-5")
    with pytest.raises(ApiError) as caught:
        validate_request(
            body(user(MANY_TOKENS), model="claude-haiku-4-5"), model=model, api_version=NEW_API, betas=frozenset()
        )
    assert caught.value.message.endswith("tokens > 200000 maximum")


def test_context_1m_beta_widens_sonnet_4_5() -> None:
    model = CATALOG.get("claude-sonnet-4-5")
    request = body(user(MANY_TOKENS), model="claude-sonnet-4-5")
    validate_request(request, model=model, api_version=NEW_API, betas=frozenset({"context-1m-2025-08-07"}))
    with pytest.raises(ApiError, match="prompt is too long"):
        validate_request(request, model=model, api_version=NEW_API, betas=frozenset())


def test_a_compaction_block_replaces_what_it_summarises_in_the_window() -> None:
    model = CATALOG.get("claude-haiku-4-5")
    request = body(user(MANY_TOKENS), assistant([compaction_block()]), user("Go on"), model="claude-haiku-4-5")
    validate_request(request, model=model, api_version=NEW_API, betas=frozenset())


def test_thread_continue_answers_the_server_held_tool_call() -> None:
    model = CATALOG.get("claude-opus-5-5")
    request = body(user([tool_result("toolu_held")]), thread={"type": "continue", "previous_message_id": "msg_1"})
    validate_request(request, model=model, api_version=NEW_API, betas=frozenset({"message-threads-2026-08-12"}))


def test_count_tokens_ignores_max_tokens_limits() -> None:
    model = CATALOG.get("claude-opus-5-5")
    validate_request(
        body(max_tokens=10_000_000), model=model, api_version=NEW_API, betas=frozenset(), endpoint="count_tokens"
    )


def test_every_check_is_documented() -> None:
    for check in CHECKS:
        assert check.__doc__, check.__name__


def test_request_size_limit_is_32_mb() -> None:
    assert MAX_REQUEST_BYTES == 32 * 1024 * 1024


def test_model_without_prefill_rejects_an_empty_final_assistant_message() -> None:
    model: ModelInfo = CATALOG.get("claude-opus-5")
    with pytest.raises(ApiError, match="does not support assistant message prefill"):
        validate_request(
            body(user("Hi"), assistant(""), model="claude-opus-5"), model=model, api_version=NEW_API, betas=frozenset()
        )


def test_a_rejection_renders_the_api_error_body() -> None:
    model = CATALOG.get("claude-opus-5-5")
    request = body(assistant([compaction_block()]), user("Hi"), assistant([compaction_block("Again.")]), user("Go"))
    with pytest.raises(ApiError) as caught:
        validate_request(request, model=model, api_version=NEW_API, betas=frozenset())
    rendered = caught.value.body("req_1")
    assert rendered["type"] == "error"
    assert rendered["request_id"] == "req_1"
    assert rendered["error"]["type"] == "invalid_request_error"
    assert rendered["error"]["details"] == {"error_code": "compaction_block_ambiguous"}
    plain = ApiError(400, "invalid_request_error", "x").body("req_2")
    assert "details" not in plain["error"]


@st.composite
def valid_conversations(draw: st.DrawFn) -> Body:
    """Alternating turns ending on a user turn: text, tool calls answered in the next turn, signed thinking."""
    model = CATALOG.get("claude-opus-5-5")
    request = body(user(draw(st.text(alphabet="abc xyz", min_size=1).filter(str.strip))), system="Be brief.")
    for turn in range(draw(st.integers(min_value=0, max_value=4))):
        index = len(request["messages"])
        content: list[dict[str, Any]] = []
        if draw(st.booleans()):
            content.append({"type": "thinking", "thinking": f"thought {turn}", "signature": ""})
            content[0]["signature"] = sign_thinking(model, request, index, 0, content[0]["thinking"])
        calls = [f"toolu_{turn}_{n}" for n in range(draw(st.integers(min_value=0, max_value=2)))]
        content += [text(f"Answer {turn}")] + [tool_use(call) for call in calls]
        answer = [tool_result(call) for call in calls] or [text(f"Question {turn}")]
        request = {**request, "messages": [*request["messages"], assistant(content), user(answer)]}
    return request


@settings(max_examples=40, deadline=None)
@given(valid_conversations())
def test_valid_conversations_pass(request: Body) -> None:
    validate_request(request, model=CATALOG.get("claude-opus-5-5"), api_version=NEW_API, betas=frozenset())


_nested: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=40,
)


@given(_nested, st.integers(min_value=0, max_value=6))
def test_the_quick_depth_pass_agrees_with_the_walk_that_names_the_path(value: Any, limit: int) -> None:
    from turnkeep.core import values
    from turnkeep.emulator.app import _nests_deeper_than

    assert _nests_deeper_than(value, limit) == (values.depth_exceeds(value, limit) is not None)
