"""Workloads for the simulator: a conversation to replay, as data.

A `Workload` is a system prompt and a list of `Turn`s. Each turn is what the user writes, how long the assistant's
reply is (in tokens; the simulator has the emulator play a reply of exactly that length) or `None` for a question
the emulator's recall responder answers from the request's own context, and the pause before the turn (seconds of
virtual time, which decides whether the prompt cache is still warm).

Lengths are **generation-1 tokens of the emulator's tokenizer** (`turnkeep.emulator.tokenizer`): filler text is
made of words of at most six letters (one token each) and sentence periods (one token each), so a text of N
tokens is exactly N tokens there; generation-2 models count about 30% more for the same text. Filler never states
a fact the recall responder would learn (no "is"/"are", no "my", no names), so only the planted facts are facts.

Built-ins (`workload(name, seed=0)`), deterministic for a seed:

- `chat-200`: 200 turns. User turns lognormal with median 70 tokens and mean ~300 (sigma 1.706); replies
  lognormal with median 215 and mean ~440 (sigma 1.197), capped at `MAX_REPLY_TOKENS`; gaps lognormal with
  mu 4.82 and sigma 1.25 (median ~124 s, about a quarter of them longer than 5 minutes); a 1,500-token system
  prompt. Four facts are planted in turns 2-5 ("My name is Ada." ...) and asked in the last four turns.
- `doc-qa-30`: a 50,000-token document (with three facts inside it) in the first turn, then 30 questions with
  the same gap and reply distributions; the last three questions ask for the facts.
- `agent-100`: an agent with one tool (`read_file`): 10 tasks, each a loop of 10 tool calls whose results are
  large (lognormal, median 1,500 tokens, at most 20,000) and come back a few seconds apart (median 3 s), then a
  reply; the tasks are the chat gaps apart, an 800-token system prompt; two facts stated in the first task and
  asked in two last turns.

`load_transcript(path)` turns a file into a workload: an export of a stored conversation
(`turnkeep.export.export_json`) or a JSON list of turns (see its docstring).
"""

from __future__ import annotations

import datetime
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from turnkeep.errors import UsageError

__all__ = [
    "BUILTIN_WORKLOADS",
    "CHAT_GAP",
    "CHAT_REPLY",
    "CHAT_USER",
    "MAX_REPLY_TOKENS",
    "Fact",
    "ToolStep",
    "Turn",
    "Workload",
    "agent_workload",
    "chat_workload",
    "doc_qa_workload",
    "filler_text",
    "load_transcript",
    "lognormal",
    "parse_transcript",
    "workload",
]

# (mu, sigma) of the natural log. Median = exp(mu); mean = exp(mu + sigma^2 / 2).
CHAT_USER = (math.log(70), 1.706)  # median 70, mean ~300 tokens
CHAT_REPLY = (math.log(215), 1.197)  # median 215, mean ~440 tokens
CHAT_GAP = (4.82, 1.25)  # seconds: median ~124 s, mean ~270 s
#: Longest scripted reply: the reply travels in a request header, which the emulator's server caps at ~100 KB.
#: At the chat distribution about 1 reply in 10,000 is longer.
MAX_REPLY_TOKENS = 12_000
MAX_USER_TOKENS = 30_000
#: Longest reply text a transcript may replay (it travels in a request header, as the scripted replies do).
MAX_REPLY_CHARS = 60_000
#: The reply length of a transcript turn that gives neither a reply nor its length: the chat median.
CHAT_REPLY_MEDIAN = 215

