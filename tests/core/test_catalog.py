"""The catalog: every model the SDK names, exact prices, overrides, refresh, and unknown models."""

from __future__ import annotations

import typing
from decimal import Decimal
from typing import Any

import pytest
from anthropic.types import Model

from turnkeep.core.catalog import default_catalog, parse_catalog
from turnkeep.errors import ConfigError


def _sdk_model_ids() -> list[str]:
    literal = next(arg for arg in typing.get_args(Model) if typing.get_origin(arg) is typing.Literal)
    return list(typing.get_args(literal))


def test_every_model_the_sdk_lists_is_in_the_catalog() -> None:
    catalog = default_catalog()
    missing = [model for model in _sdk_model_ids() if model not in catalog]
    assert missing == [], f"add these models to turnkeep/data/models.toml: {missing}"


def test_dated_ids_and_twins_resolve_to_the_same_facts() -> None:
    catalog = default_catalog()
    assert catalog.get("claude-haiku-4-5-20251001") == catalog.get("claude-haiku-4-5")
    mythos, fable = catalog.get("claude-mythos-5-2"), catalog.get("claude-fable-5-2")
    assert mythos.id == "claude-mythos-5-2"
    assert (mythos.prices, mythos.context_window, mythos.thinking_binding) == (
        fable.prices,
        fable.context_window,
        fable.thinking_binding,
    )


@pytest.mark.parametrize(
    ("model", "prefill"),
    [
        ("claude-sonnet-4-5", True),
        ("claude-haiku-4-5", True),
        ("claude-opus-4-5", True),
        ("claude-sonnet-4-6", False),
        ("claude-opus-4-6", False),
        ("claude-haiku-5-5", False),
        ("claude-opus-5", False),
    ],
)
def test_prefill_is_accepted_only_before_the_4_6_generation(model: str, prefill: bool) -> None:
    assert default_catalog().get(model).prefill is prefill


@pytest.mark.parametrize(
    ("model", "read"),
    [
        ("claude-sonnet-4-6", "0.30"),
        ("claude-opus-5-5", "0.20"),
        ("claude-sonnet-5-5", "0.10"),
        ("claude-fable-5-1", "0.25"),
        ("claude-fable-5", "1.00"),
    ],
)
def test_cache_read_price_is_per_model(model: str, read: str) -> None:
    assert default_catalog().get(model).prices.cache_read == Decimal(read)


def test_haiku_5_5_long_context_band_applies_above_100k_input_tokens() -> None:
    haiku = default_catalog().get("claude-haiku-5-5")
    assert haiku.prices_for(100_000).input == Decimal("0.10")
    assert haiku.prices_for(100_001).input == Decimal("0.50")


def test_unknown_model_gets_conservative_defaults_not_an_error() -> None:
    info = default_catalog().get("claude-future-9")
    assert info.known is False
    assert info.id == "claude-future-9"
    assert info.prefill is False
    assert info.thinking_binding is True


def test_user_file_overrides_field_by_field_and_adds_models() -> None:
    catalog = default_catalog().merged(
        """
        [models.claude-sonnet-4-6]
        context_window = 500000
        [models.my-proxy-model]
        same_as = "claude-haiku-4-5"
        """
    )
    sonnet = catalog.get("claude-sonnet-4-6")
    assert sonnet.context_window == 500_000
    assert sonnet.prices.input == Decimal("3")
    assert catalog.get("my-proxy-model").prefill is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x\n", "not valid TOML"),
        ("[model]\n", "unknown section"),
        ('[models.claude-opus-5]\nprefill = "yes"\n', "prefill must be true or false"),
        ("[models.claude-opus-5]\nwindow = 5\n", "unknown field(s) ['window']"),
        ("[models.claude-opus-5]\nprices = { input = 1 }\n", "prices lacks"),
        ('[models.x]\nsame_as = "nope"\n', "same_as names unknown model 'nope'"),
        ('[models.claude-opus-5]\nlifecycle = "sunset"\n', "lifecycle must be one of active, deprecated, retired"),
        ('[models.claude-opus-5]\nthinking = ["adaptive", "always"]\n', "thinking has unknown type(s) ['always']"),
        ('[models.claude-opus-5]\nretires_at = "soon"\n', "retires_at must be a date written YYYY-MM-DD"),
        ('[models.claude-opus-5]\nthinking_readers = ["claude-opus-5"]\n', "only to a model with thinking_binding"),
        ('[models.claude-opus-5]\nforced_tool_choice = "no"\n', "forced_tool_choice must be true or false"),
    ],
)
def test_bad_override_files_name_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"my\.toml") as info:
        default_catalog().merged(text, source="my.toml")
    assert message in str(info.value)


