"""Window policies: whole turns, cache-stable steps, cold-cache steps, restarts, thinking, shrink."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest

from turnkeep.core.catalog import ModelInfo, default_catalog
from turnkeep.core.policies import (
    FullHistory,
    Plan,
    Policy,
    RequestSettings,
    SlidingWindow,
    Summarize,
    TokenBudget,
    Window,
    policy_from_settings,
    policy_settings,
)
from turnkeep.core.policies.turns import is_turn_start
from turnkeep.core.rules import validate
from turnkeep.core.tokens import estimate_request
from turnkeep.errors import ConfigError, ContextWindowExceeded

MODEL = default_catalog().get("claude-sonnet-5")  # thinking not bound to the prefix
BINDING = default_catalog().get("claude-sonnet-5-5")  # thinking bound to the prefix
SYSTEM = "You are a helpful assistant. " * 250
WORDS = ["the", "of", "and", "to", "in", "is", "you", "that", "it", "was", "for", "on", "are", "as", "with"]


def _text(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


def _canonical(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Messages as the cache compares them: cache_control left out, a string the same as one text block."""
    out = []
    for message in messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        stripped = [{k: v for k, v in block.items() if k != "cache_control"} for block in blocks]
        out.append(json.dumps({"role": message["role"], "content": stripped}, sort_keys=True))
    return out


class Chat:
    """Drives a policy turn by turn like the client does: transcript grows, state is carried over."""

    def __init__(self, policy: Policy, model: ModelInfo = MODEL, *, seed: int = 7, roundtrip: bool = False) -> None:
        self.policy, self.model, self.roundtrip = policy, model, roundtrip
        self.rng = random.Random(seed)
        self.transcript: list[dict[str, Any]] = []
        self.state: Mapping[str, Any] = {}
        self.now = 1_000_000.0
        self.last: float | None = None
        self.plans: list[Plan] = []

    def settings(self) -> RequestSettings:
        return RequestSettings(self.model, 1024, SYSTEM, None, now=self.now, last_request_at=self.last)

    def turn(self, *, gap: float = 10.0, reply: dict[str, Any] | None = None) -> Plan:
        self.transcript.append({"role": "user", "content": _text(self.rng, 70)})
        plan = self.send()
        self.transcript.append(
            reply or {"role": "assistant", "content": [{"type": "text", "text": _text(self.rng, 215)}]}
        )
        self.now += gap
        return plan

    def send(self) -> Plan:
        plan = self.policy.plan(self.transcript, self.state, self.settings())
        validate(plan.request, self.model)
        self.state = json.loads(json.dumps(plan.state)) if self.roundtrip else plan.state
        self.last = self.now
        self.plans.append(plan)
        return plan


def test_window_requests_extend_each_other_byte_for_byte_between_steps() -> None:
    chat = Chat(Window(turns=20))
    for _ in range(200):
        chat.turn()
    steps = 0
    for previous, plan in zip(chat.plans, chat.plans[1:], strict=False):
        before, after = _canonical(previous.request["messages"]), _canonical(plan.request["messages"])
        step = plan.explanation["step"]
        if step is None:
            assert after[: len(before)] == before
            assert plan.explanation["kept"][0] == previous.explanation["kept"][0]
        else:
            steps += 1
            assert step["reason"] == "high_water"
            assert previous.explanation["turns_kept"] == 20  # the high-water mark was reached ...
            assert plan.explanation["turns_kept"] == 10  # ... and the window jumped back to the low-water mark
            assert step["rewrite_tokens"] > 0
            assert Decimal(step["rewrite_usd"]) > 0
    assert steps == 17  # turn 21 steps back to 10 turns; 11 turns later it is over 20 again: 21, 32, ..., 197
    assert max(plan.explanation["turns_kept"] for plan in chat.plans) == 20


