"""Start-up time: `import turnkeep`, `from turnkeep import Conversation`, and the CLI commands that call no model.

Each is a fresh process (what a user waits for), run `RUNS` times; the table shows the median and the best wall
time, and which heavy modules the process loaded (the `anthropic` SDK and the emulator must stay out of commands
that do not send). The target for `turnkeep --help`, `ls`, `show`, `search`, `cost` and `models` is 0.3 s on an idle
machine. Run: `.venv/bin/python -m benchmarks startup`.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._record import write_section

RUNS = 7
TARGET = 0.3
HEAVY = ("anthropic", "turnkeep.emulator.app", "rich")

_PROBE = """
import runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit:
    pass
print("LOADED", ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def _seed(env: dict[str, str]) -> str:
    """A store holding one conversation (made offline), so `show`, `search` and `cost` have something to do."""
    turnkeep = str(Path(sys.executable).parent / "turnkeep")
    subprocess.run([turnkeep, "ask", "My name is Ada."], env=env, check=True, capture_output=True)
    listed = subprocess.run([turnkeep, "ls", "--json"], env=env, check=True, capture_output=True, text=True)
    import json

    return str(json.loads(listed.stdout)[0]["id"])


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    # One untimed run first: it compiles what has no bytecode yet (as `pip install` does), so the timed runs
    # measure what a user waits for, not a first compilation.
    subprocess.run(argv, env={k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}, capture_output=True)
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times), min(times)


def _loaded(args: list[str], env: dict[str, str]) -> str:
    script = str(Path(sys.executable).parent / "turnkeep")
    probe = _PROBE.format(argv=["turnkeep", *args], script=script, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    line = next((line for line in done.stderr.splitlines() if line.startswith("LOADED")), "LOADED ")
    return line.removeprefix("LOADED ").strip() or "—"


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "TURNKEEP_"))}
        env["TURNKEEP_HOME"] = home
        conversation = _seed(env)
        python = sys.executable
        turnkeep = str(Path(python).parent / "turnkeep")
        cases: list[tuple[str, list[str], list[str] | None]] = [
            ("python -c pass (the floor)", [python, "-c", "pass"], None),
            ("import turnkeep", [python, "-c", "import turnkeep"], None),
            ("from turnkeep import Conversation", [python, "-c", "from turnkeep import Conversation"], None),
            ("turnkeep --help", [turnkeep, "--help"], ["--help"]),
            ("turnkeep ls", [turnkeep, "ls"], ["ls"]),
            ("turnkeep show ID", [turnkeep, "show", conversation], ["show", conversation]),
            ("turnkeep search Ada", [turnkeep, "search", "Ada"], ["search", "Ada"]),
            ("turnkeep cost", [turnkeep, "cost"], ["cost"]),
            ("turnkeep models", [turnkeep, "models"], ["models"]),
        ]
        rows = []
        for label, argv, cli in cases:
            median, best = _time(argv, env)
            loaded = _loaded(cli, env) if cli is not None else ""
            rows.append((label, median, best, loaded))
            print(f"{label:36} median {median:.3f} s  best {best:.3f} s  {loaded}", flush=True)
    lines = [
        "## Start-up (`benchmarks/bench_startup.py`)",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}, load average {os.getloadavg()[0]:.1f} when it ran. "
        "Command: `.venv/bin/python -m benchmarks startup`.",
        f"Each line is a fresh process, {RUNS} runs after one untimed run that writes the bytecode; "
        f"target for the commands that call no model: {TARGET} s. "
        "`heavy modules loaded` lists which of `anthropic`, the emulator app and `rich` the command imported.",
        "",
        "| what | median | best | heavy modules loaded |",
        "|---|---:|---:|---|",
        *(f"| `{label}` | {median:.3f} s | {best:.3f} s | {loaded} |" for label, median, best, loaded in rows),
        "",
    ]
    write_section("startup", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
