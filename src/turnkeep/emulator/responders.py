"""What the emulated model says: deterministic replies computed from the request alone.

Modes (chosen per request with the `x-emulator-responder` header, else the server's default):

- `recall` (default) answers only from the request's own context — `system`, the messages, tool results,
  summaries and compaction blocks — plus the small `WORLD` table below. It learns facts from statements
  ("My name is Ada." → name = Ada; "My favourite colour is green."; "The capital of Atlantis is Poseidonia.";
  "Remember that …"), answers the last user message's question from them ("What is my name?" → "Your name is
  Ada."), and says plainly that it does not know when the fact is not in the request ("I don't know your name;
  you haven't told me."), so a test can tell whether a context policy kept a fact. "it"/"its"/"there" refer to
  the place named last in the context: after "The capital of France is Paris.", "What is its population?" →
  "Paris has a population of about 2.1 million."; without that earlier turn the reply says it does not know
  what "it" refers to. A statement without a question is acknowledged ("Noted: your name is Ada.").
- `echo` repeats the last user message's text.
- `scripted` plays the reply the caller queued (`script_reply`); with nothing queued it falls back to `recall`.
  Script forms: `{"text": ...}`, `{"content": [blocks]}`, `{"tool_use": [{"name", "input"}, ...], "text"?}`,
  `{"thinking": ..., "text": ...}`, `{"refusal": {"category", "explanation", <fallback fields>?}, "text"?}`,
  `{"pause_turn": true, "text"?}`, and `{"stop_reason": "max_tokens" | "model_context_window_exceeded", "text"}`;
  any form may also set `stop_reason` / `stop_sequence`.

Whatever the mode, a request that asks to summarise the conversation (the last user message or the system
prompt says "summarise/summarize … conversation") gets a deterministic extractive summary, `max_tokens` cuts the
reply to its first `max_tokens` tokens (`stop_reason: "max_tokens"`; `max_tokens: 0` → no content),
`stop_sequences` cut it (`stop_reason: "stop_sequence"`, naming the sequence), and a request that ends with an
assistant message (prefill) gets a reply that continues that text instead of repeating it. When the request enables
thinking, `recall` and `echo` replies start with a short thinking block, signed for its position by
`signatures.sign_thinking`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from turnkeep.core.catalog import ModelInfo
from turnkeep.core.messages import block_texts
from turnkeep.emulator import compaction, signatures, tokenizer
from turnkeep.emulator._memo import TextMemo
from turnkeep.errors import InvalidValue

__all__ = ["MODES", "WORLD", "IdFactory", "Mode", "Reply", "respond", "world_population"]

Mode = Literal["recall", "echo", "scripted"]
MODES: tuple[Mode, ...] = ("recall", "echo", "scripted")

#: Makes a unique id for a prefix ("toolu", "srvtoolu").
IdFactory = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Reply:
    """The model's part of a response: content blocks and why it stopped."""

    content: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None


# The built-in world knowledge of `recall`: a few capitals and populations, so the README example (a follow-up
# question about "it") works without a real model. Populations are rounded city-proper / country figures.
WORLD: dict[str, dict[str, str]] = {
    "capital": {
        "France": "Paris",
        "Germany": "Berlin",
        "Italy": "Rome",
        "Spain": "Madrid",
        "Japan": "Tokyo",
        "United Kingdom": "London",
    },
    "population": {
        "Paris": "2.1 million",
        "Berlin": "3.7 million",
        "Rome": "2.8 million",
        "Madrid": "3.3 million",
        "Tokyo": "14 million",
        "London": "8.9 million",
        "France": "68 million",
        "Germany": "84 million",
        "Italy": "59 million",
        "Spain": "48 million",
        "Japan": "124 million",
        "United Kingdom": "67 million",
    },
}


def world_population(place: str) -> str | None:
    """The `WORLD` population of `place` (case-insensitive), or None."""
    return _lookup(WORLD["population"], place)