def test_a_window_in_messages_never_sends_more_than_history_minus_20_and_steps_back_to_half() -> None:
    chat = Chat(Window(messages=20))
    for _ in range(100):
        chat.turn()
    sizes = [len(plan.request["messages"]) for plan in chat.plans]
    assert max(sizes) == 19  # a request of a chat ends on the user: 20 messages would start on a reply
    for previous, plan in zip(chat.plans, chat.plans[1:], strict=False):
        before, after = _canonical(previous.request["messages"]), _canonical(plan.request["messages"])
        if plan.explanation["step"] is None:
            assert after[: len(before)] == before
        else:
            assert len(before) == 19  # the next request would hold 21
            assert len(after) == 9  # the earliest turn start leaving at most 10 messages
            assert plan.explanation["unit"] == "messages"


def test_a_window_in_messages_keeps_a_tool_loop_whole_and_starts_on_a_turn() -> None:
    transcript: list[dict[str, Any]] = []
    for turn in range(3):
        transcript.append({"role": "user", "content": f"question {turn}"})
        for i in range(4):
            call = {"type": "tool_use", "id": f"toolu_{turn}_{i}", "name": "f", "input": {}}
            transcript.append({"role": "assistant", "content": [call]})
            result = {"type": "tool_result", "tool_use_id": f"toolu_{turn}_{i}", "content": "r"}
            transcript.append({"role": "user", "content": [result]})
        transcript.append({"role": "assistant", "content": "done"})
    transcript.append({"role": "user", "content": "and now?"})
    # Each turn is 10 messages. Over the high water (the size), a window steps back to at most half of it: with 6
    # only the new turn is left, with 25 the last turn (10 messages) and the new one; 40 holds all 31.
    for size, first in [(6, "and now?"), (25, "question 2"), (40, "question 0")]:
        plan = Window(messages=size).plan(transcript, {}, RequestSettings(MODEL, 100))
        validate(plan.request, MODEL)
        content = plan.request["messages"][0]["content"]
        assert (content if isinstance(content, str) else content[0]["text"]) == first


def test_a_window_is_sized_in_turns_or_in_messages_not_both() -> None:
    assert Window() == Window(turns=20)
    assert Window(messages=20).turns is None
    with pytest.raises(ConfigError, match="turns or in messages"):
        Window(turns=10, messages=20)
    with pytest.raises(ConfigError, match="at least one message"):
        Window(messages=0)


def test_every_window_request_starts_with_a_user_turn_and_keeps_the_system_prompt() -> None:
    chat = Chat(Window(turns=6))
    for _ in range(30):
        plan = chat.turn()
        first = plan.request["messages"][0]
        assert is_turn_start(first)
        assert plan.request["system"][0]["text"] == SYSTEM
    kept, end = chat.plans[-1].explanation["kept"]
    assert chat.plans[-1].explanation["dropped"] == [[0, kept]]
    assert end == len(chat.transcript) - 1


def test_a_cold_cache_steps_early_to_the_low_water_mark() -> None:
    chat = Chat(Window(turns=20))
    for _ in range(15):
        chat.turn()
    plan = chat.turn(gap=10)  # the previous turn came 10 s after ...
    chat.now += 400  # ... but this one comes 6 minutes later: the 5-minute cache is gone
    plan = chat.turn()
    assert plan.explanation["step"]["reason"] == "cold_cache"
    assert plan.explanation["turns_kept"] == 10
    assert chat.turn().explanation["step"] is None  # warm again: stays put


def test_a_one_hour_ttl_is_not_cold_after_six_minutes() -> None:
    chat = Chat(Window(turns=20, ttl="1h"))
    for _ in range(15):
        chat.turn()
    chat.now += 400
    assert chat.turn().explanation["step"] is None


def test_no_cold_step_below_the_low_water_mark() -> None:
    chat = Chat(Window(turns=20))
    for _ in range(5):
        chat.turn(gap=900)
    assert all(plan.explanation["step"] is None for plan in chat.plans)


@pytest.mark.parametrize("policy", [Window(turns=8), TokenBudget(max_input_tokens=6000), FullHistory()])
def test_state_survives_a_restart_through_json(policy: Policy) -> None:
    direct, restarted = Chat(policy, seed=3), Chat(policy, seed=3, roundtrip=True)
    for _ in range(40):
        a, b = direct.turn(), restarted.turn()
        assert json.dumps(a.request, sort_keys=True) == json.dumps(b.request, sort_keys=True)
        assert a.explanation == b.explanation


