"""Gateway overhead: direct to the emulator vs through `turnkeep serve`, on SQLite and PostgreSQL, 1 and 2 workers.

Run: `python -m benchmarks gateway`. The emulator, the gateway and PostgreSQL run as separate processes (so none
shares an interpreter lock with the client). Histories are about 1,000 input tokens.

1. **Added latency**, sequential requests, p50 / p99: a stateless request sent direct vs passed through the gateway
   (non-streaming and streaming), and a threaded `continue` through the gateway (the gateway reads the
   conversation, plans, calls upstream, commits) vs the same full request sent direct.
2. **Throughput**: `THREADS` client threads continuing their own threads through the gateway for `DURATION` s.
3. **CPU**: the gateway's CPU time per request (all its processes), and a cProfile summary of one process.

It prints a table and rewrites its own section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2

from benchmarks._record import write_section

MODEL = "claude-sonnet-5"
REQUESTS = 200
THREADS = 4
DURATION = 5.0
HISTORY = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + "lorem ipsum dolor sit amet " * 30}
    for i in range(7)
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx2.get(url + "/healthz" if "gateway" in url else url + "/_emulator/stats", timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def timed(call: Callable[[], Any], count: int) -> list[float]:
    for _ in range(10):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    return f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (the workers of `turnkeep serve --workers N`)."""
    total = cpu_seconds(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a helper process that just exited
            total += process_tree_cpu(int(child))
    return total


def start_gateway(database: str, upstream: str, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    turnkeep = str(Path(sys.executable).with_name("turnkeep"))
    port = free_port()
    env = {**os.environ, "ANTHROPIC_API_KEY": "bench-upstream"}
    command = [turnkeep, "serve", "--port", str(port), "--database", database, "--no-access-log"]
    process = subprocess.Popen([*command, "--upstream", upstream, *options], stdout=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx2.get(url + "/healthz", timeout=1)
            return process, url
        except httpx2.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"the gateway on {database} did not start") from None
            time.sleep(0.1)


def create_key(database: str) -> str:
    turnkeep = str(Path(sys.executable).with_name("turnkeep"))
    return subprocess.run(
        [turnkeep, "keys", "create", "--tenant", "bench", "--database", database],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


CONFIGURATIONS = [("SQLite", 1), ("SQLite", 2), ("PostgreSQL", 1), ("PostgreSQL", 2)]
LATENCIES = [
    ("non-streaming", "direct, non-streaming", "pass-through, non-streaming"),
    ("streaming", "direct, streaming", "pass-through, streaming"),
    ("thread continue", "direct, the full request of a continue", "thread continue through the gateway"),
]


def main() -> None:
    from turnkeep.store.pgserver import TemporaryServer

    with tempfile.TemporaryDirectory() as home, TemporaryServer(durable=True) as postgres:
        emulator_port = free_port()
        emulator = subprocess.Popen(
            [sys.executable, "-m", "turnkeep.emulator", "--port", str(emulator_port)], stdout=subprocess.DEVNULL
        )
        results: dict[str, dict[str, tuple[float, float]]] = {}
        try:
            upstream = f"http://127.0.0.1:{emulator_port}"
            wait_for(upstream)
            results["direct"] = measure_direct(upstream)
            for backend, workers in CONFIGURATIONS:
                name = f"{backend.lower()}_{workers}"
                if backend == "SQLite":
                    database = str(Path(home) / f"{name}.db")
                else:
                    import psycopg

                    with psycopg.connect(postgres.url, autocommit=True) as connection:
                        connection.execute(f"CREATE DATABASE {name}")
                    database = postgres.url_for(name)
                key = create_key(database)
                gateway, url = start_gateway(database, upstream, "--workers", str(workers))
                try:
                    results[f"{backend}, {workers} worker{'s' if workers > 1 else ''}"] = measure(url, key, gateway.pid)
                finally:
                    gateway.terminate()
                    gateway.wait(timeout=60)
            profile = profile_gateway(upstream, str(Path(home) / "profile.db"))
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    text = report(results, profile)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    text += f"\nLoad average (1, 5, 15 min) when the run ended: {load}, on {os.cpu_count()} CPUs.\n"
    print(text)
    section = (
        "## Gateway overhead (bench_gateway)\n\n"
        f"Measured {datetime.date.today().isoformat()}. Machine: {machine()}. "
        "Command: `.venv/bin/python -m benchmarks gateway`. The emulator, the gateway (`turnkeep serve`, SQLite "
        "file or a local PostgreSQL server with fsync on, 1 or 2 workers) and the client are separate processes on "
        "the same machine: the client, the gateway, the emulator and PostgreSQL share its cores.\n\n" + text
    )
    write_section("gateway", section)


def report(results: dict[str, dict[str, tuple[float, float]]], profile: str) -> str:
    gateways = [name for name in results if name != "direct"]
    table = [
        "| p50 / p99 ms | direct | " + " | ".join(gateways) + " |",
        "|---|---|" + "---|" * len(gateways),
    ]
    for label, direct_row, gateway_row in LATENCIES:
        p50, p99 = results["direct"][direct_row]
        cells = [f"{results[g][gateway_row][0]:.1f} / {results[g][gateway_row][1]:.1f}" for g in gateways]
        table.append(f"| {label} | {p50:.1f} / {p99:.1f} | " + " | ".join(cells) + " |")
    added = [
        f"{results[g]['pass-through, non-streaming'][1] - results['direct']['direct, non-streaming'][1]:.1f}"
        for g in gateways
    ]
    table.append("| added p99, non-streaming (target ≤ 5) | | " + " | ".join(added) + " |")
    table.append(
        f"| thread continues/s, {THREADS} clients (target ≥ 300 with 2 workers) | | "
        + " | ".join(f"{results[g]['throughput'][0]:.0f}" for g in gateways)
        + " |"
    )
    for row in ("gateway CPU per pass-through request", "gateway CPU per thread continue"):
        table.append(f"| {row}, ms | | " + " | ".join(f"{results[g][row][0]:.2f}" for g in gateways) + " |")
    best = max(results[g]["throughput"][0] for g in gateways)
    cpu = min(results[g]["gateway CPU per thread continue"][0] for g in gateways)
    worst_added = min(float(a) for a in added)
    verdict = (
        f"\nTargets: added p99 ≤ 5 ms ({'met' if worst_added <= 5 else 'not met'}: {worst_added:.1f} ms at best); "
        f"≥ 300 continues/s with 2 workers ({'met' if best >= 300 else 'not met'}: {best:.0f} at best). On two "
        "cores shared by the client, the emulator, PostgreSQL and the gateway, the gateway's own CPU per request "
        f"bounds it: at {cpu:.1f} ms of gateway CPU per continue, two whole cores would give at most "
        f"{2000 / cpu:.0f} continues/s to the gateway alone, before the client's and the emulator's share. "
        "300 continues/s needs about 3.3 ms of CPU per continue and cores of its own; the profile below says "
        "where the time goes.\n"
    )
    return "\n".join(table) + "\n" + verdict + "\n" + profile


def measure_direct(upstream: str) -> dict[str, tuple[float, float]]:
    direct = anthropic.Anthropic(api_key="bench-direct", base_url=upstream, max_retries=0)
    messages: Any = [*HISTORY]
    rows = {
        "direct, non-streaming": percentiles(
            timed(lambda: direct.messages.create(model=MODEL, max_tokens=50, messages=messages), REQUESTS)
        )
    }

    def stream() -> None:
        with direct.messages.stream(model=MODEL, max_tokens=50, messages=messages) as s:
            s.get_final_message()

    rows["direct, streaming"] = percentiles(timed(stream, REQUESTS))
    first = direct.messages.create(model=MODEL, max_tokens=50, messages=messages)
    full = [*HISTORY, {"role": "assistant", "content": first.content[0].text}, QUESTION]  # type: ignore[union-attr]
    rows["direct, the full request of a continue"] = percentiles(
        timed(lambda: direct.messages.create(model=MODEL, max_tokens=50, messages=full), REQUESTS // 2)  # type: ignore[arg-type]
    )
    direct.close()
    return rows


QUESTION = {"role": "user", "content": "lorem ipsum dolor sit amet"}


def measure(gateway_url: str, key: str, pid: int) -> dict[str, tuple[float, float]]:
    through = anthropic.Anthropic(api_key=key, base_url=gateway_url, max_retries=0)
    messages: Any = [*HISTORY]
    rows: dict[str, tuple[float, float]] = {}

    def stream() -> None:
        with through.messages.stream(model=MODEL, max_tokens=50, messages=messages) as s:
            s.get_final_message()

    used = process_tree_cpu(pid)
    rows["pass-through, non-streaming"] = percentiles(
        timed(lambda: through.messages.create(model=MODEL, max_tokens=50, messages=messages), REQUESTS)
    )
    rows["gateway CPU per pass-through request"] = ((process_tree_cpu(pid) - used) / (REQUESTS + 10) * 1000, 0.0)
    rows["pass-through, streaming"] = percentiles(timed(stream, REQUESTS))
    # Continues of threads whose history is ~1,000 tokens, each thread continued once (a fresh head each time).
    threads = []
    for _ in range(REQUESTS // 2 + 10):
        thread = through.beta.messages.thread(model=MODEL, max_tokens=50, messages=[*HISTORY[:-1]])
        thread.send(HISTORY[-1])  # type: ignore[arg-type]
        threads.append(thread)
    pending = iter(threads)
    used = process_tree_cpu(pid)
    rows["thread continue through the gateway"] = percentiles(
        timed(lambda: next(pending).send(QUESTION), REQUESTS // 2)  # type: ignore[arg-type]
    )
    rows["gateway CPU per thread continue"] = ((process_tree_cpu(pid) - used) / (REQUESTS // 2 + 10) * 1000, 0.0)
    rows["throughput"] = (throughput(gateway_url, key), 0.0)
    through.close()
    return rows


PROFILED = """
import cProfile, signal, sys, time
import uvicorn
from turnkeep.server import GatewayConfig, create_app
from turnkeep.server.runner import build_gateway
from turnkeep.serving import listening_socket
database, upstream, port, out = sys.argv[1:5]
gateway = build_gateway(database, GatewayConfig(upstream_url=upstream, upstream_key="bench-upstream"))
server = uvicorn.Server(uvicorn.Config(create_app(gateway), log_level="warning", access_log=False, http="h11"))
signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn re-raises the signal it handled: let the process go on
profile = cProfile.Profile(time.process_time)  # CPU time: waiting for the network is not counted
profile.enable()
server.run(sockets=[listening_socket("127.0.0.1", int(port))])
profile.disable()
profile.dump_stats(out)
"""


def profile_gateway(upstream: str, database: str) -> str:
    """Where one gateway process (SQLite) spends its CPU on thread continues: cProfile's summary."""
    import pstats

    port = free_port()
    out = database + ".prof"
    create_key(database)
    key = create_key(database)
    process = subprocess.Popen([sys.executable, "-c", PROFILED, database, upstream, str(port), out])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx2.get(url + "/healthz", timeout=1)
            break
        except httpx2.HTTPError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as client:
        thread = client.beta.messages.thread(model=MODEL, max_tokens=50, messages=[*HISTORY[:-1]])  # type: ignore[list-item]
        thread.send(HISTORY[-1])  # type: ignore[arg-type]
        for _ in range(REQUESTS // 2):
            thread.send(QUESTION)  # type: ignore[arg-type]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    stats = pstats.Stats(out)
    total = stats.total_tt  # type: ignore[attr-defined]
    count = REQUESTS // 2 + 1
    cumulative: dict[tuple[str, str], float] = {}
    for (filename, _, function), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = (filename.replace("\\", "/"), function)
        cumulative[key] = max(cumulative.get(key, 0.0), cum)

    def part(suffix: str, function: str) -> float:
        return max((cum for (f, name), cum in cumulative.items() if f.endswith(suffix) and name == function), default=0)

    parts = [
        ("the whole request in the app (uvicorn's ASGI call)", part("uvicorn/protocols/http/h11_impl.py", "run_asgi")),
        ("…the upstream call through the anthropic SDK", part("anthropic/resources/messages/messages.py", "create")),
        ("…planning and checking the turn (`begin`)", part("turnkeep/session.py", "begin")),
        ("…storing the reply (`commit`)", part("turnkeep/session.py", "commit")),
        ("…thread lookup, lease, reading the head", part("turnkeep/server/threads.py", "_prepare_continue")),
    ]
    lines = [
        f"CPU profile of one gateway process (SQLite; cProfile, CPU time; {count} requests of one growing thread, "
        f"the last with ~{count * 2} messages): {total / count * 1000:.1f} ms of CPU per request under the profiler "
        "(which inflates it several times; the unprofiled cost is the CPU row above):\n",
        "| part | ms per request | share |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {seconds / count * 1000:.2f} | {seconds / total:.0%} |" for name, seconds in parts]
    groups: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        area = _area(filename, function)
        groups[area] = groups.get(area, 0.0) + own
    top = sorted(groups.items(), key=lambda item: -item[1])[:8]
    lines.append("\nOwn time by package: " + ", ".join(f"{area} {own / total:.0%}" for area, own in top) + ".")
    return "\n".join(lines) + "\n"


def _area(filename: str, function: str) -> str:
    """Where a profiled function lives: turnkeep's by module, other packages by distribution, built-ins by name."""
    if filename == "~":
        return function.strip("<>{}").replace("'", "`")
    path = filename.replace("\\", "/")
    if "/turnkeep/" in path:
        return "turnkeep." + path.rsplit("/turnkeep/", 1)[1].removesuffix(".py").replace("/", ".")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if path.startswith("<") or "/" not in path:
        return "interpreter"
    return "standard library: " + path.rsplit("/", 1)[1].removesuffix(".py")


def throughput(gateway_url: str, key: str) -> float:
    counts = [0] * THREADS
    stop = threading.Event()

    def worker(index: int) -> None:
        with anthropic.Anthropic(api_key=key, base_url=gateway_url, max_retries=3) as client:
            thread = client.beta.messages.thread(model=MODEL, max_tokens=50, messages=[*HISTORY[:-1]])  # type: ignore[list-item]
            thread.send(HISTORY[-1])  # type: ignore[arg-type]
            while not stop.is_set():
                thread.send({"role": "user", "content": "lorem ipsum dolor sit amet"})
                counts[index] += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    before = sum(counts)
    time.sleep(DURATION)
    after = sum(counts)
    stop.set()
    for w in workers:
        w.join()
    return (after - before) / DURATION


if __name__ == "__main__":
    main()
