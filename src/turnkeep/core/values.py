"""Hostile-value checks over JSON-shaped data, written once and walked without recursion.

Messages, tool inputs, settings and imports are user or model data: they may nest thousands of levels, hold lone
surrogates (which no UTF-8 encoder accepts) or carry a credential. Python's own recursion (and the `json` module's,
which gives up near 1,000 levels) must never meet such data unchecked, so every walk here is iterative and
`find_problem` reports the first problem with the path where it sits, before anything is sent or stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

__all__ = [
    "ENVELOPE_DEPTH",
    "MAX_DEPTH",
    "SECRET_KEYS",
    "Problem",
    "depth_exceeds",
    "find_problem",
    "has_key",
    "is_secret_key",
    "is_secret_value",
]

MAX_DEPTH = 128
"""How many objects/lists may nest inside one value. Far beyond any real tool schema or input, and well inside
what the `json` module, the SDK's partial-JSON parser and our own encoders can handle."""
ENVELOPE_DEPTH = 8
"""Levels a request or script wraps around one value (body → messages → message → content → block → input):
limits on whole bodies are `MAX_DEPTH + ENVELOPE_DEPTH`, so a value at the limit still fits its envelope."""

# Names that would hold a credential, compared case-insensitively with `-` read as `_`.
SECRET_KEYS = frozenset({"api_key", "x_api_key", "auth_token", "authorization", "anthropic_api_key"})
# Anthropic keys (`sk-ant-api03-…`, `sk-ant-admin01-…`, `sk-ant-oat01-…`); long enough not to match prose about them.
_SECRET_VALUE = re.compile(r"sk-ant-[A-Za-z0-9]+-[A-Za-z0-9_\-]{16,}")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong (`kind`: depth | surrogate | secret_key | secret_value) and where (`path`, e.g.
    `messages[3].content[0].input.a.b`)."""

    kind: str
    path: str
    detail: str


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def is_secret_value(value: object) -> bool:
    return isinstance(value, str) and _SECRET_VALUE.search(value) is not None


def _child(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else f"{path}[{key!r}]"


def _walk(value: object, path: str) -> Iterator[tuple[str, object, int]]:
    """Every (path, value, depth) inside `value`, depth-first, parents before children; mapping keys are yielded
    too, at their entry's path with depth -1, so their text is checked as well."""
    stack: list[tuple[str, object, int]] = [(path, value, 0)]
    while stack:
        where, item, depth = stack.pop()
        yield where, item, depth
        if isinstance(item, Mapping):
            children = list(item.items())
            for key, child in reversed(children):
                stack.append((_child(where, key), child, depth + 1))
            for key, _ in reversed(children):
                stack.append((_child(where, key), key, -1))
        elif isinstance(item, list | tuple):
            for index in range(len(item) - 1, -1, -1):
                stack.append((_child(where, index), item[index], depth + 1))


def short_path(path: str, keep: int = 60) -> str:
    """A path cut in the middle when long (a deep value's path can run to thousands of characters)."""
    return path if len(path) <= 2 * keep else f"{path[:keep]}…{path[-keep:]}"


def depth_exceeds(value: object, limit: int = MAX_DEPTH) -> str | None:
    """The (shortened) path of the first container nested deeper than `limit`, or None."""
    for where, item, depth in _walk(value, ""):
        if depth > limit and isinstance(item, Mapping | list | tuple):
            return short_path(where)
    return None


def has_key(value: object, key: str) -> bool:
    """Whether a mapping anywhere inside `value` has `key` (iterative: the value may nest arbitrarily)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if key in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def find_problem(
    value: object,
    path: str,
    *,
    depth: bool = True,
    surrogates: bool = True,
    secrets: bool = True,
    limit: int = MAX_DEPTH,
) -> Problem | None:
    """The first hostile thing inside `value` (depth-first), with its path; None when it is clean."""
    if not _suspect(value, depth=depth, surrogates=surrogates, secrets=secrets, limit=limit):
        return None  # the common case, found without building a path for every value
    return _locate(value, path, depth=depth, surrogates=surrogates, secrets=secrets, limit=limit)


def _locate(value: object, path: str, *, depth: bool, surrogates: bool, secrets: bool, limit: int) -> Problem | None:
    """`find_problem`'s answer, walking with paths."""
    for where, item, level in _walk(value, path):
        if depth and level > limit and isinstance(item, Mapping | list | tuple):
            return Problem("depth", short_path(where), f"nested more than {limit} levels deep")
        if level == -1:  # a mapping key
            if secrets and is_secret_key(item):
                return Problem("secret_key", where, f"{item!r} would hold a credential")
            if surrogates and isinstance(item, str) and _SURROGATE.search(item):
                return Problem("surrogate", where, "a key holds a lone surrogate (not valid Unicode text)")
            continue
        if isinstance(item, str):
            if surrogates and _SURROGATE.search(item):
                return Problem("surrogate", where, "holds a lone surrogate (not valid Unicode text)")
            if secrets and is_secret_value(item):
                return Problem("secret_value", where, "holds what looks like an API key")
    return None


def _bad_text(text: str, *, surrogates: bool, secrets: bool) -> bool:
    if surrogates and not text.isascii() and _SURROGATE.search(text):
        return True
    return secrets and "sk-ant-" in text and _SECRET_VALUE.search(text) is not None


_LEAVES = (int, float, bool, type(None))
_CLEAN_KEYS: set[str] = set()
"""Mapping keys found to be plain words (no credential name, no lone surrogate): the same few keys ("role",
"content", "type", "text", …) recur in every message, and each is checked once."""


def _bad_key(key: object, *, surrogates: bool, secrets: bool) -> bool:
    if not isinstance(key, str) or key in _CLEAN_KEYS:
        return False
    if is_secret_key(key) or _bad_text(key, surrogates=True, secrets=False):
        return (secrets and is_secret_key(key)) or _bad_text(key, surrogates=surrogates, secrets=False)
    if len(_CLEAN_KEYS) < 4096:
        _CLEAN_KEYS.add(key)
    return False


def _suspect(value: object, *, depth: bool, surrogates: bool, secrets: bool, limit: int) -> bool:
    """Whether `find_problem` would find anything: the same checks in one pass without paths (each string is
    scanned only when it could hold what is looked for; the exact JSON types are told apart before any abstract
    one, as this runs on every message and stored value)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        kind = type(item)
        if kind in _LEAVES:
            continue
        if isinstance(item, str):
            if _bad_text(item, surrogates=surrogates, secrets=secrets):
                return True
        elif kind is dict or isinstance(item, Mapping):
            if depth and level > limit:
                return True
            for key, child in cast("Mapping[object, object]", item).items():
                if _bad_key(key, surrogates=surrogates, secrets=secrets):
                    return True
                if type(child) is str:
                    if _bad_text(child, surrogates=surrogates, secrets=secrets):
                        return True
                elif type(child) not in _LEAVES:
                    stack.append((child, level + 1))
        elif isinstance(item, list | tuple):
            if depth and level > limit:
                return True
            stack.extend((child, level + 1) for child in item)
    return False


def first_index(items: Sequence[object], path: str, **options: bool) -> Problem | None:
    """`find_problem` over each item of a sequence, paths `path[i]`."""
    for index, item in enumerate(items):
        problem = find_problem(item, f"{path}[{index}]", **options)
        if problem is not None:
            return problem
    return None
