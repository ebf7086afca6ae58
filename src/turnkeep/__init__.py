"""turnkeep: multi-turn conversations with Claude's Messages API, correct by construction.

Names are imported on first use (PEP 562): `import turnkeep` stays cheap, which matters because the pytest plugin
shipped with turnkeep loads this package in every test run of every project that installs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from turnkeep.client import AsyncConversation, AsyncReplyStream, Conversation, Reply, ReplyStream
    from turnkeep.config import arefresh_catalog, refresh_catalog
    from turnkeep.core.budget import Budget
    from turnkeep.core.pricing import Cost, TokenCounts
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

__version__ = "0.1.0"

_WHERE = {
    "AsyncConversation": "turnkeep.client",
    "AsyncReplyStream": "turnkeep.client",
    "Conversation": "turnkeep.client",
    "Reply": "turnkeep.client",
    "ReplyStream": "turnkeep.client",
    "arefresh_catalog": "turnkeep.config",
    "Budget": "turnkeep.core.budget",
    "refresh_catalog": "turnkeep.config",
    "Cost": "turnkeep.core.pricing",
    "TokenCounts": "turnkeep.core.pricing",
    "BudgetExceeded": "turnkeep.errors",
    "ConfigError": "turnkeep.errors",
    "ConflictError": "turnkeep.errors",
    "ContextWindowExceeded": "turnkeep.errors",
    "HistoryError": "turnkeep.errors",
    "PrefillNotSupported": "turnkeep.errors",
    "StorageError": "turnkeep.errors",
    "TurnkeepError": "turnkeep.errors",
    "UnknownConversation": "turnkeep.errors",
    "UsageError": "turnkeep.errors",
}

__all__ = [
    "AsyncConversation",
    "AsyncReplyStream",
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "ConflictError",
    "ContextWindowExceeded",
    "Conversation",
    "Cost",
    "HistoryError",
    "PrefillNotSupported",
    "Reply",
    "ReplyStream",
    "StorageError",
    "TokenCounts",
    "TurnkeepError",
    "UnknownConversation",
    "UsageError",
    "arefresh_catalog",
    "refresh_catalog",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'turnkeep' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
