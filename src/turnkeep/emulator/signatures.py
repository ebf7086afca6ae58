"""Signatures of thinking blocks: how the emulator recognises its own thinking blocks when they come back.

A signature is HMAC-SHA256 under `EMULATOR_KEY`, base64-encoded. The key is **not a secret**: it is written
here in the source. It only lets the emulator tell a thinking block it produced, unmodified and in its place,
from one that was edited or moved; it protects nothing.

What a signature covers depends on the model (`ModelInfo.thinking_binding`):

- every signature covers the thinking text, so an edited thinking block is always rejected;
- on models that bind thinking to its prefix (Opus 5.5, Fable/Mythos 5.1 and 5.2, …) it also covers everything
  before the block: the system prompt, the tool definitions, every earlier message and the earlier blocks of the
  same message. Changing any of that and sending the block again fails the check.

The prefix is canonicalised the way the cache sees it: string content equals one text block, and
`cache_control` is ignored, so moving a cache breakpoint never invalidates a thinking block.

A bound signature also records which models may read the block (`ModelInfo.thinking_readers` of the model that
wrote it: a Sonnet 5.5 block is for Sonnet 5.5 only, a Fable 5.2 block for Fable 5.2 and Mythos 5.2). Any other
model answers `model_mismatch`, the API's `model_binding_mismatch`.

Layout (before base64): version byte `1`, a kind byte (`0` text only, `1` bound), the 32-byte text MAC and, for
kind 1, the 32-byte bound MAC followed by the readers (model ids joined by commas, UTF-8; the bound MAC covers
them). A non-binding model checks the text MAC and, on a bound block, that it is a reader; a binding model requires
kind 1, checks that it is a reader, then checks the bound MAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from turnkeep.core.catalog import ModelInfo
from turnkeep.emulator.tokenizer import canonical_json, content_blocks
from turnkeep.errors import InvalidValue

__all__ = [
    "EMULATOR_KEY",
    "SignatureStatus",
    "prefix_digest",
    "prefix_digests",
    "sign_thinking",
    "signature_status",
    "signature_valid",
]

#: The HMAC key. Deliberately public: it identifies the emulator's signatures, it does not secure anything.
EMULATOR_KEY = b"turnkeep-emulator/thinking-signature/v1 (not a secret)"

_VERSION = 1
_TEXT_ONLY = 0
_BOUND = 1
_MAC_SIZE = 32

#: `valid`; `prefix_mismatch` (the thinking text is intact but the block was made for a different prefix, or
#: carries no record of one on a binding model); `model_mismatch` (intact, but written by a model whose thinking
#: this one may not read); `invalid` (edited, truncated or not a signature of ours).
SignatureStatus = Literal["valid", "prefix_mismatch", "model_mismatch", "invalid"]


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, Mapping):
        stripped = {key: value for key, value in block.items() if key != "cache_control"}
        nested = stripped.get("content")
        if isinstance(nested, list):
            stripped["content"] = [_without_cache_control(inner) for inner in nested]
        return stripped
    return block


def _header(body: Mapping[str, Any]) -> bytes:
    tools = body.get("tools")
    header = {
        "system": [_without_cache_control(b) for b in content_blocks(body.get("system"))],
        "tools": [_without_cache_control(t) for t in tools] if isinstance(tools, list) else [],
    }
    return b"H" + canonical_json(header).encode("utf-8") + b"\n"


def _message_start(message: Any) -> bytes:
    role = message.get("role") if isinstance(message, Mapping) else None
    return b"M" + canonical_json(role).encode("utf-8") + b"\n"


def _block(block: Any) -> bytes:
    return b"B" + canonical_json(_without_cache_control(block)).encode("utf-8") + b"\n"


def prefix_digests(body: Mapping[str, Any], positions: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """`prefix_digest` for several `(message_index, block_index)` positions, in one pass over the request.

    The digest is a stream hash (header, then each message's role and blocks), so a later position extends the
    hash of an earlier one and a whole history costs one pass however many thinking blocks it holds.
    """
    wanted = sorted(set(positions))
    digests: dict[tuple[int, int], str] = {}
    if not wanted:
        return digests
    raw_messages = body.get("messages")
    messages: list[Any] = raw_messages if isinstance(raw_messages, list) else []
    hasher = hashlib.sha256(_header(body))
    next_wanted = 0
    for message_index in range(max(i for i, _ in wanted) + 1):
        # Past the end: the assistant message a reply to `body` becomes (it has no blocks in `body` yet).
        message = messages[message_index] if message_index < len(messages) else {"role": "assistant"}
        hasher.update(_message_start(message))
        blocks = content_blocks(message.get("content")) if isinstance(message, Mapping) else []
        block_index = 0
        while next_wanted < len(wanted) and wanted[next_wanted][0] == message_index:
            target = wanted[next_wanted][1]
            if target > len(blocks):
                raise InvalidValue(
                    f"messages[{message_index}] has {len(blocks)} block(s) in this body, so the prefix of block "
                    f"{target} is unknown: include the reply's earlier blocks in the body's messages"
                )
            while block_index < target:
                hasher.update(_block(blocks[block_index]))
                block_index += 1
            digests[wanted[next_wanted]] = hasher.copy().hexdigest()
            next_wanted += 1
        for remaining in blocks[block_index:]:
            hasher.update(_block(remaining))
    return digests


def prefix_digest(body: Mapping[str, Any], message_index: int, block_index: int) -> str:
    """SHA-256 hex of everything before `messages[message_index].content[block_index]` in `body`.

    Covers system, tools, messages before `message_index`, the role of that message and its blocks before
    `block_index`; canonical (string content = one text block, `cache_control` ignored). `message_index` may be
    `len(messages)`: the assistant message a reply to `body` will become.
    """
    return prefix_digests(body, [(message_index, block_index)])[(message_index, block_index)]


def _mac(*parts: bytes) -> bytes:
    return hmac.digest(EMULATOR_KEY, b"\x00".join(parts), "sha256")


def _text_mac(thinking: str) -> bytes:
    return _mac(b"text", thinking.encode("utf-8"))


def _bound_mac(digest: str, thinking: str, readers: bytes) -> bytes:
    return _mac(b"bound", digest.encode("ascii"), thinking.encode("utf-8"), readers)


def _readers(model: ModelInfo) -> bytes:
    return ",".join(model.thinking_readers or (model.id,)).encode("utf-8")


def _reads(model: ModelInfo, readers: bytes) -> bool:
    names = set(readers.decode("utf-8", "replace").split(","))
    return model.id in names or any(alias in names for alias in model.aliases)


def sign_with_digest(model: ModelInfo, digest: str | None, thinking: str) -> str:
    """The signature of `thinking` whose prefix digest is `digest` (ignored on non-binding models)."""
    if model.thinking_binding:
        if digest is None:
            raise InvalidValue(f"{model.id} binds thinking to its prefix: a prefix digest is required")
        readers = _readers(model)
        raw = bytes([_VERSION, _BOUND]) + _text_mac(thinking) + _bound_mac(digest, thinking, readers) + readers
    else:
        raw = bytes([_VERSION, _TEXT_ONLY]) + _text_mac(thinking)
    return base64.b64encode(raw).decode("ascii")


def sign_thinking(
    model: ModelInfo, body: Mapping[str, Any], message_index: int, block_index: int, thinking: str
) -> str:
    """The signature of a thinking block that will sit at `messages[message_index].content[block_index]`.

    `body` is the request the block answers; for a fresh reply `message_index` is `len(body["messages"])`.
    A thinking block that is not the reply's first block is bound to the reply's earlier blocks too, so for
    `block_index > 0` pass a body whose messages end with the reply so far
    (`[*messages, {"role": "assistant", "content": reply[:block_index]}]`); otherwise `ValueError`.
    """
    digest = prefix_digest(body, message_index, block_index) if model.thinking_binding else None
    return sign_with_digest(model, digest, thinking)


def status_with_digest(model: ModelInfo, digest: str | None, thinking: str, signature: str) -> SignatureStatus:
    """`signature_status` given the block's prefix digest (only consulted on binding models)."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "invalid"
    if len(raw) < 2 + _MAC_SIZE or raw[0] != _VERSION or raw[1] not in (_TEXT_ONLY, _BOUND):
        return "invalid"
    kind = raw[1]
    size = 2 + _MAC_SIZE * (2 if kind == _BOUND else 1)
    wrong_size = len(raw) <= size if kind == _BOUND else len(raw) != size
    if wrong_size or not hmac.compare_digest(raw[2 : 2 + _MAC_SIZE], _text_mac(thinking)):
        return "invalid"
    readers = raw[size:]
    if kind == _BOUND and not _reads(model, readers):
        return "model_mismatch"
    if not model.thinking_binding:
        return "valid"
    if kind != _BOUND or digest is None:
        return "prefix_mismatch"
    if not hmac.compare_digest(raw[2 + _MAC_SIZE : size], _bound_mac(digest, thinking, readers)):
        return "prefix_mismatch"
    return "valid"


def signature_status(
    model: ModelInfo, body: Mapping[str, Any], message_index: int, block_index: int, thinking: str, signature: str
) -> SignatureStatus:
    """Why a thinking block's signature does or does not hold at its place in `body` (see `SignatureStatus`)."""
    digest = prefix_digest(body, message_index, block_index) if model.thinking_binding else None
    return status_with_digest(model, digest, thinking, signature)


def signature_valid(
    model: ModelInfo, body: Mapping[str, Any], message_index: int, block_index: int, thinking: str, signature: str
) -> bool:
    """True when `signature` was made by the emulator for this thinking text at this place in this conversation."""
    return signature_status(model, body, message_index, block_index, thinking, signature) == "valid"
