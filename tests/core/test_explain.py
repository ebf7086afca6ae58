"""A plan prints as a readable table: what is kept and dropped, breakpoints, the forecast, then any other fact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from turnkeep.core.catalog import default_catalog
from turnkeep.core.policies import Plan, RequestSettings, Window

MODEL = default_catalog().get("claude-sonnet-4-6")


def _plan() -> Plan:
    """A `Window(turns=4)` over five exchanges and a new question, with a system prompt worth caching."""
    transcript: list[dict[str, Any]] = []
    for number in range(5):
        transcript += [{"role": "user", "content": f"Box {number} is red."}, {"role": "assistant", "content": "Noted."}]
    transcript.append({"role": "user", "content": "And box 5?"})
    return Window(turns=4).plan(transcript, {}, RequestSettings(MODEL, 1024, "Be brief. " * 600))


def test_printing_a_plan_shows_one_fact_a_line_in_words_with_the_values_in_one_column() -> None:
    plan = _plan()
    lines = str(plan).splitlines()
    column = len("estimated input tokens  ")  # the longest label, then two spaces
    rows = {line[:column].strip(): line[column:] for line in lines}
    assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)
    assert rows["policy"] == "window"
    assert rows["kept"] == "messages 8–10"
    assert rows["dropped"] == "messages 0–7"
    assert rows["cache breakpoints"] == "system[-1] (prefix, 5m); messages[2].content[0] (moving, 5m)"
    usd = plan.explanation["forecast"]["usd"]["input_total"]
    assert rows["forecast"] == f"0 cache read, 1,521 written 5m, 0 written 1h, 0 uncached (cache new); input ${usd}"
    assert rows["turns kept"] == "2"
    # The first request of a conversation rewrites nothing: nothing was cached before it.
    assert '"rewrite_tokens": 0' in rows["step"]


def test_the_excerpt_in_the_policies_guide_is_what_such_a_plan_prints() -> None:
    guide = (Path(__file__).parents[2] / "docs" / "policies.md").read_text()
    excerpt = guide.split("For a `Window(turns=4)` over five exchanges and a new question:", 1)[1]
    shown = excerpt.split("```text\n", 1)[1].split("```", 1)[0].splitlines()
    assert len(shown) >= 5
    printed = str(_plan()).splitlines()
    assert [line for line in shown if line not in printed] == []
