"""The cost simulator: replay a workload with real `Conversation`s against the emulator, on a virtual clock.

`simulate(workload, strategies, models)` runs one conversation per (strategy, model) against one in-process
`EmulatorServer` whose clock is virtual: before each turn the clock moves by the turn's gap (so 5-minute and
1-hour cache entries expire as they would), and each conversation reads the same clock, so its policy judges
expiry and TTLs in the same time. Each run uses its own API key, which is the emulator's scope for the prompt
cache and the bill, so runs never share cache entries and each run's bill can be checked against its ledger.

Replies are scripted to the workload's lengths (the `x-emulator-script` header carries the reply text, so a
summary request of a `Summarize` policy in the same turn is not affected); turns without a length — the fact
questions — are answered by the emulator's recall responder from the request alone, which shows whether the
strategy kept the fact. Every request that went over the wire is also recorded (its body and virtual time) to
compute the two lower bounds of `turnkeep.sim.bounds`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.policies import Policy, policy_settings, unknown_models
from turnkeep.core.policies.grammar import parse_policy, policy_label
from turnkeep.core.pricing import TokenCounts, token_counts
from turnkeep.errors import BillMismatch, UsageError
from turnkeep.sim.bounds import PrefixTracker
from turnkeep.sim.workloads import Workload

if TYPE_CHECKING:
    import httpx2

    from turnkeep.client import Conversation, Reply
    from turnkeep.emulator import EmulatorServer
    from turnkeep.emulator.clock import Clock

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
) -> SimulationResult:
    """Replay `workload` once per strategy x model against an in-process emulator on a virtual clock.

    Strategies are policies or their names (`parse_strategy`). Raises `UsageError` for an unknown model or
    strategy, `BillMismatch` if a run's ledger and the emulator's bill for it differ by a cent or more.
    """
    from turnkeep import config
    from turnkeep.emulator import EmulatorServer
    from turnkeep.emulator.clock import Clock

    if not strategies or not models:
        raise UsageError("simulate needs at least one strategy and one model")
    if not workload.turns:
        raise UsageError(f"workload {workload.name!r} has no turns")
    policies = [parse_strategy(s) if isinstance(s, str) else s for s in strategies]
    catalog = catalog or config.load_catalog()
    for policy in policies:
        unknown = unknown_models(policy, catalog)
        if unknown:
            raise UsageError(f"strategy {strategy_label(policy)!r}: unknown model {unknown[0]!r}")
    infos = []
    for model in models:
        info = catalog.get(model)
        if not info.known:
            raise UsageError(f"unknown model {model!r}: the emulator serves only the models of the catalog")
        infos.append(info)
    clock = Clock("virtual")
    started = time.perf_counter()
    rows: list[Row] = []
    total = len(policies) * len(infos) * len(workload.turns)
    with EmulatorServer(clock=clock, catalog=catalog) as server:
        for info in infos:
            for policy in policies:
                run = _Run(server, clock, catalog, workload, policy, info, key=f"sim-{len(rows)}")
                rows.append(run.play(_reporter(progress, len(rows) * len(workload.turns), total, run.label)))
                server.close_clients()
    # Rows in the order strategies x models were given (the loop runs model by model, so the clock runs on).
    ordered = [rows[m * len(policies) + p] for p in range(len(policies)) for m in range(len(infos))]
    return SimulationResult(workload.name, len(workload.turns), tuple(ordered), time.perf_counter() - started)


def _script(reply: Mapping[str, Any]) -> dict[str, str]:
    """Request headers that make the emulator play `reply` (see `turnkeep.emulator.responders`)."""
    return {"x-emulator-script": json.dumps(reply)}


def _reporter(progress: Progress | None, done: int, total: int, label: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    report = progress
    return lambda turns: report(done + turns, total, label)


class _Run:
    """One conversation of a simulation."""

    def __init__(
        self,
        server: EmulatorServer,
        clock: Clock,
        catalog: Catalog,
        workload: Workload,
        policy: Policy,
        model: ModelInfo,
        *,
        key: str,
    ) -> None:
        self.server, self.clock, self.catalog = server, clock, catalog
        self.workload, self.policy, self.model, self.key = workload, policy, model, key
        self.tracker = PrefixTracker()
        self.label = f"{strategy_label(policy)} on {model.id}"

    def _record(self, response: httpx2.Response) -> None:
        """Response hook of the run's HTTP client: remember every answered `/v1/messages` request."""
        request = response.request
        if response.status_code != 200 or request.method != "POST" or not request.url.path.endswith("/v1/messages"):
            return
        body = json.loads(request.content)
        self.tracker.add_body(self.clock.now(), self.catalog.get(str(body.get("model"))), body)

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
        import httpx2

        from turnkeep.client import Conversation

        started = time.perf_counter()
        http = httpx2.Client(event_hooks={"response": [self._record]}, timeout=120.0)
        client = self.server.client(api_key=self.key, max_retries=0, http_client=http)
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
        finally:
            http.close()
        ledger = conversation.ledger
        cost = sum((Decimal(e.cost_usd) for e in ledger), Decimal(0))
        bill = Decimal(self.server.bill(api_key=self.key)["usd"]["total"])
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
