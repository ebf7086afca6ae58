"""Lower bounds on what a run's requests could have cost with ideal prompt caching.

`PrefixTracker` is fed every request a run sent (its time, model and body, as it went over the wire) and cuts
each into the emulator's segments (one per content block, in prefix order tools -> system -> messages, with the
block's token count and a fingerprint that ignores `cache_control`). A *prefix node* is a segment together with
everything before it in its request; two requests share a node exactly when they share the prefix up to and
including that block, which is what a prompt cache can reuse. Each node has a token count and the list of
requests that used it (times and prices).

Both bounds price each node on its own, ignoring breakpoint limits, the 20-block lookback and the minimum
cacheable prefix (each of which can only make real caching more expensive), so they are lower bounds of what the
same requests cost on the emulator with any breakpoints and TTLs. Uses are priced at the request's own price
band (long-context bands apply per request).

**(a) No expiry** (`no_expiry_usd`): a node used `m` times costs the cheaper of `m` uncached sends and one 5-minute
write followed by `m - 1` cache reads, as if entries never expired:
`tokens x min(sum_j input_j, write5m_1 + sum_{j>=2} read_j)`. For a node used more than once this is "written
once at the 5m price, then read" (issue 5); a node sent only once costs the uncached price (nothing could read
it, so a clairvoyant client would not pay for writing it).

**(b) Clairvoyant TTL** (`clairvoyant_usd`): as the API really behaves — a 5m or 1h entry is readable while the
gap since its last write or read is at most its TTL, and every read refreshes it — with each use choosing,
knowing every later gap, whether to send the node uncached, write it with a 5m TTL, write it with a 1h TTL, or
read the live entry. A dynamic programme over each node's uses with three states (no live entry, a live 5m
entry, a live 1h entry):

```
after the first use:  none = input_1,  e5 = write5m_1,  e1h = write1h_1
at use j (gap g):     best = min(none, e5, e1h)
                      none' = best + input_j
                      e5'   = min(best + write5m_j, e5  + read_j if g <= 300  s)
                      e1h'  = min(best + write1h_j, e1h + read_j if g <= 3600 s)
cost = tokens x min(none, e5, e1h)
```

Always (a) <= (b) <= the cost of the same requests with any real caching. Output tokens are not part of either
(the caller adds them: every strategy pays its own output in full).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from turnkeep.core.catalog import ModelInfo

if TYPE_CHECKING:
    from turnkeep.emulator.history import History

__all__ = ["PrefixTracker", "UsePrices"]

TTL_5M = 300.0
TTL_1H = 3600.0
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class UsePrices:
    """USD per million tokens for one request (its price band) and when it was sent."""

    at: float
    input: float
    write_5m: float
    write_1h: float
    read: float

    @classmethod
    def of(cls, at: float, model: ModelInfo, total_input: int) -> UsePrices:
        prices = model.prices_for(total_input)
        return cls(
            at,
            float(prices.input),
            float(prices.cache_write_5m),
            float(prices.cache_write_1h),
            float(prices.cache_read),
        )


class PrefixTracker:
    """The prefix nodes of a run's requests and who used them (see the module docstring)."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, str], int] = {}
        self._roots: dict[str, int] = {}
        self._tokens: list[int] = []
        self._uses: list[list[int]] = []
        self._requests: list[UsePrices] = []
        self.peak_input = 0
        self._history: History | None = None  # made on the first `add_body` (its import is not free)

    @property
    def requests(self) -> int:
        return len(self._requests)

    def add_body(self, at: float, model: ModelInfo, body: bytes | str | Mapping[str, Any]) -> None:
        """Record a `/v1/messages` request body (JSON bytes or the parsed object) sent at `at` to `model`."""
        if self._history is None:
            from turnkeep.emulator.history import History

            self._history = History()
        parsed: Mapping[str, Any] = json.loads(body) if isinstance(body, bytes | str) else body
        # Most messages recur in every later request: the tracker's memo cuts each into segments once.
        segments = self._history.analyse(parsed).segments(model.tokenizer)
        self.add(at, model, [(segment.fingerprint, segment.tokens) for segment in segments])

    def add(self, at: float, model: ModelInfo, segments: list[tuple[str, int]]) -> None:
        """Record a request as its (fingerprint, tokens) segments in prefix order."""
        total = sum(tokens for _, tokens in segments)
        self.peak_input = max(self.peak_input, total)
        index = len(self._requests)
        self._requests.append(UsePrices.of(at, model, total))
        node = self._roots.get(model.id)
        if node is None:
            node = self._roots[model.id] = self._new(0)
        for fingerprint, tokens in segments:
            key = (node, fingerprint)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new(tokens)
            self._uses[child].append(index)
            node = child

    def _new(self, tokens: int) -> int:
        self._tokens.append(tokens)
        self._uses.append([])
        return len(self._tokens) - 1

    def no_expiry_usd(self) -> float:
        """Bound (a): every reused token written once at the 5m price and read afterwards, nothing expiring."""
        return self._total(_INF, allow_1h=False)

    def clairvoyant_usd(self) -> float:
        """Bound (b): the cheapest choice of uncached / 5m / 1h / read per use, knowing every gap."""
        return self._total(TTL_5M, allow_1h=True)

    def _total(self, ttl_5m: float, *, allow_1h: bool) -> float:
        total = 0.0
        requests = self._requests
        for tokens, uses in zip(self._tokens, self._uses, strict=True):
            if tokens and uses:
                total += tokens * _cheapest(uses, requests, ttl_5m, allow_1h)
        return total / 1_000_000


def _cheapest(uses: list[int], requests: list[UsePrices], ttl_5m: float, allow_1h: bool) -> float:
    """USD per million tokens of one node over its uses (the dynamic programme of the module docstring)."""
    first = requests[uses[0]]
    none, e5, e1h = first.input, first.write_5m, first.write_1h if allow_1h else _INF
    last = first.at
    for index in uses[1:]:
        use = requests[index]
        gap = use.at - last
        last = use.at
        best = min(none, e5, e1h)
        read5 = e5 + use.read if gap <= ttl_5m else _INF
        read1h = e1h + use.read if gap <= TTL_1H else _INF
        none = best + use.input
        e5 = min(best + use.write_5m, read5)
        e1h = min(best + use.write_1h, read1h) if allow_1h else _INF
    return min(none, e5, e1h)
