"""The Messages API's request rules: validate() names the first broken rule and where; normalize() repairs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
from anthropic.types import TextBlock, ToolUseBlock
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import histories, message_soups, messy_histories

from turnkeep.core.catalog import ModelInfo, default_catalog
from turnkeep.core.rules import RULES, UNANSWERED_TOOL_CALL, is_prefill, normalize, unanswered_tool_calls, validate
from turnkeep.errors import HistoryError, PrefillNotSupported, UsageError

PREFILL_MODEL = "claude-haiku-4-5"  # prefill yes, thinking "enabled" or "disabled", max_output 64000
NO_PREFILL_MODEL = "claude-sonnet-4-6"  # prefill no, thinking adaptive + enabled
SYSTEM_MESSAGES_MODEL = "claude-opus-5"  # role 'system' messages, compaction, thinking adaptive only

FAST = settings(max_examples=200, deadline=None)
HISTORIES = settings(max_examples=100, deadline=None)  # each example is a whole conversation


def model(model_id: str) -> ModelInfo:
    return default_catalog().get(model_id)


def request(*messages: Any, model: str = PREFILL_MODEL, max_tokens: int = 4096, **params: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": list(messages), **params}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def system(content: Any) -> dict[str, Any]:
    return {"role": "system", "content": content}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def tool_use(tool_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": "get_weather", "input": {"city": "Oslo"}, **extra}


def tool_result(tool_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "12°C", **extra}


def thinking(**extra: Any) -> dict[str, Any]:
    return {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc", **extra}


def compaction(content: str | None = "Summary of earlier turns.") -> dict[str, Any]:
    return {"type": "compaction", "content": content, "encrypted_content": "enc"}


def cached(block: dict[str, Any], ttl: str | None = None) -> dict[str, Any]:
    cache_control = {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
    return {**block, "cache_control": cache_control}


def server_tool_use(tool_id: str = "srvtoolu_1") -> dict[str, Any]:
    return {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": "weather"}}


DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A report."}}
IMAGE = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
WEATHER_TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}
HELLO = user("Hello")
REPLY = assistant("Hi there.")
CALL = assistant([text("Checking."), tool_use("toolu_1")])
TOOL = {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


RESULT = user([tool_result("toolu_1")])


# ----------------------------------------------------------------------------------------------------------------
# One minimal violation per rule


@dataclass(frozen=True)
class Case:
    rule: str
    request: dict[str, Any]
    message_index: int | None = None
    block_index: int | None = None
    model: str = PREFILL_MODEL
    complete: bool = True


def _many_messages(count: int) -> list[dict[str, Any]]:
    return [HELLO if index % 2 == 0 else REPLY for index in range(count)]


CASES = [
    Case("sampling_removed", request(HELLO, temperature=0.7)),
    Case("model_missing", {"max_tokens": 10, "messages": [HELLO]}),
    Case("model_mismatch", request(HELLO, model=SYSTEM_MESSAGES_MODEL)),
    Case("max_tokens_invalid", request(HELLO, max_tokens=-1)),
    Case("max_tokens_above_limit", request(HELLO, max_tokens=64_001)),
    Case("max_tokens_zero_not_allowed", request(HELLO, max_tokens=0, stream=True)),
    Case("messages_invalid", {"model": PREFILL_MODEL, "max_tokens": 10, "messages": "Hello"}),
    Case("messages_empty", request()),
    Case("too_many_messages", request(*_many_messages(100_001))),
    Case("thinking_type_unsupported", request(HELLO, thinking={"type": "adaptive"})),
    Case("model_retired", request(HELLO, model="claude-sonnet-4-5"), model="claude-sonnet-4-5"),
    Case("tool_choice_invalid", request(HELLO, tools=[WEATHER_TOOL], tool_choice={"type": "required"})),
    Case(
        "tool_choice_forced_unsupported",
        request(HELLO, model="claude-sonnet-5-5", tools=[WEATHER_TOOL], tool_choice={"type": "any"}),
        model="claude-sonnet-5-5",
    ),
    Case("tool_choice_unknown_tool", request(HELLO, tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "f"})),
    Case("tool_choice_without_tools", request(HELLO, tool_choice={"type": "any"})),
    Case("thinking_budget_invalid", request(HELLO, thinking={"type": "enabled", "budget_tokens": 1023})),
    Case(
        "thinking_budget_not_below_max_tokens",
        request(HELLO, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 2048}),
    ),
    Case("stop_sequences_invalid", request(HELLO, stop_sequences="END")),
    Case("stop_sequence_empty", request(HELLO, stop_sequences=["END", ""])),
    Case(
        "compaction_with_context_management",
        request(HELLO, model=SYSTEM_MESSAGES_MODEL, compaction={"type": "summarize"}, context_management={"edits": []}),
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "thread_continue_with_prefix",
        request(HELLO, system="Be brief.", thread={"type": "continue", "previous_message_id": "msg_1"}),
    ),
    Case("tools_invalid", request(HELLO, tools=["get_weather"])),
    Case("system_invalid", request(HELLO, system=[IMAGE])),
    Case("system_empty", request(HELLO, system=" \n")),
    Case("message_invalid", request(HELLO, "Hi there."), message_index=1),
    Case("role_invalid", request(HELLO, {"role": "tool", "content": "12°C"}), message_index=1),
    Case("first_message_not_user", request(REPLY, HELLO), message_index=0),
    Case("consecutive_same_role", request(HELLO, user("Anyone there?")), message_index=1),
    Case("system_message_unsupported", request(HELLO, system("Answer in French."), REPLY), message_index=1),
    Case(
        "system_message_first",
        request(system("Answer in French."), HELLO, model=SYSTEM_MESSAGES_MODEL),
        message_index=0,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "system_message_not_after_user",
        request(HELLO, REPLY, system("Answer in French."), model=SYSTEM_MESSAGES_MODEL),
        message_index=2,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "system_message_not_before_assistant",
        request(HELLO, system("Answer in French."), user("Bonjour"), model=SYSTEM_MESSAGES_MODEL),
        message_index=1,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "system_message_not_text",
        request(HELLO, system([text("Look:"), IMAGE]), REPLY, model=SYSTEM_MESSAGES_MODEL),
        message_index=1,
        block_index=1,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "system_message_field_invalid",
        request(HELLO, {**system("Be brief."), "clear_at": "tomorrow"}, REPLY, model=SYSTEM_MESSAGES_MODEL),
        message_index=1,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "system_message_beta_required",
        request(HELLO, {**system("Be brief."), "clear_at": "next_user_message"}, REPLY, model=SYSTEM_MESSAGES_MODEL),
        message_index=1,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case(
        "system_message_empty",
        request(HELLO, system("  "), REPLY, model=SYSTEM_MESSAGES_MODEL),
        message_index=1,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    Case("empty_content", request(HELLO, assistant([]), user("Again")), message_index=1),
    Case("user_text_empty", request(user([text("Hello"), text(" \n ")])), message_index=0, block_index=1),
    Case("assistant_text_empty", request(HELLO, assistant([text("")]), user("Again")), message_index=1, block_index=0),
    Case("block_invalid", request(user([{"type": "text"}])), message_index=0, block_index=0),
    Case("block_wrong_role", request(user([tool_use("toolu_1")])), message_index=0, block_index=0),
    Case(
        "thinking_block_invalid",
        request(HELLO, assistant([{"type": "thinking", "thinking": "Hmm."}, text("Hi.")]), user("Again")),
        message_index=1,
        block_index=0,
    ),
    Case(
        "document_in_assistant", request(HELLO, assistant([DOCUMENT]), user("Thanks")), message_index=1, block_index=0
    ),
    Case(
        "user_text_citations",
        request(user([DOCUMENT, text("Quote it.", citations=[{"type": "char_location", "cited_text": "A"}])])),
        message_index=0,
        block_index=1,
    ),
    Case(
        "tool_use_id_duplicate",
        request(HELLO, CALL, RESULT, assistant([tool_use("toolu_1")]), RESULT),
        message_index=3,
        block_index=0,
    ),
    Case(
        "tool_use_unanswered",
        request(HELLO, assistant([tool_use("toolu_1"), tool_use("toolu_2")]), RESULT),
        message_index=1,
        block_index=1,
    ),
    Case("tool_use_unanswered", request(HELLO, CALL, user("Well?")), message_index=1, block_index=1, complete=False),
    Case("tool_result_orphan", request(user([tool_result("toolu_9")])), message_index=0, block_index=0),
    Case(
        "tool_result_duplicate",
        request(HELLO, CALL, user([tool_result("toolu_1"), tool_result("toolu_1")])),
        message_index=2,
        block_index=1,
    ),
    Case(
        "tool_result_not_first",
        request(HELLO, CALL, user([text("Here you go:"), tool_result("toolu_1")])),
        message_index=2,
        block_index=1,
    ),
    Case("compaction_content_empty", request(user([compaction(""), text("Go on.")])), message_index=0, block_index=0),
    Case(
        "compaction_block_ambiguous",
        request(user([compaction(), text("Go on.")]), REPLY, user([compaction("Another summary."), text("More.")])),
        message_index=2,
        block_index=0,
    ),
    Case("compaction_block_misplaced", request(user([text("Go on."), compaction()])), message_index=0, block_index=1),
    Case("cache_control_invalid", request(user([cached(text("Hello"), ttl="10m")])), message_index=0, block_index=0),
    Case(
        "cache_control_on_thinking",
        request(HELLO, assistant([cached(thinking()), text("Hi.")]), user("Again")),
        message_index=1,
        block_index=0,
    ),
    Case(
        "cache_control_too_many",
        request(user([cached(text(f"part {n}")) for n in range(5)])),
        message_index=0,
        block_index=4,
    ),
    Case(
        "cache_ttl_order",
        request(user([cached(text("Hello"), ttl="1h")]), system=[cached(text("Be brief."), ttl="5m")]),
        message_index=0,
        block_index=0,
    ),
    Case("prefill_not_supported", request(HELLO, assistant("Sure"), model=NO_PREFILL_MODEL), model=NO_PREFILL_MODEL),
    Case("prefill_trailing_whitespace", request(HELLO, assistant("The answer is ")), message_index=1),
    Case(
        "compaction_incomplete_turn",
        request(HELLO, CALL, model=SYSTEM_MESSAGES_MODEL, compaction={"type": "summarize"}),
        message_index=1,
        block_index=1,
        model=SYSTEM_MESSAGES_MODEL,
    ),
    # Hostile values, refused before anything else walks them.
    Case("value_too_deep", request(user([text("Hi", extra=_nested(10_000))])), message_index=0, block_index=0),
    Case("value_too_deep", request(HELLO, tools=[{**TOOL, "input_schema": _nested(300)}])),
    Case("lone_surrogate", request(HELLO, user([text("Hi"), text("bad \ud800")])), message_index=1, block_index=1),
    Case("lone_surrogate", request(HELLO, system="Be \udfff brief")),
    Case(
        "lone_surrogate",
        request(HELLO, assistant([tool_use("t1", input={"q": "\ud83d"})])),
        message_index=1,
        block_index=0,
        complete=False,
    ),
    Case("block_type_unknown", request(user([text("Hi"), {"type": "hologram"}])), message_index=0, block_index=1),
    Case("tool_schema_missing", request(HELLO, tools=[{"name": "lookup", "description": "no schema"}])),
]


def _location(message_index: int | None, block_index: int | None) -> str:
    if message_index is None:
        return "request"
    return f"messages[{message_index}]" + ("" if block_index is None else f".content[{block_index}]")


@pytest.mark.parametrize("case", CASES, ids=[case.rule + ("" if case.complete else "-building") for case in CASES])
def test_each_rule_is_reported_with_its_name_and_location(case: Case) -> None:
    if case.rule == "prefill_not_supported":
        with pytest.raises(PrefillNotSupported) as prefill:
            validate(case.request, model(case.model), complete=case.complete)
        assert prefill.value.model == case.model
        assert isinstance(prefill.value, UsageError)
        assert not isinstance(prefill.value, HistoryError)
        return
    with pytest.raises(HistoryError) as caught:
        validate(case.request, model(case.model), complete=case.complete)
    error = caught.value
    assert (error.rule, error.message_index, error.block_index) == (case.rule, case.message_index, case.block_index)
    assert str(error).startswith(_location(case.message_index, case.block_index) + ":")
    assert f"(rule: {case.rule})" in str(error)


def test_every_documented_rule_has_a_case_and_every_case_is_documented() -> None:
    assert {case.rule for case in CASES} == set(RULES)
    assert all(description.strip() for description in RULES.values())


# ----------------------------------------------------------------------------------------------------------------
# Variants of the rules


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
def test_removed_sampling_parameters_are_rejected_even_at_default_values(name: str) -> None:
    with pytest.raises(HistoryError, match="2026-10-21") as caught:
        validate(request(HELLO, **{name: 1}), model(PREFILL_MODEL))
    assert caught.value.rule == "sampling_removed"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"stream": True}, "stream"),
        ({"thinking": {"type": "adaptive"}}, "adaptive thinking"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "enabled thinking"),
        ({"output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config.format"),
        ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "any"}}, "tool_choice"),
        ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "f"}}, "tool_choice"),
    ],
)
def test_max_tokens_zero_is_refused_where_the_api_refuses_it(params: dict[str, Any], reason: str) -> None:
    with pytest.raises(HistoryError, match=reason) as caught:
        validate(request(HELLO, model=NO_PREFILL_MODEL, max_tokens=0, **params), model(NO_PREFILL_MODEL))
    assert caught.value.rule == "max_tokens_zero_not_allowed"


def test_max_tokens_zero_warms_the_cache_otherwise() -> None:
    validate(request(HELLO, max_tokens=0, tool_choice={"type": "auto"}, stream=False), model(PREFILL_MODEL))


@pytest.mark.parametrize("max_tokens", [None, "1024", 1.5, True])
def test_max_tokens_must_be_an_integer(max_tokens: Any) -> None:
    body = request(HELLO)
    body["max_tokens"] = max_tokens
    with pytest.raises(HistoryError) as caught:
        validate(body, model(PREFILL_MODEL))
    assert caught.value.rule == "max_tokens_invalid"


def test_max_tokens_up_to_the_model_maximum_is_accepted() -> None:
    validate(request(HELLO, max_tokens=64_000), model(PREFILL_MODEL))
    validate(request(HELLO, model=SYSTEM_MESSAGES_MODEL, max_tokens=128_000), model(SYSTEM_MESSAGES_MODEL))


def test_a_dated_alias_is_the_same_model() -> None:
    validate(request(HELLO, model="claude-haiku-4-5-20251001"), model(PREFILL_MODEL))


def test_thinking_disabled_is_accepted_on_every_model_and_others_only_where_listed() -> None:
    validate(request(HELLO, thinking={"type": "disabled"}), model(PREFILL_MODEL))
    validate(request(HELLO, model=NO_PREFILL_MODEL, thinking={"type": "adaptive"}), model(NO_PREFILL_MODEL))
    with pytest.raises(HistoryError) as caught:
        validate(
            request(HELLO, model=SYSTEM_MESSAGES_MODEL, thinking={"type": "enabled", "budget_tokens": 2048}),
            model(SYSTEM_MESSAGES_MODEL),
        )
    assert caught.value.rule == "thinking_type_unsupported"


def test_an_unknown_model_accepts_no_thinking_type_but_disabled() -> None:
    unknown = default_catalog().get("claude-future-9")
    validate(request(HELLO, model="claude-future-9", thinking={"type": "disabled"}), unknown)
    with pytest.raises(HistoryError, match="accepted: disabled") as caught:
        validate(request(HELLO, model="claude-future-9", thinking={"type": "adaptive"}), unknown)
    assert caught.value.rule == "thinking_type_unsupported"


def test_the_first_problem_in_request_order_is_the_one_reported() -> None:
    body = request(user(""), REPLY, user("   "), assistant("trailing "), system=" ")
    with pytest.raises(HistoryError) as caught:
        validate(body, model(PREFILL_MODEL))
    assert caught.value.rule == "system_empty"
    del body["system"]
    with pytest.raises(HistoryError) as caught:
        validate(body, model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index) == ("empty_content", 0)


def test_a_blank_user_string_is_located_at_the_message() -> None:
    with pytest.raises(HistoryError) as caught:
        validate(request(HELLO, REPLY, user(" \t")), model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index, caught.value.block_index) == ("user_text_empty", 2, None)


def test_user_content_empty_string_is_rejected() -> None:
    with pytest.raises(HistoryError, match="may not be empty") as caught:
        validate(request(user("")), model(PREFILL_MODEL))
    assert caught.value.rule == "empty_content"


def test_a_system_message_may_not_hold_a_compaction_block() -> None:
    body = request(HELLO, system([compaction()]), REPLY, model=SYSTEM_MESSAGES_MODEL)
    with pytest.raises(HistoryError) as caught:
        validate(body, model(SYSTEM_MESSAGES_MODEL))
    assert (caught.value.rule, caught.value.message_index, caught.value.block_index) == (
        "compaction_block_misplaced",
        1,
        0,
    )


def test_failed_compaction_blocks_without_content_may_sit_anywhere_but_in_system_messages() -> None:
    reply = assistant([compaction(None), text("Continuing.")])
    body = request(user([compaction(), text("Go on.")]), reply, user("More"), model=SYSTEM_MESSAGES_MODEL)
    validate(body, model(SYSTEM_MESSAGES_MODEL))


def test_tool_results_in_the_first_message_of_a_thread_continuation_answer_the_stored_reply() -> None:
    body = request(RESULT, thread={"type": "continue", "previous_message_id": "msg_1"})
    validate(body, model(PREFILL_MODEL))
    del body["thread"]
    with pytest.raises(HistoryError) as caught:
        validate(body, model(PREFILL_MODEL))
    assert caught.value.rule == "tool_result_orphan"


def test_breakpoints_count_across_tools_system_messages_and_tool_result_content() -> None:
    tools = [cached({"name": "get_weather", "input_schema": {"type": "object"}})]
    system_blocks = [cached(text("Be brief."))]
    nested = user([tool_result("toolu_1", content=[cached(text("12°C"))])])
    body = request(HELLO, CALL, nested, REPLY, user([cached(text("Thanks"))]), tools=tools, system=system_blocks)
    validate(body, model(PREFILL_MODEL))
    body["messages"][0] = user([cached(text("Hello"))])
    with pytest.raises(HistoryError, match="breakpoint number 5") as caught:
        validate(body, model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index, caught.value.block_index) == ("cache_control_too_many", 4, 0)


def test_top_level_cache_control_counts_as_a_fifth_breakpoint() -> None:
    body = request(user([cached(text(f"part {n}")) for n in range(4)]))
    validate(body, model(PREFILL_MODEL))
    body["cache_control"] = {"type": "ephemeral"}
    with pytest.raises(HistoryError, match="top level") as caught:
        validate(body, model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index) == ("cache_control_too_many", None)


def test_longer_ttls_come_first_including_the_automatic_breakpoint() -> None:
    tools = [cached({"name": "f", "input_schema": {}}, ttl="1h")]
    body = request(user([cached(text("Hello"), ttl="1h"), cached(text("More"))]), tools=tools)
    validate(body, model(PREFILL_MODEL))
    with pytest.raises(HistoryError, match=r"messages\[0\]\.content\[1\]") as caught:
        validate({**body, "cache_control": {"type": "ephemeral", "ttl": "1h"}}, model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index) == ("cache_ttl_order", None)
    with pytest.raises(HistoryError) as caught:
        validate({**body, "tools": [cached({"name": "f", "input_schema": {}})]}, model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index, caught.value.block_index) == ("cache_ttl_order", 0, 0)


def test_a_final_message_awaiting_tool_results_is_fine_only_while_building() -> None:
    body = request(HELLO, CALL, model=NO_PREFILL_MODEL)
    validate(body, model(NO_PREFILL_MODEL), complete=False)
    with pytest.raises(HistoryError) as caught:
        validate(body, model(NO_PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index, caught.value.block_index) == ("tool_use_unanswered", 1, 1)


def test_incomplete_skips_only_the_rules_about_the_end() -> None:
    no_prefill = model(NO_PREFILL_MODEL)
    validate(request(HELLO, assistant("Draft "), model=NO_PREFILL_MODEL), no_prefill, complete=False)
    with pytest.raises(HistoryError) as caught:
        validate(request(HELLO, REPLY, assistant("Draft"), model=NO_PREFILL_MODEL), no_prefill, complete=False)
    assert caught.value.rule == "consecutive_same_role"
    with pytest.raises(HistoryError) as caught:
        validate(request(HELLO, CALL, HELLO, model=NO_PREFILL_MODEL), no_prefill, complete=False)
    assert caught.value.rule == "tool_use_unanswered"


def test_trailing_whitespace_of_a_prefill_is_checked_on_its_last_text_block() -> None:
    body = request(HELLO, assistant([thinking(), text("The answer is\n")]))
    with pytest.raises(HistoryError) as caught:
        validate(body, model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.message_index, caught.value.block_index) == (
        "prefill_trailing_whitespace",
        1,
        1,
    )
    validate(request(HELLO, assistant([text("The answer is"), thinking()])), model(PREFILL_MODEL))


def test_an_explicit_compaction_request_may_end_on_a_finished_assistant_turn_on_any_model() -> None:
    body = request(HELLO, REPLY, model=SYSTEM_MESSAGES_MODEL, compaction={"type": "summarize"})
    validate(body, model(SYSTEM_MESSAGES_MODEL))


def test_sdk_content_blocks_are_read_through_their_dump() -> None:
    reply = assistant(
        [TextBlock(type="text", text="Checking."), ToolUseBlock(type="tool_use", id="toolu_1", name="f", input={})]
    )
    validate(request(HELLO, reply, RESULT), model(PREFILL_MODEL))
    with pytest.raises(HistoryError) as caught:
        validate(request(HELLO, reply, HELLO), model(PREFILL_MODEL))
    assert (caught.value.rule, caught.value.block_index) == ("tool_use_unanswered", 1)


# ----------------------------------------------------------------------------------------------------------------
# Valid requests


VALID = {
    "plain chat": (request(HELLO, REPLY, user("How are you?"), system="Be brief."), PREFILL_MODEL),
    "system as text blocks": (request(HELLO, system=[text("Be brief."), cached(text("Rules."))]), PREFILL_MODEL),
    "parallel tool calls": (
        request(
            HELLO,
            assistant([text("Checking both."), tool_use("toolu_1"), tool_use("toolu_2")]),
            user([tool_result("toolu_2"), tool_result("toolu_1", is_error=True), text("Summarise.")]),
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
            tool_choice={"type": "auto"},
            stop_sequences=["END"],
        ),
        PREFILL_MODEL,
    ),
    "thinking with signatures": (
        request(
            HELLO,
            assistant([thinking(), {"type": "redacted_thinking", "data": "opaque"}, tool_use("toolu_1")]),
            RESULT,
            assistant([thinking(thinking=""), text("It is 12°C.")]),
            user("Thanks"),
            model=NO_PREFILL_MODEL,
            max_tokens=16_000,
            thinking={"type": "enabled", "budget_tokens": 8_000},
        ),
        NO_PREFILL_MODEL,
    ),
    "system messages where supported": (
        request(
            HELLO,
            system("Answer in French from now on."),
            REPLY,
            user("Merci"),
            system([text("Be brief.")]),
            model=SYSTEM_MESSAGES_MODEL,
            thinking={"type": "adaptive"},
        ),
        SYSTEM_MESSAGES_MODEL,
    ),
    "compaction block first": (
        request(user([cached(compaction()), text("Go on.")]), REPLY, user("More"), model=SYSTEM_MESSAGES_MODEL),
        SYSTEM_MESSAGES_MODEL,
    ),
    "pause_turn resume on a model without prefill": (
        request(HELLO, assistant([text("Searching."), server_tool_use()]), model=NO_PREFILL_MODEL),
        NO_PREFILL_MODEL,
    ),
    "server tool results in a resumed turn": (
        request(
            HELLO,
            assistant(
                [server_tool_use(), {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}]
            ),
            model=NO_PREFILL_MODEL,
        ),
        NO_PREFILL_MODEL,
    ),
    "resume after pause_after_compaction on a model without prefill": (
        request(HELLO, assistant([compaction()]), model=NO_PREFILL_MODEL),
        NO_PREFILL_MODEL,
    ),
    "prefill where supported": (request(HELLO, assistant('{"answer":')), PREFILL_MODEL),
    "assistant citations and documents from the user": (
        request(user([DOCUMENT, text("Quote it.")]), assistant([text("A", citations=[{"type": "char_location"}])])),
        PREFILL_MODEL,
    ),
    "unknown keys pass through": (
        request(HELLO, metadata={"user_id": "u1"}, service_tier="auto", diagnostics={"previous_message_id": None}),
        PREFILL_MODEL,
    ),
}


@pytest.mark.parametrize(("body", "model_id"), VALID.values(), ids=list(VALID))
def test_valid_requests_pass(body: dict[str, Any], model_id: str) -> None:
    validate(body, model(model_id))


# ----------------------------------------------------------------------------------------------------------------
# is_prefill and unanswered_tool_calls


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([HELLO], False),
        ([HELLO, assistant("The answer is")], True),
        ([HELLO, assistant([thinking(), text("Partial")])], True),
        ([HELLO, CALL], False),
        ([HELLO, assistant([text("Searching."), server_tool_use()])], False),
        ([HELLO, REPLY, system("Be brief.")], False),
        ([], False),
    ],
    ids=["user last", "text prefill", "thinking then text", "awaiting tools", "pause_turn", "system last", "empty"],
)
def test_is_prefill(messages: list[dict[str, Any]], expected: bool) -> None:
    assert is_prefill(messages) is expected


def test_unanswered_tool_calls_are_those_of_the_last_assistant_message_the_next_message_lacks() -> None:
    parallel = assistant([tool_use("toolu_1"), text("and"), tool_use("toolu_2")])
    assert unanswered_tool_calls([HELLO, parallel]) == ["toolu_1", "toolu_2"]
    assert unanswered_tool_calls([HELLO, parallel, user([tool_result("toolu_2")])]) == ["toolu_1"]
    assert unanswered_tool_calls([HELLO, CALL, RESULT]) == []
    assert unanswered_tool_calls([HELLO, CALL, RESULT, REPLY]) == []
    assert unanswered_tool_calls([HELLO]) == []


# ----------------------------------------------------------------------------------------------------------------
# normalize


NORMALIZE = {
    "drops blank user and empty assistant text blocks": (
        [user([text(" "), text("Hi"), cached(text("\n"))]), assistant([text(""), text(" "), text("Yo")]), HELLO],
        [user([text("Hi")]), assistant([text(" "), text("Yo")]), HELLO],
    ),
    "drops messages left empty": (
        [HELLO, assistant(""), assistant([]), user("  ")],
        [HELLO],
    ),
    "merges same-role runs, strings becoming blocks only then": (
        [HELLO, user([text("Also")]), REPLY, assistant("More."), user("Ok")],
        [user([text("Hello"), text("Also")]), assistant([text("Hi there."), text("More.")]), user("Ok")],
    ),
    "merges what dropping an empty message brings together": (
        [HELLO, assistant(""), user("Again")],
        [user([text("Hello"), text("Again")])],
    ),
    "strips the trailing whitespace of a prefill": (
        [HELLO, assistant([text("Answer:"), text("  \n")])],
        [HELLO, assistant([text("Answer:")])],
    ),
    "strips a prefill string and drops it when nothing is left": (
        [HELLO, REPLY, user("More"), assistant("  ")],
        [HELLO, REPLY, user("More")],
    ),
    "leaves system messages alone": (
        [HELLO, system(" "), system("Twice"), REPLY],
        [HELLO, system(" "), system("Twice"), REPLY],
    ),
    "keeps orphan tool calls by default": (
        [HELLO, CALL, user("No results"), assistant("Done.")],
        [HELLO, CALL, user("No results"), assistant("Done.")],
    ),
    "never touches thinking, compaction or tool_use blocks": (
        [user([compaction(None), text("Go")]), assistant([thinking(thinking=""), tool_use("toolu_1", input={})])],
        [user([compaction(None), text("Go")]), assistant([thinking(thinking=""), tool_use("toolu_1", input={})])],
    ),
}


@pytest.mark.parametrize(("messages", "expected"), NORMALIZE.values(), ids=list(NORMALIZE))
def test_normalize(messages: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(messages)
    assert normalize(messages) == expected
    assert messages == before
    assert normalize(expected) == expected


def _closed(tool_id: str) -> dict[str, Any]:
    return tool_result(tool_id, is_error=True, content=UNANSWERED_TOOL_CALL)


ORPHANS = {
    "unanswered call, drop": (
        "drop",
        [HELLO, assistant([text("Checking."), tool_use("toolu_1")]), user("Well?")],
        [HELLO, assistant([text("Checking.")]), user("Well?")],
    ),
    "unanswered call, close": (
        "close",
        [HELLO, assistant([text("Checking."), tool_use("toolu_1")]), user("Well?")],
        [HELLO, assistant([text("Checking."), tool_use("toolu_1")]), user([_closed("toolu_1"), text("Well?")])],
    ),
    "one of two parallel calls, close answers it after the existing result": (
        "close",
        [HELLO, assistant([tool_use("toolu_1"), tool_use("toolu_2")]), user([tool_result("toolu_2"), text("ok")])],
        [
            HELLO,
            assistant([tool_use("toolu_1"), tool_use("toolu_2")]),
            user([tool_result("toolu_2"), _closed("toolu_1"), text("ok")]),
        ],
    ),
    "orphan and duplicate results are dropped": (
        "drop",
        [HELLO, CALL, user([tool_result("toolu_1"), tool_result("toolu_1"), tool_result("toolu_7")])],
        [HELLO, CALL, RESULT],
    ),
    "dropping a call that was the whole message merges the neighbours": (
        "drop",
        [HELLO, assistant([tool_use("toolu_1")]), user([tool_result("toolu_8"), text("Again")]), REPLY],
        [user([text("Hello"), text("Again")]), REPLY],
    ),
    "close creates the user message when a system message follows": (
        "close",
        [HELLO, assistant([tool_use("toolu_1")]), system("Be brief.")],
        [HELLO, assistant([tool_use("toolu_1")]), user([_closed("toolu_1")]), system("Be brief.")],
    ),
    "the final message's calls await their results": (
        "close",
        [HELLO, CALL],
        [HELLO, CALL],
    ),
    "the final message's calls are not dropped either": (
        "drop",
        [HELLO, CALL],
        [HELLO, CALL],
    ),
}


@pytest.mark.parametrize(("mode", "messages", "expected"), ORPHANS.values(), ids=list(ORPHANS))
def test_normalize_orphan_tool_calls(mode: Any, messages: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(messages)
    assert normalize(messages, orphan_tool_calls=mode) == expected
    assert messages == before
    assert normalize(expected, orphan_tool_calls=mode) == expected


def test_normalize_rejects_an_unknown_orphan_mode() -> None:
    with pytest.raises(ValueError, match="orphan_tool_calls"):
        normalize([HELLO], orphan_tool_calls="ignore")  # type: ignore[arg-type]


def test_normalize_replaces_an_sdk_block_only_where_it_edits_it() -> None:
    kept = ToolUseBlock(type="tool_use", id="toolu_1", name="f", input={})
    messages = [HELLO, assistant([TextBlock(type="text", text=""), kept, TextBlock(type="text", text="Done ")])]
    out = normalize(messages)
    assert out[1]["content"] == [kept, {"type": "text", "text": "Done"}]


def test_an_unchanged_message_keeps_its_form_and_is_not_copied() -> None:
    # A long history is normalised every turn: what needs no change is the very message, never a copy (nothing
    # changes a message in place; a change is a new object, and the input is never mutated).
    messages = [user([text("Hello")]), REPLY, user("Thanks ")]
    out = normalize(messages)
    assert out == messages
    assert out[0] is messages[0]
    assert out[1] is messages[1]


def test_a_changed_message_is_a_new_object_and_its_input_is_left_alone() -> None:
    messages = [user([text("Hello"), text("   ")]), assistant([text("Hi  ")])]
    out = normalize(messages)
    assert out[0] is not messages[0]
    assert out[0]["content"] == [text("Hello")]
    assert messages[0]["content"] == [text("Hello"), text("   ")]
    assert out[1]["content"] == [text("Hi")]
    assert messages[1]["content"] == [text("Hi  ")]


# ----------------------------------------------------------------------------------------------------------------
# Properties


def _canonical(messages: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Messages with string content spelled as one text block, for comparing content regardless of form."""
    return [
        (m["role"], [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"])
        for m in messages
    ]


def _tool_results_lead(messages: list[dict[str, Any]]) -> bool:
    for message in messages:
        types = [block["type"] for block in message["content"]] if isinstance(message["content"], list) else []
        if "tool_result" in types[types.count("tool_result") :]:
            return False
    return True


@HISTORIES
@given(histories(system_messages=True, ending="any"))
def test_generated_histories_validate(messages: list[dict[str, Any]]) -> None:
    validate(request(*messages, model=SYSTEM_MESSAGES_MODEL), model(SYSTEM_MESSAGES_MODEL), complete=False)
    if messages[-1]["role"] == "user":
        validate(request(*messages, model=SYSTEM_MESSAGES_MODEL), model(SYSTEM_MESSAGES_MODEL))
    elif not unanswered_tool_calls(messages) and all(m["role"] != "system" for m in messages):
        validate(request(*messages), model(PREFILL_MODEL))


@HISTORIES
@given(histories(system_messages=True, ending="any"), st.sampled_from(["keep", "drop", "close"]))
def test_normalize_leaves_valid_histories_unchanged(messages: list[dict[str, Any]], mode: Any) -> None:
    assert normalize(messages, orphan_tool_calls=mode) == messages


@HISTORIES
@given(messy_histories(system_messages=True))
def test_normalize_recovers_a_valid_history_from_its_messy_form(pair: tuple[list[Any], list[Any]]) -> None:
    messy, valid = pair
    before = copy.deepcopy(messy)
    out = normalize(messy)
    assert messy == before
    assert normalize(out) == out
    assert _canonical(out) == _canonical(valid)
    validate(request(*out, model=SYSTEM_MESSAGES_MODEL), model(SYSTEM_MESSAGES_MODEL), complete=False)


@FAST
@given(message_soups(), st.sampled_from(["keep", "drop", "close"]))
def test_normalize_is_idempotent_on_arbitrary_input(messages: list[dict[str, Any]], mode: Any) -> None:
    before = copy.deepcopy(messages)
    out = normalize(messages, orphan_tool_calls=mode)
    assert messages == before
    assert normalize(out, orphan_tool_calls=mode) == out
    no_orphans = normalize(out, orphan_tool_calls="drop") == out
    if out and out[0]["role"] == "user" and no_orphans and _tool_results_lead(out):
        validate(request(*out), model(PREFILL_MODEL), complete=False)
