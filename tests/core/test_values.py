"""Hostile-value checks: the quick pass that clears clean values agrees with the walk that names the path."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from turnkeep.core import values
from turnkeep.core.values import _locate, _suspect, find_problem

KEY = "sk-ant-api03-" + "A" * 24
_texts = st.sampled_from(["plain", "café", "\ud800", KEY, "about sk-ant- keys", "api_key", "x-api-key", ""])
_keys = st.sampled_from(["text", "api_key", "X-Api-Key", "k\udfff", "input", "Authorization"])
_json: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | _texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=30,
)


@given(_json, st.booleans(), st.booleans(), st.booleans(), st.integers(min_value=0, max_value=4))
def test_the_quick_pass_clears_exactly_what_the_path_walk_finds_nothing_in(
    value: object, depth: bool, surrogates: bool, secrets: bool, limit: int
) -> None:
    options = {"depth": depth, "surrogates": surrogates, "secrets": secrets, "limit": limit}
    assert _suspect(value, **options) == (_locate(value, "v", **options) is not None)


def test_a_problem_is_named_with_its_path() -> None:
    problem = find_problem({"messages": [{"content": [{"text": "ok"}, {"input": {"k": KEY}}]}]}, "request")
    assert problem is not None
    assert problem.kind == "secret_value"
    assert problem.path == "request.messages[0].content[1].input.k"


def test_a_deep_value_is_refused_without_recursion() -> None:
    deep: object = "leaf"
    for _ in range(10_000):
        deep = {"a": deep}
    problem = find_problem(deep, "input")
    assert problem is not None
    assert problem.kind == "depth"
    assert find_problem(deep, "input", limit=20_000) is None
    assert values.depth_exceeds(deep) is not None
