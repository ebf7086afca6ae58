"""Built-in workloads: deterministic for a seed, exact token lengths, and the documented distributions."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from turnkeep.emulator.tokenizer import text_tokens
from turnkeep.errors import UsageError
from turnkeep.sim import chat_workload, doc_qa_workload, filler_text, workload
from turnkeep.sim.workloads import CHAT_GAP, FACTS


def test_a_builtin_workload_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    first, again, other = workload("chat-200"), workload("chat-200"), workload("chat-200", seed=1)
    assert first == again
    assert [first.reply(i) for i in range(5)] == [again.reply(i) for i in range(5)]
    assert first.turns != other.turns


def test_chat_200_has_200_turns_a_1500_token_system_prompt_and_facts_planted_early_and_asked_last() -> None:
    chat = workload("chat-200")
    assert len(chat.turns) == 200
    assert chat.system is not None
    assert text_tokens(chat.system, 1) == 1_500
    for index, fact in enumerate(FACTS):
        assert chat.turns[1 + index].user.startswith(fact.statement)
        question = chat.turns[200 - len(FACTS) + index]
        assert (question.user, question.expect, question.reply_tokens) == (fact.question, fact.answer, None)
    assert chat.turns[0].gap == 0
    assert all(turn.gap > 0 for turn in chat.turns[1:])


def test_chat_lengths_and_gaps_follow_the_documented_lognormal_distributions() -> None:
    chat = chat_workload(3_000, seed=7)
    talk = [turn for turn in chat.turns if turn.expect is None]
    users = [text_tokens(turn.user, 1) for turn in talk[len(FACTS) + 1 :]]
    replies = [turn.reply_tokens or 0 for turn in talk]
    gaps = [turn.gap for turn in chat.turns[1:]]
    assert statistics.median(users) == pytest.approx(70, rel=0.12)
    assert statistics.fmean(users) == pytest.approx(300, rel=0.2)
    assert statistics.median(replies) == pytest.approx(215, rel=0.1)
    assert statistics.fmean(replies) == pytest.approx(440, rel=0.15)
    assert statistics.median(gaps) == pytest.approx(math.exp(CHAT_GAP[0]), rel=0.1)
    assert statistics.stdev(math.log(gap) for gap in gaps) == pytest.approx(CHAT_GAP[1], rel=0.08)


@pytest.mark.parametrize("tokens", [1, 2, 3, 7, 15, 16, 70, 215, 1_000, 12_000])
def test_filler_text_is_exactly_the_requested_number_of_generation_1_tokens(tokens: int) -> None:
    text = filler_text(tokens, random.Random(tokens))
    assert text_tokens(text, 1) == tokens


def test_a_scripted_reply_has_the_turns_length_and_is_generated_once() -> None:
    chat = workload("chat-200")
    reply = chat.reply(3)
    assert reply is not None
    assert text_tokens(reply, 1) == chat.turns[3].reply_tokens
    assert chat.reply(3) is reply
    assert chat.reply(199) is None  # a fact question: the recall responder answers


def test_doc_qa_30_sends_a_50k_token_document_then_30_questions_three_of_them_about_its_facts() -> None:
    qa = workload("doc-qa-30")
    assert len(qa.turns) == 31
    assert text_tokens(qa.turns[0].user, 1) == pytest.approx(50_000, rel=0.001)
    assert [turn.expect for turn in qa.facts] == ["Bluebird", "Poseidonia", "March"]
    assert all(fact in qa.turns[0].user for fact in ("The project codename is Bluebird.", "The launch window is"))


def test_head_keeps_the_fact_questions_at_the_end() -> None:
    short = workload("chat-200").head(12)
    assert len(short.turns) == 12
    assert [turn.expect for turn in short.turns[-4:]] == [fact.answer for fact in FACTS]


def test_an_unknown_workload_or_a_too_short_chat_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown workload 'chat-9'; built-in: agent-100, chat-200, doc-qa-30"):
        workload("chat-9")
    with pytest.raises(UsageError, match="at least 9 turns"):
        chat_workload(5)
    with pytest.raises(UsageError, match="at least 3 questions"):
        doc_qa_workload(2)


def test_agent_100_is_ten_tasks_of_ten_tool_calls_with_large_results_seconds_apart() -> None:
    agent = workload("agent-100")
    tasks = [turn for turn in agent.turns if turn.tool_steps]
    assert len(tasks) == 10
    assert sum(len(turn.tool_steps) for turn in tasks) == 100
    assert [tool["name"] for tool in agent.tools] == ["read_file"]
    results = [step.result_tokens for turn in tasks for step in turn.tool_steps]
    gaps = [step.gap for turn in tasks for step in turn.tool_steps]
    assert statistics.median(results) == pytest.approx(1_500, rel=0.25)
    assert statistics.median(gaps) == pytest.approx(3, rel=0.25)
    assert max(gaps) < 60
    assert text_tokens(agent.tool_result(0, 0), 1) == tasks[0].tool_steps[0].result_tokens
    assert [turn.expect for turn in agent.facts] == ["Ada", "Bluebird"]
