"""What a user pays per turn: the whole `send`, through the real `anthropic` SDK, minus what the SDK itself costs.

Run: `.venv/bin/python -m benchmarks send` (part of `make bench`); `BENCH_SEND_FULL=1` runs the whole matrix
(every driver on every store, 50 measured turns each) instead of the default's few minutes;
`BENCH_SEND_TURNS` and `BENCH_SEND_SIZES` (e.g. `100,1000`) narrow a run.

For each policy (`FullHistory()`, `Window(turns=20)`, `TokenBudget(max_input_tokens=20_000)`,
`Summarize(trigger=20_000)`) and each conversation length (100, 1,000 and 10,000 turns) it writes a conversation
of that many turns directly into the store (one `append`, with a ledger entry per turn a minute apart, as a
conversation that really ran would have), reopens it with `Conversation.open`, sends one unmeasured turn (the
first plan of a reopened conversation builds the policy's memo), then measures `TURNS` turns. The SDK talks to an
`httpx2.MockTransport` that answers every request with the same canned reply (JSON, or SSE for streams).

CPU time per turn (`time.process_time`) is measured twice: the whole `send` / `stream` / `AsyncConversation.send`,
and the SDK alone sending the very same request bodies on the same transport (`messages.create(**body)` or
`messages.stream(**body)` consumed). turnkeep's overhead is the difference of the medians. Turns during which
Summarize made a summary call are reported apart (they send two requests and are not held to the target).

Memory: the Python heap a reopened 10,000-turn conversation holds after its measured turns (`tracemalloc`, on a
SQLiteStore, so the store's own copy of the messages is on disk, not counted), against the size of its messages
as compact JSON. Targets (issue 10): overhead <= 1 ms per turn at 1,000 turns and <= 5 ms at 10,000 for every
policy; memory <= 3x the raw JSON.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal

import anthropic
import httpx2

from benchmarks._record import write_section
from turnkeep import AsyncConversation, Conversation, attempts
from turnkeep.core.policies import FullHistory, Policy, Summarize, TokenBudget, Window
from turnkeep.sim import filler_text, strategy_label
from turnkeep.store import LedgerEntry, MemoryStore, Node, SQLiteStore, Store

MODEL = "claude-sonnet-4-6"
SYSTEM = "You help with daily plans. Be brief and kind."
SIZES = tuple(int(n) for n in os.environ.get("BENCH_SEND_SIZES", "100,1000,10000").split(","))
FULL = os.environ.get("BENCH_SEND_FULL") == "1"
TURNS = 50 if FULL else int(os.environ.get("BENCH_SEND_TURNS", "12"))
GAP = 60.0  # seconds between turns, in the built history and in the measured turns (a virtual clock)
TARGET_MS = {1_000: 1.0, 10_000: 5.0}
# The same run on the code before the send path was made incremental (2026-12-03, same machine, 12 measured turns):
# (driver, store, policy, turns) -> (whole ms, overhead ms). The report shows the ratio old / new.
BEFORE: dict[tuple[str, str, str, int], tuple[float, float]] = {
    ("send", "memory", "full-history", 100): (8.83, 6.64),
    ("stream", "memory", "full-history", 100): (18.39, 12.88),
    ("async", "memory", "full-history", 100): (10.16, 7.59),
    ("send", "sqlite", "full-history", 100): (11.23, 8.71),
    ("send", "memory", "window(turns=20)", 100): (3.53, 2.37),
    ("send", "sqlite", "window(turns=20)", 100): (4.96, 3.85),
    ("send", "memory", "token-budget(max_input_tokens=20000)", 100): (10.24, 7.7),
    ("send", "sqlite", "token-budget(max_input_tokens=20000)", 100): (11.36, 9.68),
    ("send", "memory", "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))", 100): (9.13, 7.02),
    ("send", "sqlite", "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))", 100): (10.72, 8.42),
    ("send", "memory", "full-history", 1000): (66.15, 52.12),
    ("stream", "memory", "full-history", 1000): (144.03, 128.87),
    ("async", "memory", "full-history", 1000): (84.47, 70.87),
    ("send", "sqlite", "full-history", 1000): (87.37, 69.64),
    ("send", "memory", "window(turns=20)", 1000): (8.27, 6.91),
    ("send", "sqlite", "window(turns=20)", 1000): (12.23, 10.8),
    ("send", "memory", "token-budget(max_input_tokens=20000)", 1000): (17.43, 13.47),
    ("send", "sqlite", "token-budget(max_input_tokens=20000)", 1000): (20.59, 16.99),
    ("send", "memory", "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))", 1000): (7.41, 6.19),
    ("send", "sqlite", "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))", 1000): (10.67, 9.33),
    ("send", "memory", "full-history", 10000): (1123.15, 974.24),
    ("stream", "memory", "full-history", 10000): (2008.36, 1864.87),
    ("async", "memory", "full-history", 10000): (1188.92, 979.89),
    ("send", "sqlite", "full-history", 10000): (1217.97, 1074.94),
    ("send", "memory", "window(turns=20)", 10000): (39.27, 38.17),
    ("send", "sqlite", "window(turns=20)", 10000): (51.92, 51.24),
    ("send", "memory", "token-budget(max_input_tokens=20000)", 10000): (57.65, 54.74),
    ("send", "sqlite", "token-budget(max_input_tokens=20000)", 10000): (71.1, 68.6),
    ("send", "memory", "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))", 10000): (49.75, 48.86),
    ("send", "sqlite", "summarize(trigger=20000, inner=token-budget(max_input_tokens=40000))", 10000): (43.2, 42.17),
}
REPLY_TEXT = "Sure. Take the bus at nine, lunch at noon, and leave the last hour for the review."


def policies() -> list[Policy]:
    return [
        FullHistory(),
        Window(turns=20),
        TokenBudget(max_input_tokens=20_000),
        Summarize(trigger=20_000, inner=TokenBudget(max_input_tokens=40_000)),
    ]


def machine() -> str:
    return (
        f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"anthropic {anthropic.__version__}, {datetime.date.today().isoformat()}"
    )


# -- the canned API ------------------------------------------------------------------------------------------


def _message(body: dict[str, Any], text: str = REPLY_TEXT) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", MODEL),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 900, "output_tokens": 24, "cache_read_input_tokens": 0},
    }


def _sse(message: dict[str, Any]) -> bytes:
    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

    start = {**message, "content": [], "stop_reason": None}
    parts = [
        event("message_start", {"message": start}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ]
    for word in message["content"][0]["text"].split(" "):
        parts.append(event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word + " "}}))
    parts += [
        event("content_block_stop", {"index": 0}),
        event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {}}),
        event("message_stop", {}),
    ]
    return "".join(parts).encode()


@dataclass
class CannedAPI:
    """Answers every request with the same reply; remembers the bodies so the SDK alone can send them again."""

    bodies: list[bytes] = field(default_factory=list)  # as sent: decoded only to send them again
    keep: bool = True
    reply_text: str = REPLY_TEXT  # streamed a word per event

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        if self.keep:
            self.bodies.append(request.content)
        message = _message({}, self.reply_text)
        if b'"stream":true' in request.content:
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=_sse(message))
        return httpx2.Response(200, json=message, headers={"request-id": "req_bench"})

    def client(self) -> anthropic.Anthropic:
        transport = httpx2.MockTransport(self.handle)
        return anthropic.Anthropic(api_key="bench", http_client=httpx2.Client(transport=transport), max_retries=0)

    def async_client(self) -> anthropic.AsyncAnthropic:
        transport = httpx2.MockTransport(self.handle)
        return anthropic.AsyncAnthropic(
            api_key="bench", http_client=httpx2.AsyncClient(transport=transport), max_retries=0
        )


_OBSERVER_CLOCK: list[InCall] = []  # the InCall that the observer's timers report to (the latest made)


class InCall:
    """The CPU time spent inside the SDK's `messages.create` (sync or async), read per turn: subtracted from the
    same turn's whole send, it is turnkeep's overhead without the noise of comparing two separate runs.

    A stream's SDK work is interleaved with turnkeep's (turnkeep folds each event as the SDK yields it): the time
    inside `messages.stream(...)`, entering it, each step of its iteration and `get_final_message()` is the SDK's.

    turnkeep's own attempt observer runs inside those calls (it wraps the SDK's transport to see every attempt:
    `attempts._log_for`, `AttemptLog.begin`, `attempts._responded`, which reads the reply once more, and the
    reader fed each chunk of a stream), so its time is counted apart and is not the SDK's."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.observer = 0.0
        self.observing = False  # inside a hook: a hook it calls is not counted twice
        _OBSERVER_CLOCK[:] = [self]
        hooks = (
            (attempts, "_log_for"),
            (attempts, "_responded"),
            (attempts.AttemptLog, "begin"),
            (attempts._Reader, "feed"),
            (attempts._Reader, "close"),
        )
        for owner, name in hooks:
            original = getattr(owner, name)
            if not getattr(original, "_bench_timed", False):
                setattr(owner, name, self._timed(original))

    @property
    def sdk(self) -> float:
        """The SDK's own CPU time in the calls since `reset`."""
        return self.spent - self.observer

    def reset(self) -> None:
        self.spent = self.observer = 0.0

    def _timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            clock = _OBSERVER_CLOCK[0]
            if clock.observing:  # called by another hook (`_responded` reads a body with `feed` and `close`)
                return function(*args, **kwargs)
            clock.observing = True
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                clock.observer += time.process_time() - started
                clock.observing = False

        timed._bench_timed = True  # type: ignore[attr-defined]
        return timed

    def sdk_call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`function(*args, **kwargs)`, its CPU time counted as spent in the SDK."""
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            self.spent += time.process_time() - started

    def wrap(self, client: Any) -> Any:
        for resource in (client.messages, client.beta.messages):
            if not isinstance(client, anthropic.AsyncAnthropic):
                stream = resource.stream

                def timed_stream(*args: Any, _stream: Any = stream, **kwargs: Any) -> Any:
                    return _TimedStreamManager(self, self.sdk_call(_stream, *args, **kwargs))

                resource.stream = timed_stream
            create = resource.create
            if isinstance(client, anthropic.AsyncAnthropic):

                async def timed_async(*args: Any, _create: Any = create, **kwargs: Any) -> Any:
                    started = time.process_time()
                    try:
                        return await _create(*args, **kwargs)
                    finally:
                        self.spent += time.process_time() - started

                resource.create = timed_async
            else:

                def timed(*args: Any, _create: Any = create, **kwargs: Any) -> Any:
                    started = time.process_time()
                    try:
                        return _create(*args, **kwargs)
                    finally:
                        self.spent += time.process_time() - started

                resource.create = timed
        return client


class _TimedStreamManager:
    """The SDK's stream manager, with the time spent in it (the request, each event, the final message) counted
    as the SDK's."""

    def __init__(self, in_call: InCall, manager: Any) -> None:
        self._in_call, self._manager = in_call, manager

    def __enter__(self) -> _TimedStream:
        return _TimedStream(self._in_call, self._in_call.sdk_call(self._manager.__enter__))

    def __exit__(self, *exc: object) -> Any:
        return self._in_call.sdk_call(self._manager.__exit__, *exc)


