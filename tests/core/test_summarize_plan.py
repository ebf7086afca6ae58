"""Summarize's plan, as explain() shows it: every range is in indices of the whole transcript."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from turnkeep.core.catalog import default_catalog
from turnkeep.core.policies import RequestSettings, ServerCompaction, Summarize, Window
from turnkeep.core.policies.caching import message_digest

MODEL = default_catalog().get("claude-sonnet-4-6")
SETTINGS = RequestSettings(MODEL, 1024)


def chat(turns: int) -> list[dict[str, Any]]:
    transcript: list[dict[str, Any]] = []
    for number in range(turns):
        transcript += [{"role": "user", "content": f"Box {number} is red."}, {"role": "assistant", "content": "Noted."}]
    return [*transcript, {"role": "user", "content": "And box 9?"}]


def test_the_ranges_of_an_inner_window_are_given_in_transcript_indices() -> None:
    transcript = chat(8)  # 17 messages; turn starts at 0, 2, ..., 16
    policy = Summarize(trigger=1, keep_last=4, inner=Window(turns=3))
    first = policy.plan(transcript, {}, SETTINGS)
    assert first.summary is not None
    # The trigger wants turns 0..4 summarised (keep_last=4); the inner window left out even more: those too.
    assert first.explanation["summary_due"] == [0, 16]
    # As if an earlier summary had covered turns 0..4 (messages 0..9):
    earlier = replace(first.summary, covers=(0, 10), context={"anchor": message_digest(transcript[9]), "length": 17})
    state = policy.absorb_summary(first.state, earlier, "Boxes 0 to 4 are red.")
    explanation = policy.plan(transcript, state, SETTINGS).explanation
    assert explanation["summarized"] == [[0, 10]]
    # The inner window saw 4 turns (10..16), over its 3: it stepped to its low water, 1 turn ...
    assert explanation["kept"] == [16, 17]
    assert explanation["dropped"] == [[10, 16]]
    assert (explanation["step"]["from"], explanation["step"]["to"]) == (10, 16)
    assert explanation["summary_due"] == [10, 16]  # ... and what it left out is summarised next


def test_turns_an_inner_window_leaves_out_are_summarised_not_lost() -> None:
    policy = Summarize(trigger=1_000_000, keep_last=4, inner=Window(turns=3))  # the trigger is never reached
    transcript = chat(3)  # turn starts 0, 2, 4, 6: four turns, over the window's three
    plan = policy.plan(transcript, {}, SETTINGS)
    assert plan.explanation["dropped"] == [[0, 6]]
    assert plan.summary is not None
    assert plan.summary.covers == (0, 6)
    assert "Box 0 is red." in plan.summary.request["messages"][0]["content"]


def test_a_summary_due_says_so_also_when_the_request_falls_back_to_the_window() -> None:
    transcript = [*chat(3)[:-1], {"role": "user", "content": "word " * 1_100_000}]
    explanation = Summarize(trigger=1, keep_last=1).plan(transcript, {}, SETTINGS).explanation
    assert explanation["note"] == "summary failed: window fallback"
    assert explanation["summary_due"] == [0, 6]
    assert explanation["kept"] == [6, 7]


def test_explicit_compaction_ranges_are_in_transcript_indices_too() -> None:
    transcript = chat(8)
    block = {"type": "compaction", "content": "Boxes 0 to 4 are red.", "encrypted_content": "x", "signature": "s"}
    state = {"block": block, "start": 10, "anchor": message_digest(transcript[9])}  # as after a compaction call
    policy = ServerCompaction(explicit=True, trigger=50_000, keep_last=4, inner=Window(turns=3))
    explanation = policy.plan(transcript, state, SETTINGS).explanation
    assert explanation["compacted"] == [[0, 10]]
    assert explanation["kept"] == [16, 17]
    assert explanation["dropped"] == [[10, 16]]


def test_after_an_overflow_explicit_compaction_compacts_at_once_and_would_otherwise_send_only_the_kept_turns() -> None:
    transcript = chat(8)
    policy = ServerCompaction(explicit=True, trigger=50_000, keep_last=2)
    assert policy.plan(transcript, {}, SETTINGS).summary is None  # far below the trigger
    smaller = policy.shrink(transcript, {}, SETTINGS)
    assert smaller is not None
    assert smaller.summary is not None
    assert smaller.summary.kind == "compaction"
    assert smaller.explanation["compaction_due"] == [0, 14]
    assert smaller.explanation["kept"] == [14, 17]  # if the compaction call fails


def test_a_wrapper_around_a_full_history_cannot_shrink() -> None:
    assert ServerCompaction().shrink(chat(3), {}, SETTINGS) is None
    assert Summarize(keep_last=6).shrink(chat(3), {}, SETTINGS) is None  # too few turns to summarise


def test_explicit_compaction_keeps_its_inner_windows_state_before_any_compaction() -> None:
    wrapped, alone = ServerCompaction(explicit=True, inner=Window(messages=6)), Window(messages=6)
    transcript: list[dict[str, Any]] = []
    states: list[Any] = [{}, {}]
    kept: list[list[Any]] = [[], []]
    for number in range(8):
        transcript.append({"role": "user", "content": f"Box {number} is red."})
        for index, policy in enumerate((wrapped, alone)):
            plan = policy.plan(transcript, states[index], SETTINGS)
            states[index] = plan.state
            kept[index].append(plan.explanation["kept"])
        transcript.append({"role": "assistant", "content": "Noted."})
    assert kept[0] == kept[1]  # the same cache-stable steps, not a start moved on every turn


def test_inside_a_tool_loop_a_compaction_waits_for_the_next_turn_unless_the_request_would_not_fit() -> None:
    binding = RequestSettings(default_catalog().get("claude-sonnet-5-5"), 1024)
    call = {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {}}

    def loop(result: str) -> list[dict[str, Any]]:
        answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": result}
        return [
            *chat(3)[:-1],
            {"role": "user", "content": "Look."},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [answer]},
        ]

    policy = ServerCompaction(explicit=True, trigger=50_000, keep_last=1)
    waiting = policy.plan(loop("word " * 60_000), {}, binding)  # over the trigger, within the window
    assert waiting.summary is None
    forced = policy.plan(loop("word " * 1_100_000), {}, binding)  # over the model's window: it cannot wait
    assert forced.summary is not None
    assert forced.explanation["note"] == "compaction failed: cut"
