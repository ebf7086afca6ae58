"""The emulator's deterministic tokenizer: how many tokens a text, a content block and a request count.

There is no official local tokenizer for current Claude models, so the emulator uses a documented rule whose
counts are in the same ballpark as the real ones (about 4 characters per token for English prose, fewer for
code and JSON). The same input always gives the same count, on every machine.

**Text (generation 1).** The text is split into pieces with one regular expression:

| piece | tokens |
|---|---|
| a run of ASCII letters (a word) | ceil(length / 6): words up to 6 letters are 1 token, 7–12 are 2 … |
| a run of digits | ceil(length / 3) |
| a run of ASCII punctuation or symbols (`,` `.` `{"` `_` …) | ceil(length / 2) |
| two or more whitespace characters, or a newline | 1 |
| any other piece with a non-ASCII character (`café`, CJK, emoji) | ceil(UTF-8 bytes / 3) |

A single space or tab between pieces is free (it belongs to the next word, as in real tokenizers).

**Generation 2** (models from Opus 4.7 on, `ModelInfo.tokenizer == 2`) counts about 30% more: each block's
generation-1 count `n` becomes `round(n × 1.3)`, rounded half up (`(13 n + 5) // 10`). The per-message
overhead below is the same in both generations.

**Blocks.** A request is cut into segments, one per block, in prefix order `tools` → `system` → `messages`:

- tool definition: the tokens of its canonical JSON (keys sorted, no spaces, `cache_control` left out);
- `text`: its text (plus the canonical JSON of `citations`, when present);
- `image`: a fixed 1,600 tokens (`IMAGE_TOKENS`);
- `document`: plain-text and content sources count their text; a base64 PDF counts 1,500 tokens per page
  (`/Type /Page` objects in the file, at least one); a URL or file PDF counts 1,500; plus title and context
  and an overhead of 6;
- `search_result`: source, title and text, plus 6;
- `tool_use` / `server_tool_use` / `mcp_tool_use`: the name plus the canonical JSON of `input`, plus 8;
- `tool_result` / `mcp_tool_result`: its content (text, images, documents as above), plus 6;
- `thinking` / `redacted_thinking`: 0 — thinking of earlier turns is not input (reference §5);
- `compaction`: the tokens of its `content` text (0 for a failed compaction, `content: null`);
- any other block (server-tool results, `container_upload`, …): the tokens of its canonical JSON.

Each message adds `MESSAGE_OVERHEAD` (4) tokens to its first block's segment (role markers and turn
separators). A string `system` or string message content counts as one text block. `input_tokens` is exactly
the sum of the segments. `output_tokens` counts the blocks of a reply the same way, except that thinking counts
its text (thinking is billed as output), citations of reply text are free and there is no per-message overhead.

**Fingerprints.** Each segment carries the SHA-256 (hex) of the canonical JSON of
`{"role": ..., "starts_message": ..., "block": ...}` with `cache_control` removed (also from blocks nested in
a `tool_result`), so moving a breakpoint does not change a fingerprint, while the same blocks under another role
or split into messages differently do. For tools the role is `"tools"`, for the top-level system `"system"`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from turnkeep.emulator._memo import MAX_KEY_CHARS, TextMemo

__all__ = [
    "DOCUMENT_OVERHEAD",
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "PDF_PAGE_TOKENS",
    "TOOL_RESULT_OVERHEAD",
    "TOOL_USE_OVERHEAD",
    "Segment",
    "block_tokens",
    "canonical_json",
    "content_blocks",
    "fingerprint",
    "head_segments",
    "input_tokens",
    "message_segments",
    "output_tokens",
    "request_segments",
    "text_tokens",
    "truncate_to_tokens",
]

#: Tokens added to the first block of every message.
MESSAGE_OVERHEAD = 4
#: Tokens of one image, whatever its size.
IMAGE_TOKENS = 1600
#: Tokens of one PDF page (a PDF whose pages cannot be counted counts as one page).
PDF_PAGE_TOKENS = 1500
TOOL_USE_OVERHEAD = 8
TOOL_RESULT_OVERHEAD = 6
DOCUMENT_OVERHEAD = 6

# Words, digit runs, whitespace that is more than one blank, punctuation/symbol runs. Single blanks match nothing.
_PIECE = re.compile(r"[^\W\d_]+|\d+|\s{2,}|\n|[^\w\s]+|_+")
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
# Texts up to this length are kept as their own cache key (longer ones by a digest: `_memo`).
_CACHE_MAX_CHARS = MAX_KEY_CHARS

_Section = Literal["tools", "system", "messages"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One block of a request as the cache and the bill see it.

    `location` is e.g. `"tools[0]"`, `"system[0]"`, `"messages[3].content[1]"`; `tokens` includes the block's
    share of the per-message overhead; `cache_ttl` is `"5m"`/`"1h"` when the block carries `cache_control`;
    `cacheable` is False for thinking blocks (no breakpoint may sit there); `fingerprint` identifies the block,
    its role and whether it starts a message, without `cache_control`.
    """

    location: str
    section: _Section
    message_index: int | None
    tokens: int
    cache_ttl: str | None
    cacheable: bool
    fingerprint: str


