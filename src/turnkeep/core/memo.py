"""Answers remembered by the identity of what they are about.

A conversation never changes a message, a system prompt or a tool list in place: a change is a new object. So a
fact computed about one of them (a digest, a size) holds for as long as that object lives, and a turn that asks
about the same objects as the turn before pays only for what is new. The memos hold the objects they remember,
so an `id` is never reused while its answer is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ByIdentity", "LastByIdentity"]

K = TypeVar("K")
V = TypeVar("V")


class ByIdentity(Generic[K, V]):
    """`compute(value)`, remembered per object. Bounded: it forgets everything when full (what a turn asks about
    again is the last few messages, not a whole long history)."""

    __slots__ = ("_compute", "_limit", "_memo")

    def __init__(self, compute: Callable[[K], V], limit: int = 4096) -> None:
        self._compute = compute
        self._limit = limit
        self._memo: dict[int, tuple[K, V]] = {}

    def __call__(self, value: K) -> V:
        entry = self._memo.get(id(value))
        if entry is not None and entry[0] is value:
            return entry[1]
        answer = self._compute(value)
        if len(self._memo) >= self._limit:
            self._memo.clear()
        self._memo[id(value)] = (value, answer)
        return answer


class LastByIdentity(Generic[V]):
    """The answer for the last combination of objects asked about (each compared by identity): for facts of a
    request's fixed part (model, system, tools), which stay the same objects turn after turn."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[tuple[object, ...], V] | None = None

    def get(self, *values: object) -> V | None:
        last = self._last  # one read: another thread may replace it meanwhile
        if last is None or len(last[0]) != len(values):
            return None
        if all(kept is value for kept, value in zip(last[0], values, strict=True)):
            return last[1]
        return None

    def put(self, answer: V, *values: object) -> V:
        self._last = (values, answer)
        return answer
