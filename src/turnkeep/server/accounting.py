"""What an upstream reply used and cost, read from a JSON reply or folded from its SSE events (no I/O here)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from turnkeep.core.catalog import Catalog
from turnkeep.core.pricing import token_counts, usage_cost

__all__ = ["Billed", "SSEUsage", "billed"]


@dataclass(frozen=True, slots=True)
class Billed:
    """One upstream request as the tenant's accounting records it."""

    model: str
    input_tokens: int  # uncached + cache writes + cache reads: the whole prompt
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    usd: Decimal


def billed(model: str, usage: Mapping[str, Any], catalog: Catalog) -> Billed:
    """Price `usage` on `model` (an unknown model is priced with the catalog's conservative defaults)."""
    counts = token_counts(usage)
    cost = usage_cost(usage, catalog.get(model), model_prices=catalog.get)
    return Billed(
        model=model,
        input_tokens=counts.total_input,
        output_tokens=counts.output,
        cache_read_tokens=counts.cache_read,
        cache_write_tokens=counts.cache_write_5m + counts.cache_write_1h,
        usd=cost.total,
    )


class SSEUsage:
    """Folds the bytes of a Messages SSE stream as they pass through, keeping only the model and the usage.

    `message_start` carries the model and the input side of `usage`; each `message_delta` carries cumulative
    counts that replace earlier ones. Text is never kept.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.model: str | None = None
        self.usage: dict[str, Any] = {}
        self.complete = False

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        # Only the events that carry usage are parsed; deltas of text go by untouched.
        if not (data.startswith(b'{"type":"message_') or b'"message_' in data[:40]):
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model")
            self.usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            self.usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.complete = True