# One encoder for every call: `json.dumps` with options builds a new encoder each time, which dominates small blocks.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of `value`, the same as
    `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`."""
    return _CANONICAL.encode(value)


def _scale(count: int, generation: int) -> int:
    """Generation 2 counts 30% more, rounded half up."""
    if generation >= 2:
        return (count * 13 + 5) // 10
    return count


def _piece_tokens(piece: str) -> int:
    first = piece[0]
    if piece.isascii():
        if first.isalpha():
            return (len(piece) + 5) // 6
        if first.isdigit():
            return (len(piece) + 2) // 3
        if first.isspace():
            return 1
        return (len(piece) + 1) // 2
    if first.isspace():
        return 1
    return (len(piece.encode("utf-8")) + 2) // 3


def _count(text: str) -> int:
    total = 0
    for piece in _PIECE.findall(text):
        total += _piece_tokens(piece)
    return total


# History resends the same texts every turn: each is counted once.
_text1 = TextMemo(_count, entries=8192)


def text_tokens(text: str, generation: int) -> int:
    """Tokens of a plain text under tokenizer `generation` (1 or 2); see the module docstring for the rule."""
    return _scale(_text1(text), generation)


def truncate_to_tokens(text: str, limit: int, generation: int) -> str:
    """The longest prefix of `text`, cut between pieces, whose `text_tokens` is at most `limit`."""
    count = 0
    for match in _PIECE.finditer(text):
        count += _piece_tokens(match.group())
        if _scale(count, generation) > limit:
            return text[: match.start()]
    return text


def _json1(value: Any) -> int:
    return _text1(canonical_json(value))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def content_blocks(content: Any) -> list[Any]:
    """Message or system content as a list of blocks: a string is one text block; anything else as given."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    return []


def _pdf_pages(data: str) -> int:
    return _pdf_pages_cached(data) if len(data) <= 4 * _CACHE_MAX_CHARS else _count_pdf_pages(data)


def _count_pdf_pages(data: str) -> int:
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return 1
    return max(1, len(_PDF_PAGE.findall(raw)))


_pdf_pages_cached = lru_cache(maxsize=256)(_count_pdf_pages)


def _document1(block: Mapping[str, Any]) -> int:
    source = block.get("source")
    tokens = DOCUMENT_OVERHEAD + _text1(_str(block.get("title"))) + _text1(_str(block.get("context")))
    if not isinstance(source, Mapping):
        return tokens + PDF_PAGE_TOKENS
    kind = source.get("type")
    if kind == "text":
        return tokens + _text1(_str(source.get("data")))
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return tokens + _text1(inner)
        return tokens + sum(_input1(b) for b in content_blocks(inner) if isinstance(b, Mapping))
    if kind == "base64" and source.get("media_type") == "application/pdf":
        return tokens + PDF_PAGE_TOKENS * _pdf_pages(_str(source.get("data")))
    return tokens + PDF_PAGE_TOKENS