# Words of 2-6 letters (one token each) that cannot form a statement the recall responder learns from.
_WORD_LIST = (
    "plan check mail route tests table chair green blue fast slow light dark north south paper pencil garden "
    "window door river stone cloud train ticket coffee bread apple orange lemon copper silver market street "
    "bridge tower castle forest meadow valley harbor island desert winter summer autumn spring "
    "letter number basket bottle candle mirror pillow carpet button pocket jacket helmet rocket planet signal "
    "engine wheel brake motor cable socket screen mouse folder note draft review budget report metric chart "
    "sketch model layer stack queue cache index query batch shard node graph tree branch merge patch build "
    "deploy test lint format parse render"
)
_WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact planted in a workload: the sentence that states it, the question that asks it, and the text a
    correct answer contains."""

    statement: str
    question: str
    answer: str


FACTS: tuple[Fact, ...] = (
    Fact("My name is Ada.", "What is my name?", "Ada"),
    Fact("My favourite colour is green.", "What is my favourite colour?", "green"),
    Fact("I live in Lisbon.", "Where do I live?", "Lisbon"),
    Fact("The capital of Atlantis is Poseidonia.", "What is the capital of Atlantis?", "Poseidonia"),
)

DOCUMENT_FACTS: tuple[Fact, ...] = (
    Fact("The project codename is Bluebird.", "What is the project codename?", "Bluebird"),
    Fact("The capital of Atlantis is Poseidonia.", "What is the capital of Atlantis?", "Poseidonia"),
    Fact("The launch window is March.", "What is the launch window?", "March"),
)


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One round of a tool loop: the model calls a tool, and `gap` seconds later its result of `result_tokens`
    tokens is sent back."""

    gap: float
    result_tokens: int


