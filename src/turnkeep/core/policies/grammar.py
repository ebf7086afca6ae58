"""The one spelling of context policies as text, shared by the library, the command line and the simulator.

`parse_policy("summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))")` reads a policy;
`policy_label(policy)` writes the shortest spelling that reads back to an equal policy (its name and the settings
that differ from their defaults). Reading goes through `policy_from_settings`, so a policy spelled here, stored
with a conversation or built in Python is checked the same way, with errors naming the setting and the value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from turnkeep.core.policies import policy_from_settings
from turnkeep.core.policies.base import Configured, Policy, setting_values
from turnkeep.errors import ConfigError, UsageError

__all__ = ["parse_policy", "policy_label"]

_SHORT = re.compile(r"(?P<name>window|token-budget):(?P<value>\d+)")
_NAME = re.compile(r"[A-Za-z][\w.-]*")
_BARE = re.compile(r"[^\s,()\[\]'\"=](?:[^,()\[\]'\"=]*[^\s,()\[\]'\"=])?")  # inner spaces allowed


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).replace("_", "-").lower()


class _Reader:
    """A policy spelled `name(key=value, ...)`: values are numbers, true/false/none, bare words (a model, a
    TTL), quoted text (which may hold commas), lists `[a, b]`, or a nested policy `name(...)`."""

    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def fail(self, what: str) -> ConfigError:
        return ConfigError(f"policy {self.text!r}: {what} at position {self.at + 1}")

    def peek(self) -> str:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1
        return self.text[self.at] if self.at < len(self.text) else ""

    def take(self, char: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r}")
        self.at += 1

    def spec(self) -> dict[str, Any]:
        self.peek()
        match = _NAME.match(self.text, self.at)
        if match is None:
            raise self.fail("expected NAME or NAME(key=value, ...)")
        self.at = match.end()
        settings: dict[str, Any] = {"name": _kebab(match.group())}
        if self.peek() != "(":
            return settings
        self.take("(")
        while self.peek() != ")":
            key = _NAME.match(self.text, self.at)
            if key is None:
                raise self.fail("expected key=value")
            self.at = key.end()
            self.take("=")
            if key.group() in settings:
                raise self.fail(f"setting {key.group()!r} given twice")
            settings[key.group()] = self.value()
            if self.peek() != ")":
                self.take(",")
        self.take(")")
        return settings

    def value(self) -> Any:
        char = self.peek()
        if char in ("'", '"'):
            end = self.text.find(char, self.at + 1)
            if end < 0:
                raise self.fail("unclosed quote")
            text, self.at = self.text[self.at + 1 : end], end + 1
            return text
        if char == "[":
            self.take("[")
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() != "]":
                    self.take(",")
            self.take("]")
            return items
        match = _BARE.match(self.text, self.at)
        if match is None:
            raise self.fail("expected a value")
        if _NAME.fullmatch(match.group()) and self.text[match.end() :].lstrip().startswith("("):
            return self.spec()  # a nested policy with settings of its own
        self.at = match.end()
        return _value(match.group())


def _value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text  # "nan", "inf": left as text, refused by the policy


def parse_policy(text: str) -> Policy:
    """A policy from its name and settings, as the command line takes it: `full-history`, `window(turns=20)`,
    `token-budget(max_input_tokens=20000)`, `FullHistory(cache=false)`, `summarize(trigger=20000, keep_last=6)`,
    `summarize(inner=window(messages=40), model=claude-haiku-4-5)`, `clear-tool-uses(exclude_tools=[read, grep])`,
    `server-compaction(instructions="Keep names, dates")`.

    Names are the policies' stored names or their class names; values are numbers, true/false/none, words,
    quoted text, lists or nested policies. The short forms `window:N` (about N turns) and `token-budget:N` (the
    latest turns within N input tokens) are read too. `ConfigError` (a `UsageError`) for anything it cannot read
    or a policy refuses, naming the policy, the setting and the value.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a policy is spelled as text, not {text!r}")
    text = text.strip()
    short = _SHORT.fullmatch(text)
    if short:
        key = "turns" if short["name"] == "window" else "max_input_tokens"
        return policy_from_settings({"name": short["name"], key: int(short["value"])})
    reader = _Reader(text)
    settings = reader.spec()
    if reader.peek():
        raise reader.fail("unexpected text after the policy")
    try:
        return policy_from_settings(settings)
    except UsageError as err:
        raise ConfigError(f"policy {text!r}: {err}") from err


def _fields(policy: Policy) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(policy) if isinstance(policy, Configured) else ()


def _show(value: object) -> str:
    if isinstance(value, Policy):
        return policy_label(value)
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, str) and (not _BARE.fullmatch(value) or _value(value) != value):
        return json.dumps(value)  # quoted: it has spaces, commas or brackets, or would read as a number
    return str(value)


def policy_label(policy: Policy) -> str:
    """A short label: the policy's name and the settings that differ from their defaults, e.g.
    `window(turns=10)`; `parse_policy` reads it back."""
    changed: list[str] = []
    values = setting_values(policy) if isinstance(policy, Configured) else {}
    for item in _fields(policy):
        if item.name == "name":
            continue
        value = values[item.name]
        default: object = item.default
        factory: Any = item.default_factory
        if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
            default = factory()
        if value != default:
            changed.append(f"{item.name}={_show(value)}")
    return f"{policy.name}({', '.join(changed)})" if changed else policy.name
