"""Every request of every policy, over random valid histories, random models and random settings: valid by our
rules and by the emulator's independent ones, starts with a user turn, at most 4 breakpoints, within the budget,
and deterministic.

One hypothesis example draws a history, a model and the policies' parameters, then replays the history turn by
turn (one request per user message, the state carried over, time moving on) under each of ten policies:
FullHistory (automatic caching), FullHistory (no caching), Window (in turns and in messages), TokenBudget,
SlidingWindow, Summarize (alone and over a TokenBudget), ServerCompaction (the edit, or its Summarize fallback on
models without compaction) and ClearToolUses. When a plan has a summary due, its summary request, the request it
leads to, and the plan after absorbing a summary are checked too, and so is what a policy sends after a request
did not fit (`shrink`: smaller, or a summary call first). With the `thorough` Hypothesis profile
(`make test-thorough`: 2,000 examples) that is 20,000 random policy cases, each planning several requests; the
default `ci` profile runs the first 100 examples of a fixed sequence (1,000 cases) on every `make test`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import histories, texts

from turnkeep.core.catalog import ModelInfo, default_catalog
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
from turnkeep.core.policies.turns import is_turn_start
from turnkeep.core.rules import MAX_BREAKPOINTS, validate
from turnkeep.core.tokens import estimate_request
from turnkeep.emulator.validation import validate_request
from turnkeep.errors import ContextWindowExceeded

CATALOG = default_catalog()
MODELS = [CATALOG.get(model_id) for model_id in CATALOG if CATALOG.get(model_id).lifecycle != "retired"]
API_VERSION = "2026-10-21"


def _breakpoints(request: Mapping[str, Any]) -> int:
    count = 1 if "cache_control" in request else 0
    for part in (request.get("tools") or [], request.get("system") if isinstance(request.get("system"), list) else []):
        count += sum(1 for block in part if "cache_control" in block)
    for message in request["messages"]:
        content = message["content"]
        for block in content if isinstance(content, list) else []:
            count += "cache_control" in block
            nested = block.get("content")
            if isinstance(nested, list):
                count += sum(1 for inner in nested if isinstance(inner, dict) and "cache_control" in inner)
    return count


def _has_thinking(request: Mapping[str, Any]) -> bool:
    return any(
        block.get("type") in ("thinking", "redacted_thinking")
        for message in request["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[ModelInfo, list[dict[str, Any]], dict[str, Any]]:
    model = draw(st.sampled_from(MODELS))
    history = draw(histories(system_messages=model.system_messages, max_turns=5))
    params = {
        "system": draw(st.one_of(st.none(), texts, st.just("Follow the house rules. " * 300))),
        "window": draw(st.integers(1, 5)),
        "low": draw(st.one_of(st.none(), st.integers(1, 4))),
        "budget": draw(st.integers(60, 3000)),
        "sliding": draw(st.integers(1, 8)),
        "ttl": draw(st.sampled_from(["5m", "1h", "auto"])),
        "gaps": draw(st.lists(st.sampled_from([1.0, 30.0, 400.0, 4000.0]), min_size=8, max_size=8)),
    }
    return model, history, params


def _policies(params: Mapping[str, Any]) -> list[Policy]:
    window = params["window"]
    low = params["low"] if params["low"] is not None and params["low"] < window else None
    return [
        FullHistory(ttl=params["ttl"]),
        FullHistory(cache=False),
        Window(turns=window, low_water=low, ttl=params["ttl"]),
        Window(messages=params["sliding"], ttl=params["ttl"]),
        TokenBudget(max_input_tokens=params["budget"], ttl=params["ttl"]),
        SlidingWindow(messages=params["sliding"]),
        Summarize(trigger=300, keep_last=2),
        Summarize(trigger=300, keep_last=1, inner=TokenBudget(max_input_tokens=params["budget"])),
        ServerCompaction(),
        ClearToolUses(trigger=100, keep=1),
    ]


def _accepted(request: Mapping[str, Any]) -> None:
    """Valid by turnkeep's rules and by the emulator's independent ones (with the betas the request names)."""
    model = CATALOG.get(str(request["model"]))
    validate(request, model)
    if not _has_thinking(request):  # the emulator checks signatures; these histories carry made-up ones
        body = {key: value for key, value in request.items() if key != "betas"}
        betas = frozenset(request.get("betas") or ())
        validate_request(body, model=model, api_version=API_VERSION, betas=betas)
    assert is_turn_start(request["messages"][0])
    assert _breakpoints(request) <= MAX_BREAKPOINTS


def _check_shrink(policy: Policy, transcript: list[dict[str, Any]], plan: Plan, settings: RequestSettings) -> None:
    """What a policy sends after a request did not fit: valid, and smaller (or a summary call first)."""
    shrink = getattr(policy, "shrink", None)
    if shrink is None:
        return
    try:
        smaller = shrink(transcript, plan.state, settings)
    except ContextWindowExceeded:
        return  # only the current turn is left: nothing more can be dropped
    if smaller is None:
        return
    _accepted(smaller.request)
    if smaller.summary is not None:
        _accepted(smaller.summary.request)
    assert len(smaller.request["messages"]) < len(plan.request["messages"]) or smaller.summary is not None


def _check(policy: Policy, model: ModelInfo, history: list[dict[str, Any]], params: Mapping[str, Any]) -> None:
    state: Mapping[str, Any] = {}
    now, last = 1_000_000.0, None
    gaps: list[float] = []
    for end in range(1, len(history) + 1):
        if history[end - 1]["role"] != "user" or (end < len(history) and history[end]["role"] == "system"):
            continue  # a request is sent after each user message (with its system message, if any)
        transcript = history[:end]  # shares the message dicts: the test checks they are never modified
        request_settings = RequestSettings(
            model, 256, params["system"], None, now=now, last_request_at=last, gaps=tuple(gaps)
        )
        plan = policy.plan(transcript, state, request_settings)
        request = plan.request
        _accepted(request)
        if plan.summary is not None:
            # A summary due: its call, the request it leads to, and the fallback must all be valid; then the plan
            # once the summary is written.
            _accepted(plan.summary.request)
            if plan.summary.preview is not None:
                _accepted(plan.summary.preview)
            absorbed = cast(Any, policy).absorb_summary(state, plan.summary, "The user asked several questions.")
            _accepted(policy.plan(transcript, absorbed, request_settings).request)
        _check_shrink(policy, transcript, plan, request_settings)
        again = policy.plan(list(transcript), json.loads(json.dumps(state)), request_settings)
        assert json.dumps(again.request, sort_keys=True) == json.dumps(request, sort_keys=True)
        if isinstance(policy, TokenBudget):
            explanation = plan.explanation
            if explanation["fits"]:
                assert estimate_request(request, model) <= policy.budget(request_settings)
            else:  # only the current turn is left, and it alone is over the budget
                assert explanation["kept"][0] == max(i for i in range(end) if is_turn_start(history[i]))
        state = json.loads(json.dumps(plan.state))
        gap = params["gaps"][len(gaps) % len(params["gaps"])]
        last, now = now, now + gap
        gaps.append(gap)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # examples: the profile's
@given(cases())
def test_every_plan_of_every_policy_is_a_valid_request(
    case: tuple[ModelInfo, list[dict[str, Any]], dict[str, Any]],
) -> None:
    model, history, params = case
    pristine = copy.deepcopy(history)
    for policy in _policies(params):
        _check(policy, model, history, params)
    assert history == pristine  # no policy modifies the transcript it is given