class _TimedStream:
    def __init__(self, in_call: InCall, stream: Any) -> None:
        self._in_call, self._stream = in_call, stream

    def __iter__(self) -> Iterator[Any]:
        events = iter(self._stream)
        while True:
            try:
                event = self._in_call.sdk_call(next, events)
            except StopIteration:
                return
            yield event

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._stream, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: self._in_call.sdk_call(value, *args, **kwargs)


# -- building a history directly in the store ----------------------------------------------------------------


class Clock:
    """The conversation's virtual clock: a minute per turn."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def build(store: Store, policy: Policy, size: int, clock: Clock) -> tuple[str, int]:
    """A conversation of `size` answered turns written in one append; returns its id and its messages' JSON size."""
    creator = Conversation(MODEL, system=SYSTEM, policy=policy, store=store, client=CannedAPI().client())
    rng = random.Random(f"send:{size}")
    nodes: list[Node] = []
    ledger: list[LedgerEntry] = []
    parent: str | None = None
    raw = 0
    for turn in range(size):
        at = clock.now - (size - turn) * GAP
        user = {"role": "user", "content": filler_text(15, rng)}
        reply = {"role": "assistant", "content": [{"type": "text", "text": filler_text(30, rng)}]}
        user_id, reply_id = uuid.uuid4().hex, uuid.uuid4().hex
        nodes.append(Node(user_id, parent, user, "ok", {"kind": "turn"}))
        # The meta a real reply is stored with (`ConversationCore.commit`): its message ids and model are held too.
        meta = {"kind": "reply", "stop_reason": "end_turn", "message_ids": [f"msg_hist_{turn}"], "model": MODEL}
        nodes.append(Node(reply_id, user_id, reply, "ok", meta))
        parent = reply_id
        raw += len(json.dumps(user, separators=(",", ":"))) + len(json.dumps(reply, separators=(",", ":")))
        ledger.append(
            LedgerEntry(
                purpose="reply",
                model=MODEL,
                request_id=None,
                message_id=f"msg_hist_{turn}",
                stop_reason="end_turn",
                usage={"input_tokens": 900, "output_tokens": 24},
                cost_usd=str(Decimal("0.003")),
                latency_ms=1.0,
                at=at,
                node_id=reply_id,
            )
        )
    store.append(creator.id, "main", expected_head=None, nodes=nodes, ledger=ledger)
    return creator.id, raw


