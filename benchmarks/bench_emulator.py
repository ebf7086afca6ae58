"""Emulator throughput and memory: requests/s through the real SDK, and a soak that must stay flat.

Run: `python -m benchmarks.bench_emulator` (or `make bench` for every benchmark). It starts the emulator as a
separate process (`python -m turnkeep.emulator --port 0 --clock virtual`), so the clients and the server do not
share one interpreter lock, then:

1. **Throughput**: `THREADS` client threads, each with its own `anthropic.Anthropic`, send non-streaming
   `messages.create` calls whose history is about 1,000 input tokens (automatic caching on, so every request also
   goes through the cache engine), for `DURATION` seconds after a warm-up.
2. **Soak**: `SOAK_REQUESTS` requests, each a different conversation with automatic caching, while every request
   moves the virtual clock `SOAK_STEP` seconds forward (header `x-emulator-advance`), so 5-minute cache entries
   keep expiring. Cache entries held and the server's resident memory are sampled as it goes; both must level off.

It prints a table and rewrites its own section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx2
from anthropic.types import MessageParam

from benchmarks._record import write_section

MODEL = "claude-sonnet-5"
THREADS = 4
WARMUP = 1.0
DURATION = 8.0
SOAK_REQUESTS = 20_000
SOAK_STEP = 30.0  # virtual seconds per request: a 5-minute entry lives for about 10 requests
SAMPLES = 10


@contextmanager
def emulator_process() -> Iterator[tuple[str, int]]:
    """The emulator in its own process on a free port: yields (base_url, pid)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "turnkeep.emulator", "--port", "0", "--clock", "virtual"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().split()[4]
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx2.get(f"{base_url}/_emulator/stats").raise_for_status()
                break
            except httpx2.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the emulator did not start") from None
                time.sleep(0.05)
        yield base_url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def history(turns: int, salt: str = "") -> list[MessageParam]:
    """A conversation of `turns` exchanges (~90 tokens each) ending with a user question."""
    messages: list[MessageParam] = []
    for turn in range(turns):
        messages.append(
            {
                "role": "user",
                "content": f"{salt}Turn {turn}: please remember that item {turn} of my shopping list is "
                f"{turn * 7 % 13} apples, and that my reference number {turn} is {turn * 7919 % 10007}. "
                "Also note the delivery should arrive in the morning before nine, at the side door.",
            }
        )
        messages.append({"role": "assistant", "content": f"Noted: item {turn} is recorded, reference saved."})
    messages.append({"role": "user", "content": "What is my name?"})
    return messages