def test_undo_to_a_shorter_transcript_recovers_safely() -> None:
    chat = Chat(Window(turns=6))
    for _ in range(20):
        chat.turn()
    start = chat.state["start"]
    del chat.transcript[start - 3 :]  # back before the window start
    chat.transcript.append({"role": "user", "content": "a different question"})
    plan = chat.send()
    assert plan.explanation["recomputed"] is True
    assert is_turn_start(plan.request["messages"][0])
    assert plan.request["messages"][-1]["content"][-1]["text"] == "a different question"
    assert plan.explanation["turns_kept"] == 3  # decided afresh: over the high water, so back to the low water


def test_undo_to_just_after_the_window_start_decides_again_rather_than_keep_one_turn() -> None:
    chat = Chat(Window(turns=6))
    for _ in range(20):
        chat.turn()
    start = chat.state["start"]
    del chat.transcript[start + 2 :]  # back to the first kept turn: the stored start is still a turn start
    chat.transcript.append({"role": "user", "content": "a different question"})
    plan = chat.send()
    assert plan.explanation["recomputed"] is True
    assert plan.explanation["turns_kept"] == 3  # the low water, not the one turn after the stale start


def test_a_start_that_is_no_longer_a_turn_start_is_recomputed() -> None:
    chat = Chat(Window(turns=4))
    for _ in range(10):
        chat.turn()
    state = dict(chat.state)
    state["start"] = state["start"] + 1  # an assistant message
    plan = chat.policy.plan([*chat.transcript, {"role": "user", "content": "next"}], state, chat.settings())
    validate(plan.request, MODEL)
    assert plan.explanation["recomputed"] is True
    assert is_turn_start(plan.request["messages"][0])


def test_a_fork_with_the_same_length_is_not_mistaken_for_the_old_branch() -> None:
    chat = Chat(TokenBudget(max_input_tokens=5000))
    for _ in range(10):
        chat.turn()
    # Another branch of the same length: the last memoised message differs.
    chat.transcript[-2] = {"role": "user", "content": "a question never asked on the old branch"}
    chat.transcript.append({"role": "user", "content": "next"})
    without_memo = {key: value for key, value in chat.state.items() if key != "memo"}
    plan = chat.send()
    fresh = chat.policy.plan(chat.transcript, without_memo, chat.settings())
    assert plan.explanation["estimated_input_tokens"] == fresh.explanation["estimated_input_tokens"]


def _thinking_reply(rng: random.Random, label: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": f"thoughts {label}", "signature": f"sig-{label}"},
            {"type": "text", "text": _text(rng, 50)},
        ],
    }


def _thinking_count(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(
        1
        for message in messages
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == "thinking"
    )


def test_thinking_of_retained_turns_is_stripped_only_on_binding_models_after_a_drop() -> None:
    for model, stripped in ((BINDING, True), (MODEL, False)):
        chat = Chat(Window(turns=4), model)
        for turn in range(4):
            plan = chat.turn(reply=_thinking_reply(chat.rng, str(turn)))
            assert _thinking_count(plan.request["messages"]) == turn  # nothing dropped yet: all kept
        step = chat.turn(reply=_thinking_reply(chat.rng, "4"))
        assert step.explanation["step"] is not None
        kept_replies = step.explanation["turns_kept"] - 1
        assert _thinking_count(step.request["messages"]) == (0 if stripped else kept_replies)
        later = chat.turn(reply=_thinking_reply(chat.rng, "5"))
        # The turn produced after the step keeps its thinking (it was made with this very prefix).
        assert _thinking_count(later.request["messages"]) == (1 if stripped else kept_replies + 1)


def test_thinking_of_a_tool_loop_in_progress_is_kept() -> None:
    chat = Chat(Window(turns=3), BINDING)
    for _ in range(6):
        chat.turn()
    chat.transcript.append({"role": "user", "content": "look it up"})
    chat.send()
    call = {"type": "tool_use", "id": "toolu_9", "name": "search", "input": {"q": "x"}}
    chat.transcript.append(
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, call]}
    )
    chat.transcript.append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "r"}]}
    )
    plan = chat.send()
    assert plan.explanation["step"] is None
    assert plan.request["messages"][-2]["content"][0]["type"] == "thinking"


