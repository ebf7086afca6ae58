"""Model facts (SDK 2.16): one table per fact, model × request → accepted or the error, run against turnkeep's own
rules (`core.rules.validate`) and the emulator's validator alike; the catalog/emulator agreement test; and the
model-switch property test (switching between thinking models never gets a 400)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turnkeep.core.catalog import THINKING_TYPES, ModelInfo, default_catalog
from turnkeep.core.rules import (
    can_read_thinking,
    lifecycle_warning,
    strip_unreadable_thinking,
    validate,
)
from turnkeep.emulator.app import Emulator, _model_info
from turnkeep.emulator.errors import ApiError
from turnkeep.emulator.validation import validate_request
from turnkeep.errors import HistoryError, UsageError

CATALOG = default_catalog()
API = "2026-10-21"
CURRENT = [CATALOG.get(m) for m in CATALOG if CATALOG.get(m).lifecycle != "retired"]
THINKING_MODELS = [m for m in CURRENT if {"adaptive", "enabled"} & set(m.thinking)]
TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]
HELLO = {"role": "user", "content": "Hello"}
REPLY = {"role": "assistant", "content": "Hi."}


def request(model: str, *messages: Any, **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 4096, "messages": list(messages or [HELLO]), **fields}


def rules_verdict(body: Mapping[str, Any]) -> str | None:
    """None when turnkeep's rules accept `body`, else the rule name."""
    try:
        validate(body, CATALOG.get(body["model"]))
    except HistoryError as err:
        return err.rule
    except UsageError as err:
        return type(err).__name__
    return None


def emulator_verdict(body: Mapping[str, Any], betas: frozenset[str] = frozenset()) -> str | None:
    """None when the emulator accepts `body`, else its error message."""
    try:
        validate_request(body, model=CATALOG.get(body["model"]), api_version=API, betas=betas)
    except ApiError as err:
        return err.message
    return None


def both(body: dict[str, Any], accepted: bool, rule: str | None = None, betas: tuple[str, ...] = ()) -> None:
    """The rules and the emulator give the same verdict, and it is the expected one."""
    if betas:
        body = {**body, "betas": list(betas)}
    verdict = rules_verdict(body)
    api_body = {k: v for k, v in body.items() if k != "betas"}
    api_verdict = emulator_verdict(api_body, frozenset(betas))
    if accepted:
        assert verdict is None, verdict
        assert api_verdict is None, api_verdict
    else:
        assert verdict == rule, verdict
        assert api_verdict is not None


# --------------------------------------------------------------------------------------------------------------
# Thinking types per model, exactly

THINKING_TABLE: dict[str, set[str]] = {
    # Sonnet 5.5: adaptive and between_tools only; `disabled` is a 400 (whats-new-sonnet-5-5, migration guide).
    "claude-sonnet-5-5": {"adaptive", "between_tools"},
    # Fable, Mythos and Opus 5.5 reject both `disabled` and `between_tools`.
    "claude-opus-5-5": {"adaptive"},
    "claude-fable-5-2": {"adaptive"},
    "claude-mythos-5-2": {"adaptive"},
    "claude-fable-5-1": {"adaptive"},
    "claude-mythos-5-1": {"adaptive"},
    "claude-fable-5": {"adaptive"},
    "claude-mythos-5": {"adaptive"},
    "claude-mythos-preview": {"adaptive"},
    "claude-opus-5": {"adaptive", "disabled"},
    "claude-sonnet-5": {"adaptive", "disabled"},
    "claude-haiku-5-5": {"adaptive", "disabled"},
    "claude-opus-4-8": {"adaptive", "enabled", "disabled"},
    "claude-sonnet-4-6": {"adaptive", "enabled", "disabled"},
    "claude-haiku-4-5": {"enabled", "disabled"},
    "claude-opus-4-5": {"enabled", "disabled"},
}


def _thinking(kind: str) -> dict[str, Any]:
    return {"type": kind, "budget_tokens": 2048} if kind == "enabled" else {"type": kind}


