"""Store latency on SQLite and PostgreSQL: a turn's writes, loading a long conversation, listing many
conversations, and appends per second with 8 writer processes.

Run: `python -m benchmarks store` (or `make bench` for every benchmark). SQLite files go to a temporary directory;
PostgreSQL is a local server this benchmark starts (`turnkeep.store.pgserver.TemporaryServer`, durable: fsync on,
as a production server), reached over a unix socket. On each:

1. **List**: the first page of 50 of 10,000 conversations plus the total count, as `turnkeep ls` shows them.
2. **Append**: `TURNS` turns on a new conversation beside those 10,000, each the two writes a real turn makes: the
   pending user message (`append`), then the reply with the settle of the pending message and one ledger entry
   (`append`). SQLite also with `synchronous=NORMAL`.
3. **Load**: the root-to-head path of a 1,000-turn conversation (2,000 messages of ~400 bytes), the first load
   on a newly opened store and then warm loads.
4. **Concurrent writers**: 8 processes, each with a store object of its own, each running turns on a conversation
   of its own for `CONCURRENT_SECONDS`: turns per second in total.

It prints a table and rewrites its own section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import datetime
import multiprocessing
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
from turnkeep.store import LedgerEntry, Node, PostgresStore, SQLiteStore, Store
from turnkeep.store.pgserver import TemporaryServer

TURNS = 1_000
LOAD_TURNS = 1_000
LOAD_RUNS = 30
CONVERSATIONS = 10_000
LIST_RUNS = 50
WRITERS = 8
CONCURRENT_SECONDS = 5.0
TARGETS = {"append_p99_ms": 5.0, "load_ms": 50.0, "list_ms": 20.0}
SETTINGS = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "system": None, "tools": None, "policy": {}}
TEXT = (
    "Please remember that item {n} of my shopping list is {n} apples, and that the delivery should arrive in the "
    "morning before nine, at the side door. Ünïcode too: 東京, ✓. "
)

# A store is opened from a location: a SQLite file path, or a PostgreSQL URL.
Opener = Callable[[], Any]


def open_location(location: str, synchronous: str = "FULL") -> Any:
    if location.startswith("postgresql://"):
        return PostgresStore(location)
    return SQLiteStore(location, synchronous=synchronous)  # type: ignore[arg-type]


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


def run_turns(store: Store, cid: str, turns: int | None, until: float | None = None) -> list[float]:
    """Milliseconds per turn (pending write + commit write) on a new conversation: `turns` of them, or as many
    as fit before `until` (perf_counter)."""
    store.create(cid, SETTINGS)
    head: str | None = None
    times = []
    n = 0
    while (turns is not None and n < turns) or (until is not None and time.perf_counter() < until):
        question = user(n, head, "pending")
        answer = reply(n, question.id)
        started = time.perf_counter()
        store.append(cid, "main", expected_head=head, nodes=[question])
        store.append(
            cid, "main", expected_head=question.id, nodes=[answer], settle={question.id: "ok"}, ledger=[ledger_entry(n)]
        )
        times.append((time.perf_counter() - started) * 1000)
        head = answer.id
        n += 1
    return times


def bench_append(location: str, synchronous: str = "FULL") -> dict[str, float]:
    """Milliseconds per turn, on a new conversation in the store at `location`."""
    with open_location(location, synchronous) as store:
        times = run_turns(store, f"append-{synchronous}-{uuid.uuid4().hex[:6]}", TURNS)
    return {"p50": statistics.median(times), "p99": percentile(times, 0.99), "max": max(times)}


def writer(location: str, number: int, barrier: Any, results: Any) -> None:
    """One of the concurrent writers: open a store, wait for the others, run turns for CONCURRENT_SECONDS."""
    with open_location(location) as store:
        barrier.wait()
        times = run_turns(
            store, f"writer-{number}-{uuid.uuid4().hex[:6]}", None, time.perf_counter() + CONCURRENT_SECONDS
        )
    results.put(len(times))


def bench_concurrent(location: str) -> dict[str, float]:
    """Turns per second in total, `WRITERS` processes each on a conversation of its own."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS), context.Queue()
    processes = [context.Process(target=writer, args=(location, n, barrier, results)) for n in range(WRITERS)]
    for process in processes:
        process.start()
    counts = [results.get(timeout=120 + CONCURRENT_SECONDS) for _ in processes]
    for process in processes:
        process.join(30)
        if process.exitcode != 0:
            raise RuntimeError(f"a writer failed (exit {process.exitcode})")
    return {"turns": sum(counts), "per_second": sum(counts) / CONCURRENT_SECONDS}