def test_shrink_drops_at_least_one_more_turn_and_keeps_the_new_message() -> None:
    for policy in (Window(turns=10), TokenBudget(max_input_tokens=100_000)):
        chat = Chat(policy)
        for _ in range(8):
            chat.turn()
        chat.transcript.append({"role": "user", "content": "the newest question"})
        plan = policy.plan(chat.transcript, chat.state, chat.settings())
        shrunk = policy.shrink(chat.transcript, chat.state, chat.settings())  # type: ignore[attr-defined]
        validate(shrunk.request, MODEL)
        assert shrunk.explanation["kept"][0] > plan.explanation["kept"][0]
        assert shrunk.explanation["step"]["reason"] == "overflow"
        assert shrunk.request["messages"][-1]["content"][-1]["text"] == "the newest question"


def test_shrink_with_only_the_current_turn_left_raises() -> None:
    chat = Chat(Window(turns=3))
    chat.transcript.append({"role": "user", "content": "alone"})
    with pytest.raises(ContextWindowExceeded):
        Window(turns=3).shrink(chat.transcript, {}, chat.settings())


def test_token_budget_fits_and_steps_between_its_marks() -> None:
    policy = TokenBudget(max_input_tokens=8000, high_water=0.9, low_water=0.5)
    chat = Chat(policy)
    for _ in range(80):
        plan = chat.turn()
        size = estimate_request(plan.request, MODEL)
        assert size <= 8000
        assert plan.explanation["fits"] is True
        if plan.explanation["step"] is not None:
            assert size <= 0.5 * 8000
    assert sum(plan.explanation["step"] is not None for plan in chat.plans) >= 5


def test_token_budget_defaults_to_the_window_minus_the_reserve() -> None:
    settings = RequestSettings(MODEL, 4096)
    assert TokenBudget().budget(settings) == MODEL.context_window - 4096
    assert TokenBudget(reserve_output=10_000).budget(settings) == MODEL.context_window - 10_000
    assert TokenBudget(max_input_tokens=50_000).budget(settings) == 50_000


def test_token_budget_sends_a_turn_too_big_for_it_and_says_so() -> None:
    chat = Chat(TokenBudget(max_input_tokens=2500))
    chat.turn()
    chat.transcript.append({"role": "user", "content": "word " * 5000})
    plan = chat.send()
    assert plan.explanation["fits"] is False
    assert len(plan.request["messages"]) == 1


def test_sliding_window_moves_every_turn_and_starts_on_a_turn() -> None:
    chat = Chat(SlidingWindow(messages=20))
    for _ in range(30):
        plan = chat.turn()
        assert is_turn_start(plan.request["messages"][0])
        assert len(plan.request["messages"]) <= 20
    starts = [plan.explanation["kept"][0] for plan in chat.plans[-10:]]
    assert starts == sorted(set(starts))  # a new start on every request


def test_sliding_window_skips_an_orphan_tool_result() -> None:
    transcript: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for i in range(6):
        call = {"type": "tool_use", "id": f"toolu_{i}", "name": "f", "input": {}}
        transcript.append({"role": "assistant", "content": [call]})
        transcript.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "r"}]}
        )
    transcript += [{"role": "assistant", "content": "done"}, {"role": "user", "content": "thanks"}]
    plan = SlidingWindow(messages=4).plan(transcript, {}, RequestSettings(MODEL, 100))
    validate(plan.request, MODEL)
    assert plan.request["messages"][0]["content"][0]["text"] == "thanks"
    tight = SlidingWindow(messages=4).plan(transcript[:-2], {}, RequestSettings(MODEL, 100))
    validate(tight.request, MODEL)
    assert tight.request["messages"][0]["content"] == "go"  # one turn longer than 4 messages is kept whole


def test_full_history_without_cache_places_no_breakpoint() -> None:
    chat = Chat(FullHistory(cache=False))
    for _ in range(5):
        plan = chat.turn()
    assert "cache_control" not in json.dumps(plan.request)
    assert plan.explanation["breakpoints"] == []