@dataclass(frozen=True, slots=True)
class Turn:
    """One user turn of a workload.

    `reply_tokens`: the length of the assistant's reply (a scripted reply of filler text), or None to let the
    emulator's recall responder answer (used for fact questions). `reply_text`: an exact reply to play instead
    (transcripts). `gap`: seconds of virtual time before this turn is sent. `expect`: for a fact question, the
    text a correct answer contains. `tool_steps`: a tool loop before the reply — the model first calls the
    workload's tool once per step, each result is sent back, and the reply comes after the last one.
    """

    user: str
    reply_tokens: int | None = None
    gap: float = 0.0
    reply_text: str | None = None
    expect: str | None = None
    tool_steps: tuple[ToolStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Workload:
    """A conversation to replay: system prompt, turns, and how its scripted replies are generated (`seed`)."""

    name: str
    system: str | None
    turns: tuple[Turn, ...]
    seed: int = 0
    description: str = ""
    tools: tuple[Mapping[str, Any], ...] = ()
    """Tool definitions every request carries (the first is the one a `ToolStep` calls)."""
    _replies: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def facts(self) -> tuple[Turn, ...]:
        """The turns that ask for a planted fact."""
        return tuple(turn for turn in self.turns if turn.expect is not None)

    def reply(self, index: int) -> str | None:
        """The scripted reply of turn `index` (the same text every time), or None for the recall responder."""
        turn = self.turns[index]
        if turn.reply_text is not None:
            return turn.reply_text
        if turn.reply_tokens is None:
            return None
        text = self._replies.get(index)
        if text is None:
            text = filler_text(turn.reply_tokens, random.Random(f"{self.name}:{self.seed}:reply:{index}"))
            self._replies[index] = text
        return text

    def tool_result(self, index: int, step: int) -> str:
        """The result text of tool step `step` of turn `index` (the same text every time)."""
        tokens = self.turns[index].tool_steps[step].result_tokens
        return filler_text(tokens, random.Random(f"{self.name}:{self.seed}:tool:{index}:{step}"))

    def max_reply_tokens(self) -> int:
        """The longest scripted reply in tokens (a reply text is counted generously, at 3 characters a token)."""
        lengths = [t.reply_tokens or 0 for t in self.turns]
        lengths += [len(t.reply_text) // 3 for t in self.turns if t.reply_text is not None]
        return max(lengths, default=0)

    def head(self, turns: int) -> Workload:
        """The first `turns` turns (plus the fact questions, kept at the end), e.g. for a quick run."""
        questions = self.facts
        body = tuple(t for t in self.turns if t.expect is None)[: max(turns - len(questions), 0)]
        return Workload(
            f"{self.name}[:{turns}]", self.system, body + questions, self.seed, self.description, self.tools
        )


def lognormal(rng: random.Random, mu_sigma: tuple[float, float]) -> float:
    """One lognormal draw for (mu, sigma) of the natural log."""
    mu, sigma = mu_sigma
    return math.exp(rng.gauss(mu, sigma))


def filler_text(tokens: int, rng: random.Random) -> str:
    """Neutral prose of exactly `tokens` generation-1 tokens: sentences of 5-14 one-token words and a period."""
    if tokens < 1:
        return ""
    sentences: list[str] = []
    left = tokens
    while left > 0:
        if left == 1:
            sentences.append(rng.choice(_WORDS))
            break
        words = [rng.choice(_WORDS) for _ in range(min(rng.randint(5, 14), left - 1))]
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + ".")
        left -= len(words) + 1
    return " ".join(sentences)


def _with_filler(lead: str, tokens: int, rng: random.Random) -> str:
    """`lead` followed by filler, `tokens` long in all (`lead` alone if it is longer)."""
    from turnkeep.emulator.tokenizer import text_tokens

    rest = tokens - text_tokens(lead, 1)
    return f"{lead} {filler_text(rest, rng)}" if rest > 0 else lead


def _length(rng: random.Random, mu_sigma: tuple[float, float], cap: int) -> int:
    return min(max(round(lognormal(rng, mu_sigma)), 1), cap)


def chat_workload(turns: int = 200, *, seed: int = 0, facts: Sequence[Fact] = FACTS) -> Workload:
    """A chat of `turns` turns with the `chat-200` distributions; facts planted in turns 2.. and asked last."""
    if turns < 2 * len(facts) + 1:
        raise UsageError(f"a chat workload with {len(facts)} facts needs at least {2 * len(facts) + 1} turns")
    rng = random.Random(f"chat:{seed}")
    system = _with_filler("You help with daily plans. Be brief and kind.", 1_500, rng)
    result: list[Turn] = []
    for index in range(turns - len(facts)):
        user_tokens = _length(rng, CHAT_USER, MAX_USER_TOKENS)
        reply_tokens = _length(rng, CHAT_REPLY, MAX_REPLY_TOKENS)
        gap = lognormal(rng, CHAT_GAP) if index else 0.0
        planted = index - 1
        lead = facts[planted].statement if 0 <= planted < len(facts) else ""
        user = _with_filler(lead, user_tokens, rng) if lead else filler_text(user_tokens, rng)
        result.append(Turn(user, reply_tokens, round(gap, 3)))
    for fact in facts:
        result.append(Turn(fact.question, None, round(lognormal(rng, CHAT_GAP), 3), expect=fact.answer))
    return Workload(
        f"chat-{turns}",
        system,
        tuple(result),
        seed,
        f"{turns}-turn chat: user ~70 / assistant ~215 tokens median, lognormal gaps (median ~2 min), "
        f"{len(facts)} facts planted early and asked at the end",
    )


def doc_qa_workload(questions: int = 30, *, document_tokens: int = 50_000, seed: int = 0) -> Workload:
    """A document of `document_tokens` tokens in the first turn, then `questions` questions about it."""
    facts = DOCUMENT_FACTS
    if questions < len(facts):
        raise UsageError(f"doc-qa needs at least {len(facts)} questions")
    rng = random.Random(f"doc-qa:{seed}")
    system = "You answer questions about the document the user shares. Quote it where you can."
    parts = []
    per_part = document_tokens // (len(facts) + 1)
    for index, fact in enumerate(facts):
        parts.append(filler_text(per_part - (1 if index else 0), rng))
        parts.append(fact.statement)
    from turnkeep.emulator.tokenizer import text_tokens

    head = "Here is the document.\n\n"
    used = text_tokens(head + " ".join(parts), 1)
    parts.append(filler_text(max(document_tokens - used, 1), rng))
    document = head + " ".join(parts)
    turns = [Turn(document, _length(rng, CHAT_REPLY, MAX_REPLY_TOKENS), 0.0)]
    for _ in range(questions - len(facts)):
        ask = filler_text(_length(rng, (math.log(25), 0.5), 400), rng).rstrip(".") + "?"
        turns.append(Turn(ask, _length(rng, CHAT_REPLY, MAX_REPLY_TOKENS), round(lognormal(rng, CHAT_GAP), 3)))
    for fact in facts:
        turns.append(Turn(fact.question, None, round(lognormal(rng, CHAT_GAP), 3), expect=fact.answer))
    return Workload(
        f"doc-qa-{questions}",
        system,
        tuple(turns),
        seed,
        f"a {document_tokens:,}-token document, then {questions} questions ({len(facts)} about facts in it)",
    )


READ_FILE_TOOL: Mapping[str, Any] = {
    "name": "read_file",
    "description": "Read a file of the project and return its text.",
    "input_schema": {
        "type": "object",
        "properties": {"path": {"type": "string", "description": "The file's path in the project."}},
        "required": ["path"],
    },
}
AGENT_STEP_GAP = (math.log(3), 0.6)  # seconds between a tool call and its result: median 3 s
AGENT_RESULT = (math.log(1_500), 0.7)  # tokens of a tool result: median 1,500, mean ~1,900
MAX_TOOL_RESULT_TOKENS = 20_000


def agent_workload(tasks: int = 10, steps: int = 10, *, seed: int = 0) -> Workload:
    """An agent: `tasks` user requests, each worked through a loop of `steps` tool calls with large results a few
    seconds apart, then a reply; two facts stated in the first task and asked at the end."""
    if tasks < 1 or steps < 1:
        raise UsageError("an agent workload needs at least one task and one tool step")
    rng = random.Random(f"agent:{seed}")
    facts = (FACTS[0], DOCUMENT_FACTS[0])
    system = _with_filler("You are a coding agent. Read the files you need with the tool, then answer.", 800, rng)
    turns: list[Turn] = []
    for index in range(tasks):
        lead = f"Task {index + 1}."
        if index == 0:
            lead += " " + " ".join(fact.statement for fact in facts)
        user = _with_filler(lead, _length(rng, CHAT_USER, 2_000), rng)
        loop = tuple(
            ToolStep(round(lognormal(rng, AGENT_STEP_GAP), 3), _length(rng, AGENT_RESULT, MAX_TOOL_RESULT_TOKENS))
            for _ in range(steps)
        )
        gap = round(lognormal(rng, CHAT_GAP), 3) if index else 0.0
        turns.append(Turn(user, _length(rng, CHAT_REPLY, MAX_REPLY_TOKENS), gap, tool_steps=loop))
    for fact in facts:
        turns.append(Turn(fact.question, None, round(lognormal(rng, CHAT_GAP), 3), expect=fact.answer))
    return Workload(
        f"agent-{tasks * steps}",
        system,
        tuple(turns),
        seed,
        f"{tasks} tasks x {steps} tool calls (results ~1,500 tokens median, ~3 s apart), 2 facts asked at the end",
        (READ_FILE_TOOL,),
    )


BUILTIN_WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "agent-100": lambda seed: agent_workload(10, 10, seed=seed),
    "chat-200": lambda seed: chat_workload(200, seed=seed),
    "doc-qa-30": lambda seed: doc_qa_workload(30, seed=seed),
}