def respond(
    body: Mapping[str, Any],
    *,
    model: ModelInfo,
    generation: int,
    mode: str,
    ids: IdFactory,
    script_reply: Mapping[str, Any] | None = None,
    sign_body: Mapping[str, Any] | None = None,
    lead: Sequence[Mapping[str, Any]] = (),
) -> Reply:
    """The reply to `body` (the request as the model sees it) in `mode`.

    `sign_body` is the request the reply's thinking blocks are signed against (the full history the client
    keeps, when threads or compaction shortened what the model sees); it defaults to `body`. `lead` are blocks
    that open the reply before the model's own (a new compaction block); they count for the position a thinking
    block is signed at, not for `max_tokens`. `ValueError` for an unknown mode or a malformed script.
    """
    if mode not in MODES:
        raise InvalidValue(f"unknown responder {mode!r}; expected one of {', '.join(MODES)}")
    draft = _scripted(script_reply, ids) if mode == "scripted" and script_reply is not None else None
    if draft is None:
        draft = _generated(body, mode)
    limited, stop_reason, stop_sequence = _limit(draft, body, generation)
    content = [dict(block) for block in lead] + limited
    _sign(content, model, sign_body if sign_body is not None else body)
    return Reply(content, stop_reason, stop_sequence, draft.stop_details if stop_reason == draft.stop_reason else None)


@dataclass(slots=True)
class _Draft:
    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None


# --- generated replies ---------------------------------------------------------------------------------------------


def _generated(body: Mapping[str, Any], mode: str) -> _Draft:
    messages = list(body.get("messages") or [])
    question = _last_user_text(messages)
    if _asks_for_summary(body, question):
        text = _summary(messages, question)
    elif mode == "echo":
        text = question or "(no text)"
    else:
        text = recall_answer(body)
    prefill = _prefill_text(messages)
    if prefill is not None:
        text = _continue_prefill(prefill, text)
    content: list[dict[str, Any]] = []
    if _thinking_enabled(body) and prefill is None:
        content.append({"type": "thinking", "thinking": _thought(question), "signature": ""})
    if text:
        content.append({"type": "text", "text": text})
    return _Draft(content)


