"""Adding history without a request: `add_user` / `add_assistant`, 10,000 of them, on each store.

Run: `.venv/bin/python -m benchmarks adds` (part of `make bench`). An add checks only the message it adds (the
history before it was checked when it was added), so 10,000 adds cost about what one costs, 10,000 times; before,
each add re-validated the whole history and 4,000 adds took 247 s. Target (issue 12): 10,000 adds in under 5 s.
Wall and CPU time of the whole loop; the SQLite store commits each add with `synchronous=FULL` (an fsync per
add, the default) and, for comparison, `NORMAL`.
"""

from __future__ import annotations

import datetime
import os
import platform
import tempfile
import time
from pathlib import Path

from benchmarks._record import write_section
from turnkeep import Conversation
from turnkeep.store import MemoryStore, SQLiteStore, Store

ADDS = 10_000
TARGET_S = 5.0


def run(store: Store) -> tuple[float, float]:
    """(wall s, CPU s) of ADDS adds, alternating user and assistant."""
    chat = Conversation("claude-sonnet-4-6", store=store)
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(ADDS // 2):
        chat.add_user(f"Question {index}: what about the plan for tomorrow?")
        chat.add_assistant(f"Answer {index}: take the bus at nine and keep the afternoon free.")
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        stores: list[tuple[str, Store]] = [
            ("MemoryStore", MemoryStore()),
            ("SQLiteStore (synchronous=FULL, the default)", SQLiteStore(Path(tmp) / "full.db")),
            ("SQLiteStore (synchronous=NORMAL)", SQLiteStore(Path(tmp) / "normal.db", synchronous="NORMAL")),
        ]
        for label, store in stores:
            wall, cpu = run(store)
            rows.append((label, wall, cpu))
            print(f"{label}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
            if isinstance(store, SQLiteStore):
                store.close()
    lines = [
        "## Adding history (`benchmarks/bench_adds.py`)",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}. Command: `.venv/bin/python -m benchmarks adds`. {ADDS:,} "
        "`add_user`/`add_assistant` calls on one conversation (before: each re-validated the whole history; "
        "4,000 adds took 247 s).",
        "",
        "| store | wall | CPU | per add | target |",
        "|---|---:|---:|---:|---|",
    ]
    for label, wall, cpu in rows:
        verdict = "**PASS**" if wall <= TARGET_S else "**FAIL**"
        lines.append(
            f"| {label} | {wall:.2f} s | {cpu:.2f} s | {wall / ADDS * 1000:.3f} ms | < {TARGET_S:g} s {verdict} |"
        )
    lines.append("")
    section = "\n".join(lines)
    print(section)
    write_section("adds", section)