# -- measuring -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    driver: str
    store: str
    policy: str
    turns: int
    whole_ms: float
    sdk_ms: float
    summary_turns: int
    sent: int
    paired_ms: float | None = None  # median over turns of (whole - the SDK's own time inside that very call)
    warm_ms: float | None = None  # the same, turns sent back to back (no full collection before each)

    @property
    def overhead_ms(self) -> float:
        return max(self.whole_ms - self.sdk_ms, 0.0)

    @property
    def judged_ms(self) -> float:
        """The overhead held to the target: paired where measured (same call, no cross-run noise)."""
        return self.paired_ms if self.paired_ms is not None else self.overhead_ms


def _cpu(action: Callable[[], object]) -> float:
    started = time.process_time()
    action()
    return (time.process_time() - started) * 1000


def _user_texts(size: int) -> Iterator[str]:
    rng = random.Random(f"measured:{size}")
    while True:
        yield filler_text(15, rng)


def measure(
    driver: str, store_kind: str, policy: Policy, size: int, workdir: Path, *, reply_text: str = REPLY_TEXT
) -> Row:
    clock = Clock(1_900_000_000.0)
    store: Store
    if store_kind == "memory":
        store = MemoryStore()
    else:  # "sqlite" keeps the default durability (FULL: every commit fsynced); "sqlite, NORMAL" shows its cost
        synchronous: Literal["FULL", "NORMAL"] = "NORMAL" if store_kind.endswith("NORMAL") else "FULL"
        store = SQLiteStore(workdir / f"{uuid.uuid4().hex}.db", synchronous=synchronous)
    conversation_id, _ = build(store, policy, size, clock)
    api = CannedAPI(reply_text=reply_text)
    texts = _user_texts(size)
    whole: list[float] = []
    paired: list[float] = []
    summary_turns = 0
    normal_bodies: list[bytes] = []
    warm: list[float] = []
    in_call = InCall()
    if driver == "async":
        whole, paired, summary_turns, normal_bodies = asyncio.run(
            _measure_async(api, store, conversation_id, clock, texts)
        )
    else:
        chat = Conversation.open(conversation_id, store=store, client=in_call.wrap(api.client()), clock=clock)
        for turn in range(TURNS + 1):
            clock.now += GAP
            text = next(texts)
            before = len(api.bodies)
            gc.collect()  # each measurement starts without the garbage of the one before (the SDK's alike)
            in_call.reset()
            if driver == "stream":

                def action(text: str = text) -> None:
                    with chat.stream(text) as stream:
                        for _ in stream:
                            pass

                spent = _cpu(action)
            else:
                spent = _cpu(lambda text=text: chat.send(text))
            if turn == 0:
                continue  # the reopened conversation's first plan: not a per-turn cost
            if len(api.bodies) - before > 1:
                summary_turns += 1
                continue
            whole.append(spent)
            paired.append(spent - in_call.sdk * 1000)
            normal_bodies.append(api.bodies[-1])
        if driver == "send":
            warm = _back_to_back(chat, api, in_call, clock, texts)
    sent = len(json.loads(normal_bodies[-1])["messages"]) if normal_bodies else 0
    sdk = sdk_cost(driver, normal_bodies, reply_text)
    if isinstance(store, SQLiteStore):
        store.close()
    return Row(
        driver,
        store_kind,
        strategy_label(policy),
        size,
        statistics.median(whole) if whole else float("nan"),
        sdk,
        summary_turns,
        sent,
        statistics.median(paired) if paired else None,
        statistics.median(warm) if warm else None,
    )


