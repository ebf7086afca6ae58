"""Fallback credits: the tokens a refusal hands out, and their redemption on a retry (SDK 2.16,
`fallback_credit_token` and `usage.fallback_credit`).

What the API documents (the SDK's `fallback_credit_token` docstring and `BetaFallbackCreditTokenParam`): a refusal's
token is redeemed by a retry from the same organization, with the same request body (optionally extended by one
appended assistant message holding the partial reply), on the recommended model, within 5 minutes. A redeemed
retry's cache-creation tokens for the prefix that was warm on the refused model are billed at the cache-read rate
(`usage.fallback_credit.status.type == "redeemed"`; `turnkeep.core.pricing` prices it so). The bare string and the
object without `mode` are `strict`: a failing redemption is a 400 and nothing is served. With `mode: "best_effort"`
(beta `fallback-credit-2026-07-01`) the retry is served at the normal price and the response says why the credit was
not applied. A malformed token, and a token beside `fallbacks`, fail in both modes.

What the emulator assumes: an unknown token is "malformed"; every cache write of a redeemed retry is for the warm
prefix (the retry repeats the refused body, and an appended partial reply carries no breakpoint); an API key is an
organization and a workspace. A scripted refusal with `"fallback_credit_token": true` mints a token.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from turnkeep.emulator.clock import Clock
from turnkeep.emulator.errors import ApiError, invalid_request

__all__ = ["CREDIT_BETA", "CREDIT_LIFETIME_S", "Credits"]

CREDIT_BETA = "fallback-credit-2026-07-01"
CREDIT_LIFETIME_S = 300.0
# What a retry may change from the refused request: the model, the token itself, and how it is sent.
_NOT_COMPARED = frozenset({"model", "fallback_credit_token", "stream", "betas"})


@dataclass(frozen=True, slots=True)
class _Issued:
    scope: str
    at: float
    recommended_model: str | None
    body: str  # the refused request's digest (see `_digest`)


def _digest(body: Mapping[str, Any], *, drop_appended: bool = False) -> str:
    compared = {key: value for key, value in body.items() if key not in _NOT_COMPARED}
    if drop_appended:
        messages = list(compared.get("messages") or [])
        compared["messages"] = messages[:-1]
    text = json.dumps(compared, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class Credits:
    """The tokens refusals issued, per emulator instance."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._issued: dict[str, _Issued] = {}

    def reset(self) -> None:
        self._issued.clear()

    def mint(self) -> str:
        return f"fct_{secrets.token_hex(12)}"

    def issue(self, scope: str, token: str, body: Mapping[str, Any], recommended_model: str | None) -> None:
        """Remember the token a refusal of `body` carried."""
        self._issued[token] = _Issued(scope, self._clock.now(), recommended_model, _digest(body))

    def redeem(self, scope: str, body: Mapping[str, Any], betas: frozenset[str]) -> dict[str, Any] | None:
        """The `usage.fallback_credit` of a request carrying a token (None: it carries none); raises the 400 the API
        answers for a failed strict redemption, a malformed token or a token beside `fallbacks`."""
        field = body.get("fallback_credit_token")
        if field is None:
            return None
        if isinstance(field, str):
            token, mode = field, "strict"
        elif isinstance(field, Mapping) and isinstance(field.get("token"), str):
            if CREDIT_BETA not in betas:
                raise invalid_request(
                    f"fallback_credit_token: the object form requires the beta header `{CREDIT_BETA}`; "
                    "without it, pass the token as a string"
                )
            token, mode = field["token"], field.get("mode", "strict")
            if mode not in ("strict", "best_effort"):
                raise invalid_request(
                    f"fallback_credit_token.mode: Input should be 'strict' or 'best_effort', not {mode!r}"
                )
        else:
            raise invalid_request("fallback_credit_token: must be a string or an object with `token`")
        if body.get("fallbacks"):
            raise invalid_request("fallback_credit_token: cannot be combined with `fallbacks`")
        issued = self._issued.get(token)
        if issued is None:
            raise invalid_request("fallback_credit_token: malformed token")
        reason = self._why_not(issued, scope, body)
        if reason is None:
            return {"status": {"type": "redeemed"}}
        if mode == "strict":
            raise ApiError(
                400,
                "invalid_request_error",
                f"fallback_credit_token: the token cannot be redeemed ({reason}); send `mode: best_effort` to be "
                "served at the normal price",
            )
        return {"status": {"type": "not_applied", "reason": reason}}

    def _why_not(self, issued: _Issued, scope: str, body: Mapping[str, Any]) -> str | None:
        if issued.scope != scope:
            return "wrong_organization"
        if self._clock.now() - issued.at > CREDIT_LIFETIME_S:
            return "expired"
        if issued.recommended_model is None or body.get("model") != issued.recommended_model:
            return "invalid_target_model"
        messages = body.get("messages") or []
        appended = bool(messages) and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant"
        if _digest(body) == issued.body or (appended and _digest(body, drop_appended=True) == issued.body):
            return None
        return "body_mismatch"
