"""The cost simulator: replay workloads with real conversations against the emulator on a virtual clock.

```python
from turnkeep.sim import simulate, workload
from turnkeep.policies import FullHistory, Window

result = simulate(workload("chat-200"), [FullHistory(), Window(turns=20)], ["claude-sonnet-4-6"])
for row in result.rows:
    print(row.strategy, row.cost_usd, f"{row.cache_read_share:.1%}", row.facts_retained, row.bound_no_expiry_usd)
```

See `docs/simulation.md` for the workloads, what each row reports and how the lower bounds are computed.
"""

from __future__ import annotations

from turnkeep.sim.bounds import PrefixTracker
from turnkeep.sim.recommend import DEFAULT_MODELS, Candidate, Recommendation, default_strategies, recommend
from turnkeep.sim.simulator import (
    BillMismatch,
    Progress,
    Row,
    SimulationResult,
    parse_strategy,
    simulate,
    strategy_label,
)
from turnkeep.sim.workloads import (
    BUILTIN_WORKLOADS,
    Fact,
    ToolStep,
    Turn,
    Workload,
    agent_workload,
    chat_workload,
    doc_qa_workload,
    filler_text,
    load_transcript,
    parse_transcript,
    workload,
)

__all__ = [
    "BUILTIN_WORKLOADS",
    "DEFAULT_MODELS",
    "BillMismatch",
    "Candidate",
    "Fact",
    "PrefixTracker",
    "Progress",
    "Recommendation",
    "Row",
    "SimulationResult",
    "ToolStep",
    "Turn",
    "Workload",
    "agent_workload",
    "chat_workload",
    "default_strategies",
    "doc_qa_workload",
    "filler_text",
    "load_transcript",
    "parse_strategy",
    "parse_transcript",
    "recommend",
    "simulate",
    "strategy_label",
    "workload",
]
