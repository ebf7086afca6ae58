"""Context policies: which part of a transcript goes into the next request, and how it is cached.

A policy is a small object with a pure `plan(transcript, state, settings) -> Plan`. `transcript` is the list of
messages the conversation would send if nothing were left out; `state` is the policy's own persisted state (a
JSON-ready dict, empty at first); `settings` carries the model and the request's fixed fields. The plan holds the
exact keyword arguments for `messages.create`, the new state, and an explanation of what was decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from anthropic.types import MessageParam

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.rules import normalize
from turnkeep.errors import ConfigError

__all__ = ["FullHistory", "Plan", "Policy", "RequestSettings", "policy_from_settings", "policy_settings"]


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
    gaps: tuple[float, ...] = ()
    """Observed seconds between this conversation's consecutive requests, oldest first."""

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
class Plan:
    """The next request, the policy's new state, and why."""

    request: dict[str, Any]
    state: Mapping[str, Any]
    explanation: Mapping[str, Any]


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

    Caching uses the API's automatic breakpoint (top-level `cache_control`), which sits on the last cacheable
    block and moves with the conversation: each request reads what the previous one wrote.
    """

    ttl: str = "5m"
    name: str = "full-history"

    def plan(self, transcript: Sequence[MessageParam], state: Mapping[str, Any], settings: RequestSettings) -> Plan:
        messages = normalize(transcript)
        request = settings.base_request(messages)
        if "cache_control" not in request:
            request["cache_control"] = {"type": "ephemeral", "ttl": self.ttl}
        return Plan(
            request=request,
            state=dict(state),
            explanation={"policy": self.name, "kept": [0, len(messages)], "dropped": [], "cache": "automatic"},
        )


# Policies a stored conversation can name; each is a dataclass whose fields are its settings.
_POLICIES: dict[str, type[Any]] = {"full-history": FullHistory}


def policy_settings(policy: Policy) -> dict[str, Any]:
    """A JSON-ready description of `policy` that `policy_from_settings` turns back into an equal policy."""
    settings = asdict(policy) if hasattr(policy, "__dataclass_fields__") else {}  # type: ignore[call-overload]
    settings["name"] = policy.name
    return settings


def policy_from_settings(settings: Mapping[str, Any]) -> Policy:
    """The policy described by `policy_settings` (FullHistory when nothing is stored)."""
    name = settings.get("name", "full-history")
    cls = _POLICIES.get(str(name))
    if cls is None:
        raise ConfigError(f"unknown context policy {name!r}; known: {', '.join(sorted(_POLICIES))}")
    known = {f.name for f in fields(cls)}
    policy: Policy = cls(**{key: value for key, value in settings.items() if key in known})
    return policy