def bench_load(location: str) -> dict[str, float]:
    """Milliseconds to load a 1,000-turn path: first load on a fresh store object, then warm loads."""
    nodes: list[Node] = []
    head: str | None = None
    for n in range(LOAD_TURNS):
        question = user(n, head)
        answer = reply(n, question.id)
        nodes += [question, answer]
        head = answer.id
    with open_location(location, "NORMAL") as store:
        store.restore("c", settings=SETTINGS, nodes=nodes, branches={"main": head})
    with open_location(location) as store:
        cold = timed(lambda: store.path("c", head))
        loaded = store.path("c", head)
        if len(loaded) != 2 * LOAD_TURNS or loaded[-1].id != head:
            raise RuntimeError("the loaded path is not the conversation that was written")
        warm = [timed(lambda: store.path("c", head)) for _ in range(LOAD_RUNS)]
    return {"cold": cold, "p50": statistics.median(warm), "max": max(warm)}


def populate(location: str) -> None:
    """`CONVERSATIONS` conversations of one exchange and one ledger entry each."""
    with open_location(location, "NORMAL") as store:
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


def bench_list(location: str) -> dict[str, float]:
    """Milliseconds for the first page of 50 conversations plus the total count, among 10,000."""
    with open_location(location) as store:

        def page() -> None:
            listing = store.list_conversations(limit=50)
            if len(listing) != 50 or listing[0].id != f"conversation-{CONVERSATIONS - 1:05d}":
                raise RuntimeError("the listing is not newest first")
            if store.count_conversations() != CONVERSATIONS:
                raise RuntimeError("the count is wrong")

        cold = timed(page)
        warm = [timed(page) for _ in range(LIST_RUNS)]
    return {"cold": cold, "p50": statistics.median(warm), "p99": percentile(warm, 0.99)}


def machine(postgres: str) -> str:
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {postgres}, {datetime.date.today().isoformat()}"
    )