def test_full_history_caches_automatically_and_the_system_prefix() -> None:
    chat = Chat(FullHistory())
    for _ in range(3):
        plan = chat.turn()
    assert plan.request["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert plan.request["system"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert plan.explanation["forecast"]["cache"] == "warm"
    assert plan.explanation["forecast"]["cache_read"] > 0


@pytest.mark.parametrize(
    "policy",
    [
        FullHistory(cache=False),
        Window(turns=12, low_water=3, ttl="auto"),
        Window(messages=30),
        TokenBudget(max_input_tokens=9000),
        SlidingWindow(30),
    ],
)
def test_policies_round_trip_through_their_settings(policy: Policy) -> None:
    settings = json.loads(json.dumps(policy_settings(policy)))
    assert policy_from_settings(settings) == policy


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ConfigError):
        Window(turns=0)
    with pytest.raises(ConfigError):
        Window(turns=10, low_water=10)
    with pytest.raises(ConfigError):
        TokenBudget(high_water=0.5, low_water=0.6)
    with pytest.raises(ConfigError):
        Window(turns=5, ttl="2h")


def test_the_explanation_says_thinking_was_stripped_only_when_some_was() -> None:
    binding = default_catalog().get("claude-opus-5-5")
    transcript: list[dict[str, Any]] = []
    for number in range(6):
        transcript.append({"role": "user", "content": f"question {number}"})
        transcript.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {number}"}]})
    transcript.append({"role": "user", "content": "last"})
    plan = Window(turns=2).plan(transcript, {}, RequestSettings(binding, 100))  # type: ignore[arg-type]
    assert plan.explanation["dropped"]
    assert plan.explanation["thinking_stripped"] is False


@pytest.mark.parametrize("calibration", [0.5, 1.0, 1.5])
def test_ttl_auto_weighs_what_is_new_whatever_the_calibration(calibration: float) -> None:
    # Mostly quick follow-ups with a pause of 10 minutes every fourth turn: the hour is cheaper, because only a
    # little is new each turn and every pause would expire a 5-minute entry.
    model = default_catalog().get("claude-sonnet-4-6")
    policy = FullHistory()
    transcript: list[dict[str, Any]] = [{"role": "user", "content": "Background. " * 3000}]
    state: Mapping[str, Any] = {}
    gaps: list[float] = []
    now = 1000.0
    for number in range(12):
        settings = RequestSettings(model, 100, now=now, gaps=tuple(gaps), calibration=calibration)
        plan = policy.plan(transcript, state, settings)
        state = plan.state
        transcript += [
            {"role": "assistant", "content": [{"type": "text", "text": f"answer {number}"}]},
            {"role": "user", "content": f"question {number}"},
        ]
        gap = 600.0 if number % 4 == 3 else 60.0
        gaps.append(gap)
        now += gap
    assert plan.explanation["ttl"] == "1h"


def test_a_nested_policy_is_given_by_name_or_refused_with_the_field_named() -> None:
    summarize = policy_from_settings({"name": "summarize", "inner": "token-budget"})
    assert summarize == Summarize(inner=TokenBudget())
    with pytest.raises(ConfigError, match=r"inner must be a policy.*not 'windw'"):
        policy_from_settings({"name": "summarize", "inner": "windw"})
    with pytest.raises(ConfigError, match="fallback must be a policy"):
        policy_from_settings({"name": "server-compaction", "fallback": 3})


def test_a_step_of_a_window_too_small_to_be_cached_costs_no_rewrite() -> None:
    policy = Window(turns=2)
    small = RequestSettings(MODEL, 1024, "Be brief.", None)  # far below the model's 1,024-token minimum
    transcript: list[dict[str, Any]] = []
    state: Mapping[str, Any] = {}
    steps = []
    for number in range(5):
        transcript += [{"role": "user", "content": f"question {number} " * 10}]
        plan = policy.plan(transcript, state, small)
        assert plan.explanation["forecast"]["cache"] == "too_small"
        state = plan.state
        transcript += [{"role": "assistant", "content": "answer " * 20}]
        if plan.explanation["step"] is not None:
            steps.append(plan.explanation["step"])
    assert len(steps) == 2
    assert all(step["rewrite_tokens"] == 0 and Decimal(step["rewrite_usd"]) == 0 for step in steps)
