"""The emulator clock: virtual time moves only when told; real time can be shifted forward."""

from __future__ import annotations

import threading
import time

import pytest

from turnkeep.emulator.clock import Clock


def test_virtual_clock_starts_at_start_and_stands_still() -> None:
    clock = Clock("virtual", start=1_000.0)
    assert clock.mode == "virtual"
    assert clock.now() == 1_000.0
    time.sleep(0.01)
    assert clock.now() == 1_000.0


def test_virtual_clock_default_start_is_fixed() -> None:
    assert Clock("virtual").now() == 1_800_000_000.0


def test_advance_moves_virtual_time_and_returns_the_new_time() -> None:
    clock = Clock("virtual", start=0.0)
    assert clock.advance(301) == 301.0
    assert clock.advance(0.5) == 301.5
    assert clock.now() == 301.5


def test_set_jumps_a_virtual_clock() -> None:
    clock = Clock("virtual", start=0.0)
    clock.set(5_000.0)
    assert clock.now() == 5_000.0


def test_real_clock_follows_wall_time() -> None:
    clock = Clock("real")
    before = time.time()
    now = clock.now()
    after = time.time()
    assert before <= now <= after


def test_real_clock_advance_adds_a_persistent_offset() -> None:
    clock = Clock()
    assert clock.mode == "real"
    clock.advance(3_600)
    shifted = clock.now() - time.time()
    assert 3_599 < shifted <= 3_600.5
    clock.advance(60)
    assert 3_659 < clock.now() - time.time() <= 3_660.5


def test_real_clock_cannot_be_set() -> None:
    with pytest.raises(ValueError, match="virtual"):
        Clock("real").set(0.0)


def test_negative_or_non_finite_steps_are_rejected() -> None:
    clock = Clock("virtual", start=0.0)
    with pytest.raises(ValueError, match="negative"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="finite"):
        clock.advance(float("nan"))
    with pytest.raises(ValueError, match="finite"):
        clock.set(float("inf"))
    assert clock.now() == 0.0


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        Clock("sundial")  # type: ignore[arg-type]


def test_concurrent_advances_are_not_lost() -> None:
    clock = Clock("virtual", start=0.0)

    def step() -> None:
        for _ in range(1_000):
            clock.advance(1)

    threads = [threading.Thread(target=step) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now() == 8_000.0
