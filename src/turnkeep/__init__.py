"""turnkeep: multi-turn conversations with Claude's Messages API, correct by construction."""

from turnkeep.errors import (
    BudgetExceeded,
    ConfigError,
    ConflictError,
    ContextWindowExceeded,
    HistoryError,
    PrefillNotSupported,
    StorageError,
    TurnkeepError,
    UnknownConversation,
    UsageError,
)

__all__ = [
    "BudgetExceeded",
    "ConfigError",
    "ConflictError",
    "ContextWindowExceeded",
    "HistoryError",
    "PrefillNotSupported",
    "StorageError",
    "TurnkeepError",
    "UnknownConversation",
    "UsageError",
]
__version__ = "0.1.0"
