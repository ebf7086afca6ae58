"""Hypothesis strategies for Messages API histories, for any test that builds or checks requests.

- `histories()`: VALID histories (text turns, tool loops with parallel calls, thinking blocks with signatures,
  optional role 'system' messages, an optional leading compaction block, a few cache breakpoints).
- `messy_histories()`: a valid history made messy in ways `normalize` must undo (empty and blank text blocks,
  same-role runs, string vs block content, empty messages, trailing whitespace on a final prefill). Draws
  `(messy, valid)` pairs.
- `message_soups()`: arbitrary user/assistant sequences built from the same kinds of blocks, with no promise
  of validity (orphan tool calls, assistant first, ...).

Plain JSON dicts throughout; every history is a fresh object, so tests may compare against deep copies.
"""

from __future__ import annotations

from itertools import count
from typing import Any, Literal

from hypothesis import strategies as st

Message = dict[str, Any]
Block = dict[str, Any]

# Words never contain whitespace, so joined text is never blank and never ends in whitespace.
_words = st.one_of(
    st.sampled_from(["Hello", "weather", "Oslo", "42", "ok.", "why?", "naïve", "中文", "😀"]),
    st.text(alphabet="abcXYZ019.,!?-éß中😀", min_size=1, max_size=6),
)
texts = st.lists(_words, min_size=1, max_size=4).map(" ".join)
"""Non-blank text with no leading or trailing whitespace."""

blank_texts = st.sampled_from(["", " ", "\n", "  \t", " \n\n "])
"""Text that is empty or whitespace only."""

_signatures = st.text(alphabet="abcdefABCDEF0123456789+/=", min_size=8, max_size=24)


def _text(text: str) -> Block:
    return {"type": "text", "text": text}


def _thinking_blocks() -> st.SearchStrategy[list[Block]]:
    thinking = st.builds(
        lambda text, signature: {"type": "thinking", "thinking": text, "signature": signature},
        texts,
        _signatures,
    )
    redacted = _signatures.map(lambda data: {"type": "redacted_thinking", "data": data})
    return st.lists(st.one_of(thinking, thinking, redacted), max_size=2)


def _tool_result(tool_id: str, content: Any, is_error: bool) -> Block:
    block: Block = {"type": "tool_result", "tool_use_id": tool_id, "content": content}
    if is_error:
        block["is_error"] = True
    return block


_tool_result_contents = st.one_of(texts, st.lists(texts.map(_text), min_size=1, max_size=2))


@st.composite
def histories(
    draw: st.DrawFn,
    *,
    system_messages: bool = False,
    compaction: bool = True,
    ending: Literal["user", "assistant", "any"] = "user",
    max_turns: int = 5,
) -> list[Message]:
    """A valid history of 1..max_turns exchanges.

    `system_messages`: may include role 'system' messages (only valid on models that accept them).
    `ending`: "user" histories are complete requests (valid with `complete=True` on every model); "assistant"
    ones end with an assistant message — a text reply (a prefill) or parallel tool calls awaiting results —
    valid with `complete=False`; "any" draws either.
    """
    if ending == "any":
        ending = draw(st.sampled_from(["user", "assistant"]))
    ids = count(1)
    messages: list[Message] = []
    pending: list[str] = []  # tool calls the next user message must answer
    turns = draw(st.integers(1, max_turns))
    for turn in range(turns):
        messages.append(draw(_user_message(pending, leading_compaction=compaction and turn == 0)))
        if system_messages and draw(st.booleans()):
            messages.append(
                {
                    "role": "system",
                    "content": draw(st.one_of(texts, st.lists(texts.map(_text), min_size=1, max_size=2))),
                }
            )
        assistant, pending = draw(_assistant_message(ids))
        messages.append(assistant)
    if ending == "user":
        messages.append(draw(_user_message(pending, leading_compaction=False)))
    _add_breakpoints(messages, draw(st.lists(st.integers(0, 10_000), max_size=3)))
    return messages


@st.composite
def _user_message(draw: st.DrawFn, pending: list[str], *, leading_compaction: bool) -> Message:
    blocks: list[Block] = []
    if leading_compaction and draw(st.booleans()):
        blocks.append({"type": "compaction", "content": draw(texts), "encrypted_content": draw(_signatures)})
    for tool_id in pending:
        blocks.append(_tool_result(tool_id, draw(_tool_result_contents), draw(st.booleans())))
    blocks.extend(_text(text) for text in draw(st.lists(texts, min_size=0 if blocks else 1, max_size=2)))
    if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
        return {"role": "user", "content": blocks[0]["text"]}
    return {"role": "user", "content": blocks}


