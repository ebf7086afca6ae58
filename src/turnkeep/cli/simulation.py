"""Try strategies and models on a workload before paying for them: `simulate` and `recommend`.

Both replay a workload (built in, or your own exported conversation) with real conversations against the offline
emulator on a virtual clock, so a 200-turn chat with hours of human pauses runs in seconds and bills exactly like
the API would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from turnkeep.cli._runtime import make_console

__all__ = ["DEFAULT_STRATEGIES", "recommend", "simulate"]

# What `simulate` compares when no strategy is named: full history (with the automatic and the 1-hour TTL), a
# cache-stable window, a token budget and summaries.
DEFAULT_STRATEGIES = (
    "full-history",
    "full-history(ttl=1h)",
    "window(turns=20)",
    "token-budget(max_input_tokens=50000)",
    "summarize(trigger=20000)",
)


def _workload(name: str | None, transcript: str | None) -> Any:
    from turnkeep.errors import UsageError
    from turnkeep.sim import BUILTIN_WORKLOADS, load_transcript, workload

    if transcript is not None:
        return load_transcript(transcript)
    name = name or "chat-200"
    if name not in BUILTIN_WORKLOADS:
        raise UsageError(f"unknown workload {name!r}; built in: {', '.join(sorted(BUILTIN_WORKLOADS))}")
    return workload(name)


def _progress_bar() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        transient=True,
    )


def _run_with_progress(work: Callable[[Callable[[int, int, str], None]], Any]) -> Any:
    """Run `work(progress)` under a progress bar that starts before anything heavy is imported, so it shows from
    the first second. When stderr is not a terminal (a log, a pipe) each run gets one plain line instead, from its
    first turn on."""
    bar = _progress_bar()
    if not bar.console.is_terminal:
        started: set[str] = set()

        def report(done: int, total: int, label: str) -> None:
            if label not in started:  # runs may play side by side: one line as each begins
                started.add(label)
                click.echo(f"simulating {label} (turn {done:,} of {total:,})", err=True)

        return work(report)
    with bar:
        task = bar.add_task("starting the emulator", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        return work(progress)


@click.command()
@click.option(
    "--workload", "-w", "workload_name", help="A built-in workload: chat-200 (default), agent-100, doc-qa-30."
)
@click.option(
    "--transcript",
    type=click.Path(exists=True, dir_okay=False),
    help="Replay your own conversation "
    "(a `turnkeep export` JSON file, or a JSON list of turns with optional timestamps).",
)
@click.option(
    "--strategy",
    "-s",
    "strategies",
    multiple=True,
    help="A context policy, repeatable, e.g. "
    "full-history, 'window(turns=20)', 'summarize(trigger=20000)', 'full-history(ttl=1h)'.",
)
@click.option("--model", "-m", "models", multiple=True, help="A model id, repeatable (default: claude-sonnet-4-6).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Draw cost per turn and cumulative cost to a PNG (needs matplotlib: pip install 'turnkeep[plot]').",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Runs played at once, each in its own process (default: one per CPU when there is enough to do).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def simulate(
    workload_name: str | None,
    transcript: str | None,
    strategies: Sequence[str],
    models: Sequence[str],
    plot: str | None,
    jobs: int | None,
    as_json: bool,
) -> None:
    """What each strategy and model would cost on a workload: total and per-turn USD, cache-read share, peak
    context, planted facts still answerable at the end, and two lower bounds.

    \b
        turnkeep simulate
        turnkeep simulate -w chat-200 -s full-history -s 'window(turns=20)' -m claude-haiku-4-5 -m claude-sonnet-4-6
        turnkeep simulate --transcript my-chat.json --json
    """
    if plot:
        _check_plot_path(Path(plot))  # before a run of minutes, not after it
    picked = list(strategies) or list(DEFAULT_STRATEGIES)

    def work(progress: Callable[[int, int, str], None]) -> Any:
        from turnkeep.sim import simulate as run

        chosen = _workload(workload_name, transcript)
        return run(chosen, picked, list(models) or ["claude-sonnet-4-6"], progress=progress, jobs=jobs)

    from turnkeep.cli import render

    result = _run_with_progress(work)
    if as_json:
        click.echo(render.to_json(result.to_dict()))
    else:
        console = make_console()
        console.print(render.simulation_table(result))
        console.out(
            f"{result.workload}: {result.turns} turns, simulated in {result.seconds:.1f} s. Bounds: (a) every input "
            "token written once then read, no expiry; (b) each TTL chosen knowing the next gap.",
            highlight=False,
        )
    if plot:
        _plot(result, Path(plot))  # after the results are out: a failure here loses nothing
        click.echo(f"Plot written to {Path(plot).resolve()}", err=True)


@click.command()
@click.option(
    "--workload", "-w", "workload_name", help="A built-in workload: chat-200 (default), agent-100, doc-qa-30."
)
@click.option("--transcript", type=click.Path(exists=True, dir_okay=False), help="Your own conversation to replay.")
@click.option(
    "--volume", "-n", type=click.IntRange(min=1), default=1_000, show_default=True, help="Conversations per month."
)
@click.option("--model", "-m", "models", multiple=True, help="A candidate model, repeatable (default: four models).")
@click.option("--strategy", "-s", "strategies", multiple=True, help="A candidate policy, repeatable.")
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Runs played at once, each in its own process (default: one per CPU when there is enough to do).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the recommendation and every candidate as JSON.")
def recommend(
    workload_name: str | None,
    transcript: str | None,
    volume: int,
    models: Sequence[str],
    strategies: Sequence[str],
    jobs: int | None,
    as_json: bool,
) -> None:
    """Recommend a model, context policy and cache TTL for a workload at a monthly volume, with what each
    alternative trades (monthly cost against facts kept and peak context).

    \b
        turnkeep recommend --volume 50000
        turnkeep recommend --transcript my-chat.json -m claude-haiku-4-5 -m claude-sonnet-4-6 --json
    """
    from turnkeep.cli import render

    def work(progress: Callable[[int, int, str], None]) -> Any:
        from turnkeep.sim import DEFAULT_MODELS
        from turnkeep.sim import recommend as run

        return run(
            _workload(workload_name, transcript),
            conversations_per_month=volume,
            models=list(models) or list(DEFAULT_MODELS),
            strategies=list(strategies) or None,
            progress=progress,
            jobs=jobs,
        )

    result = _run_with_progress(work)
    if as_json:
        click.echo(render.to_json(result.to_dict()))
        return
    console = make_console()
    for reason in result.reasons:
        console.out(reason, highlight=False)
    console.print(render.recommendation_table(result))


def _check_plot_path(path: Path) -> None:
    from turnkeep.errors import UsageError

    if path.is_dir() or not path.parent.is_dir():
        raise UsageError(f"--plot {str(path)!r}: expected a file in an existing directory")


def _plot(result: Any, path: Path) -> None:
    from turnkeep.errors import UsageError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise UsageError("--plot needs matplotlib: pip install 'turnkeep[plot]'") from err
    figure, (per_turn, cumulative) = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for row in result.rows:
        costs = [float(cost) for cost in row.turn_costs]
        label = f"{row.strategy} · {row.model}"
        per_turn.plot(range(1, len(costs) + 1), costs, label=label, linewidth=1)
        running, total = [], 0.0
        for cost in costs:
            total += cost
            running.append(total)
        cumulative.plot(range(1, len(running) + 1), running, label=label)
    per_turn.set_ylabel("USD per turn")
    cumulative.set_ylabel("cumulative USD")
    cumulative.set_xlabel("turn")
    per_turn.legend(fontsize="small")
    per_turn.set_title(f"{result.workload}: cost per turn and cumulative cost")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=120)
    except (OSError, ValueError) as err:
        raise UsageError(f"--plot {str(path)!r}: {err}") from err
    finally:
        plt.close(figure)
