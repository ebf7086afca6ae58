"""Remember a function of a text, as the emulator needs for texts that history resends with every request.

Short texts are remembered by the text itself; longer ones by a 128-bit BLAKE2b digest of it, so a long pasted
document is processed once while the memory kept stays bounded (at most `entries` short texts of up to
`MAX_KEY_CHARS` characters, plus `entries` digests).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Generic, TypeVar

__all__ = ["MAX_KEY_CHARS", "TextMemo"]

#: Texts up to this length are kept as their own key; longer ones by their digest.
MAX_KEY_CHARS = 16_384

_T = TypeVar("_T")


class TextMemo(Generic[_T]):
    """`memo(text)` is `function(text)`, computed once per distinct text while it stays among the recent ones."""

    def __init__(self, function: Callable[[str], _T], entries: int = 4096) -> None:
        self._function = function
        self._short = lru_cache(maxsize=entries)(function)
        self._long: OrderedDict[bytes, _T] = OrderedDict()
        self._entries = entries
        self._lock = threading.Lock()

    def __call__(self, text: str) -> _T:
        if len(text) <= MAX_KEY_CHARS:
            return self._short(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            if key in self._long:
                self._long.move_to_end(key)
                return self._long[key]
        value = self._function(text)
        with self._lock:
            self._long[key] = value
            if len(self._long) > self._entries:
                self._long.popitem(last=False)
        return value
