"""Forecast error: how close `Conversation.forecast()` comes to the input size the API then bills (issue 5).

Run: `.venv/bin/python -m benchmarks forecast`. Replays `chat-200` (scripted replies of the workload's lengths,
human gaps on a virtual clock) against the emulator with several context policies; before each turn it asks
`forecast(question)` and compares the predicted input tokens with the request's billed total
(input + cache writes + cache reads). Target: at most 2% error on every turn after the first.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics

from benchmarks._record import write_section
from turnkeep import Conversation
from turnkeep.core.policies import FullHistory, Policy, Summarize, TokenBudget, Window
from turnkeep.emulator import EmulatorServer
from turnkeep.emulator.clock import Clock
from turnkeep.sim import workload

MODEL = "claude-sonnet-4-6"
POLICIES: list[tuple[str, Policy]] = [
    ("FullHistory()", FullHistory()),
    ("Window(turns=20)", Window(turns=20)),
    ("TokenBudget(max_input_tokens=20_000)", TokenBudget(max_input_tokens=20_000)),
    ("Summarize(trigger=20_000)", Summarize(trigger=20_000)),
]


def errors_for(server: EmulatorServer, clock: Clock, policy: Policy, key: str, *, exact: bool = False) -> list[float]:
    """Relative forecast error per turn (predicted / billed - 1)."""
    chat = workload("chat-200")
    conversation = Conversation(
        MODEL, client=server.client(api_key=key), system=chat.system, policy=policy, clock=clock.now
    )
    errors = []
    for index, turn in enumerate(chat.turns):
        clock.advance(turn.gap)
        predicted = conversation.forecast(turn.user, exact=exact).input_tokens
        reply = chat.reply(index)
        headers = {"x-emulator-script": json.dumps({"text": reply})} if reply is not None else {}
        conversation.send(turn.user, extra_headers=headers)
        billed = next(e for e in reversed(conversation.ledger) if e.purpose == "reply")
        actual = (
            billed.usage["input_tokens"]
            + billed.usage.get("cache_creation_input_tokens", 0)
            + billed.usage.get("cache_read_input_tokens", 0)
        )
        errors.append(predicted / actual - 1)
    return errors


def main() -> None:
    """Measure, print a table, and record it in docs/benchmarks.md."""
    clock = Clock("virtual")
    rows = []
    with EmulatorServer(clock=clock) as server:
        runs = [(label, policy, False) for label, policy in POLICIES]
        runs.append(("FullHistory(), exact=True (count_tokens)", FullHistory(), True))
        for number, (label, policy, exact) in enumerate(runs):
            errors = [abs(e) for e in errors_for(server, clock, policy, f"forecast-{number}", exact=exact)]
            later = errors[1:]
            rows.append((label, errors[0], statistics.mean(later), statistics.quantiles(later, n=20)[-1], max(later)))
    lines = [
        "## Forecast error (`benchmarks/bench_forecast.py`)",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}. Command: `.venv/bin/python -m benchmarks forecast`.",
        f"`chat-200` on `{MODEL}` against the emulator: `forecast(question)` before each turn vs the billed input "
        "of that turn's request. The known part is exact (the previous request's usage); the new messages are "
        "estimated and calibrated on what the API reported for earlier turns; `exact=True` asks `count_tokens`. "
        "Target: ≤ 2% after the first turn. What remains above it: on a turn where `Summarize` writes a new "
        "summary, the summary's length is a guess until it exists (the previous summary's length, or half the "
        "allowed length); every other turn of every policy stays within the target. The first turn has nothing "
        "measured yet: it is the raw estimate.",
        "",
        "| policy | first turn | mean after | p95 after | max after | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, first, mean, p95, worst in rows:
        verdict = "PASS" if worst <= 0.02 else "FAIL"
        lines.append(f"| `{label}` | {first:.2%} | {mean:.2%} | {p95:.2%} | {worst:.2%} | **{verdict}** |")
    section = "\n".join(lines) + "\n"
    print(section)
    write_section("forecast", section)


if __name__ == "__main__":
    main()
