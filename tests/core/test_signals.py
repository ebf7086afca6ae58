"""What replies and errors tell the client to do next: refusal fallbacks, threads a server ignored, errors that say
what to fix, thinking updates in a stream."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types.beta import BetaRefusalStopDetails

from turnkeep.core.signals import (
    FALLBACK_CREDIT_BETA,
    RefusalFallback,
    error_hint,
    fallback_retry,
    refusal_fallback,
    thinking_update_text,
    thread_history_ignored,
)

REQUEST = {"model": "claude-fable-5-2", "max_tokens": 1024, "messages": [{"role": "user", "content": "Explain."}]}


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (None, None),
        ({"type": "something_else"}, None),
        (
            {"type": "refusal", "category": "cyber", "explanation": "Could enable harm."},
            RefusalFallback("cyber", "Could enable harm.", None, None, False),
        ),
        (
            {
                "type": "refusal",
                "category": None,
                "fallback_credit_token": "fct_1",
                "recommended_model": "claude-opus-5-5",
                "fallback_has_prefill_claim": True,
            },
            RefusalFallback(None, None, "fct_1", "claude-opus-5-5", True),
        ),
        # A prefill claim means nothing without a token.
        ({"type": "refusal", "fallback_has_prefill_claim": True}, RefusalFallback(None, None, None, None, False)),
    ],
)
def test_refusal_stop_details_are_read_into_a_typed_value(details: Any, expected: RefusalFallback | None) -> None:
    assert refusal_fallback(details) == expected


def test_the_sdk_beta_model_reads_the_same() -> None:
    details = BetaRefusalStopDetails(type="refusal", fallback_credit_token="fct_1", recommended_model="claude-opus-5-5")
    assert refusal_fallback(details) == RefusalFallback(None, None, "fct_1", "claude-opus-5-5", False)


def test_no_recommended_model_means_no_retry() -> None:
    assert fallback_retry(REQUEST, RefusalFallback("bio", None, "fct_1", None, False)) is None


def test_the_retry_goes_to_the_recommended_model_with_the_credit() -> None:
    retry = fallback_retry(REQUEST, RefusalFallback("bio", None, "fct_1", "claude-opus-5-5", False))
    assert retry == {
        **REQUEST,
        "model": "claude-opus-5-5",
        "fallback_credit_token": "fct_1",
        "betas": [FALLBACK_CREDIT_BETA],
    }


def test_a_prefill_claim_continues_the_partial_reply_without_unpaired_calls_or_trailing_space() -> None:
    partial = [
        {"type": "text", "text": "Here is the start "},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]
    retry = fallback_retry(REQUEST, RefusalFallback(None, None, "fct_1", "claude-opus-5-5", True), partial)
    assert retry is not None
    assert retry["messages"][-1] == {"role": "assistant", "content": [{"type": "text", "text": "Here is the start"}]}
    assert retry["messages"][:-1] == REQUEST["messages"]


def test_without_a_token_the_retry_is_the_same_request_on_the_recommended_model() -> None:
    retry = fallback_retry(REQUEST, RefusalFallback(None, None, None, "claude-opus-5-5", False))
    assert retry == {**REQUEST, "model": "claude-opus-5-5"}


@pytest.mark.parametrize(
    ("anchored", "usage", "ignored"),
    [
        (10_000, {"input_tokens": 40, "cache_read_input_tokens": 10_000}, False),  # history applied, cached
        (10_000, {"input_tokens": 10_060}, False),  # history applied, uncached
        (10_000, {"input_tokens": 60}, True),  # only the new message was read
        (10_000, {"input_tokens": 4_000, "cache_creation_input_tokens": 900}, True),
        (40, {"input_tokens": 12}, False),  # too short to tell
    ],
)
def test_a_continue_answered_without_its_history_is_detected(
    anchored: int, usage: dict[str, int], ignored: bool
) -> None:
    assert thread_history_ignored(anchored, usage) is ignored


@pytest.mark.parametrize(
    ("body", "hint"),
    [
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "image too large",
                    "details": {
                        "error_code": "image_dimensions_too_large",
                        "paths": ["messages.0.content.1", "messages.2.content.0.content.0"],
                        "max_side_length_pixels": 8000,
                    },
                },
            },
            "scale the image(s) at messages.0.content.1, messages.2.content.0.content.0 so that neither side "
            "exceeds 8000 pixels, or remove them",
        ),
        (
            {"error": {"type": "invalid_request_error", "details": {"error_code": "request_body_timeout"}}},
            "the request body did not arrive in time: send a smaller request or use a faster connection",
        ),
        ({"error": {"type": "invalid_request_error", "message": "bad"}}, None),
        ("not json", None),
    ],
)
def test_errors_whose_details_say_what_to_fix_get_a_hint(body: Any, hint: str | None) -> None:
    assert error_hint(body) == hint


UPDATES = {"thinking": {"type": "adaptive", "display": "updates"}}
DELTA = {"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "Checking."}}


@pytest.mark.parametrize(
    ("request_fields", "event", "text"),
    [
        (UPDATES, DELTA, "Checking."),
        ({"thinking": {"type": "adaptive"}}, DELTA, None),  # summarized thinking is not an update to show
        (UPDATES, {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}, None),
        (UPDATES, {"type": "message_stop"}, None),
    ],
)
def test_thinking_updates_are_recognised_only_when_asked_for(
    request_fields: dict[str, Any], event: dict[str, Any], text: str | None
) -> None:
    assert thinking_update_text({**REQUEST, **request_fields}, event) == text
