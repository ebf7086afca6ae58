"""What a reply or an error tells the client to do next (SDK 2.16), read into typed values. Pure.

- `refusal_fallback`: a refusal's `stop_details` (`fallback_credit_token`, `recommended_model`,
  `fallback_has_prefill_claim`), and `fallback_retry` builds the one retry the API invites on the recommended
  model, with the credit and, where the refusal allows it, the partial reply as a prefill.
- `thread_history_ignored`: a thread `continue` whose input tokens are too few to hold the history it extends (a
  server that ignored `thread` and answered only the new messages).
- `error_hint`: what to fix for the errors whose details say it (`image_dimensions_too_large`,
  `request_body_timeout`).
- `thinking_update_text`: the text of a stream delta a model wrote between tool calls, sent as thinking under
  `thinking.display: "updates"` (Sonnet 5.5 turns look silent without it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from turnkeep.core.messages import block_view

__all__ = [
    "FALLBACK_CREDIT_BETA",
    "THINKING_DISPLAY_UPDATES_BETA",
    "RefusalFallback",
    "asks_thinking_updates",
    "error_hint",
    "fallback_retry",
    "refusal_fallback",
    "thinking_update_text",
    "thread_history_ignored",
]

FALLBACK_CREDIT_BETA = "fallback-credit-2026-07-01"
THINKING_DISPLAY_UPDATES_BETA = "thinking-display-updates-2026-08-18"


def _as_mapping(value: object) -> Mapping[str, Any] | None:
    """A JSON object, or an SDK model read through its dump (extra fields the installed types lack included)."""
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        dumped = dump()
        return dumped if isinstance(dumped, Mapping) else None
    return None


@dataclass(frozen=True, slots=True)
class RefusalFallback:
    """A refusal's `stop_details` (beta `BetaRefusalStopDetails`)."""

    category: str | None
    explanation: str | None
    fallback_credit_token: str | None
    recommended_model: str | None
    fallback_has_prefill_claim: bool

    @property
    def retryable(self) -> bool:
        """The API names a model to retry on (the server's own fallback could not run)."""
        return self.recommended_model is not None


def refusal_fallback(stop_details: object) -> RefusalFallback | None:
    """The refusal details of a reply's `stop_details` (a dict or SDK model), or None when it is not a refusal."""
    details = _as_mapping(stop_details)
    if details is None or details.get("type") != "refusal":
        return None

    def text(name: str) -> str | None:
        value = details.get(name)
        return value if isinstance(value, str) and value else None

    token = text("fallback_credit_token")
    return RefusalFallback(
        category=text("category"),
        explanation=text("explanation"),
        fallback_credit_token=token,
        recommended_model=text("recommended_model"),
        # Only meaningful beside a token (the field's own documentation).
        fallback_has_prefill_claim=token is not None and details.get("fallback_has_prefill_claim") is True,
    )


def fallback_retry(
    request: Mapping[str, Any],
    refusal: RefusalFallback,
    partial: Sequence[Any] = (),
    *,
    mode: Literal["strict", "best_effort"] | None = None,
) -> dict[str, Any] | None:
    """The retry of a refused `request` on the recommended model (None when the refusal names none).

    With a credit token, the retry carries it (and the `fallback-credit` beta); when the refusal grants a prefill
    claim and there is partial content, the partial reply is appended as an assistant message (trailing whitespace
    stripped from its final text, unpaired `tool_use` blocks omitted), the form the token documents. Thinking
    settings stay as they are; the caller checks them against the new model's facts like any request."""
    if refusal.recommended_model is None:
        return None
    retry = {**request, "model": refusal.recommended_model}
    if refusal.fallback_credit_token is None:
        return retry
    token = refusal.fallback_credit_token
    # The bare token is `strict` (a failing redemption is a 400); `best_effort` serves the retry at the normal price.
    retry["fallback_credit_token"] = token if mode is None else {"token": token, "mode": mode}
    betas = list(request.get("betas") or [])
    if FALLBACK_CREDIT_BETA not in betas:
        betas.append(FALLBACK_CREDIT_BETA)
    retry["betas"] = betas
    if refusal.fallback_has_prefill_claim:
        content = _continuable(partial)
        if content:
            retry["messages"] = [*request["messages"], {"role": "assistant", "content": content}]
    return retry


def _continuable(partial: Sequence[Any]) -> list[dict[str, Any]]:
    blocks = [dict(view) for block in partial if (view := block_view(block)) is not None]
    blocks = [block for block in blocks if block.get("type") != "tool_use"]
    while blocks and blocks[-1].get("type") == "text":
        stripped = str(blocks[-1].get("text", "")).rstrip()
        if stripped:
            blocks[-1] = {**blocks[-1], "text": stripped}
            break
        blocks.pop()
    return blocks


def thread_history_ignored(anchored_tokens: int, usage: Mapping[str, Any]) -> bool:
    """Whether a thread `continue` was answered as if the history it extends were absent.

    `anchored_tokens` is the size, as input, of the request and reply the continue extends (`Anchor.tokens`);
    `usage` is the continue's reply usage. A continue's prompt holds all of that plus the new messages, so a total
    input below half of it means the server did not apply the history. Half, not all: the reply's size as input
    is an estimate. A very short history cannot be told from its absence and is never reported."""
    total = sum(
        int(usage.get(name) or 0) for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return anchored_tokens >= 64 and total * 2 < anchored_tokens


def error_hint(body: object) -> str | None:
    """What to fix, for an API error body whose `error.details` says it; None for other errors."""
    error = _as_mapping(body)
    if error is not None and isinstance(error.get("error"), Mapping):
        error = error["error"]
    details = _as_mapping(error.get("details")) if error is not None else None
    if details is None:
        return None
    code = details.get("error_code")
    if code == "image_dimensions_too_large":
        paths = [str(p) for p in details.get("paths") or []]
        limit = details.get("max_side_length_pixels")
        where = ", ".join(paths) if paths else "the request"
        size = f"{limit} pixels" if isinstance(limit, int) else "the limit"
        return f"scale the image(s) at {where} so that neither side exceeds {size}, or remove them"
    if code == "request_body_timeout":
        return "the request body did not arrive in time: send a smaller request or use a faster connection"
    return None


def asks_thinking_updates(request: Mapping[str, Any]) -> bool:
    """Whether `request` asks for `thinking.display: "updates"` (what the model writes between tool calls then
    arrives as thinking)."""
    thinking = _as_mapping(request.get("thinking"))
    return thinking is not None and thinking.get("display") == "updates"


def thinking_update_text(request: Mapping[str, Any], event: object) -> str | None:
    """The text of a stream event that is an update the model wrote between tool calls, sent as thinking because
    `request` asked for `thinking.display: "updates"`; None for any other event or display."""
    if not asks_thinking_updates(request):
        return None
    view = _as_mapping(event)
    if view is None or view.get("type") != "content_block_delta":
        return None
    delta = _as_mapping(view.get("delta"))
    if delta is None or delta.get("type") != "thinking_delta":
        return None
    text = delta.get("thinking")
    return text if isinstance(text, str) and text else None
