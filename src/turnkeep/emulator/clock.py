"""The emulator's notion of "now": wall-clock time, or a virtual time that moves only when told to.

Everything in the emulator that expires (cache entries, diagnostics fingerprints, threads) reads time through a
`Clock`, so a simulation can jump an hour ahead in a microsecond and a test can step exactly past a TTL.

- `real`: `time.time()` plus an offset; `advance()` adds to the offset (time keeps flowing from there).
- `virtual`: starts at `start` and stays put until `advance()` or `set()` moves it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Literal

from turnkeep.errors import InvalidValue

__all__ = ["Clock", "ClockMode"]

ClockMode = Literal["real", "virtual"]


class Clock:
    """A thread-safe real or virtual clock, in seconds since the epoch."""

    def __init__(self, mode: ClockMode = "real", start: float = 1_800_000_000.0) -> None:
        if mode not in ("real", "virtual"):
            raise InvalidValue(f"clock mode must be 'real' or 'virtual', not {mode!r}")
        _check_finite(start, "start")
        self.mode: str = mode
        self._lock = threading.Lock()
        self._offset = 0.0  # real mode: seconds added to time.time()
        self._virtual = float(start)  # virtual mode: the current time

    def now(self) -> float:
        """The current time in seconds."""
        with self._lock:
            return self._now_locked()

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (>= 0) and return the new time.

        On a real clock this adds a persistent offset: time keeps flowing, shifted.
        """
        _check_finite(seconds, "seconds")
        if seconds < 0:
            # Time going backwards would resurrect expired cache entries; nothing needs it.
            raise InvalidValue(f"cannot advance a clock by a negative amount ({seconds})")
        with self._lock:
            if self.mode == "virtual":
                self._virtual += seconds
            else:
                self._offset += seconds
            return self._now_locked()

    def set(self, timestamp: float) -> None:
        """Jump a virtual clock to `timestamp` (a real clock cannot be set; the app reports that as a 400)."""
        _check_finite(timestamp, "timestamp")
        if self.mode != "virtual":
            raise InvalidValue("only a virtual clock can be set")
        with self._lock:
            self._virtual = float(timestamp)

    def _now_locked(self) -> float:
        if self.mode == "virtual":
            return self._virtual
        return time.time() + self._offset

    def __repr__(self) -> str:
        return f"Clock(mode={self.mode!r}, now={self.now()!r})"


def _check_finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise InvalidValue(f"{name} must be a finite number of seconds, not {value!r}")