@pytest.mark.parametrize("model", sorted(THINKING_TABLE))
@pytest.mark.parametrize("kind", THINKING_TYPES)
def test_each_model_accepts_exactly_its_thinking_types(model: str, kind: str) -> None:
    both(
        request(model, thinking=_thinking(kind)),
        kind in THINKING_TABLE[model],
        "thinking_type_unsupported",
    )


@pytest.mark.parametrize("model", [m.id for m in CURRENT])
def test_leaving_thinking_out_is_accepted_on_every_model(model: str) -> None:
    both(request(model), accepted=True)


# --------------------------------------------------------------------------------------------------------------
# Forced tool_choice

FORCED_REJECTED = {"claude-fable-5-1", "claude-mythos-5-1", "claude-opus-5-5", "claude-sonnet-5-5"}


@pytest.mark.parametrize("model", [m.id for m in CURRENT])
@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_weather"}])
def test_a_forced_tool_choice_is_rejected_by_fable_5_1_mythos_5_1_opus_5_5_and_sonnet_5_5(
    model: str, choice: dict[str, Any]
) -> None:
    both(
        request(model, tools=TOOLS, tool_choice=choice),
        model not in FORCED_REJECTED,
        "tool_choice_forced_unsupported",
    )


@pytest.mark.parametrize("model", [m.id for m in CURRENT])
def test_auto_and_none_tool_choice_are_accepted_everywhere(model: str) -> None:
    both(request(model, tools=TOOLS, tool_choice={"type": "auto"}), accepted=True)
    both(request(model, tools=TOOLS, tool_choice={"type": "none"}), accepted=True)


@pytest.mark.parametrize(
    ("fields", "rule"),
    [
        ({"tool_choice": {"type": "any"}}, "tool_choice_without_tools"),
        ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "search"}}, "tool_choice_unknown_tool"),
        ({"tools": TOOLS, "tool_choice": {"type": "required"}}, "tool_choice_invalid"),
    ],
)
def test_a_tool_choice_must_fit_the_tools(fields: dict[str, Any], rule: str) -> None:
    both(request("claude-opus-5", **fields), accepted=False, rule=rule)


def test_a_thread_continue_forces_a_tool_fixed_at_create() -> None:
    # A continue carries no `tools` (they were fixed when the thread was created): its tool_choice is not checked
    # against them here, the server holds them.
    continue_ = request(
        "claude-opus-5",
        {"role": "user", "content": "Again."},
        tool_choice={"type": "tool", "name": "get_weather"},
        thread={"type": "continue", "previous_message_id": "msg_1"},
    )
    assert rules_verdict(continue_) is None


# --------------------------------------------------------------------------------------------------------------
# Mid-conversation system messages

SYSTEM_MESSAGE_TABLE = {
    "claude-sonnet-5-5": True,
    "claude-haiku-5-5": True,
    "claude-opus-5-5": True,
    "claude-fable-5-2": True,
    "claude-opus-4-8": True,
    "claude-opus-5": True,
    "claude-sonnet-5": False,  # accepted and ignored by the API: refused so it is never silently lost
    "claude-sonnet-4-6": False,
    "claude-haiku-4-5": False,
}


def _system(content: Any = "Answer in French.", **fields: Any) -> dict[str, Any]:
    return {"role": "system", "content": content, **fields}


@pytest.mark.parametrize(("model", "supported"), sorted(SYSTEM_MESSAGE_TABLE.items()))
def test_system_messages_are_accepted_where_the_model_supports_them(model: str, supported: bool) -> None:
    both(request(model, HELLO, _system(), REPLY, HELLO), supported, "system_message_unsupported")


TOOL_CHANGES = "mid-conversation-tool-changes-2026-07-01"
OUTPUT_CONFIG = "mid-conversation-output-config-2026-07-01"
CLEAR_AT = "mid-conversation-system-clear-at-2026-08-21"
ADD_TOOL = {"type": "tool_addition", "tool": {"type": "tool_reference", "name": "get_weather"}}
REMOVE_TOOL = {"type": "tool_removal", "tool": {"type": "tool_reference", "name": "get_weather"}}


