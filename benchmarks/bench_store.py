"""SQLite store latency: a turn's writes, loading a long conversation, listing many conversations.

Run: `python -m benchmarks.bench_store` (or `make bench` for every benchmark). In a temporary directory:

1. **List**: the first page of 50 of 10,000 conversations plus the total count, as `turnkeep ls` shows them.
2. **Append**: `TURNS` turns on a new conversation in that same file, each the two writes a real turn makes: the
   pending user message (`append`), then the reply with the settle of the pending message and one ledger entry
   (`append`), on the default `SQLiteStore` (`synchronous=FULL`: every commit is fsynced) and on
   `synchronous=NORMAL`.
3. **Load**: the root-to-head path of a 1,000-turn conversation (2,000 messages of ~400 bytes), the first load
   on a newly opened store and then warm loads.

It prints a table and rewrites its own section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import datetime
import os
import platform
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._record import write_section
from turnkeep.store import LedgerEntry, Node, SQLiteStore

TURNS = 1_000
LOAD_TURNS = 1_000
LOAD_RUNS = 30
CONVERSATIONS = 10_000
LIST_RUNS = 50
TARGETS = {"append_p99_ms": 5.0, "load_ms": 50.0, "list_ms": 100.0}
SETTINGS = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "system": None, "tools": None, "policy": {}}
TEXT = (
    "Please remember that item {n} of my shopping list is {n} apples, and that the delivery should arrive in the "
    "morning before nine, at the side door. Ünïcode too: 東京, ✓. "
)


def ledger_entry(n: int) -> LedgerEntry:
    return LedgerEntry(
        purpose="turn",
        model="claude-sonnet-4-6",
        request_id=f"req_{n:08d}",
        message_id=f"msg_{n:08d}",
        stop_reason="end_turn",
        usage={"input_tokens": 1200 + n, "output_tokens": 40, "cache_read_input_tokens": 1100},
        cost_usd="0.00123",
        latency_ms=812.5,
        at=time.time(),
    )


def user(n: int, parent: str | None, status: Any = "ok") -> Node:
    return Node(uuid.uuid4().hex, parent, {"role": "user", "content": TEXT.format(n=n) * 2}, status, {"kind": "turn"})


def reply(n: int, parent: str) -> Node:
    message = {"role": "assistant", "content": [{"type": "text", "text": f"Noted: item {n} is recorded. " * 8}]}
    return Node(uuid.uuid4().hex, parent, message, "ok", {"kind": "reply", "stop_reason": "end_turn"})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def bench_append(path: Path, synchronous: Any) -> dict[str, float]:
    """Milliseconds per turn (pending write + commit write), on a new conversation in the file at `path`."""
    with SQLiteStore(path, synchronous=synchronous) as store:
        cid = f"append-{synchronous}"
        store.create(cid, SETTINGS)
        head: str | None = None
        times = []
        for n in range(TURNS):
            question = user(n, head, "pending")
            answer = reply(n, question.id)
            started = time.perf_counter()
            store.append(cid, "main", expected_head=head, nodes=[question])
            store.append(
                cid,
                "main",
                expected_head=question.id,
                nodes=[answer],
                settle={question.id: "ok"},
                ledger=[ledger_entry(n)],
            )
            times.append((time.perf_counter() - started) * 1000)
            head = answer.id
    return {"p50": statistics.median(times), "p99": percentile(times, 0.99), "max": max(times)}


def bench_load(directory: Path) -> dict[str, float]:
    """Milliseconds to load a 1,000-turn path: first load on a fresh store object, then warm loads."""
    path = directory / "load.db"
    nodes: list[Node] = []
    head: str | None = None
    for n in range(LOAD_TURNS):
        question = user(n, head)
        answer = reply(n, question.id)
        nodes += [question, answer]
        head = answer.id
    with SQLiteStore(path, synchronous="NORMAL") as store:
        store.restore("c", settings=SETTINGS, nodes=nodes, branches={"main": head})
    with SQLiteStore(path) as store:
        cold = timed(lambda: store.path("c", head))
        loaded = store.path("c", head)
        if len(loaded) != 2 * LOAD_TURNS or loaded[-1].id != head:
            raise RuntimeError("the loaded path is not the conversation that was written")
        warm = [timed(lambda: store.path("c", head)) for _ in range(LOAD_RUNS)]
    return {"cold": cold, "p50": statistics.median(warm), "max": max(warm)}


def populate(path: Path) -> None:
    """`CONVERSATIONS` conversations of one exchange and one ledger entry each."""
    with SQLiteStore(path, synchronous="NORMAL") as store:
        for n in range(CONVERSATIONS):
            question = user(n, None)
            store.restore(
                f"conversation-{n:05d}",
                settings=SETTINGS,
                nodes=[question, reply(n, question.id)],
                branches={"main": None},
                ledger=[ledger_entry(n)],
                created_at=1_790_000_000 + n,
                updated_at=1_790_000_000 + n,
            )


def bench_list(path: Path) -> dict[str, float]:
    """Milliseconds for the first page of 50 conversations plus the total count, among 10,000."""
    with SQLiteStore(path) as store:

        def page() -> None:
            listing = store.list_conversations(limit=50)
            if len(listing) != 50 or listing[0].id != f"conversation-{CONVERSATIONS - 1:05d}":
                raise RuntimeError("the listing is not newest first")
            if store.count_conversations() != CONVERSATIONS:
                raise RuntimeError("the count is wrong")

        cold = timed(page)
        warm = [timed(page) for _ in range(LIST_RUNS)]
    return {"cold": cold, "p50": statistics.median(warm), "p99": percentile(warm, 0.99)}


def machine() -> str:
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {datetime.date.today().isoformat()}"
    )


def load_average() -> str:
    """Other work on the machine shows up in fsync and p99 times: say how busy it was."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"Load average when the run ended: {one:.2f} (1 min), {five:.2f} (5 min)."