def _tool_result1(block: Mapping[str, Any]) -> int:
    content = block.get("content")
    if isinstance(content, str):
        return TOOL_RESULT_OVERHEAD + _text1(content)
    if isinstance(content, list):
        return TOOL_RESULT_OVERHEAD + sum(_input1(b) for b in content if isinstance(b, Mapping))
    return TOOL_RESULT_OVERHEAD


def _tool_use1(block: Mapping[str, Any]) -> int:
    tokens = TOOL_USE_OVERHEAD + _text1(_str(block.get("name"))) + _json1(block.get("input", {}))
    if block.get("type") == "mcp_tool_use":
        tokens += _text1(_str(block.get("server_name")))
    return tokens


def _text_block1(block: Mapping[str, Any]) -> int:
    tokens = _text1(_str(block.get("text")))
    citations = block.get("citations")
    if citations:
        tokens += _json1(citations)
    return tokens


def _input1(block: Mapping[str, Any]) -> int:
    """Generation-1 input tokens of one block, without the per-message overhead."""
    kind = block.get("type")
    if kind == "text":
        return _text_block1(block)
    if kind in ("thinking", "redacted_thinking"):
        return 0
    if kind == "image":
        return IMAGE_TOKENS
    if kind == "document":
        return _document1(block)
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return _tool_use1(block)
    if kind in ("tool_result", "mcp_tool_result"):
        return _tool_result1(block)
    if kind == "search_result":
        texts = sum(_text_block1(b) for b in content_blocks(block.get("content")) if isinstance(b, Mapping))
        return DOCUMENT_OVERHEAD + _text1(_str(block.get("source"))) + _text1(_str(block.get("title"))) + texts
    if kind == "compaction":
        return _text1(_str(block.get("content")))
    return _json1(_without_cache_control(block))


def block_tokens(block: Mapping[str, Any], generation: int) -> int:
    """Input tokens of one content block, without the per-message overhead."""
    return _scale(_input1(block), generation)


