"""Context policies: which part of a transcript goes into the next request, and how it is cached.

A policy is a small object with a pure `plan(transcript, state, settings) -> Plan`. `transcript` is the list of
messages the conversation would send if nothing were left out; `state` is the policy's own persisted state (a
JSON-ready dict, empty at first); `settings` carries the model and the request's fixed fields. The plan holds the
exact keyword arguments for `messages.create`, the new state, and an explanation of what was decided. The
contracts are types in `base` (`Policy`, `Shrinks`, `AbsorbsSummary`); this module names the built-in policies a
stored conversation can refer to, and turns a policy into stored settings and back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, fields
from typing import Any

from turnkeep.core.catalog import Catalog
from turnkeep.core.policies.base import (
    AbsorbsSummary,
    Configured,
    Plan,
    Policy,
    RequestSettings,
    Shrinks,
    SummaryJob,
    check_settings,
    persisted_state,
    setting_values,
)
from turnkeep.core.policies.server import ClearToolUses, ServerCompaction
from turnkeep.core.policies.summarize import Summarize
from turnkeep.core.policies.window import FullHistory, SlidingWindow, TokenBudget, Window
from turnkeep.errors import ConfigError

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
    "check_settings",
    "persisted_state",
    "policy_from_settings",
    "policy_settings",
    "unknown_models",
]

# The policies a stored conversation can name; each is a dataclass whose fields are its settings.
_POLICIES: dict[str, type[Configured]] = {
    "full-history": FullHistory,
    "window": Window,
    "token-budget": TokenBudget,
    "sliding-window": SlidingWindow,
    "summarize": Summarize,
    "server-compaction": ServerCompaction,
    "clear-tool-uses": ClearToolUses,
}


def _settings_of(policy: Policy) -> dict[str, Any]:
    """A policy's settings (none for a policy that is not a dataclass: it has only its name)."""
    return setting_values(policy) if isinstance(policy, Configured) else {}


def unknown_models(policy: Policy, catalog: Catalog) -> list[str]:
    """The models a policy (or a policy nested in it) names for calls of its own, such as a cheaper summariser,
    that `catalog` does not know: every such call would fail."""
    values = _settings_of(policy)
    model = values.get("model")
    found = [model] if isinstance(model, str) and not catalog.get(model).known else []
    for value in values.values():
        if isinstance(value, Policy):
            found += unknown_models(value, catalog)
    return found


def policy_settings(policy: Policy) -> dict[str, Any]:
    """A JSON-ready description of `policy` that `policy_from_settings` turns back into an equal policy
    (policies nested in a policy's fields, such as an inner or fallback policy, are described too)."""
    settings: dict[str, Any] = {}
    for key, value in _settings_of(policy).items():
        if isinstance(value, Policy):
            settings[key] = policy_settings(value)
        elif isinstance(value, tuple):
            settings[key] = list(value)
        else:
            settings[key] = value
    settings["name"] = policy.name
    return settings


def _holds_policy(item: Field[Any]) -> bool:
    """Whether a policy's field holds a nested policy (an inner or fallback policy): its default is one."""
    factory: Any = item.default_factory
    return factory is not MISSING and isinstance(factory, type) and issubclass(factory, tuple(_POLICIES.values()))


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
        if _holds_policy(item) and not isinstance(value, Policy):
            if not (isinstance(value, str) and value in _POLICIES):
                raise ConfigError(
                    f"context policy {name!r}: {item.name} must be a policy (one of {', '.join(sorted(_POLICIES))}), "
                    f"not {value!r}"
                )
            value = policy_from_settings({"name": value})  # a nested policy named alone, with its defaults
        arguments[item.name] = value
    try:
        policy = cls(**arguments)
    except TypeError as err:
        raise ConfigError(f"invalid settings for context policy {name!r}: {err}") from err
    assert isinstance(policy, Policy)
    return policy


# mypy checks each policy that has these capabilities against them.
_SHRINKS: tuple[type[Shrinks], ...] = (Window, TokenBudget, Summarize, ServerCompaction, ClearToolUses)
_ABSORBS: tuple[type[AbsorbsSummary], ...] = (Summarize, ServerCompaction, ClearToolUses)
_POLICY_TYPES: tuple[type[Policy], ...] = (FullHistory, Window, TokenBudget, SlidingWindow, *_SHRINKS)
