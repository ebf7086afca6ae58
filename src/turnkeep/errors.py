"""Every error turnkeep raises, in one tree.

```
TurnkeepError
├── UsageError                  you asked for something turnkeep will not do
│   ├── HistoryError            the conversation breaks a rule of the Messages API
│   ├── PrefillNotSupported     prefill on a model that rejects it
│   ├── ConfigError             a setting, file or environment variable is wrong
│   ├── UnknownConversation     no conversation or branch by that id/name
│   ├── InvalidExport           an export file that cannot be imported (names the JSON position)
│   ├── InvalidValue            an argument of the wrong kind or range (also a ValueError)
│   └── TurnOrderError          a turn's state machine was driven out of order (a driver's bug)
├── ContextWindowExceeded       the model stopped because its context window is full
├── BudgetExceeded              the next request would pass a conversation's budget
├── TransportError              the connection broke or the response was malformed, below the SDK's errors
├── BillMismatch                a simulation's ledger and the emulator's bill differ (a pricing bug)
├── StartupError                a server turnkeep starts (the emulator, the gateway) did not come up (a RuntimeError)
└── StorageError                the store failed
    └── ConflictError           two writers raced on one conversation head
```

"UsageError" means the caller can fix it and nothing was sent. The other branches mean the world failed.
Errors from the `anthropic` SDK (`anthropic.APIStatusError` and friends) pass through unchanged; where
turnkeep adds information it wraps them with `raise ... from err`, so the SDK error stays on `__cause__`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BillMismatch",
    "BudgetExceeded",
    "ConfigError",
    "ConflictError",
    "ContextWindowExceeded",
    "HistoryError",
    "InvalidExport",
    "InvalidValue",
    "PrefillNotSupported",
    "StartupError",
    "StorageError",
    "TransportError",
    "TurnOrderError",
    "TurnkeepError",
    "UnknownConversation",
    "UsageError",
    "WorkerError",
]


class TurnkeepError(Exception):
    """Base class of every error turnkeep raises itself."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, not by calling __init__ again (several take other arguments
        # than the message), so an error crosses a process boundary (a simulation worker) unchanged.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[TurnkeepError], args: tuple[Any, ...], state: dict[str, Any]) -> TurnkeepError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class UsageError(TurnkeepError):
    """The caller asked for something that cannot be done; nothing was sent."""


class HistoryError(UsageError):
    """A request or history breaks a rule of the Messages API.

    `message_index` and `block_index` point at the offending message and content block (None when the rule
    concerns the request as a whole); `rule` is a stable short name of the rule, for code to branch on.
    """

    def __init__(
        self,
        rule: str,
        detail: str,
        *,
        message_index: int | None = None,
        block_index: int | None = None,
    ) -> None:
        self.rule = rule
        self.detail = detail
        self.message_index = message_index
        self.block_index = block_index
        where = []
        if message_index is not None:
            where.append(f"messages[{message_index}]")
        if block_index is not None:
            where.append(f"content[{block_index}]")
        location = ".".join(where) if where else "request"
        super().__init__(f"{location}: {detail} (rule: {rule})")


class PrefillNotSupported(UsageError):
    """Prefill (a final assistant message) was asked for on a model that rejects it."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"model {model!r} does not accept assistant prefill (the request must end with a user message). "
            "Alternatives: structured output (output_config.format), a tool whose input is an enum, "
            "system instructions, or prefill_fallback='instruct', which asks the model to begin its reply "
            "with the prefill and guarantees the returned text does."
        )


class ConfigError(UsageError):
    """A setting, configuration file or environment variable is invalid."""


class UnknownConversation(UsageError):
    """No conversation (or branch) by that id or name."""


class ContextWindowExceeded(TurnkeepError):
    """The model stopped with `model_context_window_exceeded`, or the request did not fit its window.

    The user message stays pending: shorten the history (or choose a context policy) and `retry()`, or
    `rollback()` it.
    """

    def __init__(self, model: str, detail: str) -> None:
        self.model = model
        super().__init__(f"context window of {model!r} exceeded: {detail}")


class BudgetExceeded(TurnkeepError):
    """Sending the next request would pass one of the conversation's budgets."""


class StorageError(TurnkeepError):
    """The conversation store failed to read or write."""


class ConflictError(StorageError):
    """Another writer moved the conversation's head first; reload and try again."""


class InvalidValue(UsageError, ValueError):
    """An argument of the wrong kind or out of range (a clock mode, a cache TTL, a scripted reply ...). Also a
    `ValueError`, as such arguments have always been, so code that catches that goes on working."""


class StartupError(TurnkeepError, RuntimeError):
    """A server turnkeep starts in-process (the emulator, the gateway) did not come up. Also a `RuntimeError`."""


class WorkerError(TurnkeepError, RuntimeError):
    """A worker process turnkeep started (a simulation worker) stopped before it finished; the message has the last
    line it wrote. Also a `RuntimeError`."""


class InvalidExport(UsageError):
    """An export file that cannot be imported; `position` says where the first problem is."""

    def __init__(self, position: str, detail: str) -> None:
        self.position = position
        self.detail = detail
        super().__init__(f"{position}: {detail}")


class TurnOrderError(UsageError):
    """A turn's state machine was asked for something out of order (a request after it finished, or its outcome
    before). Only a driver of `core.turn.Turn` can cause it."""


class TransportError(TurnkeepError):
    """The connection broke or the API's response was malformed in a way the `anthropic` SDK lets through
    unwrapped (a stream's connection closed mid-body, a truncated JSON body). Nothing usable arrived: the user
    message stays pending, `retry()` resends it and `rollback()` drops it. The original error is `__cause__`."""


class BillMismatch(TurnkeepError):
    """A run's ledger total and the emulator's bill for it differ by a cent or more (a pricing bug)."""
