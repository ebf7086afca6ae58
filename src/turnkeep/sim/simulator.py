"""The cost simulator: replay a workload with real `Conversation`s against the emulator, on a virtual clock.

`simulate(workload, strategies, models)` runs one conversation per (strategy, model), each against its own
emulator app (`turnkeep.emulator.create_app`) whose clock is virtual: before each turn the clock moves by the
turn's gap (so 5-minute and 1-hour cache entries expire as they would), and the conversation reads the same
clock, so its policy judges expiry and TTLs in the same time. The real SDK client sends every request through an
in-process transport straight into the app (no socket: a simulation is CPU-bound, and serialising 200 growing
histories over loopback HTTP cost more than the emulator's work). Each run has its own app and API key, so runs
never share cache entries and each run's bill can be checked against its ledger; runs are therefore independent
and, when there are enough of them, play in parallel worker processes (`jobs`), one per CPU by default.

Replies are scripted to the workload's lengths (the `x-emulator-script` header carries the reply text, so a
summary request of a `Summarize` policy in the same turn is not affected); turns without a length — the fact
questions — are answered by the emulator's recall responder from the request alone, which shows whether the
strategy kept the fact. Every request that went over the wire is also recorded (its body and virtual time) to
compute the two lower bounds of `turnkeep.sim.bounds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx2

from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.policies import Policy, policy_settings, unknown_models
from turnkeep.core.policies.grammar import parse_policy, policy_label
from turnkeep.core.pricing import TokenCounts, token_counts
from turnkeep.errors import BillMismatch, UsageError, WorkerError
from turnkeep.sim.bounds import PrefixTracker
from turnkeep.sim.workloads import Workload

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from turnkeep.client import Conversation, Reply
    from turnkeep.emulator.clock import Clock
    from turnkeep.emulator.tokenizer import Segment

__all__ = [
    "BillMismatch",
    "Progress",
    "Row",
    "SimulationResult",
    "parse_strategy",
    "simulate",
    "strategy_label",
]

#: Called after every turn with (turns done, turns in all, label of the run in progress).
Progress = Callable[[int, int, str], None]

_CENT = Decimal("0.01")
# The emulator app is reached in-process; the host is only a name.
_BASE_URL = "http://emulator.invalid"
_MICRO = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class Row:
    """The outcome of one (strategy, model) run. USD amounts are exact Decimals (bounds to the micro-dollar)."""

    strategy: str
    model: str
    policy: Mapping[str, Any]
    turns: int
    requests: int
    cost_usd: Decimal
    bill_usd: Decimal
    tokens: TokenCounts
    peak_context: int
    facts: tuple[tuple[str, bool], ...]
    bound_no_expiry_usd: Decimal
    bound_clairvoyant_usd: Decimal
    turn_costs: tuple[Decimal, ...]
    seconds: float

    @property
    def usd_per_turn(self) -> Decimal:
        return self.cost_usd / self.turns if self.turns else Decimal(0)

    @property
    def cache_read_share(self) -> float:
        """Cache-read tokens over every input token sent (uncached + written + read)."""
        total = self.tokens.total_input
        return self.tokens.cache_read / total if total else 0.0

    @property
    def facts_retained(self) -> int:
        return sum(1 for _, kept in self.facts if kept)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: USD as decimal strings, tokens as integers."""
        return {
            "strategy": self.strategy,
            "model": self.model,
            "policy": dict(self.policy),
            "turns": self.turns,
            "requests": self.requests,
            "cost_usd": str(self.cost_usd),
            "bill_usd": str(self.bill_usd),
            "usd_per_turn": str(self.usd_per_turn.quantize(_MICRO)),
            "cache_read_share": round(self.cache_read_share, 6),
            "peak_context": self.peak_context,
            "tokens": {
                "input": self.tokens.input,
                "cache_write_5m": self.tokens.cache_write_5m,
                "cache_write_1h": self.tokens.cache_write_1h,
                "cache_read": self.tokens.cache_read,
                "output": self.tokens.output,
            },
            "facts_retained": self.facts_retained,
            "facts_total": len(self.facts),
            "facts": [{"question": question, "retained": kept} for question, kept in self.facts],
            "bound_no_expiry_usd": str(self.bound_no_expiry_usd),
            "bound_clairvoyant_usd": str(self.bound_clairvoyant_usd),
            "turn_costs_usd": [str(cost) for cost in self.turn_costs],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """Every run of a simulation, in the order strategies x models were given."""

    workload: str
    turns: int
    rows: tuple[Row, ...]
    seconds: float

    def row(self, strategy: str, model: str | None = None) -> Row:
        """The row of `strategy` (its label) on `model` (default: the first model run)."""
        for row in self.rows:
            if row.strategy == strategy and (model is None or row.model == model):
                return row
        raise KeyError(f"no row for strategy {strategy!r}" + (f" on {model!r}" if model else ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "turns": self.turns,
            "seconds": round(self.seconds, 3),
            "rows": [row.to_dict() for row in self.rows],
        }


# --------------------------------------------------------------------------------------------------------------
# Strategies by name


def parse_strategy(text: str) -> Policy:
    """A policy from its spelling (`turnkeep.core.policies.grammar.parse_policy`), as the simulator names its
    strategies."""
    return parse_policy(text)


def strategy_label(policy: Policy) -> str:
    """A policy's short spelling (`turnkeep.core.policies.grammar.policy_label`)."""
    return policy_label(policy)


# --------------------------------------------------------------------------------------------------------------
# Running


def simulate(
    workload: Workload,
    strategies: Sequence[Policy | str],
    models: Sequence[str],
    *,
    progress: Progress | None = None,
    catalog: Catalog | None = None,
    jobs: int | None = None,
) -> SimulationResult:
    """Replay `workload` once per strategy x model against the emulator on a virtual clock.

    Strategies are policies or their names (`parse_strategy`). `jobs`: how many runs play at once in worker
    processes; None picks one per available CPU when the simulation is big enough to pay for starting them
    (about a second of imports each), 1 plays every run here, one after the other. The rows are the same either
    way. Raises `UsageError` for an unknown model or strategy, `BillMismatch` if a run's ledger and the
    emulator's bill for it differ by a cent or more.
    """
    from turnkeep import config

    if not strategies or not models:
        raise UsageError("simulate needs at least one strategy and one model")
    if not workload.turns:
        raise UsageError(f"workload {workload.name!r} has no turns")
    if jobs is not None and jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {jobs}")
    policies = [parse_strategy(s) if isinstance(s, str) else s for s in strategies]
    catalog = catalog or config.load_catalog()
    for policy in policies:
        unknown = unknown_models(policy, catalog)
        if unknown:
            raise UsageError(f"strategy {strategy_label(policy)!r}: unknown model {unknown[0]!r}")
    for model in models:
        if not catalog.get(model).known:
            raise UsageError(f"unknown model {model!r}: the emulator serves only the models of the catalog")
    # Rows in the order strategies x models were given.
    runs = [(policy, model) for policy in policies for model in models]
    started = time.perf_counter()
    workers = _workers(jobs, len(runs), len(workload.turns))
    if workers == 1:
        rows = _play_here(workload, runs, catalog, progress)
    else:
        rows = _play_in_workers(workload, runs, catalog, progress, workers)
    return SimulationResult(workload.name, len(workload.turns), tuple(rows), time.perf_counter() - started)


# A worker process costs about a second of CPU to start (it imports the SDK and the emulator): below this many
# turns in all, the runs play here.
_PARALLEL_MIN_TURNS = 1_000


def _workers(jobs: int | None, runs: int, turns: int) -> int:
    if jobs is None:
        if runs * turns < _PARALLEL_MIN_TURNS:
            return 1
        jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(jobs, runs))


def play_run(
    workload: Workload,
    policy: Policy,
    model: str,
    catalog: Catalog,
    index: int,
    progress: Callable[[int], None] | None = None,
) -> Row:
    """Play run number `index` of a simulation (its API key is `sim-<index>`): one conversation of `workload`
    under `policy` on `model`, against its own emulator app; `progress(turns)` after every turn."""
    return _Run(catalog, workload, policy, catalog.get(model), key=f"sim-{index}").play(progress)


def _play_here(
    workload: Workload, runs: Sequence[tuple[Policy, str]], catalog: Catalog, progress: Progress | None
) -> list[Row]:
    turns, total = len(workload.turns), len(runs) * len(workload.turns)
    rows: list[Row] = []
    for index, (policy, model) in enumerate(runs):
        label = f"{strategy_label(policy)} on {model}"
        rows.append(play_run(workload, policy, model, catalog, index, _reporter(progress, index * turns, total, label)))
    return rows


def _play_in_workers(
    workload: Workload,
    runs: Sequence[tuple[Policy, str]],
    catalog: Catalog,
    progress: Progress | None,
    workers: int,
) -> list[Row]:
    """Play the runs in `workers` worker processes (`turnkeep.sim._worker`), each taking the next run as it
    finishes one; their turns are reported here as they are played."""
    import selectors
    import sys
    import tempfile

    from turnkeep.sim._worker import read_frame, write_frame

    total = len(runs) * len(workload.turns)
    done = [0] * len(runs)
    rows: list[Row | None] = [None] * len(runs)
    labels = [f"{strategy_label(policy)} on {model}" for policy, model in runs]
    waiting = list(enumerate(runs))[::-1]
    logs: dict[int, IO[bytes]] = {}
    stopping: set[int] = set()  # workers told that there is nothing left to play

    def give_next(process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        if waiting:
            index, (policy, model) = waiting.pop()
            write_frame(process.stdin, (index, policy, model))
        else:
            write_frame(process.stdin, None)
            stopping.add(process.pid)

    def stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:  # a failed or interrupted simulation: nothing it does now is wanted
            process.kill()

    with contextlib.ExitStack() as stack:
        selector = stack.enter_context(selectors.DefaultSelector())
        processes = []
        for _ in range(workers):
            log = stack.enter_context(tempfile.TemporaryFile())
            # Unbuffered pipes: a frame read is gone from the pipe, so `select` sees exactly what is left.
            process = stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-P", "-m", "turnkeep.sim._worker"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    bufsize=0,
                    env=_worker_environment(),
                )
            )
            stack.callback(stop, process)
            logs[process.pid] = log
            processes.append(process)
        for process in processes:
            assert process.stdin is not None
            write_frame(process.stdin, (workload, catalog))
            give_next(process)
            selector.register(process.stdout, selectors.EVENT_READ, process)  # type: ignore[arg-type]
        while any(row is None for row in rows):
            for key, _ in selector.select():
                process = key.data
                try:
                    kind, index, value = read_frame(key.fileobj)  # type: ignore[arg-type]
                except EOFError:
                    if process.pid in stopping:  # done, and gone
                        selector.unregister(key.fileobj)
                        continue
                    why = _last_line(process, logs[process.pid])
                    raise WorkerError(f"a simulation worker stopped: {why}") from None
                if kind == "turn":
                    done[index] = value
                    if progress is not None:
                        progress(sum(done), total, labels[index])
                elif kind == "row":
                    rows[index] = value
                    give_next(process)
                else:
                    raise value
    return [row for row in rows if row is not None]