def _back_to_back(
    chat: Conversation, api: CannedAPI, in_call: InCall, clock: Clock, texts: Iterator[str]
) -> list[float]:
    """Paired overhead of `TURNS` more turns sent one after the other, as a program sending turns in a loop does:
    no full collection before each (the collector runs when it runs, and its cost lands in the turn it hits), so
    the caches are as the previous turn left them rather than cold from walking every object of the heap."""
    paired: list[float] = []
    for _ in range(TURNS):
        clock.now += GAP
        text = next(texts)
        before = len(api.bodies)
        in_call.reset()
        spent = _cpu(lambda text=text: chat.send(text))
        if len(api.bodies) - before == 1:
            paired.append(spent - in_call.sdk * 1000)
    return paired


async def _measure_async(
    api: CannedAPI, store: Store, conversation_id: str, clock: Clock, texts: Iterator[str]
) -> tuple[list[float], list[float], int, list[bytes]]:
    in_call = InCall()
    chat = AsyncConversation.open(conversation_id, store=store, client=in_call.wrap(api.async_client()), clock=clock)
    whole: list[float] = []
    paired: list[float] = []
    bodies: list[bytes] = []
    summary_turns = 0
    for turn in range(TURNS + 1):
        clock.now += GAP
        before = len(api.bodies)
        gc.collect()
        in_call.reset()
        started = time.process_time()
        await chat.send(next(texts))
        spent = (time.process_time() - started) * 1000
        if turn == 0:
            continue
        if len(api.bodies) - before > 1:
            summary_turns += 1
            continue
        whole.append(spent)
        paired.append(spent - in_call.sdk * 1000)
        bodies.append(api.bodies[-1])
    return whole, paired, summary_turns, bodies