@st.composite
def _assistant_message(draw: st.DrawFn, ids: count[int]) -> tuple[Message, list[str]]:
    blocks = draw(_thinking_blocks())
    calls = draw(st.integers(0, 3))
    if calls == 0 or draw(st.booleans()):
        blocks.append(_text(draw(texts)))
    pending = []
    for _ in range(calls):
        tool_id = f"toolu_{next(ids):04d}"
        pending.append(tool_id)
        name = draw(st.sampled_from(["get_weather", "search", "calculate"]))
        blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": {"q": draw(texts)}})
    if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
        return {"role": "assistant", "content": blocks[0]["text"]}, pending
    return {"role": "assistant", "content": blocks}, pending


def _add_breakpoints(messages: list[Message], picks: list[int]) -> None:
    """Put a 5-minute breakpoint on a few cacheable blocks (never thinking), chosen by `picks`."""
    cacheable = [
        block
        for message in messages
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] not in ("thinking", "redacted_thinking")
    ]
    for pick in picks:
        if cacheable:
            cacheable[pick % len(cacheable)]["cache_control"] = {"type": "ephemeral"}


@st.composite
def messy_histories(
    draw: st.DrawFn, *, system_messages: bool = False, ending: Literal["user", "assistant", "any"] = "any"
) -> tuple[list[Message], list[Message]]:
    """(messy, valid): a valid history and the same history with removable mess added.

    The mess: blank user text blocks and empty assistant text blocks anywhere (never in role 'system'
    messages), messages split into runs of the same role, single text blocks turned into strings and back,
    empty messages between messages, and trailing whitespace on a final assistant text.
    """
    valid = draw(histories(system_messages=system_messages, ending=ending))
    messy: list[Message] = []
    for message in valid:
        if draw(st.integers(0, 3)) == 0:
            messy.append(
                {"role": draw(st.sampled_from(["user", "assistant"])), "content": draw(st.sampled_from(["", []]))}
            )
        if message["role"] == "system":
            messy.append(message)
            continue
        blocks = _as_blocks(message["content"])
        junk = blank_texts if message["role"] == "user" else st.just("")
        for _ in range(draw(st.integers(0, 2))):
            blocks.insert(draw(st.integers(0, len(blocks))), _text(draw(junk)))
        cuts = sorted(draw(st.sets(st.integers(1, max(1, len(blocks) - 1)), max_size=2)))
        for start, end in zip([0, *cuts], [*cuts, len(blocks)], strict=True):
            part = blocks[start:end]
            if not part:
                continue
            if len(part) == 1 and part[0].keys() == {"type", "text"} and draw(st.booleans()):
                messy.append({"role": message["role"], "content": part[0]["text"]})
            else:
                messy.append({"role": message["role"], "content": part})
    if messy and messy[-1]["role"] == "assistant" and draw(st.booleans()):
        last = messy[-1]
        space = draw(st.sampled_from([" ", "\n", " \n\t"]))
        if isinstance(last["content"], str):
            last["content"] += space
        elif last["content"][-1]["type"] == "text":
            last["content"][-1] = {**last["content"][-1], "text": last["content"][-1]["text"] + space}
        else:
            last["content"].append(_text(space))
    return messy, valid


def _as_blocks(content: str | list[Block]) -> list[Block]:
    return [_text(content)] if isinstance(content, str) else list(content)


@st.composite
def message_soups(draw: st.DrawFn) -> list[Message]:
    """Arbitrary user/assistant messages: any order, blank text, orphan and unanswered tool calls.

    Blocks still sit in the role they belong to, tool_use ids are unique and tool_result blocks lead the
    message they are drawn in; what merging does with them is up to the code under test.
    """
    ids = count(1)
    issued: list[str] = []
    messages: list[Message] = []
    for _ in range(draw(st.integers(0, 8))):
        role = draw(st.sampled_from(["user", "assistant"]))
        any_text = st.one_of(texts, blank_texts, texts.map(lambda text: text + " "))
        if draw(st.integers(0, 3)) == 0:
            messages.append({"role": role, "content": draw(any_text)})
            continue
        blocks: list[Block] = []
        if role == "user":
            answerable = st.sampled_from([*issued, "toolu_unknown"]) if issued else st.just("toolu_unknown")
            for tool_id in draw(st.lists(answerable, max_size=2, unique=True)):
                blocks.append(_tool_result(tool_id, draw(_tool_result_contents), False))
            blocks.extend(_text(text) for text in draw(st.lists(any_text, max_size=2)))
        else:
            blocks.extend(draw(_thinking_blocks()))
            for _ in range(draw(st.integers(0, 3))):
                if draw(st.booleans()):
                    blocks.append(_text(draw(any_text)))
                else:
                    tool_id = f"toolu_{next(ids):04d}"
                    issued.append(tool_id)
                    blocks.append({"type": "tool_use", "id": tool_id, "name": "search", "input": {}})
        messages.append({"role": role, "content": blocks})
    return messages
