"""Context policies: which part of a transcript goes into the next request, and how it is cached.

A policy is a small object with a pure `plan(transcript, state, settings) -> Plan`. `transcript` is the list of
messages the conversation would send if nothing were left out; `state` is the policy's own persisted state (a
JSON-ready dict, empty at first); `settings` carries the model and the request's fixed fields. The plan holds the
exact keyword arguments for `messages.create`, the new state, and an explanation of what was decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, runtime_checkable

from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.explain import explanation_text
from turnkeep.core.messages import block_param
from turnkeep.core.policies.caching import Gaps
from turnkeep.errors import ConfigError

if TYPE_CHECKING:
    from anthropic.types import Message, MessageParam

__all__ = [
    "AbsorbsSummary",
    "ClearToolUses",
    "FullHistory",
    "Plan",
    "Policy",
    "RequestSettings",
    "ServerCompaction",
    "Shrinks",
    "SlidingWindow",
    "Summarize",
    "SummaryJob",
    "TokenBudget",
    "Window",
    "persisted_state",
    "policy_from_settings",
    "policy_settings",
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

    def base_request(self, messages: Sequence[MessageParam]) -> dict[str, Any]:
        """`messages.create` kwargs for these settings and `messages` (nothing left out, nothing cached)."""
        request: dict[str, Any] = {"model": self.model.id, "max_tokens": self.max_tokens}
        if self.system is not None:
            request["system"] = self.system
        if self.tools:
            request["tools"] = self.tools
        request.update(self.options)
        request["messages"] = list(messages)
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


class Policy(Protocol):
    """What every context policy provides."""

    @property
    def name(self) -> str:
        """A short stable name, stored with the conversation."""
        ...

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """Decide the next request. Pure: same inputs, byte-identical request."""
        ...


@dataclass(frozen=True, slots=True)
class FullHistory:
    """Send everything, append-only, so the prompt cache is never broken.

    Caching (`cache=True`): by default the API's automatic breakpoint (top-level `cache_control`), which sits on
    the last cacheable block and moves with the conversation, so each request reads what the previous one
    wrote; `automatic=False` places the moving breakpoint explicitly. Either way a large tools/system prefix
    gets its own breakpoint and a long tool loop an intermediate one (`caching.place_breakpoints`). `ttl` is
    "5m", "1h" or "auto" (chosen from the conversation's gaps, `caching.choose_ttl`). `cache=False` adds no
    breakpoint at all (the caller's own stay).
    """

    ttl: str = "auto"
    name: str = "full-history"
    cache: bool = True
    automatic: bool = True

    def __post_init__(self) -> None:
        check_settings(self)

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        """The next request: the whole transcript, normalised, with breakpoints."""
        return plan_full_history(
            self.name, transcript, state, settings, cache=self.cache, ttl=self.ttl, automatic=self.automatic
        )


# Policies a stored conversation can name; each is a dataclass whose fields are its settings.
_POLICIES: dict[str, type[Any]] = {}  # filled in below, once the window policies are importable

_TTLS = ("5m", "1h", "auto")


def _inner_names(policy: object) -> set[str]:
    """The names of `policy` and of the policies it plans through (`inner`, all the way down): the ones whose
    requests it sends. A fallback is used instead, not inside, so it does not count."""
    names = {str(getattr(policy, "name", ""))}
    inner = getattr(policy, "inner", None)
    if hasattr(inner, "plan") and hasattr(inner, "name"):
        names |= _inner_names(inner)
    return names


def unknown_models(policy: object, catalog: Catalog) -> list[str]:
    """The models a policy (or a policy nested in it) names for calls of its own, such as a cheaper summariser,
    that `catalog` does not know: every such call would fail."""
    model = getattr(policy, "model", None)
    found = [model] if isinstance(model, str) and not catalog.get(model).known else []
    if hasattr(policy, "__dataclass_fields__"):
        for item in fields(cast(Any, policy)):
            value = getattr(policy, item.name)
            if _is_policy(value):
                found += unknown_models(value, catalog)
    return found


def check_settings(policy: object, **minimums: float) -> None:
    """Raise `ConfigError` naming the policy and the setting when a setting has the wrong type (by the field's
    annotation: int, float, bool, str, tuple of str, a policy, each possibly None), a number is not finite or
    below its minimum in `minimums`, or a `ttl` is not one of "5m", "1h", "auto". Called by every policy's
    `__post_init__`, so a policy built in Python, read from a store or spelled on the command line is checked
    the same way."""
    name = getattr(policy, "name", type(policy).__name__)
    for item in fields(cast(Any, policy)):
        if item.name == "name":
            continue
        value = getattr(policy, item.name)
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
            if not (hasattr(value, "plan") and hasattr(value, "name")):
                raise ConfigError(f"{where} must be a policy, not {value!r}")
            if item.name == "inner" and name in _inner_names(value):
                # The API takes each context-management edit once, and a summary of a summary has no meaning.
                raise ConfigError(f"{where}: a {name} policy cannot hold another {name} policy")
        minimum = minimums.get(item.name)
        if minimum is not None and value < minimum:
            raise ConfigError(f"{where} must be at least {minimum:g}, not {value!r}")
        if item.name == "ttl" and value not in _TTLS:
            raise ConfigError(f"{where}: cache ttl must be one of {', '.join(_TTLS)}, not {value!r}")


def policy_settings(policy: Policy) -> dict[str, Any]:
    """A JSON-ready description of `policy` that `policy_from_settings` turns back into an equal policy
    (policies nested in a policy's fields, such as an inner or fallback policy, are described too)."""
    settings: dict[str, Any] = {}
    if hasattr(policy, "__dataclass_fields__"):
        for item in fields(cast(Any, policy)):
            value = getattr(policy, item.name)
            if _is_policy(value):
                settings[item.name] = policy_settings(value)
            elif isinstance(value, tuple):
                settings[item.name] = list(value)
            else:
                settings[item.name] = value
    settings["name"] = policy.name
    return settings


def _is_policy(value: object) -> bool:
    return hasattr(value, "plan") and hasattr(value, "name")


def _holds_policy(item: Field[Any]) -> bool:
    """Whether a policy's field holds a nested policy (an inner or fallback policy): its default is one."""
    factory: Any = item.default_factory
    return factory is not MISSING and isinstance(factory, type) and _is_policy(factory)


def policy_from_settings(settings: Mapping[str, Any]) -> Policy:
    """The policy described by `policy_settings` (FullHistory when nothing is stored). `ConfigError` for
    anything else: not a mapping, an unknown policy or setting, a value the policy refuses."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"a context policy is described by its name and settings, not {settings!r}")
    name = settings.get("name", "full-history")
    cls = _POLICIES.get(str(name))
    if cls is None:
        raise ConfigError(f"unknown context policy {name!r}; known: {', '.join(sorted(_POLICIES))}")
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        settable = ", ".join(sorted(known - {"name"}))
        raise ConfigError(f"context policy {name!r}: unknown setting {unknown[0]!r} (known: {settable})")
    arguments: dict[str, Any] = {}
    for item in fields(cls):
        if item.name not in settings:
            continue
        value = settings[item.name]
        if isinstance(value, Mapping) and value.get("name") in _POLICIES:
            value = policy_from_settings(value)
        elif isinstance(value, list):
            value = tuple(value)
        if _holds_policy(item) and isinstance(value, str):
            value = {cls.__name__: key for key, cls in _POLICIES.items()}.get(value, value)  # a class name
        if _holds_policy(item) and not _is_policy(value):
            if not (isinstance(value, str) and value in _POLICIES):
                raise ConfigError(
                    f"context policy {name!r}: {item.name} must be a policy (one of {', '.join(sorted(_POLICIES))}), "
                    f"not {value!r}"
                )
            value = policy_from_settings({"name": value})  # a nested policy named alone, with its defaults
        arguments[item.name] = value
    try:
        policy: Policy = cls(**arguments)
    except TypeError as err:
        raise ConfigError(f"invalid settings for context policy {name!r}: {err}") from err
    return policy


# The window policies import Plan and RequestSettings from this module, so they are imported last.
from turnkeep.core.policies.window import SlidingWindow, TokenBudget, Window, plan_full_history  # noqa: E402

_POLICIES.update(
    {"full-history": FullHistory, "window": Window, "token-budget": TokenBudget, "sliding-window": SlidingWindow}
)

from turnkeep.core.policies.server import ClearToolUses, ServerCompaction  # noqa: E402
from turnkeep.core.policies.summarize import Summarize  # noqa: E402

_POLICIES.update({"summarize": Summarize, "server-compaction": ServerCompaction, "clear-tool-uses": ClearToolUses})


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


# mypy checks each policy that has these capabilities against them.
_SHRINKS: tuple[type[Shrinks], ...] = (Window, TokenBudget, Summarize, ServerCompaction, ClearToolUses)
_ABSORBS: tuple[type[AbsorbsSummary], ...] = (Summarize, ServerCompaction, ClearToolUses)