def rss_kib(pid: int) -> int | None:
    """Resident memory of process `pid` in KiB (Linux /proc), or None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def throughput(base_url: str, messages: list[MessageParam]) -> dict[str, Any]:
    """Requests/s and latency percentiles of `THREADS` threads sending `messages` for `DURATION` seconds."""
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS + 1)
    phase = {"measuring": False, "stop": False}

    def worker(index: int) -> None:
        client = anthropic.Anthropic(api_key=f"bench-{index}", base_url=base_url, max_retries=0)
        barrier.wait()
        try:
            while not phase["stop"]:
                started = time.perf_counter()
                client.messages.create(
                    model=MODEL, max_tokens=100, messages=messages, cache_control={"type": "ephemeral"}
                )
                if phase["measuring"]:
                    latencies[index].append(time.perf_counter() - started)
        except BaseException as err:  # reported after the run
            errors.append(err)
        finally:
            client.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in workers:
        thread.start()
    barrier.wait()
    time.sleep(WARMUP)
    phase["measuring"] = True
    started = time.perf_counter()
    time.sleep(DURATION)
    phase["measuring"] = False
    elapsed = time.perf_counter() - started
    phase["stop"] = True
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]
    every = sorted(latency for per_thread in latencies for latency in per_thread)
    return {
        "requests": len(every),
        "seconds": elapsed,
        "rps": len(every) / elapsed,
        "p50_ms": statistics.median(every) * 1000,
        "p95_ms": every[int(len(every) * 0.95)] * 1000,
    }


def soak(base_url: str, pid: int) -> list[dict[str, Any]]:
    """Run `SOAK_REQUESTS` distinct cached conversations on an advancing clock; returns the memory samples."""
    samples: list[dict[str, Any]] = []
    per_thread = SOAK_REQUESTS // THREADS
    every = SOAK_REQUESTS // SAMPLES
    done = [0]
    lock = threading.Lock()
    control = httpx2.Client(base_url=base_url)

    def sample() -> None:
        stats = control.get("/_emulator/stats").json()
        samples.append(
            {
                "requests": done[0],
                "cache_entries": stats["cache_entries"],
                "diagnostics": stats["diagnostics_entries"],
                "rss_kib": rss_kib(pid),
                "virtual_hours": (stats["now"] - start_time) / 3600,
            }
        )

    control.post("/_emulator/reset", json={})  # start from an empty cache, bill and diagnostics
    start_time = control.get("/_emulator/clock").json()["now"]
    sample()

    def worker(index: int) -> None:
        client = anthropic.Anthropic(
            api_key="soak", base_url=base_url, max_retries=0, default_headers={"x-emulator-advance": str(SOAK_STEP)}
        )
        try:
            for n in range(per_thread):
                client.messages.create(
                    model=MODEL,
                    max_tokens=50,
                    messages=history(12, salt=f"[{index}:{n}] "),
                    cache_control={"type": "ephemeral"},
                )
                with lock:
                    done[0] += 1
                    if done[0] % every == 0:
                        sample()
        finally:
            client.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    control.close()
    return samples


def machine() -> str:
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"anthropic {anthropic.__version__}, {datetime.date.today().isoformat()}"
    )


def report(tokens: int, result: dict[str, Any], samples: list[dict[str, Any]], soak_seconds: float) -> str:
    def mib(kib: int | None) -> str:
        return "n/a" if kib is None else f"{kib / 1024:.1f}"

    lines = [
        "## Emulator (`benchmarks/bench_emulator.py`)",
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python -m benchmarks.bench_emulator`.",
        "The emulator runs in its own process; clients use the official SDK (`messages.create`, non-streaming).",
        "",
        f"**Throughput** — {THREADS} client threads, history of {tokens:,} input tokens, automatic caching, "
        f"{result['seconds']:.1f} s measured after a {WARMUP:.0f} s warm-up:",
        "",
        "| requests | requests/s | p50 latency | p95 latency |",
        "|---:|---:|---:|---:|",
        f"| {result['requests']:,} | **{result['rps']:.0f}** | {result['p50_ms']:.1f} ms | {result['p95_ms']:.1f} ms |",
        "",
        f"**Soak** — {SOAK_REQUESTS:,} requests ({soak_seconds:.0f} s), every one a new conversation written to the "
        f"cache, the virtual clock moving {SOAK_STEP:.0f} s per request (5-minute entries expire after ~10 requests):",
        "",
        "| requests | virtual hours | cache entries | diagnostics fingerprints | server RSS (MiB) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in samples:
        lines.append(
            f"| {row['requests']:,} | {row['virtual_hours']:.1f} | {row['cache_entries']} | {row['diagnostics']} | "
            f"{mib(row['rss_kib'])} |"
        )
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Run both measurements, print the results and record them in docs/benchmarks.md."""
    messages = history(12)
    with emulator_process() as (base_url, pid):
        with anthropic.Anthropic(api_key="count", base_url=base_url) as client:
            tokens = client.messages.count_tokens(model=MODEL, messages=messages).input_tokens
        print(f"throughput: {THREADS} threads, {tokens} input tokens per request ...", flush=True)
        result = throughput(base_url, messages)
        print(f"soak: {SOAK_REQUESTS} requests ...", flush=True)
        started = time.perf_counter()
        samples = soak(base_url, pid)
        soak_seconds = time.perf_counter() - started
    section = report(tokens, result, samples, soak_seconds)
    print(section)
    write_section("emulator", section)


if __name__ == "__main__":
    main()
