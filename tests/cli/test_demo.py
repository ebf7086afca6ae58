"""`make demo` (examples/demo.py) runs offline through the CLI and shows what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[2] / "examples" / "demo.py"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_shows_memory_the_policy_at_work_and_the_cost_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "TURNKEEP_HOME", "TURNKEEP_MODEL")}
    env["HOME"] = str(tmp_path)  # the demo must not need (or touch) the user's data directory
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,  # about 6 s idle; a generous bound for a busy machine
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "replies come from turnkeep's offline emulator" in out
    # memory across turns
    assert "> What is its population?\nParis has a population of about 2.1 million." in out
    assert "> What is my name?\nYour name is Ada." in out
    # a fresh conversation cannot answer the follow-up
    assert 'I don\'t know what "it" refers to' in out
    # the window policy dropped the name from the requests, and /explain says so
    assert "> What is my name?\nI don't know your name" in out
    assert re.search(r"^dropped\s+messages 0–5\s*$", out, re.MULTILINE)
    # the cost table
    for heading in ("uncached", "write 5m", "write 1h", "cache read", "output", "USD", "total"):
        assert heading in out
    assert "4 requests to claude-sonnet-5-5 · $" in out
    assert "Traceback" not in out + result.stderr
    assert not (tmp_path / ".local").exists()
