"""Where turns begin: the only places a context policy may cut a transcript.

A turn begins with a user message that carries no `tool_result` (a person speaking, not a tool answering) and
runs until the next such message: it includes the assistant's replies, the whole tool loop (tool calls and the
user messages that carry their results) and any role 'system' message. Cutting only at turn starts means a
request never begins with an orphan `tool_result`, and a `tool_use` is never separated from its result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["in_tool_loop", "is_turn_start", "keep_last_cut", "last_turn_start", "turn_starts"]


def _block_type(block: object) -> object:
    if isinstance(block, Mapping):
        return block.get("type")
    return getattr(block, "type", None)


def is_turn_start(message: object) -> bool:
    """Whether `message` begins a turn: a user message with content and no `tool_result` block."""
    if not isinstance(message, Mapping) or message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, str):
        return True
    if isinstance(content, list | tuple):
        return bool(content) and not any(_block_type(block) == "tool_result" for block in content)
    return False


def turn_starts(messages: Sequence[Any]) -> list[int]:
    """Indices of the messages that begin a turn, in order (see the module docstring)."""
    return [index for index, message in enumerate(messages) if is_turn_start(message)]


def last_turn_start(messages: Sequence[Any], *, before: int | None = None) -> int | None:
    """The index of the last turn start at or before index `before` (default: the last message); None if none."""
    index = len(messages) - 1 if before is None else min(before, len(messages) - 1)
    while index >= 0:
        if is_turn_start(messages[index]):
            return index
        index -= 1
    return None


def in_tool_loop(messages: Sequence[Any], last_start: int | None = None) -> bool:
    """Whether `messages` end inside a turn's tool loop: an assistant message follows the last turn start
    (`last_start`, when the caller knows it) and is answered by a later message. A final assistant message alone
    is a prefill (the start of the reply to come), not a loop."""
    if last_start is None:
        last_start = last_turn_start(messages)
        if last_start is None:
            return False
    answered = messages[last_start + 1 : len(messages) - 1]
    return any(isinstance(message, Mapping) and message.get("role") == "assistant" for message in answered)


def keep_last_cut(messages: Sequence[Any], keep: int) -> int | None:
    """Where the last `keep` turns begin, when there is at least one turn more before them (None otherwise): the
    cut of a summary or compaction that keeps them. Walks back only over those turns."""
    found, cut = 0, 0
    for index in range(len(messages) - 1, -1, -1):
        if is_turn_start(messages[index]):
            found += 1
            if found == keep:
                cut = index
            elif found > keep:
                return cut
    return None