def sdk_cost(driver: str, bodies: list[bytes], reply_text: str = REPLY_TEXT) -> float:
    """Median CPU ms of the SDK alone sending `bodies` on the same canned transport."""
    if not bodies:
        return float("nan")
    api = CannedAPI(keep=False, reply_text=reply_text)
    timings: list[float] = []
    if driver == "async":

        async def run() -> None:
            client = api.async_client()
            for raw in bodies:
                request = {k: v for k, v in json.loads(raw).items() if k != "stream"}
                gc.collect()
                started = time.process_time()
                await client.messages.create(**request)
                timings.append((time.process_time() - started) * 1000)

        asyncio.run(run())
        return statistics.median(timings)
    client = api.client()
    for raw in bodies:
        request = {k: v for k, v in json.loads(raw).items() if k != "stream"}
        gc.collect()
        if driver == "stream":

            def action(request: dict[str, Any] = request) -> None:
                with client.messages.stream(**request) as stream:
                    for _ in stream:
                        pass
                    stream.get_final_message()

            timings.append(_cpu(action))
        else:
            timings.append(_cpu(lambda request=request: client.messages.create(**request)))
    return statistics.median(timings)


def memory(policy: Policy, size: int, workdir: Path) -> tuple[int, int]:
    """(heap bytes a reopened `size`-turn conversation holds after a few turns, its messages' raw JSON bytes)."""
    clock = Clock(1_900_000_000.0)
    store = SQLiteStore(workdir / f"mem-{uuid.uuid4().hex}.db")
    conversation_id, raw = build(store, policy, size, clock)
    api = CannedAPI(keep=False)
    client = api.client()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    chat = Conversation.open(conversation_id, store=store, client=client, clock=clock)
    for _ in range(3):
        clock.now += GAP
        chat.send("One more question about the plan, please.")
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del chat
    store.close()
    return held, raw


class _Compact(Mapping[str, Any]):
    """A message or block held as its values, its keys shared by every object of the same shape: about the
    smallest read-only mapping plain Python can hold. Not used by turnkeep: `floors` measures what holding
    messages this way would save and what it would cost the SDK."""

    __slots__ = ("_keys", "_values")
    _shapes: ClassVar[dict[tuple[str, ...], tuple[str, ...]]] = {}

    def __init__(self, value: Mapping[str, Any]) -> None:
        keys = tuple(value)
        self._keys = self._shapes.setdefault(keys, keys)
        self._values = tuple(
            tuple(_Compact(item) for item in child) if isinstance(child, list) else child for child in value.values()
        )

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[self._keys.index(key)]
        except ValueError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def items(self) -> Any:  # what the SDK copies a mapping with: one call, not a lookup per key
        return zip(self._keys, self._values, strict=True)


