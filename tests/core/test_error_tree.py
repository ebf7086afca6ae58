"""Every exception turnkeep raises is in the one tree of `turnkeep.errors` (built-in exceptions appear only where
they are caught again in the same place, or as a base of one of ours)."""

from __future__ import annotations

import ast
import builtins
import pickle
from pathlib import Path

import pytest

import turnkeep
from turnkeep import errors

SOURCE = Path(turnkeep.__file__).parent
BUILTIN_ERRORS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}
# Python's own protocols, not errors of ours: a module's `__getattr__` (AttributeError), a lookup by key that
# fails (KeyError, caught by its caller), the CLI's exit status (SystemExit), an abstract method.
ALLOWED = {"AttributeError", "KeyError", "SystemExit", "NotImplementedError"}


def raised_builtins() -> list[str]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                name = node.exc.func.id
                if name in BUILTIN_ERRORS and name not in ALLOWED:
                    found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: raise {name}")
    return found


def test_turnkeep_raises_no_built_in_exception_of_its_own() -> None:
    assert raised_builtins() == []


def test_every_exception_class_is_a_turnkeep_error() -> None:
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert all(issubclass(cls, errors.TurnkeepError) for cls in classes)
    assert {cls.__name__ for cls in classes} <= set(errors.__all__)


def test_the_compatible_errors_are_still_what_they_were() -> None:
    assert issubclass(errors.InvalidValue, ValueError)
    assert issubclass(errors.InvalidValue, errors.UsageError)
    assert issubclass(errors.StartupError, RuntimeError)


@pytest.mark.parametrize(
    "error",
    [
        errors.HistoryError("prefill_not_last", "the prefill must be last", message_index=3, block_index=1),
        errors.PrefillNotSupported("claude-sonnet-5-5"),
        errors.ContextWindowExceeded("claude-sonnet-4-6", "estimated at 5,571 input tokens"),
        errors.InvalidExport("$.ledger[0].cost_usd", "not a decimal"),
        errors.WorkerError("a simulation worker stopped: killed"),
    ],
)
def test_an_error_crosses_a_process_boundary_unchanged(error: errors.TurnkeepError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)