@pytest.mark.parametrize(
    ("message", "betas", "accepted", "rule"),
    [
        (_system(clear_at="next_user_message"), (CLEAR_AT,), True, None),
        (_system(clear_at="next_user_message"), (), False, "system_message_beta_required"),
        (_system(clear_at="later"), (CLEAR_AT,), False, "system_message_field_invalid"),
        (_system(output_config={"effort": "low"}), (OUTPUT_CONFIG,), True, None),
        ({"role": "system", "output_config": {"effort": "max"}}, (OUTPUT_CONFIG,), True, None),
        (_system(output_config={"effort": "low"}), (), False, "system_message_beta_required"),
        (_system(output_config={"effort": "huge"}), (OUTPUT_CONFIG,), False, "system_message_field_invalid"),
        (_system(output_config={"format": {}}), (OUTPUT_CONFIG,), False, "system_message_field_invalid"),
        (_system([ADD_TOOL]), (TOOL_CHANGES,), True, None),
        (_system([{"type": "text", "text": "Use the tool."}, REMOVE_TOOL]), (TOOL_CHANGES,), True, None),
        (_system([ADD_TOOL]), (), False, "system_message_beta_required"),
        (
            _system([{"type": "tool_removal", "tool": {"type": "tool_definition"}}]),
            (TOOL_CHANGES,),
            False,
            "block_invalid",
        ),
        (_system([{"type": "image", "source": {}}]), (TOOL_CHANGES,), False, "system_message_not_text"),
    ],
)
def test_the_richer_system_messages_the_sdk_types_are_accepted_behind_their_betas(
    message: dict[str, Any], betas: tuple[str, ...], accepted: bool, rule: str | None
) -> None:
    body = request("claude-sonnet-5-5", HELLO, message, REPLY, HELLO, tools=TOOLS)
    both(body, accepted, rule, betas=betas)


# --------------------------------------------------------------------------------------------------------------
# Lifecycle


def test_a_retired_model_is_refused_before_sending_naming_its_replacement() -> None:
    with pytest.raises(HistoryError, match="claude-sonnet-5-5") as caught:
        validate(request("claude-sonnet-4-5"), CATALOG.get("claude-sonnet-4-5"))
    assert caught.value.rule == "model_retired"
    with pytest.raises(ApiError) as answered:
        Emulator(clock="virtual").model_for(request("claude-sonnet-4-5"))
    assert answered.value.status == 404


@pytest.mark.parametrize("model", ["claude-opus-4-5", "claude-opus-4-5-20251101"])
def test_opus_4_5_is_deprecated_retires_2027_01_22_and_names_opus_5_5(model: str) -> None:
    info = CATALOG.get(model)
    assert (info.lifecycle, info.deprecated_at, info.retires_at, info.replacement) == (
        "deprecated",
        "2026-11-23",
        "2027-01-22",
        "claude-opus-5-5",
    )
    assert lifecycle_warning(info) == (
        "model 'claude-opus-4-5' is deprecated (end of life: 2027-01-22); move to 'claude-opus-5-5'"
    )
    both(request(model), accepted=True)


def test_the_catalog_deprecations_match_the_sdk_deprecated_models_table() -> None:
    from anthropic._data import DEPRECATED_MODELS  # the SDK's own table (2.16: `_data/deprecated_models.py`)

    for model_id in DEPRECATED_MODELS:
        assert CATALOG.get(model_id).lifecycle == "deprecated", model_id
    deprecated = {m for m in CATALOG.ids() if CATALOG.get(m).lifecycle == "deprecated"}
    assert deprecated == set(DEPRECATED_MODELS)


def test_models_report_their_release_dates_where_a_source_gives_one() -> None:
    assert _model_info(CATALOG.get("claude-sonnet-5"))["created_at"] == "2026-06-30T00:00:00Z"
    assert _model_info(CATALOG.get("claude-haiku-4-5"))["created_at"] == "2025-10-01T00:00:00Z"