def _thinking_enabled(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def _thought(question: str) -> str:
    subject = " ".join(question.split()[:24]) or "nothing in particular"
    return f"The user wrote: {subject}. I answer only from what this conversation contains."


def _prefill_text(messages: Sequence[Mapping[str, Any]]) -> str | None:
    if not messages or messages[-1].get("role") != "assistant":
        return None
    return "".join(block_texts(messages[-1].get("content"), tool_results=False, compaction=True))


def _continue_prefill(prefill: str, answer: str) -> str:
    """The part of `answer` that comes after `prefill`; an answer that does not start with it follows it."""
    if not prefill:
        return answer
    if answer.startswith(prefill):
        return answer[len(prefill) :]
    return " " + answer


def _summary(messages: Sequence[Mapping[str, Any]], question: str) -> str:
    # A short final instruction ("Summarise the conversation above.") is not part of what is summarised.
    if len(messages) > 1 and messages[-1].get("role") == "user" and len(question.split()) <= 40:
        messages = messages[:-1]
    return compaction.summarize(messages) or "There is nothing to summarise yet."


_SUMMARY_ASK = re.compile(r"\bsummar(?:y|ies|ise|ize|ised|ized|ising|izing)\b", re.IGNORECASE)
_SUMMARY_OBJECT = re.compile(
    r"\b(?:conversation|chat|discussion|dialogue|transcript|exchange|messages|history|above|so far)\b", re.IGNORECASE
)


def _asks_for_summary(body: Mapping[str, Any], question: str) -> bool:
    system = " ".join(block_texts(body.get("system"), tool_results=False, compaction=True))
    return any(_SUMMARY_ASK.search(text) and _SUMMARY_OBJECT.search(text) for text in (question, system))


# --- recall ----------------------------------------------------------------------------------------------------------


def recall_answer(body: Mapping[str, Any]) -> str:
    """What `recall` answers to the last user message of `body`, from the request's own context only."""
    texts = _context_texts(body)
    facts = _facts(texts)
    question = _last_user_text(list(body.get("messages") or []))
    asked = _question_sentence(question)
    if asked is None:
        return _acknowledge(question)
    return _answer(asked, facts, texts)


def _context_texts(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of every text in the request, in order: system first, then each message's blocks."""
    texts = [("system", text) for text in block_texts(body.get("system"), tool_results=False, compaction=True)]
    for message in body.get("messages") or []:
        role = str(message.get("role", "user"))
        texts.extend((role, text) for text in block_texts(message.get("content"), tool_results=True, compaction=True))
    return texts


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What the user wrote last: the text blocks of the last user message (not tool results or summaries)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content.strip()
        blocks = content if isinstance(content, list) else []
        texts = [b["text"] for b in blocks if isinstance(b, Mapping) and b.get("type") == "text" and "text" in b]
        return " ".join(str(text) for text in texts).strip()
    return ""


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
_REMEMBER_PREFIX = re.compile(
    r"^(?:(?:please|and|also|oh|ok|okay|so)[, ]+)*(?:remember|note|keep in mind|don't forget|fyi)(?: that)?[:, ]*",
    re.IGNORECASE,
)
_INTERROGATIVE = re.compile(
    r"^(?:what|what's|whats|who|whom|whose|where|when|which|why|how|do|does|did|is|are|can|could|would|will|tell me)\b",
    re.IGNORECASE,
)
_NAME = re.compile(
    r"\b(?i:my name is|my name's|call me|i'm called|i am called|user's name is|user is called|your name is)\s+"
    r"([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)"
)
_MY_FACT = re.compile(
    r"\b(?P<who>my|your|user's|the user's)\s+(?P<key>[a-z][\w' -]{0,40}?)\s+(?:is|are|was)\s+(?P<value>.+)$"
)
_I_LIVE = re.compile(r"\b(?i:i live|i'm living|i am living|user lives|you live)\s+in\s+(?P<value>[A-Z][\w' -]*)")
_GENERIC_FACT = re.compile(r"^(?P<key>(?:the\s+)?[\w' -]{1,60}?)\s+(?:is|are)\s+(?P<value>.+)$", re.IGNORECASE)
_IGNORED_SUBJECTS = frozenset({"it", "this", "that", "there", "here", "what", "which", "who", "i", "you", "he", "she"})


def _sentences(text: str) -> list[str]:
    return [match.group(0).strip() for match in _SENTENCE.finditer(text) if match.group(0).strip()]


def _clean_value(value: str) -> str:
    return value.strip().rstrip(".!?,;: ").strip().strip("\"'")


def _facts(texts: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Facts stated in the context: `name`, `home`, "<my key>" and "<generic subject>", the latest statement wins."""
    facts: dict[str, str] = {}
    for _role, text in texts:
        facts.update(_text_facts_memo(text))
    return facts


def _text_facts(text: str) -> tuple[tuple[str, str], ...]:
    """The (key, value) facts stated in one text, in order."""
    found: list[tuple[str, str]] = []
    for sentence in _sentences(text):
        if sentence.endswith("?") or sentence.lower().startswith(("i don't know", "i do not know")):
            continue
        statement = _REMEMBER_PREFIX.sub("", sentence).strip()
        if _INTERROGATIVE.match(statement) and not statement.lower().startswith(("is ", "are ")):
            continue
        found.extend(_sentence_facts(statement))
    return tuple(found)


# History resends the same texts with every request: each text's facts are found once.
_text_facts_memo = TextMemo(_text_facts)


def _sentence_facts(statement: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    name = _NAME.search(statement)
    if name:
        found.append(("name", _clean_value(name.group(1))))
    home = _I_LIVE.search(statement)
    if home:
        found.append(("home", _clean_value(home.group("value"))))
    lowered = statement[0].lower() + statement[1:] if statement else statement
    mine = _MY_FACT.search(lowered)
    if mine and not name:
        key = " ".join(mine.group("key").lower().split())
        value = _clean_value(statement[mine.start("value") : mine.end("value")])
        if value and key != "name":
            found.append((key, value))
    elif not found:
        generic = _GENERIC_FACT.match(statement)
        if generic:
            key = _subject_key(generic.group("key"))
            value = _clean_value(generic.group("value"))
            if key and value and key not in _IGNORED_SUBJECTS:
                found.append((key, value))
    return found


def _subject_key(subject: str) -> str:
    words = subject.lower().split()
    if words and words[0] == "the":
        words = words[1:]
    return " ".join(words)


def _question_sentence(text: str) -> str | None:
    """The question of the last user message (its last sentence ending in "?", or an interrogative one)."""
    sentences = _sentences(text)
    for sentence in reversed(sentences):
        if sentence.endswith("?"):
            return sentence
    for sentence in reversed(sentences):
        if _INTERROGATIVE.match(_REMEMBER_PREFIX.sub("", sentence)):
            return sentence
    return None


def _acknowledge(statement: str) -> str:
    learned = [
        fact for sentence in _sentences(statement) for fact in _sentence_facts(_REMEMBER_PREFIX.sub("", sentence))
    ]
    if learned:
        return "Noted: " + "; ".join(_describe(key, value) for key, value in learned) + "."
    if re.match(r"^\s*(?:hi|hello|hey|good (?:morning|afternoon|evening))\b", statement, re.IGNORECASE):
        return "Hello! How can I help you today?"
    return "Understood."


def _describe(key: str, value: str) -> str:
    if key == "name":
        return f"your name is {value}"
    if key == "home":
        return f"you live in {value}"
    if key.startswith(("my ", "your ")):
        return f"{key} is {value}"
    return f"the {key} is {value}" if not key[:1].isupper() else f"{key} is {value}"


_ASK_NAME = re.compile(r"\b(?:what(?:'s| is) my name|who am i|(?:know|remember|recall) my name|my name\?)", re.I)
_ASK_HOME = re.compile(r"\bwhere do i live\b", re.IGNORECASE)
_ASK_MY = re.compile(r"\b(?:what|which|who)(?:'s|'re| is| are| was)?\s+my\s+(?P<key>[a-z][\w' -]*?)\s*\??$", re.I)
_ASK_CAPITAL = re.compile(r"\bcapital (?:city )?of\s+(?P<place>[\w' -]+?)\s*\??$", re.IGNORECASE)
_ASK_ITS_CAPITAL = re.compile(r"\b(?:its|their) capital\b|\bcapital of (?:it|there|that country)\b", re.IGNORECASE)
_ASK_POPULATION = re.compile(r"\bpopulation of\s+(?P<place>[\w' -]+?)\s*\??$", re.IGNORECASE)
_ASK_POPULATION_OF_IN = re.compile(r"\bhow many people live in\s+(?P<place>[\w' -]+?)\s*\??$", re.IGNORECASE)
_ASK_ITS_POPULATION = re.compile(
    r"\b(?:its|their) population\b|\bpopulation (?:of (?:it|there|that))\b|\bhow many people live (?:there|in it)\b"
    r"|\bhow (?:big|large|populous) is (?:it|that)\b|\bpopulation there\b",
    re.IGNORECASE,
)
_ASK_WHAT_IS = re.compile(r"^(?:what|who|where)(?:'s| is| are| was)\s+(?P<key>.+?)\s*\??$", re.IGNORECASE)
_REFERENCE = re.compile(r"\b(?:it|its|there|that)\b", re.IGNORECASE)


def _answer(question: str, facts: Mapping[str, str], texts: Sequence[tuple[str, str]]) -> str:
    q = _REMEMBER_PREFIX.sub("", question).strip()
    if _ASK_NAME.search(q):
        name = facts.get("name")
        return f"Your name is {name}." if name else "I don't know your name; you haven't told me."
    if _ASK_HOME.search(q):
        home = facts.get("home")
        return f"You live in {home}." if home else "I don't know where you live; you haven't told me."
    mine = _ASK_MY.search(q)
    if mine:
        key = " ".join(mine.group("key").lower().split())
        value = facts.get(key)
        return f"Your {key} is {value}." if value else f"I don't know your {key}; you haven't told me."
    if _ASK_ITS_POPULATION.search(q):
        return _population_answer(_latest_place(texts, q))
    if _ASK_ITS_CAPITAL.search(q):
        return _capital_answer(_latest_place(texts, q, countries_only=True), facts)
    population = _ASK_POPULATION.search(q) or _ASK_POPULATION_OF_IN.search(q)
    if population:
        place = population.group("place")
        if place.lower() in ("it", "there", "that"):
            return _population_answer(_latest_place(texts, q))
        return _population_answer(_strip_article(place))
    capital = _ASK_CAPITAL.search(q)
    if capital:
        return _capital_answer(_strip_article(capital.group("place")), facts)
    what = _ASK_WHAT_IS.match(q)
    if what:
        key = _subject_key(what.group("key"))
        value = facts.get(key)
        if value:
            return f"{_sentence_case(what.group('key').strip())} is {value}."
        if _REFERENCE.fullmatch(key):
            return _unknown_reference()
    return "I don't know; the answer is not in our conversation."


def _strip_article(place: str) -> str:
    words = place.strip().split()
    if words and words[0].lower() == "the":
        words = words[1:]
    return " ".join(words)


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _unknown_reference() -> str:
    return 'I don\'t know what "it" refers to; nothing earlier in our conversation names it.'


def _lookup(table: Mapping[str, str], key: str) -> str | None:
    for name, value in table.items():
        if name.lower() == key.strip().lower():
            return value
    return None


def _canonical_place(place: str) -> str:
    for name in (*WORLD["population"], *WORLD["capital"]):
        if name.lower() == place.strip().lower():
            return name
    return place.strip()


def _population_answer(place: str | None) -> str:
    if place is None:
        return _unknown_reference()
    population = world_population(place)
    if population is None:
        return f"I don't know the population of {place}."
    return f"{_canonical_place(place)} has a population of about {population}."


def _capital_answer(country: str | None, facts: Mapping[str, str]) -> str:
    if country is None:
        return _unknown_reference()
    stated = facts.get(f"capital of {country.lower()}")
    capital = stated or _lookup(WORLD["capital"], country)
    if capital is None:
        return f"I don't know the capital of {country}."
    return f"The capital of {_canonical_place(country)} is {capital}."


def _latest_place(texts: Sequence[tuple[str, str]], question: str, *, countries_only: bool = False) -> str | None:
    """The place named last in the context (the question itself included), or None."""
    names = list(WORLD["capital"]) if countries_only else list({*WORLD["population"], *WORLD["capital"]})
    pattern = re.compile(r"\b(" + "|".join(re.escape(name) for name in names) + r")\b")
    latest: str | None = None
    for _role, text in (*texts, ("user", question)):
        for match in pattern.finditer(text):
            latest = match.group(1)
    return latest


# --- scripted replies ------------------------------------------------------------------------------------------------


def _scripted(script: Mapping[str, Any], ids: IdFactory) -> _Draft:
    if not isinstance(script, Mapping):
        raise InvalidValue("a scripted reply must be a JSON object")
    content: list[dict[str, Any]] = []
    stop_reason = "end_turn"
    stop_details: dict[str, Any] | None = None
    if "content" in script:
        blocks = script["content"]
        if not isinstance(blocks, list) or not all(isinstance(block, Mapping) for block in blocks):
            raise InvalidValue("`content` must be a list of content blocks")
        content = [_with_ids(dict(block), ids) for block in blocks]
        if any(block.get("type") == "tool_use" for block in content):
            stop_reason = "tool_use"
    else:
        if "thinking" in script:
            content.append({"type": "thinking", "thinking": str(script["thinking"]), "signature": ""})
        if "text" in script and script["text"] is not None:
            content.append({"type": "text", "text": str(script["text"])})
        if "tool_use" in script:
            calls = script["tool_use"]
            if isinstance(calls, Mapping):
                calls = [calls]
            if not isinstance(calls, list) or not calls:
                raise InvalidValue("`tool_use` must be a non-empty list of {name, input}")
            for call in calls:
                if not isinstance(call, Mapping) or "name" not in call:
                    raise InvalidValue("each tool call needs a `name`")
                content.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id") or ids("toolu")),
                        "name": str(call["name"]),
                        "input": dict(call.get("input") or {}),
                    }
                )
            stop_reason = "tool_use"
        if "refusal" in script:
            refusal = script["refusal"] if isinstance(script["refusal"], Mapping) else {}
            stop_reason = "refusal"
            stop_details = {
                "type": "refusal",
                "category": refusal.get("category"),
                "explanation": refusal.get("explanation"),
            }
            # The fallback fields of a refusal (SDK 2.16 `BetaRefusalStopDetails`), passed through when scripted.
            for name in ("fallback_credit_token", "recommended_model", "fallback_has_prefill_claim"):
                if name in refusal:
                    stop_details[name] = refusal[name]
        if script.get("pause_turn"):
            query = str(script.get("query") or "emulated search")
            content.append(
                {
                    "type": "server_tool_use",
                    "id": ids("srvtoolu"),
                    "name": str(script.get("tool") or "web_search"),
                    "input": {"query": query},
                }
            )
            stop_reason = "pause_turn"
    if "stop_reason" in script:
        stop_reason = str(script["stop_reason"])
    stop_sequence = script.get("stop_sequence")
    return _Draft(content, stop_reason, None if stop_sequence is None else str(stop_sequence), stop_details)


def _with_ids(block: dict[str, Any], ids: IdFactory) -> dict[str, Any]:
    if block.get("type") == "tool_use" and not block.get("id"):
        block["id"] = ids("toolu")
    elif block.get("type") == "server_tool_use" and not block.get("id"):
        block["id"] = ids("srvtoolu")
    elif block.get("type") == "thinking" and "signature" not in block:
        block["signature"] = ""
    return block


# --- limits and signatures -------------------------------------------------------------------------------------------


def _limit(draft: _Draft, body: Mapping[str, Any], generation: int) -> tuple[list[dict[str, Any]], str, str | None]:
    """Apply `stop_sequences`, then `max_tokens`, to the drafted content; returns (content, stop_reason, sequence)."""
    content = [dict(block) for block in draft.content]
    stop_reason, stop_sequence = draft.stop_reason, draft.stop_sequence
    sequences = [s for s in body.get("stop_sequences") or [] if isinstance(s, str) and s]
    if sequences:
        cut = _cut_at_stop_sequence(content, sequences)
        if cut is not None:
            content, stop_sequence = cut
            stop_reason = "stop_sequence"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        limited = _fit(content, max_tokens, generation)
        if limited is not None:
            return limited, "max_tokens", None
    return content, stop_reason, stop_sequence


def _cut_at_stop_sequence(
    content: list[dict[str, Any]], sequences: Sequence[str]
) -> tuple[list[dict[str, Any]], str] | None:
    for index, block in enumerate(content):
        if block.get("type") != "text":
            continue
        text = str(block.get("text", ""))
        hits = [(text.find(s), s) for s in sequences if s in text]
        if not hits:
            continue
        position, sequence = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
        kept = content[:index]
        if text[:position]:
            kept.append({**block, "text": text[:position]})
        return kept, sequence
    return None


def _fit(content: list[dict[str, Any]], max_tokens: int, generation: int) -> list[dict[str, Any]] | None:
    """`content` cut to at most `max_tokens` output tokens, or None when it already fits."""
    if max_tokens > 0 and tokenizer.output_tokens(content, generation) <= max_tokens:
        return None
    kept: list[dict[str, Any]] = []
    for block in content:
        if max_tokens > 0 and tokenizer.output_tokens([*kept, block], generation) <= max_tokens:
            kept.append(block)
            continue
        field_name = {"text": "text", "thinking": "thinking"}.get(str(block.get("type")))
        if field_name is not None and max_tokens > 0:
            partial = _longest_prefix(kept, block, field_name, max_tokens, generation)
            if partial is not None:
                kept.append(partial)
        break
    return kept


def _longest_prefix(
    kept: list[dict[str, Any]], block: dict[str, Any], field_name: str, max_tokens: int, generation: int
) -> dict[str, Any] | None:
    # Like the API, the reply is its first `max_tokens` tokens: cut between tokens, not words, so even
    # max_tokens=1 returns the first token.
    remaining = max_tokens - tokenizer.output_tokens(kept, generation)
    text = tokenizer.truncate_to_tokens(str(block.get(field_name, "")), remaining, generation)
    return {**block, field_name: text} if text.strip() else None


def _sign(content: list[dict[str, Any]], model: ModelInfo, body: Mapping[str, Any]) -> None:
    """Sign each unsigned thinking block for its place in the assistant message the client will append."""
    messages = list(body.get("messages") or [])
    for block_index, block in enumerate(content):
        if block.get("type") == "thinking" and not block.get("signature"):
            # The block is bound to the reply's earlier blocks too: sign it against the reply so far.
            so_far = {**body, "messages": [*messages, {"role": "assistant", "content": content[:block_index]}]}
            block["signature"] = signatures.sign_thinking(
                model, so_far if block_index else body, len(messages), block_index, block["thinking"]
            )
