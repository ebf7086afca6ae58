"""One spelling of policies as text, for the library, the command line and the simulator."""

from __future__ import annotations

import pytest

from turnkeep.cli._runtime import parse_policy as cli_parse_policy
from turnkeep.errors import ConfigError
from turnkeep.policies import FullHistory, Summarize, TokenBudget, Window, parse_policy, policy_label
from turnkeep.sim import parse_strategy


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("full-history", FullHistory()),
        ("window:20", Window(turns=20)),
        ("token-budget:30000", TokenBudget(max_input_tokens=30_000)),
        ("window(turns=20, ttl=1h)", Window(turns=20, ttl="1h")),
        (
            "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))",
            Summarize(trigger=20_000, inner=TokenBudget(max_input_tokens=40_000)),
        ),
    ],
)
def test_the_library_the_command_line_and_the_simulator_read_the_same_spelling(text: str, policy: object) -> None:
    assert parse_policy(text) == policy
    assert cli_parse_policy(text) == policy
    assert parse_strategy(text) == policy
    assert parse_policy(policy_label(parse_policy(text))) == policy


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("window(turns=-3)", "turns"),
        ("window(turns=lots)", "'lots'"),
        ("summarize(trigger=20000, inner=window(turns=0))", "turns"),
        ("window(turns=20, turns=30)", "'turns' given twice"),
        ("window(ttl=2h)", "'2h'"),
        ("nothing-like-it", "'nothing-like-it'"),
    ],
)
def test_a_wrong_spelling_names_the_setting_and_the_value(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        parse_policy(text)