def _worker_environment() -> dict[str, str]:
    """The environment of a worker: this one, with the directory this turnkeep was imported from first on the
    path (and, with `-P`, not the working directory), so a worker runs the same code as the caller."""
    import turnkeep

    root = str(Path(turnkeep.__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + inherited if inherited else "")}


def _last_line(process: subprocess.Popen[bytes], log: IO[bytes]) -> str:
    """The last line a worker wrote to stderr (its traceback's message), or its exit status."""
    process.wait()
    log.seek(0)
    lines = log.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {process.returncode}"


def _script(reply: Mapping[str, Any]) -> dict[str, str]:
    """Request headers that make the emulator play `reply` (see `turnkeep.emulator.responders`)."""
    return {"x-emulator-script": json.dumps(reply)}


def _reporter(progress: Progress | None, done: int, total: int, label: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda turns: report(done + turns, total, label)


class _AppTransport(httpx2.BaseTransport):
    """An `httpx2` transport that hands each request to an ASGI app in this thread, on a private event loop."""

    def __init__(self, app: Starlette) -> None:
        self._asgi = httpx2.ASGITransport(app)
        self._loop = asyncio.new_event_loop()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()

        async def answer() -> tuple[int, httpx2.Headers, bytes]:
            response = await self._asgi.handle_async_request(request)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = self._loop.run_until_complete(answer())
        return httpx2.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        self._loop.close()


class _Run:
    """One conversation of a simulation, against its own emulator app."""

    def __init__(self, catalog: Catalog, workload: Workload, policy: Policy, model: ModelInfo, *, key: str) -> None:
        from turnkeep.emulator import create_app
        from turnkeep.emulator.clock import Clock

        self.clock: Clock = Clock("virtual")
        self.app = create_app(clock=self.clock, catalog=catalog)
        self.app.state.emulator.on_answer = self._record
        self.catalog = catalog
        self.workload, self.policy, self.model, self.key = workload, policy, model, key
        self.tracker = PrefixTracker()
        self.label = f"{strategy_label(policy)} on {model.id}"

    def _record(self, scope: str, body: Mapping[str, Any], segments: list[Segment]) -> None:
        """The emulator's `on_answer`: remember every answered `/v1/messages` request, as the emulator cut it."""
        del scope  # the run's own key: the app serves this run alone
        model = self.catalog.get(str(body.get("model")))
        self.tracker.add(self.clock.now(), model, [(segment.fingerprint, segment.tokens) for segment in segments])

    def _turn(self, conversation: Conversation, index: int) -> Reply:
        """Send turn `index` (and its tool loop) and return the final reply."""
        turn = self.workload.turns[index]
        text = self.workload.reply(index)
        final = None if text is None else _script({"text": text})
        tool = str(self.workload.tools[0]["name"]) if turn.tool_steps else ""

        def call(step: int) -> dict[str, str]:
            return _script({"tool_use": [{"name": tool, "input": {"path": f"src/part_{index}_{step}.txt"}}]})

        first = call(0) if turn.tool_steps else final
        reply = conversation.send(turn.user, extra_headers=first) if first else conversation.send(turn.user)
        for step, loop in enumerate(turn.tool_steps):
            if loop.gap > 0:
                self.clock.advance(loop.gap)
            results = {reply.tool_calls[0].id: self.workload.tool_result(index, step)}
            headers = final if step == len(turn.tool_steps) - 1 else call(step + 1)
            if headers:
                reply = conversation.send_tool_results(results, extra_headers=headers)
            else:
                reply = conversation.send_tool_results(results)
        return reply

    def play(self, progress: Callable[[int], None] | None) -> Row:
        import anthropic

        from turnkeep.client import Conversation

        started = time.perf_counter()
        transport = _AppTransport(self.app)
        http = httpx2.Client(transport=transport, timeout=120.0)
        client = anthropic.Anthropic(api_key=self.key, base_url=_BASE_URL, max_retries=0, http_client=http)
        # Room for the longest scripted reply, also on generation-2 tokenizers (~30% more tokens).
        reply_room = math.ceil(self.workload.max_reply_tokens() * 1.3) + 64
        max_tokens = min(self.model.max_output, max(4096, reply_room))
        conversation = Conversation(
            self.model.id,
            system=self.workload.system,
            max_tokens=max_tokens,
            client=client,
            tools=list(self.workload.tools) or None,
            policy=self.policy,
            catalog=self.catalog,
            clock=self.clock.now,
        )
        facts: list[tuple[str, bool]] = []
        turn_costs: list[Decimal] = []
        seen = 0
        try:
            for index, turn in enumerate(self.workload.turns):
                if turn.gap > 0:
                    self.clock.advance(turn.gap)
                reply = self._turn(conversation, index)
                ledger = conversation.ledger
                turn_costs.append(sum((Decimal(e.cost_usd) for e in ledger[seen:]), Decimal(0)))
                seen = len(ledger)
                if turn.expect is not None:
                    facts.append((turn.user, turn.expect.lower() in reply.text.lower()))
                if progress is not None:
                    progress(index + 1)
            answer = http.get(f"{_BASE_URL}/_emulator/bill", headers={"x-api-key": self.key})
            answer.raise_for_status()
            bill = Decimal(answer.json()["usd"]["total"])
        finally:
            http.close()
            transport.close()
        ledger = conversation.ledger
        cost = sum((Decimal(e.cost_usd) for e in ledger), Decimal(0))
        if abs(cost - bill) >= _CENT / 2:
            raise BillMismatch(f"{strategy_label(self.policy)} on {self.model.id}: ledger ${cost} != bill ${bill}")
        counts = sum((token_counts(e.usage) for e in ledger if e.error is None), TokenCounts())
        output_usd = Decimal(0)
        for entry in ledger:
            if entry.error is None:
                used = token_counts(entry.usage)
                prices = self.catalog.get(entry.model).prices_for(used.total_input)
                output_usd += used.output * prices.output / Decimal(1_000_000)
        no_expiry = Decimal(repr(self.tracker.no_expiry_usd())) + output_usd
        clairvoyant = Decimal(repr(self.tracker.clairvoyant_usd())) + output_usd
        peak = max((token_counts(e.usage).total_input for e in ledger if e.error is None), default=0)
        return Row(
            strategy=strategy_label(self.policy),
            model=self.model.id,
            policy=policy_settings(self.policy),
            turns=len(self.workload.turns),
            requests=len(ledger),
            cost_usd=cost,
            bill_usd=bill,
            tokens=counts,
            peak_context=peak,
            facts=tuple(facts),
            bound_no_expiry_usd=no_expiry.quantize(_MICRO, rounding=ROUND_FLOOR),
            bound_clairvoyant_usd=clairvoyant.quantize(_MICRO, rounding=ROUND_FLOOR),
            turn_costs=tuple(turn_costs),
            seconds=time.perf_counter() - started,
        )
