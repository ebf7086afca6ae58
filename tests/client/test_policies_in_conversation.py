"""Context policies inside a conversation: summary calls, fallbacks, overflow retry, server-side context management."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import pytest
from fake_api import FakeAPI

from turnkeep import Conversation
from turnkeep.core.messages import text_of
from turnkeep.core.policies import ClearToolUses, FullHistory, Policy, ServerCompaction, Summarize, Window
from turnkeep.core.policies.summarize import SUMMARY_MARKER
from turnkeep.errors import ConfigError, ContextWindowExceeded
from turnkeep.session import LedgerFacts
from turnkeep.store import LedgerEntry, MemoryStore

LONG = "word " * 400  # about 500 estimated tokens per message
# Three such turns estimate at ~2,535 tokens; with a fourth question ~3,050: the summary falls due on turn four.
TRIGGER = 2_600


def summarizing(api: FakeAPI, **options: object) -> Conversation:
    policy = Summarize(trigger=TRIGGER, keep_last=2, **options)  # type: ignore[arg-type]
    return Conversation("claude-sonnet-4-6", client=api.client(), policy=policy, store=MemoryStore())


def fill(conversation: Conversation, api: FakeAPI, turns: int) -> None:
    for number in range(turns):
        api.reply(f"answer {number} {LONG}")
        conversation.send(f"question {number} {LONG}")


def test_old_turns_are_summarised_by_a_separate_call_before_the_reply() -> None:
    api = FakeAPI()
    conversation = summarizing(api)
    fill(conversation, api, 3)
    api.reply("The user asked questions 0 and 1.").reply("answer 3")
    conversation.send("question 3")
    summary_request, reply_request = api.requests[-2:]
    assert "Summarise the conversation above" in summary_request["messages"][0]["content"]
    assert "question 0" in summary_request["messages"][0]["content"]
    first = reply_request["messages"][0]["content"][0]["text"]
    assert first.startswith(SUMMARY_MARKER)
    assert "The user asked questions 0 and 1." in first
    assert [e.purpose for e in conversation.ledger][-2:] == ["summary", "reply"]


def test_the_summary_is_stored_and_reused_not_recomputed() -> None:
    api = FakeAPI()
    conversation = summarizing(api)
    fill(conversation, api, 3)
    api.reply("Summary one.").reply("answer 3").reply("answer 4")
    conversation.send("question 3")
    conversation.send("short question 4")
    assert [e.purpose for e in conversation.ledger].count("summary") == 1
    assert "Summary one." in api.requests[-1]["messages"][0]["content"][0]["text"]


def test_a_reopened_conversation_keeps_its_summary() -> None:
    api, store = FakeAPI(), MemoryStore()
    conversation = Conversation(
        "claude-sonnet-4-6", client=api.client(), policy=Summarize(trigger=TRIGGER, keep_last=2), store=store
    )
    fill(conversation, api, 3)
    api.reply("Summary one.").reply("answer 3").reply("answer 4")
    conversation.send("question 3")
    reopened = Conversation.open(conversation.id, store=store, client=api.client())
    reopened.send("short question 4")
    assert "Summary one." in api.requests[-1]["messages"][0]["content"][0]["text"]
    assert [e.purpose for e in reopened.ledger].count("summary") == 1


def test_a_failed_summary_call_falls_back_and_the_turn_is_not_lost() -> None:
    api = FakeAPI()
    conversation = summarizing(api)
    fill(conversation, api, 3)
    api.fail(529, "overloaded_error").reply("answer 3")
    reply = conversation.send("question 3")
    assert reply.text == "answer 3"
    assert not conversation.pending
    sent = api.requests[-1]["messages"]
    assert sent[0]["content"] == f"question 0 {LONG}"  # nothing dropped: it still fits the model's window
    assert [e.purpose for e in conversation.ledger][-2:] == ["summary", "reply"]
    assert conversation.ledger[-2].error is not None


def test_summaries_may_be_written_by_a_cheaper_model_and_are_priced_as_such() -> None:
    api = FakeAPI()
    conversation = summarizing(api, model="claude-haiku-4-5")
    fill(conversation, api, 3)
    api.reply("Summary.", input_tokens=1_000_000, output_tokens=0).reply("answer 3")
    conversation.send("question 3")
    summary_entry = conversation.ledger[-2]
    assert summary_entry.model == "claude-haiku-4-5"
    assert Decimal(summary_entry.cost_usd) == Decimal(1)  # Haiku 4.5 input: $1 per million
    assert api.requests[-2]["model"] == "claude-haiku-4-5"


def test_a_prompt_too_long_error_makes_the_window_step_and_retry_once() -> None:
    api = FakeAPI()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=Window(turns=10))
    fill(conversation, api, 4)
    api.fail(400, "invalid_request_error", "prompt is too long: 1000001 tokens > 1000000 maximum")
    api.reply("answer 4")
    assert conversation.send("question 4").text == "answer 4"
    retried = api.requests[-1]["messages"]
    assert len(retried) < len(api.requests[-2]["messages"])
    assert text_of(retried[-1]["content"]) == "question 4"
    assert [e.purpose for e in conversation.ledger][-2:] == ["reply", "overflow"]


def test_overflow_is_retried_only_once() -> None:
    api = FakeAPI()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=Window(turns=10))
    fill(conversation, api, 4)
    for _ in range(2):
        api.fail(400, "invalid_request_error", "prompt is too long: 2000000 tokens > 1000000 maximum")
    with pytest.raises(anthropic.BadRequestError):
        conversation.send("question 4")
    assert conversation.pending


def test_model_context_window_exceeded_is_retried_smaller_by_a_window_policy() -> None:
    api = FakeAPI()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=Window(turns=10))
    fill(conversation, api, 4)
    api.reply("cut", stop_reason="model_context_window_exceeded").reply("answer 4")
    assert conversation.send("question 4").text == "answer 4"
    assert [e.purpose for e in conversation.ledger][-2:] == ["reply", "overflow"]


def test_server_compaction_sends_the_edit_and_beta_on_models_that_support_it() -> None:
    api = FakeAPI()
    api.reply("ok")
    conversation = Conversation("claude-opus-5", client=api.client(), policy=ServerCompaction(trigger=60_000))
    conversation.send("hello")
    request = api.requests[0]
    assert request["context_management"]["edits"] == [
        {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 60_000}}
    ]
    assert "compact-2026-01-12" in api.headers[0]["anthropic-beta"]


def test_server_compaction_falls_back_to_summaries_elsewhere() -> None:
    api = FakeAPI()
    api.reply("ok")
    conversation = Conversation("claude-haiku-4-5", client=api.client(), policy=ServerCompaction())
    conversation.send("hello")
    assert "context_management" not in api.requests[0]
    assert conversation.explain().explanation["fallback"] == "summarize"


def test_compaction_blocks_are_stored_and_sent_back_untouched() -> None:
    api = FakeAPI()
    block = {"type": "compaction", "content": "Summary: the user is Ada.", "encrypted_content": "x", "signature": "s"}
    api.reply(content=[block, {"type": "text", "text": "Hello Ada."}]).reply("Yes.")
    conversation = Conversation("claude-opus-5", client=api.client(), policy=ServerCompaction())
    conversation.send("hi")
    conversation.send("again")
    assert api.requests[1]["messages"][1]["content"][0] == block


def test_a_compaction_pause_is_resumed_like_a_paused_turn() -> None:
    api = FakeAPI()
    block = {"type": "compaction", "content": "Summary.", "encrypted_content": "x", "signature": "s"}
    api.reply(content=[block], stop_reason="compaction").reply("Done.")
    conversation = Conversation(
        "claude-opus-5", client=api.client(), policy=ServerCompaction(pause_after_compaction=True)
    )
    reply = conversation.send("go")
    assert reply.text == "Done."
    assert reply.content[0] == block
    assert api.requests[1]["messages"][-1]["content"] == [block]


def test_clear_tool_uses_passes_the_edit_where_supported() -> None:
    api = FakeAPI()
    api.reply("ok")
    policy = ClearToolUses(trigger=30_000, keep=2, exclude_tools=("search",))
    Conversation("claude-sonnet-4-6", client=api.client(), policy=policy).send("hi")
    [edit] = api.requests[0]["context_management"]["edits"]
    assert edit == {
        "type": "clear_tool_uses_20250919",
        "trigger": {"type": "input_tokens", "value": 30_000},
        "keep": {"type": "tool_uses", "value": 2},
        "exclude_tools": ["search"],
    }


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="50,000"):
        ServerCompaction(trigger=10_000)
    with pytest.raises(ConfigError):
        Summarize(keep_last=0)


def test_full_history_total_matches_its_ledger() -> None:
    api = FakeAPI()
    api.reply("ok", input_tokens=1_000_000)
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=FullHistory())
    conversation.send("hi")
    assert conversation.cost == Decimal("3") + Decimal("5") * Decimal("15") / Decimal(1_000_000)


def test_a_turn_that_will_summarise_is_forecast_after_the_summary_plus_the_summary_call() -> None:
    api = FakeAPI()
    conversation = summarizing(api)
    fill(conversation, api, 3)
    plan = conversation.explain("question 3")
    assert plan.summary is not None
    forecast = conversation.forecast("question 3")
    assert forecast.prelude_usd > 0
    assert forecast.usd == forecast.cost.total + forecast.prelude_usd
    # The request after the summary drops the summarised turns: far smaller than the fallback.
    assert len(plan.summary.preview["messages"]) < len(plan.request["messages"])  # type: ignore[index]


def test_explicit_compaction_asks_for_the_leaving_turns_and_falls_back_when_it_fails() -> None:
    api = FakeAPI()
    policy = ServerCompaction(trigger=50_000, explicit=True, keep_last=1)
    conversation = Conversation("claude-opus-5", client=api.client(), policy=policy)
    big = "word " * 60_000  # far over the trigger on its own
    api.reply("one")
    conversation.send(f"first {big}")
    api.fail(529, "overloaded_error").reply("two")
    assert conversation.send("second").text == "two"
    compaction_request, reply_request = api.requests[-2:]
    assert compaction_request["compaction"] == {"type": "summarize"}
    assert "compact-2026-09-04" in api.headers[-2]["anthropic-beta"]
    assert [m["role"] for m in compaction_request["messages"]] == ["user", "assistant"]
    assert len(reply_request["messages"]) == 3  # the fallback: everything, nothing lost


def test_an_overflow_nothing_more_can_be_dropped_for_is_raised_and_its_requests_stay_in_the_ledger() -> None:
    api, store = FakeAPI(), MemoryStore()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=Window(turns=10), store=store)
    api.reply("cut", stop_reason="model_context_window_exceeded", input_tokens=1_000, output_tokens=5)
    with pytest.raises(ContextWindowExceeded):
        conversation.send("a first question that fills the window")  # the only turn: nothing to drop
    assert conversation.pending
    stored = store.ledger(conversation.id)
    assert [(e.purpose, e.stop_reason) for e in stored] == [("reply", "model_context_window_exceeded")]
    assert sum(Decimal(e.cost_usd) for e in stored) == conversation.cost > 0


def test_a_prompt_too_long_error_nothing_more_can_be_dropped_for_keeps_the_failed_request_in_the_ledger() -> None:
    api, store = FakeAPI(), MemoryStore()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=Window(turns=10), store=store)
    api.fail(400, "invalid_request_error", "prompt is too long: 1000001 tokens > 1000000 maximum")
    with pytest.raises(ContextWindowExceeded) as raised:
        conversation.send("a question too long on its own")
    assert isinstance(raised.value.__context__, anthropic.BadRequestError)  # the API's answer is kept as the cause
    assert [e.error is not None for e in store.ledger(conversation.id)] == [True]
    assert conversation.pending


def test_a_summarizing_conversation_that_overflows_summarises_at_once_and_sends_the_rest() -> None:
    api = FakeAPI()
    conversation = summarizing(api)  # trigger not reached after two turns
    fill(conversation, api, 2)
    api.fail(400, "invalid_request_error", "prompt is too long: 1000001 tokens > 1000000 maximum")
    api.reply("The user asked question 0.").reply("answer 2")
    assert conversation.send("question 2").text == "answer 2"
    assert [e.purpose for e in conversation.ledger][-3:] == ["reply", "summary", "reply"]
    sent = api.requests[-1]["messages"]
    assert "The user asked question 0." in sent[0]["content"][0]["text"]
    assert all("question 0" not in str(message["content"]) for message in sent[1:])


def test_a_compaction_fallback_window_steps_when_the_reply_says_the_window_was_exceeded() -> None:
    api = FakeAPI()
    policy = ServerCompaction(fallback=Window(turns=10))
    conversation = Conversation("claude-haiku-4-5", client=api.client(), policy=policy)  # no server compaction
    fill(conversation, api, 3)
    api.reply("cut", stop_reason="model_context_window_exceeded").reply("answer 3")
    assert conversation.send("question 3").text == "answer 3"
    assert [e.purpose for e in conversation.ledger][-2:] == ["reply", "overflow"]
    assert len(api.requests[-1]["messages"]) < len(api.requests[-2]["messages"])


def test_a_policy_with_nothing_to_drop_lets_the_prompt_too_long_error_stand() -> None:
    api = FakeAPI()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=ClearToolUses())
    fill(conversation, api, 2)
    api.fail(400, "invalid_request_error", "prompt is too long: 1000001 tokens > 1000000 maximum")
    with pytest.raises(anthropic.BadRequestError):
        conversation.send("question 2")
    assert conversation.pending
    assert len(api.requests) == 3  # no second try: there was nothing to make smaller


def test_a_summary_written_before_a_failed_reply_is_kept_and_the_retry_does_not_pay_for_it_again() -> None:
    api, store = FakeAPI(), MemoryStore()
    conversation = Conversation(
        "claude-sonnet-4-6", client=api.client(), policy=Summarize(trigger=TRIGGER, keep_last=2), store=store
    )
    fill(conversation, api, 3)
    api.reply("The user asked questions 0 and 1.").fail(529, "overloaded_error")
    with pytest.raises(anthropic.APIStatusError):
        conversation.send("question 3")
    api.reply("answer 3")
    assert conversation.retry().text == "answer 3"
    assert [e.purpose for e in conversation.ledger][-3:] == ["summary", "reply", "reply"]
    assert "The user asked questions 0 and 1." in api.requests[-1]["messages"][0]["content"][0]["text"]
    reopened = Conversation.open(conversation.id, store=store, client=api.client())
    assert "The user asked questions 0 and 1." in reopened.messages[0]["content"][0]["text"]


def test_summary_calls_do_not_count_as_gaps_of_the_conversations_own_requests() -> None:
    def entry(purpose: str, at: float) -> LedgerEntry:
        return LedgerEntry(purpose, "claude-sonnet-4-6", None, None, "end_turn", {}, "0", 1.0, at)

    # A summary call and the reply it leads to are a second apart; the reply is 600 s after the previous turn.
    ledger = [entry("reply", 1_000.0), entry("reply", 1_600.0), entry("summary", 2_200.0), entry("reply", 2_201.0)]
    assert LedgerFacts.read(ledger).request_times == [1_000.0, 1_600.0, 2_201.0]


@pytest.mark.parametrize(
    "policy",
    [
        ClearToolUses(inner=Summarize(trigger=TRIGGER, keep_last=2)),
        ServerCompaction(inner=Summarize(trigger=TRIGGER, keep_last=2)),
    ],
    ids=["clear-tool-uses", "server-compaction"],
)
def test_a_summarize_inside_a_server_side_policy_makes_and_keeps_its_summaries(policy: Policy) -> None:
    api = FakeAPI()
    conversation = Conversation("claude-sonnet-4-6", client=api.client(), policy=policy, store=MemoryStore())
    fill(conversation, api, 3)
    api.reply("The user asked questions 0 and 1.").reply("answer 3").reply("answer 4")
    conversation.send("question 3")
    conversation.send("short question 4")
    assert [e.purpose for e in conversation.ledger].count("summary") == 1
    sent = api.requests[-1]
    assert "The user asked questions 0 and 1." in sent["messages"][0]["content"][0]["text"]
    assert sent["context_management"]["edits"]  # the server-side edit is still sent