@dataclass
class Floors:
    commit_full_ms: float  # CPU of one durable (fsynced) SQLite commit of one small row
    commit_normal_ms: float  # the same with synchronous=NORMAL (no fsync at commit)
    dict_ratio: float  # a 10,000-turn history's messages held as dicts, over their JSON
    compact_ratio: float  # the same held as `_Compact` objects
    sdk_dict_ms: float  # the SDK alone sending that history (messages.create on the canned transport)
    sdk_compact_ms: float  # the same history held as `_Compact` objects
    sdk_ratio: float  # compact / dict, the median of the ratios of the two sent one after the other


def floors(workdir: Path, size: int) -> Floors:
    """What no per-turn code can go under on this machine, measured in the run: the CPU of the durable commits a
    SQLite turn makes, and the memory messages take as Python objects (dicts, or the most compact mapping) with
    what the compact form costs the SDK, which copies every mapping of a request before encoding it."""
    commits = {}
    for mode in ("FULL", "NORMAL"):
        db = sqlite3.connect(workdir / f"floor-{mode}.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={mode}")
        db.execute("CREATE TABLE rows (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        timings = []
        for _ in range(200):
            started = time.process_time()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO rows (body) VALUES (?)", ("x" * 300,))
            db.execute("COMMIT")
            timings.append((time.process_time() - started) * 1000)
        db.close()
        commits[mode] = statistics.median(timings)

    def as_dicts() -> list[Any]:
        """The history as `build` writes it (role and block type words shared, as a path loaded from a store
        holds them), each text its own string."""
        rng = random.Random(f"floors:{size}")
        return [message for _ in range(size) for message in _turn(filler_text(15, rng), filler_text(30, rng))]

    def held(make: Callable[[], list[Any]]) -> tuple[int, list[Any]]:
        gc.collect()
        tracemalloc.start()
        made = make()
        size_ = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size_, made

    dict_bytes, dicts = held(as_dicts)
    compact_bytes, compact = held(lambda: [_Compact(message) for message in as_dicts()])
    raw = sum(len(json.dumps(message, separators=(",", ":"))) for message in dicts)
    client = CannedAPI(keep=False).client()
    timings_by_form: dict[str, list[float]] = {"dict": [], "compact": []}
    for _ in range(9):  # alternated, so that a slow spell of the machine weighs on both forms alike
        for form, messages in (("dict", dicts), ("compact", compact)):
            gc.collect()
            timings_by_form[form].append(
                _cpu(lambda m=messages: client.messages.create(model=MODEL, max_tokens=1024, messages=m))
            )
    ratios = [c / d for d, c in zip(timings_by_form["dict"], timings_by_form["compact"], strict=True)]
    return Floors(
        commits["FULL"],
        commits["NORMAL"],
        dict_bytes / raw,
        compact_bytes / raw,
        statistics.median(timings_by_form["dict"]),
        statistics.median(timings_by_form["compact"]),
        statistics.median(ratios),
    )


def _turn(user: str, reply: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": user},
        {"role": "assistant", "content": [{"type": "text", "text": reply}]},
    ]


LONG_REPLY = " ".join(["Step"] * 400)


def per_event(workdir: Path) -> tuple[Row, Row]:
    """The same streamed turn (FullHistory, 100 turns, in memory) with the short canned reply and a 400-word one:
    what each streamed event costs turnkeep and the SDK."""
    short = measure("stream", "memory", FullHistory(), 100, workdir)
    long = measure("stream", "memory", FullHistory(), 100, workdir, reply_text=LONG_REPLY)
    return short, long


def matrix() -> list[tuple[str, str, Policy, int]]:
    """(driver, store, policy, size): everything in the full run; by default every policy through `send` on
    both stores, and `stream` / async `send` for FullHistory on MemoryStore."""
    runs: list[tuple[str, str, Policy, int]] = []
    for size in SIZES:
        for policy in policies():
            for store in ("memory", "sqlite"):
                runs.append(("send", store, policy, size))
                if store == "sqlite" and isinstance(policy, FullHistory):
                    runs.append(("send", "sqlite, NORMAL", policy, size))
                for driver in ("stream", "async"):
                    if FULL or (store == "memory" and isinstance(policy, FullHistory)):
                        runs.append((driver, store, policy, size))
    return runs


def _before(row: Row) -> str:
    old = BEFORE.get((row.driver, row.store, row.policy, row.turns))
    if old is None:
        return " | "
    return f"{old[0]:.2f} / {old[1]:.2f} ms | {old[0] / row.whole_ms:.1f}x"


def _events(reply_text: str) -> int:
    """SSE events of a canned stream: start, block start, a delta per word, block stop, message delta, stop."""
    return len(reply_text.split(" ")) + 5


def report(rows: list[Row], memory_rows: list[tuple[str, int, int]], streamed: tuple[Row, Row], floor: Floors) -> str:
    lines = [
        "## The whole send (`benchmarks/bench_send.py`)",
        "",
        f"Machine: {machine()}. Command: `.venv/bin/python -m benchmarks send`"
        f"{' with BENCH_SEND_FULL=1' if FULL else ''}.",
        f"Model `{MODEL}`; a history of N turns (about 50 tokens each) written directly into the store and "
        f"reopened; one unmeasured turn, then {TURNS} measured turns. CPU time per turn (median): the whole call, "
        "the SDK alone sending the same request bodies on the same `httpx2.MockTransport`, and turnkeep's "
        "overhead (the difference). Summarize's turns with a summary call are counted apart, not timed. "
        "`before`: the same run on the code before the send path was made incremental. `overhead, paired`: per "
        "turn, the whole call minus the CPU the SDK's own `messages.create` spent inside that very call (median; "
        "turnkeep's attempt observer, which runs inside that call, is counted as turnkeep's; for a stream, the SDK's "
        "time is that spent opening it, in each step of its iteration and in `get_final_message()`, between which "
        "turnkeep folds the events); it is what the target is judged on, because `whole - SDK alone` compares two "
        "separate runs and moves by milliseconds with the machine's load. A SQLite turn makes two "
        "durable commits (the pending user message before the call, the reply after it): `sqlite` is the store's "
        "default, `synchronous=FULL`, which fsyncs each; `sqlite, NORMAL` is the same run with "
        '`synchronous="NORMAL"` (still safe when the process crashes), so the difference is what the fsyncs '
        "cost this machine's CPU. Each measured turn follows a full collection (`gc.collect()`), so no turn pays for "
        "the garbage of the one before; that walk over the heap leaves the CPU caches cold, as a turn after "
        "seconds of waiting for the API would find them. `paired, back to back`: the same for turns sent one "
        "after the other without it (`send` only), as a loop over turns runs.",
        "",
        "| driver | store | policy | turns | messages sent | whole | SDK alone | whole - SDK alone "
        "| overhead, paired | target | | paired, back to back | before: whole / overhead | whole, before / now |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        target = TARGET_MS.get(row.turns)
        verdict = "" if target is None else ("**PASS**" if row.judged_ms <= target else "**FAIL**")
        summaries = f" ({row.summary_turns} summary turns)" if row.summary_turns else ""
        paired = f"{row.paired_ms:.2f} ms" if row.paired_ms is not None else "n/a"
        lines.append(
            f"| {row.driver} | {row.store} | `{row.policy}`{summaries} | {row.turns:,} | {row.sent:,} "
            f"| {row.whole_ms:.2f} ms | {row.sdk_ms:.2f} ms | {row.overhead_ms:.2f} ms | {paired} "
            f"| {'<= ' + format(target, 'g') + ' ms' if target else ''} | {verdict} "
            f"| {f'{row.warm_ms:.2f} ms' if row.warm_ms is not None else ''} | {_before(row)} |"
        )
    short, long = streamed
    added = _events(LONG_REPLY) - _events(REPLY_TEXT)
    ours = (long.judged_ms - short.judged_ms) / added * 1000
    sdks = (long.sdk_ms - short.sdk_ms) / added * 1000
    lines += [
        "",
        "Per streamed event: the same `stream` turn (FullHistory, 100 turns, in memory) with the canned reply of "
        f"{len(REPLY_TEXT.split(' '))} words and with one of {len(LONG_REPLY.split(' '))} words, a word per "
        f"event. Each added event costs turnkeep {ours:.1f} µs and the SDK alone {sdks:.1f} µs.",
        "",
        "| reply | events | overhead, paired | SDK alone |",
        "|---|---:|---:|---:|",
        *(
            f"| {len(text.split(' '))} words | {_events(text)} | {row.judged_ms:.2f} ms | {row.sdk_ms:.2f} ms |"
            for row, text in ((short, REPLY_TEXT), (long, LONG_REPLY))
        ),
    ]
    lines += [
        "",
        "Memory held by a reopened conversation after 3 turns (SQLiteStore, Python heap by `tracemalloc`). Before "
        "paths were decoded in one pass with shared words and normalize stopped copying unchanged messages: "
        "36.3 / 27.1 / 27.2 MiB (11.0x / 8.2x / 8.2x). What remains (`tracemalloc` snapshots, FullHistory, with "
        "the reply metas real turns store: 18.7 MiB) is the messages as Python dicts and strings, 9.5 MiB (2.9x "
        "their JSON on their own), the reply metas 3.2 MiB (a dict, a list of message ids and an id each; equal "
        "metas, as every plain user message's, are one object), node ids 1.6 MiB and `Node` records 1.4 MiB, and "
        "the learned sizes, the ledger's facts and the anchor about 1.5 MiB. Held as Python objects, these "
        "messages alone cannot take less than 2.83x their JSON (`sys.getsizeof` of each dict, list and string: "
        "318 bytes for a user message of 113 bytes of JSON, 654 for a reply of 231); see the floors below for "
        "what a more compact form would save and cost.",
        "",
        "| policy | turns | heap | messages as JSON | ratio | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, held, raw in memory_rows:
        ratio = held / raw
        verdict = "**PASS**" if ratio <= 3 else "**FAIL**"
        lines.append(
            f"| `{label}` | {SIZES[-1]:,} | {held / 2**20:.1f} MiB | {raw / 2**20:.1f} MiB | {ratio:.2f}x "
            f"| <= 3x {verdict} |"
        )
    growth = floor.sdk_ratio - 1
    lines += [
        "",
        "Floors, measured in the same run. A durable SQLite commit (WAL, `synchronous=FULL`, one small row) costs "
        f"{floor.commit_full_ms:.3f} ms of CPU on this machine ({floor.commit_normal_ms:.3f} ms without the "
        f"fsync): the two a SQLite turn makes take {2 * floor.commit_full_ms:.2f} ms of the 1 ms before turnkeep "
        f"does anything. A {SIZES[-1]:,}-turn history of the shapes above takes {floor.dict_ratio:.2f}x its JSON "
        f"as dicts (the list included), and {floor.compact_ratio:.2f}x held as the most compact read-only "
        "mapping plain Python offers (`_Compact`: the values in slots, the keys shared per shape), which would "
        f"leave {max(3 - floor.compact_ratio, 0):.2f}x for everything else a path holds (node ids, metas, the "
        "learned sizes); and the SDK copies every mapping of a request before encoding it, so sending that "
        f"history so held costs the SDK {floor.sdk_compact_ms:.1f} ms instead of {floor.sdk_dict_ms:.1f} ms "
        f"(medians; {growth:+.0%} by the median of the ratios of the two sent one after the other), on every turn "
        "of a FullHistory conversation.",
        "",
        "| floor | measured |",
        "|---|---:|",
        f"| durable SQLite commit, CPU (`synchronous=FULL` / `NORMAL`) | {floor.commit_full_ms:.3f} / "
        f"{floor.commit_normal_ms:.3f} ms |",
        f"| {SIZES[-1]:,}-turn history held as dicts / as `_Compact` mappings, over its JSON | "
        f"{floor.dict_ratio:.2f}x / {floor.compact_ratio:.2f}x |",
        f"| the SDK alone sending it, messages as dicts / as `_Compact` mappings | {floor.sdk_dict_ms:.1f} / "
        f"{floor.sdk_compact_ms:.1f} ms |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Measure the matrix, print the table and record it in docs/benchmarks.md."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for driver, store, policy, size in matrix():
            print(f"{driver} / {store} / {strategy_label(policy)} at {size:,} turns ...", flush=True)
            rows.append(measure(driver, store, policy, size, workdir))
            print(
                f"   whole {rows[-1].whole_ms:.2f} ms, SDK {rows[-1].sdk_ms:.2f} ms, "
                f"overhead {rows[-1].overhead_ms:.2f} ms, paired {rows[-1].paired_ms}",
                flush=True,
            )
        memory_rows = []
        for policy in policies()[:3] if not FULL else policies():
            print(f"memory / {strategy_label(policy)} at {SIZES[-1]:,} turns ...", flush=True)
            held, raw = memory(policy, SIZES[-1], workdir)
            memory_rows.append((strategy_label(policy), held, raw))
        print("stream / memory / full-history at 100 turns, short and long replies ...", flush=True)
        streamed = per_event(workdir)
        print("floors ...", flush=True)
        floor = floors(workdir, SIZES[-1])
    section = report(rows, memory_rows, streamed, floor)
    print(section)
    write_section("send", section)


if __name__ == "__main__":
    main()