def verdict(value: float, target: float) -> str:
    return f"≤ {target:g} ms " + ("✓" if value <= target else "✗ (missed)")


def report(full: dict[str, float], normal: dict[str, float], load: dict[str, float], listing: dict[str, float]) -> str:
    lines = [
        "## SQLite store (`benchmarks/bench_store.py`)",
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python -m benchmarks.bench_store`.",
        f"Files in a temporary directory on the machine's disk; times in milliseconds. {load_average()}",
        "",
        "| measurement | p50 | p99 / max | target |",
        "|---|---:|---:|---|",
        f"| append: one turn's two writes (pending + commit), {TURNS:,} turns, in a file holding {CONVERSATIONS:,} "
        "other conversations, `synchronous=FULL` (default) | "
        f"{full['p50']:.2f} | p99 **{full['p99']:.2f}** / max {full['max']:.2f} | "
        f"p99 {verdict(full['p99'], TARGETS['append_p99_ms'])} |",
        f"| append, `synchronous=NORMAL` (survives a process crash, not a power cut) | {normal['p50']:.2f} | "
        f"p99 {normal['p99']:.2f} / max {normal['max']:.2f} | |",
        f"| load the path of a {LOAD_TURNS:,}-turn conversation ({2 * LOAD_TURNS:,} messages), warm | "
        f"{load['p50']:.2f} | max **{load['max']:.2f}** | {verdict(load['max'], TARGETS['load_ms'])} |",
        f"| the same, first load on a newly opened store | {load['cold']:.2f} | | "
        f"{verdict(load['cold'], TARGETS['load_ms'])} |",
        f"| list {CONVERSATIONS:,} conversations: first page of 50 + total count, warm | {listing['p50']:.2f} | "
        f"p99 **{listing['p99']:.2f}** | {verdict(listing['p99'], TARGETS['list_ms'])} |",
        f"| the same, first listing on a newly opened store | {listing['cold']:.2f} | | "
        f"{verdict(listing['cold'], TARGETS['list_ms'])} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the measurements, print the results and record them in docs/benchmarks.md."""
    with tempfile.TemporaryDirectory(prefix="turnkeep-bench-", dir=os.environ.get("TURNKEEP_BENCH_DIR")) as name:
        directory = Path(name)
        many = directory / "many.db"
        print(f"writing {CONVERSATIONS} conversations ...", flush=True)
        populate(many)
        print("list ...", flush=True)
        listing = bench_list(many)
        print(f"append: {TURNS} turns, beside the {CONVERSATIONS} conversations ...", flush=True)
        full = bench_append(many, "FULL")
        normal = bench_append(many, "NORMAL")
        print(f"load: a {LOAD_TURNS}-turn path ...", flush=True)
        load = bench_load(directory)
    section = report(full, normal, load, listing)
    print(section)
    write_section("store", section)


if __name__ == "__main__":
    main()