def _output1(block: Mapping[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return _text1(_str(block.get("text")))
    if kind == "thinking":
        return _text1(_str(block.get("thinking")))
    if kind == "redacted_thinking":
        return _text1(_str(block.get("data")))
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return _tool_use1(block)
    if kind == "compaction":
        return _text1(_str(block.get("content")))
    return _json1(block)


def output_tokens(content: Sequence[Mapping[str, Any]], generation: int) -> int:
    """Billed output tokens of a reply's content blocks (thinking included, no per-message overhead)."""
    return sum(_scale(_output1(block), generation) for block in content if isinstance(block, Mapping))


def _without_cache_control(block: Mapping[str, Any]) -> Mapping[str, Any]:
    """The block as the cache compares it: `cache_control` removed, also from blocks nested in its content."""
    nested = block.get("content")
    if not isinstance(nested, list) or not any(isinstance(b, Mapping) and "cache_control" in b for b in nested):
        nested = None
    if "cache_control" not in block and nested is None:
        return block
    stripped = {key: value for key, value in block.items() if key != "cache_control"}
    if nested is not None:
        stripped["content"] = [
            {k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, Mapping) else b for b in nested
        ]
    return stripped


def fingerprint(role: str, starts_message: bool, block: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of the block (without `cache_control`), its role and message start."""
    text = block.get("text")
    if (
        block.get("type") == "text"
        and type(text) is str
        and len(text) <= _CACHE_MAX_CHARS
        and len(block) - ("cache_control" in block) == 2
    ):
        # A plain text block, as history resends it every turn: remembered by its text.
        return _text_fingerprint(role, starts_message, text)
    return _fingerprint(role, starts_message, _without_cache_control(block))


def _fingerprint(role: str, starts_message: bool, block: Mapping[str, Any]) -> str:
    payload = {"role": role, "starts_message": starts_message, "block": block}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@lru_cache(maxsize=4096)
def _text_fingerprint(role: str, starts_message: bool, text: str) -> str:
    return _fingerprint(role, starts_message, {"type": "text", "text": text})


def _ttl(block: Mapping[str, Any]) -> str | None:
    control = block.get("cache_control")
    if isinstance(control, Mapping):
        ttl = control.get("ttl")
        return ttl if isinstance(ttl, str) else "5m"
    # A breakpoint on a block inside a tool_result marks the end of that tool_result.
    nested = block.get("content")
    if isinstance(nested, list):
        for inner in reversed(nested):
            if isinstance(inner, Mapping) and isinstance(inner.get("cache_control"), Mapping):
                ttl = inner["cache_control"].get("ttl")
                return ttl if isinstance(ttl, str) else "5m"
    return None


def head_segments(body: Mapping[str, Any], generation: int) -> Iterator[Segment]:
    """The segments of a request's `tools` and `system`, in prefix order (what comes before its messages)."""
    tools = body.get("tools")
    if isinstance(tools, list):
        for index, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                continue
            yield Segment(
                location=f"tools[{index}]",
                section="tools",
                message_index=None,
                tokens=_scale(_json1(_without_cache_control(tool)), generation),
                cache_ttl=_ttl(tool),
                cacheable=True,
                fingerprint=fingerprint("tools", index == 0, tool),
            )
    for index, block in enumerate(content_blocks(body.get("system"))):
        if not isinstance(block, Mapping):
            continue
        yield Segment(
            location=f"system[{index}]",
            section="system",
            message_index=None,
            tokens=block_tokens(block, generation),
            cache_ttl=_ttl(block),
            cacheable=True,
            fingerprint=fingerprint("system", index == 0, block),
        )


def message_segments(message_index: int, message: Any, generation: int) -> Iterator[Segment]:
    """The segments of `messages[message_index]`: they depend on that message alone (and its position)."""
    if not isinstance(message, Mapping):
        return
    role = _str(message.get("role"))
    first = True
    for block_index, block in enumerate(content_blocks(message.get("content"))):
        if not isinstance(block, Mapping):
            continue
        tokens = block_tokens(block, generation) + (MESSAGE_OVERHEAD if first else 0)
        yield Segment(
            location=f"messages[{message_index}].content[{block_index}]",
            section="messages",
            message_index=message_index,
            tokens=tokens,
            cache_ttl=_ttl(block),
            cacheable=block.get("type") not in ("thinking", "redacted_thinking"),
            fingerprint=fingerprint(role, block_index == 0, block),
        )
        first = False


def _segments(body: Mapping[str, Any], generation: int) -> Iterator[Segment]:
    yield from head_segments(body, generation)
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for message_index, message in enumerate(messages):
        yield from message_segments(message_index, message, generation)


def request_segments(body: Mapping[str, Any], generation: int) -> list[Segment]:
    """The blocks of a request as segments, in prefix order: tools, then system, then messages."""
    return list(_segments(body, generation))


def input_tokens(body: Mapping[str, Any], generation: int) -> int:
    """Input tokens of a whole request; equal to the sum of its segments' tokens (computed without hashing)."""
    total = 0
    tools = body.get("tools")
    if isinstance(tools, list):
        total += sum(_scale(_json1(_without_cache_control(t)), generation) for t in tools if isinstance(t, Mapping))
    total += sum(block_tokens(b, generation) for b in content_blocks(body.get("system")) if isinstance(b, Mapping))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            blocks = [b for b in content_blocks(message.get("content")) if isinstance(b, Mapping)]
            if blocks:
                total += MESSAGE_OVERHEAD + sum(block_tokens(b, generation) for b in blocks)
    return total
