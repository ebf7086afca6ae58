"""turnkeep: multi-turn conversations with Claude's Messages API, correct by construction."""

from turnkeep.client import AsyncConversation, AsyncReplyStream, Conversation, Reply, ReplyStream
from turnkeep.config import arefresh_catalog, refresh_catalog
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

__all__ = [
    "AsyncConversation",
    "AsyncReplyStream",
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
__version__ = "0.1.0"
