"""The contracts of context policies, as types: what a policy is given, what it returns, what it can do.

Every policy implements `Policy` (`plan`); some also implement `Shrinks` (a smaller plan after the request did not
fit the model's window) and `AbsorbsSummary` (their plans may ask for a summary or compaction call, whose result
they take into their state). Callers check these with `isinstance` against the protocols and call the methods
they declare; mypy checks every policy class against the protocols it claims (`turnkeep.core.policies`).

A policy's settings are its dataclass fields (`Configured`): `check_settings` checks them by their annotations,
and `setting_values` reads them, for storing and labelling a policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeGuard, runtime_checkable

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.explain import explanation_text
from turnkeep.core.messages import block_param
from turnkeep.core.policies.caching import Gaps
from turnkeep.errors import ConfigError

if TYPE_CHECKING:
    from anthropic.types import Message, MessageParam

__all__ = [
    "AbsorbsSummary",
    "Configured",
    "Plan",
    "Policy",
    "RequestSettings",
    "Shrinks",
    "SummaryJob",
    "check_settings",
    "persisted_state",
    "setting_values",
]


@dataclass(frozen=True, slots=True)
class RequestSettings:
    """The fixed fields of every request of a conversation, plus per-turn options and the facts a policy may
    weigh that only the edge can know (the clock, the conversation's rhythm). Core code never reads a clock."""

    model: ModelInfo
    max_tokens: int
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    now: float | None = None
    """Seconds since the epoch at planning time (None: unknown, e.g. in explain() without a clock)."""
    last_request_at: float | None = None
    """When this conversation last sent a request (None: never)."""
    gaps: tuple[float, ...] | Gaps = ()
    """Observed seconds between this conversation's consecutive requests, oldest first, or their running
    summary (`Gaps`, what a conversation passes: it does not grow with the conversation)."""
    calibration: float = 1.0
    """Observed over estimated tokens in this conversation so far: token estimates are multiplied by it."""

    def base_request(self, messages: Sequence[MessageParam], *, owned: bool = False) -> dict[str, Any]:
        """`messages.create` kwargs for these settings and `messages` (nothing left out, nothing cached).
        `owned`: `messages` is a list made for this request, taken as it is (not copied)."""
        request: dict[str, Any] = {"model": self.model.id, "max_tokens": self.max_tokens}
        if self.system is not None:
            request["system"] = self.system
        if self.tools:
            request["tools"] = self.tools
        request.update(self.options)
        request["messages"] = messages if owned and isinstance(messages, list) else list(messages)
        return request


@dataclass(frozen=True, slots=True)
class SummaryJob:
    """A model call a policy needs before its plan is final: summarise `covers` (a transcript range)."""

    request: dict[str, Any]
    covers: tuple[int, int]
    context: Mapping[str, Any] = field(default_factory=dict)
    """What the policy needs back in `absorb_summary` (JSON-ready)."""
    preview: dict[str, Any] | None = None
    """The request the turn will send once the summary is written, with a stand-in of the expected length in
    its place: what forecasts and budgets price (the plan's own request is only the fallback)."""
    kind: Literal["summary", "compaction"] = "summary"
    preview_explanation: Mapping[str, Any] | None = None
    """The explanation of `preview`, with its cache split (after a summary, little is left to read)."""
    """What the call returns: summary text, or (an explicit compaction request) a compaction block."""

    def result(self, message: Message) -> str | dict[str, Any] | None:
        """What the call produced, for `absorb_summary`; None when it produced nothing usable."""
        blocks = [block_param(block) for block in message.content]
        if self.kind == "compaction":
            found = [b for b in blocks if b["type"] == "compaction" and b.get("content")]
            return found[0] if found else None
        text = "".join(b["text"] for b in blocks if b["type"] == "text").strip()
        usable = message.stop_reason in ("end_turn", "stop_sequence", "max_tokens")
        return text if text and usable else None


@dataclass(frozen=True, slots=True)
class Plan:
    """The next request, the policy's new state, and why.

    When `summary` is set, `request` is the fallback to send if the summary call fails; on success the caller
    passes the summary text to the policy's `absorb_summary(state, job, text)` and plans again.
    """

    request: dict[str, Any]
    state: Mapping[str, Any]
    explanation: Mapping[str, Any]
    summary: SummaryJob | None = None

    def __str__(self) -> str:
        """The explanation as a readable two-column table: `print(chat.explain())`."""
        return explanation_text(self.explanation)


TRANSIENT_STATE_KEYS = frozenset({"memo"})
"""Policy state kept in memory but not stored: facts a policy can rebuild from the transcript (per-message
estimates, how far it is normalised). Storing them would make every commit write something as long as the
history; a reopened conversation rebuilds them once, in its first plan."""


def persisted_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """`state` as a store keeps it: without the transient keys, in it or in the states of policies it nests."""
    return {
        key: persisted_state(value) if isinstance(value, Mapping) else value
        for key, value in state.items()
        if key not in TRANSIENT_STATE_KEYS
    }


@runtime_checkable
class Policy(Protocol):
    """What every context policy provides."""

    @property
    def name(self) -> str:
        """A short stable name, stored with the conversation."""
        ...

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """Decide the next request. Pure: same inputs, byte-identical request."""
        ...


@runtime_checkable
class Shrinks(Protocol):
    """A policy that can make a smaller plan after the API said the request did not fit the model's window."""

    @property
    def name(self) -> str: ...

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan: ...

    def shrink(
        self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings
    ) -> Plan | None:
        """A plan that drops more (it may carry a summary call of its own); None when it cannot."""
        ...


@runtime_checkable
class AbsorbsSummary(Protocol):
    """A policy whose plans may ask for a summary (or compaction) call: it takes the call's result into its state."""

    @property
    def name(self) -> str: ...

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan: ...

    def absorb_summary(self, state: Mapping[str, Any], job: SummaryJob, result: Any) -> dict[str, Any]:
        """The state once `job` produced `result` (summary text, or a compaction block)."""
        ...


_CAPABLE: dict[tuple[type, type], bool] = {}


def can_shrink(policy: Policy) -> TypeGuard[Shrinks]:
    """Whether `policy` can make a smaller plan (`isinstance(policy, Shrinks)`, answered once per class)."""
    return _capable(policy, Shrinks)


def absorbs_summary(policy: Policy) -> TypeGuard[AbsorbsSummary]:
    """Whether `policy` takes a summary into its state (`isinstance(policy, AbsorbsSummary)`, once per class)."""
    return _capable(policy, AbsorbsSummary)


def _capable(policy: Policy, protocol: type) -> bool:
    """Whether `policy` has what `protocol` asks. A policy's methods are its class's, so the answer is kept per
    class: a runtime protocol check walks the protocol's members each time, which a turn should not pay."""
    key = (type(policy), protocol)
    known = _CAPABLE.get(key)
    if known is None:
        known = _CAPABLE[key] = isinstance(policy, protocol)
    return known


@runtime_checkable
class Configured(Protocol):
    """A policy whose settings are its dataclass fields (every built-in policy)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]


def setting_values(configured: Configured) -> dict[str, Any]:
    """A configured policy's settings by field name (nested policies as they are)."""
    return {item.name: getattr(configured, item.name) for item in fields(configured)}


_TTLS = ("5m", "1h", "auto")


def _inner_names(policy: Policy) -> set[str]:
    """The names of `policy` and of the policies it plans through (`inner`, all the way down): the ones whose
    requests it sends. A fallback is used instead, not inside, so it does not count."""
    names = {policy.name}
    inner = setting_values(policy).get("inner") if isinstance(policy, Configured) else None
    if isinstance(inner, Policy):
        names |= _inner_names(inner)
    return names


def check_settings(policy: Configured, **minimums: float) -> None:
    """Raise `ConfigError` naming the policy and the setting when a setting has the wrong type (by the field's
    annotation: int, float, bool, str, tuple of str, a policy, each possibly None), a number is not finite or
    below its minimum in `minimums`, or a `ttl` is not one of "5m", "1h", "auto". Called by every policy's
    `__post_init__`, so a policy built in Python, read from a store or spelled on the command line is checked
    the same way."""
    values = setting_values(policy)
    name = str(values.get("name", type(policy).__name__))
    for item in fields(policy):
        if item.name == "name":
            continue
        value = values[item.name]
        annotation = str(item.type).replace(" ", "")
        kinds = annotation.split("|")
        if value is None:
            if "None" not in kinds:
                raise ConfigError(f"{name}: {item.name} must be set (got None)")
            continue
        kind = kinds[0]
        where = f"{name}: {item.name}"
        if kind == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)  # 20000.0, as JSON or an older turnkeep may have written 2e4
                object.__setattr__(policy, item.name, value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} must be a whole number, not {value!r}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{where} must be a finite number, not {value!r}")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, not {value!r}")
        elif kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be text, not {value!r}")
        elif kind.startswith("tuple[str"):
            if not isinstance(value, tuple) or not all(isinstance(part, str) for part in value):
                raise ConfigError(f"{where} must be a list of names, not {value!r}")
        elif kind == "Policy":
            if not isinstance(value, Policy):
                raise ConfigError(f"{where} must be a policy, not {value!r}")
            if item.name == "inner" and name in _inner_names(value):
                # The API takes each context-management edit once, and a summary of a summary has no meaning.
                raise ConfigError(f"{where}: a {name} policy cannot hold another {name} policy")
        minimum = minimums.get(item.name)
        if minimum is not None and value < minimum:
            raise ConfigError(f"{where} must be at least {minimum:g}, not {value!r}")
        if item.name == "ttl" and value not in _TTLS:
            raise ConfigError(f"{where}: cache ttl must be one of {', '.join(_TTLS)}, not {value!r}")
