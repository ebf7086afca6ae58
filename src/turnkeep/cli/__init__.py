"""The `turnkeep` command line: a click group whose commands are thin wrappers over library calls.

Errors are turned into text in one place (`TurnkeepGroup.main`): a usage problem — a bad option, or a
`turnkeep.errors.UsageError` raised by the library — prints ONE line, `Error: ...`, on stderr and exits with
status 2. Every command imports its heavy dependencies inside its function, so `turnkeep --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from turnkeep.errors import UsageError

__all__ = ["TurnkeepGroup", "main"]


class TurnkeepGroup(click.Group):
    """A click group that reports usage errors as one line on stderr with exit status 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except (click.UsageError, UsageError) as err:
            message = err.format_message() if isinstance(err, click.ClickException) else str(err)
            click.echo(f"Error: {_one_line(message)}", err=True)
            sys.exit(2)
        except click.ClickException as err:
            click.echo(f"Error: {_one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _one_line(message: str) -> str:
    return " ".join(message.split())


@click.group(cls=TurnkeepGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="turnkeep")
def main() -> None:
    """turnkeep: multi-turn conversations with Claude, with exact history, caching and cost."""


def _register() -> None:
    from turnkeep.cli.emulate import emulate

    main.add_command(emulate)


_register()
