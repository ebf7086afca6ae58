"""Faults the emulator can inject into a `POST /v1/messages` call: scripted ones and a seeded random mode.

A fault is written as a short string or an object:

| short form    | object                                  | what the client sees                        | billed      |
|---------------|-----------------------------------------|---------------------------------------------|-------------|
| `"429"`       | `{"status": 429, "retry_after": 0.01}`  | 429 `rate_limit_error` with `retry-after`   | nothing     |
| `"500"`       | `{"status": 500}`                       | 500 `api_error`                             | nothing     |
| `"504"`       | `{"status": 504}`                       | 504 `timeout_error`                         | nothing     |
| `"529"`       | `{"status": 529}`                       | 529 `overloaded_error`                      | nothing     |
| `"slow:0.5"`  | `{"kind": "slow", "seconds": 0.5}`      | the reply, after a real delay of 0.5 s      | in full     |
| `"sse_error"` | `{"kind": "sse_error", "after": 3}`     | a stream that sends an `error` event        | as sent     |
| `"drop"`      | `{"kind": "drop", "after": 3}`          | the connection closed part-way through      | as sent     |
| `"truncate"`  | `{"kind": "truncate"}`                  | HTTP 200 whose JSON body is cut in half     | in full     |

Billing: a request answered with an error status is not billed. A reply the model generated is billed as far
as it was generated: a JSON reply in full, whatever then happens to its body on the way (`drop`, `truncate`);
a `slow` reply is worked out and billed before the delay, so a client that times out has been billed in full;
a stream is billed for its input and the output of the deltas it sent before it stopped (whole when it ended
normally; cut by an `error` event, a dropped connection or a client that stopped reading, as far as it got).
That error statuses cost nothing is documented; the rest is an assumption, see docs/emulator.md.

Any status from the reference's error table is accepted (400 … 529); its error type follows the table, and
`"error_code"` adds `error.details.error_code`. `retry_after` (seconds) is sent as `retry-after`
(rounded up to whole seconds, like the real API) and exactly as `retry-after-ms`, which the SDK prefers, so a test
can ask for 0.001 s. `after` counts SSE events sent before the fault (streams) and is ignored for a non-streamed
reply (a dropped one stops half-way through its body).

`slow` sleeps for real (capped at `MAX_SLOW_SECONDS`), because its purpose is to trip a client's timeout; keep it
short in tests. On a virtual clock the delay also advances the clock.

`RandomFaults(rate, seed)` injects a retryable status fault (429, 500, 504, 529, each with a 1 ms `retry_after`) into a
fraction `rate` of requests, reproducibly for a given seed, for soak tests of retry logic.
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from turnkeep.emulator.errors import ERROR_TYPES
from turnkeep.errors import InvalidValue

__all__ = [
    "MAX_SLOW_SECONDS",
    "Fault",
    "FaultKind",
    "RandomFaults",
    "parse_fault",
    "parse_fault_header",
]

FaultKind = Literal["status", "slow", "sse_error", "drop", "truncate"]

_DEFAULT_MESSAGES: dict[str, str] = {
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit (emulated fault)",
    "api_error": "Internal server error (emulated fault)",
    "timeout_error": "Request timed out (emulated fault)",
    "overloaded_error": "Overloaded (emulated fault)",
}

#: Longest real delay a `slow` fault will sleep, in seconds.
MAX_SLOW_SECONDS = 30.0

_KINDS: frozenset[str] = frozenset({"status", "slow", "sse_error", "drop", "truncate"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to inject into one request."""

    kind: FaultKind
    status: int = 0
    error_type: str = ""
    message: str = ""
    error_code: str | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    after: int = 3

    def error_body(self, request_id: str) -> dict[str, Any]:
        """The `{"type": "error", ...}` object a status fault or an SSE `error` event carries."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return {"type": "error", "error": error, "request_id": request_id}

    def headers(self) -> dict[str, str]:
        """Extra response headers of a status fault (`retry-after` on a 429, or wherever one was asked for)."""
        if self.retry_after is None:
            return {}
        # Whole seconds like the real API, plus the SDK's millisecond form so sub-second waits stay sub-second. Never
        # 0: the SDK ignores a zero wait and falls back to its own backoff.
        milliseconds = max(round(self.retry_after * 1000), 1)
        return {"retry-after": str(max(math.ceil(self.retry_after), 1)), "retry-after-ms": str(milliseconds)}


def _status_fault(status: int, spec: Mapping[str, Any]) -> Fault:
    if status not in ERROR_TYPES:
        raise InvalidValue(f"unsupported fault status {status}; expected one of {sorted(ERROR_TYPES)}")
    error_type = str(spec.get("error_type") or ERROR_TYPES[status])
    retry_after = spec.get("retry_after")
    if retry_after is None and status == 429:
        retry_after = 0.001  # a bare 429 asks for the shortest wait the SDK honours
    code = spec.get("error_code")
    return Fault(
        kind="status",
        status=status,
        error_type=error_type,
        message=str(spec.get("message") or _DEFAULT_MESSAGES.get(error_type, f"{error_type} (emulated fault)")),
        error_code=None if code is None else str(code),
        retry_after=None if retry_after is None else float(retry_after),
    )


def parse_fault(spec: str | int | Mapping[str, Any]) -> Fault:
    """A `Fault` from its short form (`"529"`, `"slow:0.5"`, `"drop"`) or its object form; `ValueError` if bad."""
    if isinstance(spec, bool):
        raise InvalidValue(f"not a fault: {spec!r}")
    if isinstance(spec, int):
        return _status_fault(spec, {})
    if isinstance(spec, str):
        name, _, argument = spec.strip().partition(":")
        if name.isdigit():
            return _status_fault(int(name), {})
        if name == "slow":
            return parse_fault({"kind": "slow", "seconds": float(argument or 1.0)})
        if name in ("sse_error", "drop"):
            return parse_fault({"kind": name, "after": int(argument or 3)})
        if name == "truncate":
            return parse_fault({"kind": "truncate"})
        raise InvalidValue(f"unknown fault {spec!r}")
    if not isinstance(spec, Mapping):
        raise InvalidValue(f"not a fault: {spec!r}")
    kind = str(spec.get("kind") or ("status" if "status" in spec else ""))
    if kind not in _KINDS:
        raise InvalidValue(f"unknown fault kind {kind!r}; expected one of {sorted(_KINDS)}")
    if kind == "status":
        status = spec.get("status")
        if not isinstance(status, int) or isinstance(status, bool):
            raise InvalidValue("a status fault needs an integer `status`")
        return _status_fault(status, spec)
    if kind == "slow":
        seconds = float(spec.get("seconds", 1.0))
        if seconds < 0:
            raise InvalidValue("`seconds` must be >= 0")
        return Fault(kind="slow", seconds=min(seconds, MAX_SLOW_SECONDS))
    if kind == "sse_error":
        error_type = str(spec.get("error_type") or "overloaded_error")
        code = spec.get("error_code")
        return Fault(
            kind="sse_error",
            error_type=error_type,
            message=str(spec.get("message") or _DEFAULT_MESSAGES.get(error_type, f"{error_type} (emulated fault)")),
            error_code=None if code is None else str(code),
            after=_after(spec),
        )
    if kind == "drop":
        return Fault(kind="drop", after=_after(spec))
    return Fault(kind="truncate")


def _after(spec: Mapping[str, Any]) -> int:
    after = int(spec.get("after", 3))
    if after < 0:
        raise InvalidValue("`after` must be >= 0")
    return after


def parse_fault_header(value: str) -> Fault:
    """The `x-emulator-fault` header: JSON of one fault, or a short form such as `529`."""
    text = value.strip()
    if text.startswith(("{", '"')):
        return parse_fault(json.loads(text))
    return parse_fault(text)


class RandomFaults:
    """Seeded random status faults for soak tests: a fraction `rate` of requests fails with a retryable status."""

    STATUSES: tuple[int, ...] = (429, 500, 504, 529)

    def __init__(self, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise InvalidValue("fault rate must be between 0 and 1")
        self.rate = rate
        self._random = random.Random(seed)
        # One generator shared by concurrent requests: draws are serialised so a seed replays the same sequence.
        self._lock = threading.Lock()

    def draw(self) -> Fault | None:
        """The fault for the next request, or None."""
        if self.rate <= 0.0:
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            status = self._random.choice(self.STATUSES)
        return _status_fault(status, {"retry_after": 0.001})
