"""Context policies: what each request of a conversation carries, and how it is cached.

Pass one to `Conversation(..., policy=...)`; see `turnkeep.core.policies` for how they decide.
"""

from __future__ import annotations

from turnkeep.core.policies import FullHistory, Plan, Policy, RequestSettings, SlidingWindow, TokenBudget, Window

__all__ = ["FullHistory", "Plan", "Policy", "RequestSettings", "SlidingWindow", "TokenBudget", "Window"]