def workload(name: str, *, seed: int = 0) -> Workload:
    """A built-in workload by name (`agent-100`, `chat-200`, `doc-qa-30`); `UsageError` for an unknown name."""
    make = BUILTIN_WORKLOADS.get(name)
    if make is None:
        raise UsageError(f"unknown workload {name!r}; built-in: {', '.join(sorted(BUILTIN_WORKLOADS))}")
    return make(seed)


# --------------------------------------------------------------------------------------------------------------
# Transcripts


def load_transcript(path: str | Path, *, name: str | None = None) -> Workload:
    """A workload replaying the conversation in the JSON file at `path`.

    Accepted forms:

    - an export of a stored conversation (`{"format": "turnkeep.conversation", ...}`, as `export_json` writes
      it): the main branch's user messages are the turns and the replies are replayed word for word; the gaps
      come from the ledger's request times. Tool calls and results are replayed as text (approximation).
    - a JSON list of turns, or `{"system": "...", "turns": [...]}`. A turn is a string (the user's text) or an
      object with `user` (or `text`, the user's text, required), `assistant` (or `reply`: the reply to replay),
      `reply_tokens` (a reply of that many tokens), `gap` (seconds before the turn) or `timestamp` (seconds since
      the epoch, or an ISO-8601 string; gaps are the differences), and `expect` (text a correct answer contains;
      such a turn is answered by the recall responder unless a reply is given). A turn with neither a reply
      nor `reply_tokens` gets a reply of the median chat length (215 tokens).
    - a JSON list of messages (`{"role": "user" | "assistant", "content": ...}`), paired into turns.

    A file that cannot be read raises `UsageError` naming the file and the first problem's position, e.g.
    `turns[12].user: expected a string`.
    """
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"{file}: cannot read the transcript: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"{file}: not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise UsageError(f"{file}: not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    label = name or file.stem
    try:
        return parse_transcript(data, name=label)
    except UsageError as err:
        raise UsageError(f"{file}: {err}") from err


def parse_transcript(data: object, *, name: str = "transcript") -> Workload:
    """`load_transcript` for data already parsed from JSON."""
    if isinstance(data, Mapping) and data.get("format") == "turnkeep.conversation":
        return _from_export(data, name)
    system: object = None
    items: object = data
    where = "turns"
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"system", "turns", "name"})
        if unknown:
            raise UsageError(f"{unknown[0]}: unknown field (expected system, turns)")
        if "turns" not in data:
            raise UsageError("turns: missing (a list of turns)")
        system, items = data.get("system"), data["turns"]
        if system is not None and not (isinstance(system, str) and system.strip()):
            raise UsageError("system: expected a non-empty string")
    elif not isinstance(data, list):
        raise UsageError(f"expected a list of turns or an object with `turns`, got {_kind(data)}")
    if not isinstance(items, list):
        raise UsageError(f"{where}: expected a list, got {_kind(items)}")
    if not items:
        raise UsageError(f"{where}: empty; a transcript needs at least one turn")
    if all(isinstance(item, Mapping) and "role" in item for item in items):
        turns = _from_messages(items)
    else:
        turns = [_turn(item, f"{where}[{index}]") for index, item in enumerate(items)]
    return Workload(name, system if isinstance(system, str) else None, tuple(_with_gaps(turns, where)), 0, name)


