"""Helpers over the SDK's own message shapes: `MessageParam` dicts in, `anthropic.types.Message` out.

turnkeep keeps no parallel schema. Content goes to the store and back into requests as the JSON the API uses;
a response is turned into an assistant `MessageParam` with `reply_param`, which keeps exactly the fields the
server sent (thinking signatures, tool ids, citations, compaction blocks) and drops only top-level nulls, so
the same reply always serialises to the same bytes and a resumed conversation keeps its prompt cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from turnkeep.errors import UsageError

if TYPE_CHECKING:
    from anthropic.types import Message, MessageParam

__all__ = [
    "THINKING_TYPES",
    "Block",
    "as_blocks",
    "block_param",
    "block_texts",
    "block_view",
    "compaction_start",
    "merge_assistant_content",
    "reply_param",
    "text_of",
    "tool_calls",
    "tool_result_block",
    "user_content",
    "without_thinking",
]

Block = dict[str, Any]

THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
"""The block types of a model's reasoning."""


def block_view(block: object) -> Mapping[str, Any] | None:
    """A content block as a mapping without copying: dicts as they are, SDK pydantic blocks through their JSON
    dump; None when it is neither."""
    if isinstance(block, Mapping):
        return cast(Mapping[str, Any], block)
    dump = getattr(block, "model_dump", None)
    if callable(dump):
        dumped = dump(mode="json", exclude_none=True)
        if isinstance(dumped, Mapping):
            return cast(Mapping[str, Any], dumped)
    return None


def block_param(block: Any) -> Block:
    """A content block (SDK model or dict) as a JSON-ready dict, with top-level nulls dropped."""
    data: Mapping[str, Any] = block.to_dict() if hasattr(block, "to_dict") else block
    if not isinstance(data, Mapping) or "type" not in data:
        raise UsageError(f"not a content block: {block!r}")
    return {key: value for key, value in data.items() if value is not None}


def as_blocks(content: str | Iterable[Any]) -> list[Block]:
    """Message content as a list of block dicts (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block_param(block) for block in content]


def reply_param(message: Message) -> MessageParam:
    """The assistant `MessageParam` to store and resend for a response."""
    return cast("MessageParam", {"role": "assistant", "content": [block_param(b) for b in message.content]})


def text_of(content: str | Iterable[Any]) -> str:
    """The concatenated text of a message's text blocks."""
    if isinstance(content, str):
        return content
    return "".join(block["text"] for block in as_blocks(content) if block["type"] == "text")


def block_texts(content: object, *, tool_results: bool, compaction: bool) -> list[str]:
    """The texts a message's content holds, in order, from raw JSON (anything malformed is skipped): its text
    blocks, the text of its tool results when `tool_results`, and compaction summaries when `compaction`."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, Sequence):
        return []
    texts: list[str] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "compaction" and compaction and isinstance(block.get("content"), str):
            texts.append(block["content"])
        elif kind == "tool_result" and tool_results:
            texts.extend(block_texts(block.get("content"), tool_results=False, compaction=compaction))
    return texts


def tool_calls(content: str | Iterable[Any]) -> list[Block]:
    """The `tool_use` blocks of a message, in order."""
    if isinstance(content, str):
        return []
    return [block for block in as_blocks(content) if block["type"] == "tool_use"]


def user_content(content: object, *, where: str = "content") -> str | list[Block]:
    """Validate what a caller passed as user content; strings stay strings (byte-stable requests)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
        blocks = []
        for index, block in enumerate(content):
            if isinstance(block, str):
                blocks.append({"type": "text", "text": block})
            elif isinstance(block, Mapping) or hasattr(block, "to_dict"):
                blocks.append(block_param(block))
            else:
                raise UsageError(
                    f"{where}[{index}] must be a string or a content block dict, not {type(block).__name__}"
                )
        return blocks
    raise UsageError(f"{where} must be a string or a list of content blocks, not {type(content).__name__}")


def tool_result_block(tool_use_id: str, result: object) -> Block:
    """A `tool_result` block for one call's result.

    `result` may be a string, a list of content blocks, any JSON-serialisable value (sent as JSON text), or an
    exception, which is sent as an error result (`is_error: true`) with the exception's message.
    """
    if isinstance(result, BaseException):
        return {
            "type": "tool_result",
            "tool_use_id": tool_use_id,
            "content": str(result) or type(result).__name__,
            "is_error": True,
        }
    if isinstance(result, str):
        content: str | list[Block] = result
    elif isinstance(result, list) and all(isinstance(b, Mapping) and "type" in b for b in result):
        content = [block_param(b) for b in result]
    else:
        try:
            content = json.dumps(result, ensure_ascii=False, sort_keys=True)
        except TypeError as err:
            raise UsageError(
                f"result for tool call {tool_use_id!r} is not a string, content blocks or JSON-serialisable"
            ) from err
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": content}


def merge_assistant_content(earlier: Sequence[Block], later: Sequence[Block], *, keep_thinking: bool) -> list[Block]:
    """Join a continuation onto the content it continues: the first text block of `later` extends the last
    text block of `earlier`. Thinking blocks of a continuation are dropped unless `keep_thinking` (they are
    bound to a request that will never be sent again)."""
    merged = [dict(block) for block in earlier]
    rest = [dict(b) for b in later if keep_thinking or b["type"] not in THINKING_TYPES]
    if merged and rest and merged[-1]["type"] == "text" and rest[0]["type"] == "text":
        merged[-1]["text"] = merged[-1]["text"] + rest.pop(0)["text"]
    return merged + rest


def compaction_start(messages: Sequence[Any]) -> int:
    """The index of the message after the first that holds a compaction block with content, or 0: the API drops
    everything before such a block (reference §7), so billing and caching start there.

    Only the first turn is searched (up to the next user message that is not a tool result): a request that
    follows an API compaction starts at the turn holding the block (`ServerCompaction`), and this runs on every
    plan, so a long history without compaction costs nothing."""
    for index in range(1, len(messages)):
        message = messages[index]
        content = message.get("content") if isinstance(message, Mapping) else None
        blocks = [block_view(block) or {} for block in content] if isinstance(content, list | tuple) else []
        if any(view.get("type") == "compaction" and view.get("content") for view in blocks):
            return index
        if (
            isinstance(message, Mapping)
            and message.get("role") == "user"
            and not any(view.get("type") == "tool_result" for view in blocks)
        ):
            return 0  # the second turn began: the first held no block
    return 0


def without_thinking(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """`message` without its thinking blocks: the same object when it has none (or string content)."""
    content = message.get("content")
    if not isinstance(content, list | tuple):
        return message
    kept = [block for block in content if (block_view(block) or {}).get("type") not in THINKING_TYPES]
    if len(kept) == len(content):
        return message
    return {**message, "content": kept}
