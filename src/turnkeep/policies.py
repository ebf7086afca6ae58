"""Context policies: what each request of a conversation carries, and how it is cached.

Pass one to `Conversation(..., policy=...)`; see `turnkeep.core.policies` for how they decide.
"""

from __future__ import annotations

from turnkeep.core.policies import (
    ClearToolUses,
    FullHistory,
    Plan,
    Policy,
    RequestSettings,
    ServerCompaction,
    SlidingWindow,
    Summarize,
    TokenBudget,
    Window,
)

__all__ = [
    "ClearToolUses",
    "FullHistory",
    "Plan",
    "Policy",
    "RequestSettings",
    "ServerCompaction",
    "SlidingWindow",
    "Summarize",
    "TokenBudget",
    "Window",
]