@dataclass
class _Raw:
    turn: Turn
    timestamp: float | None = None
    reply_node: str | None = None  # in an export: the stored reply, whose ledger entries say when it was sent


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _text(value: object, position: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{position}: expected a string, got {_kind(value)}")
    if not value.strip():
        raise UsageError(f"{position}: empty text")
    return value


def _reply(value: object, position: str) -> str:
    text = _text(value, position)
    if len(text) > MAX_REPLY_CHARS:
        raise UsageError(
            f"{position}: a reply of {len(text):,} characters; the simulator replays at most {MAX_REPLY_CHARS:,}"
        )
    return text


def _number(value: object, position: str, *, minimum: float = 0.0) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise UsageError(f"{position}: expected a number, got {_kind(value)}")
    if value < minimum:
        raise UsageError(f"{position}: must be at least {minimum:g}, got {value:g}")
    return float(value)


def _timestamp(value: object, position: str) -> float:
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as err:
            raise UsageError(f"{position}: not an ISO-8601 time or a number of seconds: {value!r}") from err
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    return _number(value, position)


_TURN_KEYS = {"user", "text", "assistant", "reply", "reply_tokens", "gap", "timestamp", "expect"}


def _turn(item: object, position: str) -> _Raw:
    if isinstance(item, str):
        return _Raw(Turn(_text(item, position), CHAT_REPLY_MEDIAN))
    if not isinstance(item, Mapping):
        raise UsageError(f"{position}: expected a string or an object, got {_kind(item)}")
    unknown = sorted(set(item) - _TURN_KEYS)
    if unknown:
        raise UsageError(f"{position}.{unknown[0]}: unknown field (expected {', '.join(sorted(_TURN_KEYS))})")
    key = "user" if "user" in item else "text"
    if key not in item:
        raise UsageError(f"{position}.user: missing (the user's text)")
    user = _text(item[key], f"{position}.{key}")
    reply_key = "assistant" if "assistant" in item else "reply"
    reply = _reply(item[reply_key], f"{position}.{reply_key}") if item.get(reply_key) is not None else None
    reply_tokens: int | None = None
    if item.get("reply_tokens") is not None:
        value = item["reply_tokens"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_REPLY_TOKENS:
            raise UsageError(f"{position}.reply_tokens: expected an integer from 1 to {MAX_REPLY_TOKENS:,}")
        reply_tokens = value
    expect = _text(item["expect"], f"{position}.expect") if item.get("expect") is not None else None
    if reply is None and reply_tokens is None and expect is None:
        reply_tokens = CHAT_REPLY_MEDIAN
    gap = _number(item["gap"], f"{position}.gap") if item.get("gap") is not None else 0.0
    stamp = _timestamp(item["timestamp"], f"{position}.timestamp") if item.get("timestamp") is not None else None
    return _Raw(Turn(user, reply_tokens, gap, reply, expect), stamp)


def _with_gaps(raws: Sequence[_Raw], where: str) -> list[Turn]:
    """Turns with gaps from their timestamps where both a turn and the one before it have one."""
    turns: list[Turn] = []
    previous: float | None = None
    for index, raw in enumerate(raws):
        turn = raw.turn
        if raw.timestamp is not None and previous is not None:
            if raw.timestamp < previous:
                raise UsageError(f"{where}[{index}].timestamp: earlier than the turn before it")
            turn = Turn(turn.user, turn.reply_tokens, raw.timestamp - previous, turn.reply_text, turn.expect)
        previous = raw.timestamp if raw.timestamp is not None else previous
        turns.append(turn)
    return turns


def _content_text(content: object, position: str) -> str:
    """The text of message content: text blocks as they are, tool calls and results rendered as text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UsageError(f"{position}: expected a string or a list of blocks, got {_kind(content)}")
    parts: list[str] = []
    for index, block in enumerate(content):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise UsageError(f"{position}[{index}]: expected a content block (an object with `type`)")
        kind = block["type"]
        if kind == "text":
            parts.append(_text(block.get("text"), f"{position}[{index}].text"))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input", {}), sort_keys=True, ensure_ascii=False)
            parts.append(f"[called {block.get('name')}({arguments})]")
        elif kind == "tool_result":
            inner = block.get("content", "")
            text = inner if isinstance(inner, str) else _content_text(inner, f"{position}[{index}].content")
            parts.append(f"[tool result: {text}]")
    return "\n".join(part for part in parts if part)


def _from_messages(items: Sequence[Any]) -> list[_Raw]:
    raws: list[_Raw] = []
    for index, item in enumerate(items):
        position = f"turns[{index}]"
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise UsageError(f"{position}.role: expected 'user' or 'assistant', got {role!r}")
        text = _content_text(item.get("content"), f"{position}.content")
        stamp = item.get("timestamp")
        if role == "user":
            if not text.strip():
                raise UsageError(f"{position}.content: no text")
            stamped = _timestamp(stamp, f"{position}.timestamp") if stamp is not None else None
            raws.append(_Raw(Turn(text, CHAT_REPLY_MEDIAN), stamped))
        else:
            if not raws or raws[-1].turn.reply_text is not None:
                raise UsageError(f"{position}: an assistant message must follow a user message")
            last = raws[-1].turn
            reply = _reply(text, f"{position}.content") if text.strip() else None
            raws[-1].turn = Turn(last.user, last.reply_tokens if reply is None else None, last.gap, reply)
    return raws


def _from_export(data: Mapping[str, Any], name: str) -> Workload:
    from turnkeep.export import import_json
    from turnkeep.store import MemoryStore

    store = MemoryStore()
    conversation = import_json(store, data)  # checks the whole export; InvalidExport names the position
    settings = store.settings(conversation)
    head = store.branches(conversation).get("main")
    path = [node for node in store.path(conversation, head) if node.status == "ok"]
    raws: list[_Raw] = []
    for node in path:
        role = node.message.get("role")
        text = _content_text(node.message.get("content"), f"nodes[{node.id}].message.content")
        if role == "user" and text.strip():
            raws.append(_Raw(Turn(text, CHAT_REPLY_MEDIAN)))
        elif role == "assistant" and raws and raws[-1].turn.reply_text is None and text.strip():
            last = raws[-1].turn
            raws[-1].turn = Turn(last.user, None, 0.0, _reply(text, f"nodes[{node.id}].message.content"))
            raws[-1].reply_node = node.id
    if not raws:
        raise UsageError("nodes: the main branch has no user message to replay")
    answered = [e for e in store.ledger(conversation) if e.purpose in ("reply", "overflow") and e.error is None]
    sent_at: dict[str, float] = {}
    for entry in answered:
        if entry.node_id is not None:
            sent_at.setdefault(entry.node_id, entry.at)  # a turn's first answered request
    if all(raw.reply_node in sent_at for raw in raws):
        times = [sent_at[cast(str, raw.reply_node)] for raw in raws]  # this branch's own turns, in its order
    else:  # a ledger from before entries named their reply: by position
        times = [entry.at for entry in answered if entry.purpose == "reply"]
    turns: list[Turn] = []
    for index, raw in enumerate(raws):
        gap = times[index] - times[index - 1] if 0 < index < len(times) else 0.0
        turn = raw.turn
        turns.append(Turn(turn.user, turn.reply_tokens, max(gap, 0.0), turn.reply_text, turn.expect))
    system = settings.get("system")
    return Workload(name, system if isinstance(system, str) else None, tuple(turns), 0, f"export of {name}")