def test_a_deprecated_model_warns_once_per_conversation() -> None:
    from turnkeep import Conversation

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        conversation = Conversation(model="claude-opus-4-5")
        conversation.set_model("claude-opus-4-5")
    notices = [str(w.message) for w in caught if "deprecated" in str(w.message)]
    assert notices == ["model 'claude-opus-4-5' is deprecated (end of life: 2027-01-22); move to 'claude-opus-5-5'"]


# --------------------------------------------------------------------------------------------------------------
# Which thinking a model can read

READABLE = [
    ("claude-sonnet-5-5", "claude-sonnet-5-5", True),
    ("claude-sonnet-5-5", "claude-opus-5-5", False),
    ("claude-sonnet-5-5", "claude-sonnet-4-6", False),
    ("claude-fable-5-2", "claude-mythos-5-2", True),
    ("claude-mythos-5-2", "claude-fable-5-2", True),
    ("claude-fable-5-2", "claude-fable-5-1", False),
    ("claude-opus-4-8", "claude-sonnet-4-6", True),  # neither binds its thinking
    ("claude-opus-4-8", "claude-opus-5-5", False),  # no prefix record for a binding reader
]


@pytest.mark.parametrize(("writer", "reader", "readable"), READABLE)
def test_thinking_is_readable_only_by_the_models_that_can_read_it(writer: str, reader: str, readable: bool) -> None:
    assert can_read_thinking(CATALOG.get(reader), CATALOG.get(writer)) is readable


# --------------------------------------------------------------------------------------------------------------
# One source of facts: the catalog and the emulator agree

NOT_BEHAVIOURAL = {
    "id",
    "display_name",
    "min_cache_tokens",  # the emulator's cache reads it (tests/emulator/test_cache.py)
    "tokenizer",
    "prices",
    "long_context",
    "batch_discount",
    "prices_note",
    "aliases",
    "known",
    "thinking_binding",  # the emulator's signatures read it (tests/emulator/test_signatures.py)
    "thinking_readers",
    "released",
}
PROBED = {
    "context_window",
    "max_output",
    "prefill",
    "system_messages",
    "compaction",
    "context_editing",
    "threads",
    "thinking",
    "forced_tool_choice",
    "lifecycle",
    "retires_at",
    "deprecated_at",
    "replacement",
}


def test_every_model_fact_is_either_probed_below_or_read_by_the_emulator_directly() -> None:
    fields = {f.name for f in dataclasses.fields(ModelInfo)}
    assert fields == NOT_BEHAVIOURAL | PROBED, "a new ModelInfo field needs a probe in the agreement test"


