"""Context policies: what each request of a conversation carries, and how it is cached.

Pass one to `Conversation(..., policy=...)`; see `turnkeep.core.policies` for how they decide. A policy can also be
spelled as text, as the command line and the simulator take it: `parse_policy("window(turns=20)")`.
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
from turnkeep.core.policies.grammar import parse_policy, policy_label

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
    "parse_policy",
    "policy_label",
]