def load_average() -> str:
    """Other work on the machine shows up in fsync and p99 times: say how busy it was."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"Load average when the run ended: {one:.2f} (1 min), {five:.2f} (5 min)."


def verdict(value: float, target: float) -> str:
    return "✓" if value <= target else "✗ (missed)"


def report(results: dict[str, dict[str, dict[str, float]]], postgres: str) -> str:
    sqlite, pg = results["sqlite"], results["postgres"]

    def cells(name: str, key: str, target: float | None, bold: bool = True) -> str:
        parts = []
        for backend in (sqlite, pg):
            value = backend[name][key]
            shown = f"**{value:.2f}**" if bold else f"{value:.2f}"
            parts.append(shown + (f" {verdict(value, target)}" if target is not None else ""))
        return " | ".join(parts)

    lines = [
        "## Stores: SQLite and PostgreSQL (`benchmarks/bench_store.py`)",
        "",
        f"Machine: {machine(postgres)}. Command: `.venv/bin/python -m benchmarks store`.",
        "SQLite: files in a temporary directory on the machine's disk. PostgreSQL: a local server started for the "
        "run (fsync on, default settings), over a unix socket, the same disk. Times in milliseconds. "
        f"{load_average()}",
        "",
        "| measurement | SQLite | PostgreSQL | target |",
        "|---|---:|---:|---|",
        f"| append: one turn's two writes (pending + commit), {TURNS:,} turns, beside {CONVERSATIONS:,} other "
        f"conversations: p50 | {cells('append', 'p50', None, False)} | |",
        f"| the same: p99 | {cells('append', 'p99', TARGETS['append_p99_ms'])} | ≤ {TARGETS['append_p99_ms']:g} ms |",
        f"| the same: max | {cells('append', 'max', None, False)} | |",
        f"| SQLite `synchronous=NORMAL` (survives a process crash, not a power cut): p50 / p99 | "
        f"{sqlite['normal']['p50']:.2f} / {sqlite['normal']['p99']:.2f} | | |",
        f"| load the path of a {LOAD_TURNS:,}-turn conversation ({2 * LOAD_TURNS:,} messages), warm: p50 | "
        f"{cells('load', 'p50', None, False)} | |",
        f"| the same: max of {LOAD_RUNS} | {cells('load', 'max', TARGETS['load_ms'])} | ≤ {TARGETS['load_ms']:g} ms |",
        f"| the same, first load on a newly opened store | {cells('load', 'cold', TARGETS['load_ms'])} | "
        f"≤ {TARGETS['load_ms']:g} ms |",
        f"| list {CONVERSATIONS:,} conversations: first page of 50 + total count, warm: p50 | "
        f"{cells('list', 'p50', None, False)} | |",
        f"| the same: p99 of {LIST_RUNS} | {cells('list', 'p99', TARGETS['list_ms'])} | ≤ {TARGETS['list_ms']:g} ms |",
        f"| the same, first listing on a newly opened store | {cells('list', 'cold', TARGETS['list_ms'])} | "
        f"≤ {TARGETS['list_ms']:g} ms |",
        f"| {WRITERS} writer processes, a conversation each, {CONCURRENT_SECONDS:g} s: turns/s in total "
        f"(two writes each) | {sqlite['concurrent']['per_second']:.0f} | {pg['concurrent']['per_second']:.0f} | |",
        "",
    ]
    return "\n".join(lines)


def measure(location_of: Callable[[str], str]) -> dict[str, dict[str, float]]:
    """Every measurement on one backend; `location_of(name)` gives a new, empty store's location."""
    many = location_of("many")
    print(f"  writing {CONVERSATIONS} conversations ...", flush=True)
    populate(many)
    print("  list ...", flush=True)
    results = {"list": bench_list(many)}
    print(f"  append: {TURNS} turns, beside the {CONVERSATIONS} conversations ...", flush=True)
    results["append"] = bench_append(many)
    if not many.startswith("postgresql://"):
        results["normal"] = bench_append(many, "NORMAL")
    print(f"  load: a {LOAD_TURNS}-turn path ...", flush=True)
    results["load"] = bench_load(location_of("load"))
    print(f"  {WRITERS} concurrent writers ...", flush=True)
    results["concurrent"] = bench_concurrent(location_of("concurrent"))
    return results


def main() -> None:
    """Run the measurements, print the results and record them in docs/benchmarks.md."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="turnkeep-bench-", dir=os.environ.get("TURNKEEP_BENCH_DIR")) as name:
        directory = Path(name)
        print("SQLite:", flush=True)
        results["sqlite"] = measure(lambda what: str(directory / f"{what}.db"))
    with TemporaryServer(durable=True) as server:
        import psycopg

        with psycopg.connect(server.url, autocommit=True) as connection:
            for what in ("many", "load", "concurrent"):
                connection.execute(f"CREATE DATABASE {what}")
            row = connection.execute("SHOW server_version").fetchone()
        postgres = f"PostgreSQL {row[0] if row else '?'}"  # the version, not where its programs lie on this disk
        print(f"{postgres}:", flush=True)
        results["postgres"] = measure(server.url_for)
    section = report(results, postgres)
    print(section)
    write_section("store", section)


if __name__ == "__main__":
    main()