def _probes(model: ModelInfo) -> list[tuple[str, dict[str, Any]]]:
    m = model.id
    probes = [
        ("max_tokens = max_output", request(m, max_tokens=model.max_output)),
        ("max_tokens above max_output", request(m, max_tokens=model.max_output + 1)),
        ("prefill", request(m, HELLO, {"role": "assistant", "content": "Sure"})),
        ("system message", request(m, HELLO, _system(), REPLY, HELLO)),
        ("forced any", request(m, tools=TOOLS, tool_choice={"type": "any"})),
        ("forced tool", request(m, tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"})),
    ]
    probes += [(f"thinking {kind}", request(m, thinking=_thinking(kind))) for kind in THINKING_TYPES]
    return probes


@pytest.mark.parametrize("model", CURRENT, ids=[m.id for m in CURRENT])
def test_rules_and_emulator_agree_on_every_request_probe(model: ModelInfo) -> None:
    for name, body in _probes(model):
        rules_ok = rules_verdict(body) is None
        emulator_ok = emulator_verdict(body) is None
        assert rules_ok == emulator_ok, (
            f"{model.id}: {name}: rules {rules_verdict(body)!r}, emulator {emulator_verdict(body)!r}"
        )


@pytest.mark.parametrize("model", CURRENT, ids=[m.id for m in CURRENT])
def test_the_emulator_serves_and_enforces_what_the_catalog_says(model: ModelInfo) -> None:
    served = _model_info(model)
    capabilities = served["capabilities"]
    assert served["max_input_tokens"] == model.context_window
    assert served["max_tokens"] == model.max_output
    assert served["lifecycle"] == model.lifecycle
    assert served["created_at"][:10] == (model.released or "1970-01-01")
    assert (served["retires_at"] or "")[:10] == (model.retires_at or "")
    assert (served["deprecated_at"] or "")[:10] == (model.deprecated_at or "")
    types = capabilities["thinking"]["types"]
    assert {kind for kind in THINKING_TYPES if types[kind]["supported"]} == set(model.thinking)
    management = capabilities["context_management"]
    assert management["compact_20260112"]["supported"] is model.compaction
    assert management["clear_tool_uses_20250919"]["supported"] is model.context_editing
    # The catalog refreshed from what the emulator serves is the catalog: the round trip loses no fact.
    refreshed = CATALOG.refreshed([served]).get(model.id)
    assert refreshed == model
    # Threads run exactly where the catalog has them.
    emulator = Emulator(clock="virtual")
    body = request(model.id, thread={"type": "create"})
    outcome: str | None = None
    try:
        emulator.create_message(
            "key", body, api_version=API, betas=frozenset({"message-threads-2026-08-12"}), mode="echo"
        )
    except ApiError as err:
        outcome = err.error_code
    assert (outcome is None) == model.threads, outcome


# --------------------------------------------------------------------------------------------------------------
# Switching models with thinking in the history never 400s


def _thinking_for(model: ModelInfo) -> dict[str, Any]:
    return {"type": "adaptive"} if "adaptive" in model.thinking else {"type": "enabled", "budget_tokens": 1024}


def _converse(models: list[ModelInfo]) -> None:
    """One turn on each model in turn, the way a conversation switches: the history keeps each reply's writer,
    and before each send the thinking the current model cannot read is stripped."""
    emulator = Emulator(clock="virtual")
    history: list[dict[str, Any]] = []
    writers: list[str | None] = []
    for turn, model in enumerate(models):
        history.append({"role": "user", "content": f"Question {turn}?"})
        writers.append(None)
        sent = strip_unreadable_thinking(history, writers, model, CATALOG.get)
        body = {"model": model.id, "max_tokens": 4096, "messages": sent, "thinking": _thinking_for(model)}
        validate(body, model)  # turnkeep's own rules accept it ...
        reply = emulator.create_message("key", body, api_version=API, betas=frozenset(), mode="echo")  # ... and the API
        assert any(block["type"] == "thinking" for block in reply["content"])
        history.append({"role": "assistant", "content": reply["content"]})
        writers.append(model.id)


@pytest.mark.parametrize("first", THINKING_MODELS, ids=[m.id for m in THINKING_MODELS])
def test_switching_between_every_pair_of_thinking_models_never_400s(first: ModelInfo) -> None:
    for second in THINKING_MODELS:
        _converse([first, second, first])


@given(st.lists(st.sampled_from(THINKING_MODELS), min_size=2, max_size=6))
@settings(max_examples=40, deadline=None)
def test_any_sequence_of_model_switches_never_400s(models: list[ModelInfo]) -> None:
    _converse(models)


def test_without_stripping_the_switch_is_the_400_the_api_gives() -> None:
    sonnet, opus = CATALOG.get("claude-sonnet-5-5"), CATALOG.get("claude-opus-5-5")
    emulator = Emulator(clock="virtual")
    first = {"model": sonnet.id, "max_tokens": 4096, "messages": [HELLO], "thinking": {"type": "adaptive"}}
    reply = emulator.create_message("key", first, api_version=API, betas=frozenset(), mode="echo")
    history = [HELLO, {"role": "assistant", "content": reply["content"]}, {"role": "user", "content": "More?"}]
    switched = {"model": opus.id, "max_tokens": 4096, "messages": history, "thinking": {"type": "adaptive"}}
    with pytest.raises(ApiError, match="cannot read"):
        emulator.create_message("key", switched, api_version=API, betas=frozenset(), mode="echo")
    dropped = {
        **switched,
        "thinking": {"type": "adaptive", "block_binding": {"prefix_mismatch_behavior": "drop_block"}},
    }
    emulator.create_message(
        "key", dropped, api_version=API, betas=frozenset({"thinking-binding-controls-2026-08-01"}), mode="echo"
    )
