"""The `turnkeep` command line: a click group whose commands are thin wrappers over library calls.

Errors are turned into text in one place (`TurnkeepGroup.main`), always as ONE line on stderr, never a traceback:

- a usage problem — a bad option, or a `turnkeep.errors.UsageError` raised by the library (an unknown id, a bad
  import file, ...) — prints `Error: ...` and exits with status 2;
- the world failing — a `turnkeep.errors.TurnkeepError` such as `StorageError`, or an error of the `anthropic`
  SDK — prints `Error: ...` and exits with status 1.

Every command imports its heavy dependencies inside its function, so `turnkeep --help` stays fast. To add a
command, write it in a module of this package and name it in `COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from turnkeep.cli._runtime import Runtime, api_error_text, one_line
from turnkeep.errors import TurnkeepError, UsageError

__all__ = ["COMMANDS", "TurnkeepGroup", "main"]

# Command name -> "module:function" of this package.
COMMANDS: dict[str, str] = {
    "chat": "chat:chat",
    "ask": "chat:ask",
    "ls": "conversations:ls",
    "show": "conversations:show",
    "search": "conversations:search",
    "export": "conversations:export",
    "import": "conversations:import_",
    "rm": "conversations:rm",
    "copy": "copy:copy",
    "explain": "costs:explain",
    "cost": "costs:cost",
    "emulate": "emulate:emulate",
    "simulate": "simulation:simulate",
    "recommend": "simulation:recommend",
    # The gateway
    "serve": "serve:serve",
    "keys": "serve:keys",
    "models": "models:models",
}


class TurnkeepGroup(click.Group):
    """A click group that reports errors as one line on stderr: exit status 2 for usage errors, 1 otherwise."""

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
            click.echo(f"Error: {one_line(message)}", err=True)
            sys.exit(2)
        except click.ClickException as err:
            click.echo(f"Error: {one_line(err.format_message())}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except TurnkeepError as err:
            click.echo(f"Error: {one_line(str(err))}", err=True)
            sys.exit(1)
        except Exception as err:
            text = api_error_text(err)
            if text is None:
                raise
            click.echo(f"Error: {text}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=TurnkeepGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    metavar="FILE|URL",
    help="Where the conversations are: a SQLite file or a postgresql:// URL (default: $TURNKEEP_DATABASE_URL, "
    "else $TURNKEEP_HOME/turnkeep.db, else the user data directory).",
)
@click.version_option(package_name="turnkeep")
@click.pass_context
def main(ctx: click.Context, db: str | None) -> None:
    """turnkeep: multi-turn conversations with Claude, with exact history, caching and cost.

    \b
        turnkeep chat                          # talk; /help inside
        turnkeep ask "What is the capital of France?"
        turnkeep ask -c "What is its population?"
        turnkeep ls
        turnkeep cost

    Without ANTHROPIC_API_KEY, replies come from turnkeep's offline emulator of the Messages API.
    """
    runtime = Runtime(db)
    ctx.obj = runtime
    ctx.call_on_close(runtime.close)


def _register() -> None:
    for name, target in COMMANDS.items():
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(f"turnkeep.cli.{module}"), attribute)
        main.add_command(command, name)


_register()