def test_refresh_takes_limits_and_capabilities_from_the_models_endpoint() -> None:
    catalog = default_catalog().refreshed(
        [
            {
                "id": "claude-sonnet-4-6",
                "max_input_tokens": 750_000,
                "max_tokens": 64_000,
                "lifecycle": "deprecated",
                "capabilities": {"context_management": {"supported": True, "compact_20260112": {"supported": False}}},
            },
            {
                "id": "claude-new-1",
                "display_name": "Claude New",
                "max_input_tokens": 300_000,
                "max_tokens": 8_000,
            },
        ]
    )
    sonnet = catalog.get("claude-sonnet-4-6")
    assert (sonnet.context_window, sonnet.max_output, sonnet.lifecycle, sonnet.compaction) == (
        750_000,
        64_000,
        "deprecated",
        False,
    )
    assert sonnet.prices.output == Decimal("15")
    new = catalog.get("claude-new-1")
    assert new.known
    assert (new.context_window, new.display_name) == (300_000, "Claude New")


def test_refresh_keeps_all_four_thinking_types_the_models_endpoint_reports() -> None:
    def types(**supported: bool) -> dict[str, Any]:
        return {"thinking": {"supported": True, "types": {k: {"supported": v} for k, v in supported.items()}}}

    catalog = default_catalog().refreshed(
        [
            {
                "id": "claude-sonnet-5-5",
                "capabilities": types(adaptive=True, enabled=False, disabled=False, between_tools=True),
            },
            {
                "id": "claude-opus-4-8",
                "capabilities": types(adaptive=True, enabled=True, disabled=True, between_tools=False),
            },
        ]
    )
    assert catalog.get("claude-sonnet-5-5").thinking == ("adaptive", "between_tools")
    assert catalog.get("claude-opus-4-8").thinking == ("adaptive", "enabled", "disabled")


def test_refresh_takes_the_lifecycle_dates() -> None:
    catalog = default_catalog().refreshed(
        [
            {
                "id": "claude-opus-4-6",
                "lifecycle": "deprecated",
                "deprecated_at": "2027-01-05T00:00:00Z",
                "retires_at": "2027-04-01T00:00:00Z",
            }
        ]
    )
    info = catalog.get("claude-opus-4-6")
    assert (info.lifecycle, info.deprecated_at, info.retires_at) == ("deprecated", "2027-01-05", "2027-04-01")


def test_a_twin_keeps_what_it_inherits_when_refreshed() -> None:
    refreshed = (
        default_catalog().refreshed([{"id": "claude-mythos-5-2", "max_tokens": 64_000}]).get("claude-mythos-5-2")
    )
    fable = default_catalog().get("claude-fable-5-2")
    assert refreshed.max_output == 64_000
    assert (refreshed.prices, refreshed.system_messages, refreshed.thinking_readers) == (
        fable.prices,
        fable.system_messages,
        fable.thinking_readers,
    )


def test_parse_catalog_alone_builds_a_table() -> None:
    catalog = parse_catalog(
        """
        [defaults]
        context_window = 1000
        max_output = 100
        min_cache_tokens = 10
        prefill = false
        system_messages = false
        thinking_binding = false
        tokenizer = 1
        compaction = false
        context_editing = false
        threads = false
        prices = { input = 1, output = 2, cache_write_5m = 1.25, cache_write_1h = 2, cache_read = 0.1 }
        [models.tiny]
        prefill = true
        """
    )
    assert list(catalog) == ["tiny"]
    assert catalog.get("tiny").prefill is True
    assert catalog.get("tiny").prices.cache_read == Decimal("0.1")
