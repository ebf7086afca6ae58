"""Message threads (beta `message-threads-2026-08-12`, reference §7): the server holds a conversation between turns.

A request with `thread: {"type": "create"}` carries the whole conversation, `system` and `tools`; once its reply is
complete the server holds the conversation, reply included, under the reply's `id`. A request with
`thread: {"type": "continue", "previous_message_id": "msg_…"}` carries only the messages after that reply and no
`system`/`tools`; `ThreadStore.begin` rebuilds the request as if it had been sent unthreaded, so the rest of the
emulator (validation, cache, responders, billing) never sees a `thread` at all.

How SERVER drives a store for one request (see `ThreadStore` for each call):

```
turn = store.begin(scope, body)         # ApiError → answer it; nothing was marked
try:
    reply = ... answer turn.body ...    # the full conversation, without `thread`
except BaseException:
    store.abort(scope, turn)            # releases the in-flight mark of a `continue`
    raise
store.complete(scope, turn, reply)      # reply (JSON dict) becomes the one reply the thread continues from
```

The state of one thread, and the error each `continue` meets:

```
             create completes                 continue from head begins
  (none) ─────────────────────▶  head open  ─────────────────────────────▶  head in flight
                                    ▲   ▲                                     │      │
                                    │   └──────────── abort ──────────────────┘      │ complete
                                    └──────── the new reply becomes the head ◀───────┘ (old head: continued)
```

- unknown id, other API key, or expired thread → 404 `thread_not_found` (the SDK replays with `create`);
- a reply that has been continued before → 400 `thread_already_continued` (each reply is continued once);
- the head while a `continue` from it is in flight → 400 `thread_continue_in_flight`.

The error types follow the SDK (`anthropic.types.ThreadAlreadyContinuedError` etc. subclass `BadRequestError`, only
`ThreadNotFoundError` is a `NotFoundError`), so the SDK does not retry them itself; its thread helper replays the
conversation with `create` after any of the three.

Emulator choices where the API documentation is silent (documented, so tests and turnkeep can rely on them):

- **Fixed fields** (`FINGERPRINT_FIELDS`): `model`, `speed` (absent = `"standard"`) and the `thinking` type
  (absent = none) are recorded at `create`; a `continue` that differs in any → 400 `thread_fingerprint_mismatch`
  naming each field. Everything else (`max_tokens`, `tool_choice`, `stop_sequences`, `output_config`, top-level
  `cache_control`, `metadata` …) may change from turn to turn.
- **Create-only fields**: `system` and `tools` on a `continue` → 400 `invalid_request_error` (no error code): the
  thread keeps the values of its `create`; to change them the client replays with `create`.
- **Unsupported** (400 `thread_unsupported_request`, `error.details.unsupported` naming them, from the SDK's
  `ThreadUnsupportedFeatureName`): `context_management` (any edits), `fallbacks`, and manual extended thinking
  (`thinking.type == "enabled"`; adaptive thinking is threadable). The explicit compaction request (top-level
  `compaction`) is also rejected with this code, without an `unsupported` list since the SDK's names have no entry
  for it (the SDK's tool runner then compacts unthreaded). `cache_control` is threadable here: the docs show
  top-level caching on threads. The organisation settings `hipaa` and `inference_hooks` are not emulated.
- **Stored history**: messages up to the continued reply are held without the `cache_control` of their blocks (as
  the SDK's replay sends them: each breakpoint was set for the turn that sent it first), so a rebuilt request keeps
  only the new turn's breakpoints plus those of `system`/`tools`. A reply with empty `content` (`max_tokens: 0`)
  adds no assistant message.
- **Expiry**: 5 minutes (`expiry_seconds`) after the thread's last request began or its last reply was stored,
  whichever is later; a thread with a request in flight does not expire. Expired threads are dropped on every
  call, so memory stays flat.
- The response shape is unchanged by threads (docs: "The response shape is unchanged"), so `response_fields`
  returns no fields.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from turnkeep.emulator.clock import Clock
from turnkeep.emulator.errors import ApiError, invalid_request, not_found
from turnkeep.errors import InvalidValue

__all__ = [
    "CREATE_ONLY_FIELDS",
    "FINGERPRINT_FIELDS",
    "THREADS_BETA",
    "ThreadStore",
    "ThreadTurn",
    "ThreadUnsupportedRequest",
    "without_cache_control",
]

THREADS_BETA: Final = "message-threads-2026-08-12"

CREATE_ONLY_FIELDS: Final = ("system", "tools")
"""Fields a thread takes from its `create`; a `continue` must not send them."""

FINGERPRINT_FIELDS: Final = ("model", "speed", "thinking")
"""Fields every turn of a thread must send with the value of its `create` (see the module docstring)."""

# Keys under which blocks nest (same set as the SDK's replay uses), so a tool's free-form `input` stays untouched.
_KEYS_THAT_HOLD_BLOCKS: Final = frozenset({"content", "source", "tool", "definition", "tool_references"})


@dataclass(frozen=True)
class ThreadTurn:
    """One request as the rest of the emulator answers it.

    `body` is the full request as if sent unthreaded (system, tools and every message, no `thread`). `thread_id`
    names the thread the request creates or extends (a `create`'s thread exists once it completes) and is `None`
    for an unthreaded request; `previous_message_id` is the reply a `continue` continues from (`None` otherwise).
    """

    body: dict[str, Any]
    thread_id: str | None
    previous_message_id: str | None


class ThreadUnsupportedRequest(ApiError):
    """400 `thread_unsupported_request`; `error.details.unsupported` lists the offending fields when known."""

    def __init__(self, message: str, unsupported: Sequence[str] | None) -> None:
        super().__init__(400, "invalid_request_error", message, error_code="thread_unsupported_request")
        self.unsupported = list(unsupported) if unsupported is not None else None

    def body(self, request_id: str) -> dict[str, Any]:
        """The error body, with `unsupported` beside `error_code` when known."""
        rendered = super().body(request_id)
        if self.unsupported is not None:
            rendered["error"]["details"]["unsupported"] = list(self.unsupported)
        return rendered


@dataclass
class _Thread:
    id: str
    scope: str
    fixed: dict[str, Any]  # system/tools as sent at create (absent keys stay absent)
    fingerprint: dict[str, Any]
    messages: list[dict[str, Any]]  # the conversation up to and including `head`, without cache_control
    head: str  # the one reply that can be continued
    last_used: float
    head_in_flight: bool = False
    continued: set[str] = field(default_factory=set)


class ThreadStore:
    """Server-held conversations of every API key (`scope`), with their expiry on `clock`. Thread-safe."""

    def __init__(self, clock: Clock, *, expiry_seconds: float = 300.0) -> None:
        if expiry_seconds <= 0:
            raise InvalidValue(f"expiry_seconds must be positive, not {expiry_seconds!r}")
        self._clock = clock
        self._expiry = float(expiry_seconds)
        self._lock = threading.Lock()
        self._threads: dict[str, _Thread] = {}
        self._by_reply: dict[tuple[str, str], str] = {}  # (scope, reply id) → thread id
        self._ids = itertools.count(1)

    def begin(self, scope: str, body: Mapping[str, Any]) -> ThreadTurn:
        """Check a request's `thread` and return it as an unthreaded request; a `continue` marks its reply in flight.

        A body without `thread` (or `thread: null`) comes back unchanged as an unthreaded turn, so SERVER may call
        the store for every request. Raises `ApiError` (nothing is marked then): 400 for a malformed `thread`,
        `system`/`tools` on a `continue`, `thread_unsupported_request`, `thread_already_continued`,
        `thread_continue_in_flight`, `thread_fingerprint_mismatch`; 404 `thread_not_found`.
        """
        thread_param = body.get("thread")
        request = {key: copy.deepcopy(value) for key, value in body.items() if key != "thread"}
        if thread_param is None:
            return ThreadTurn(body=request, thread_id=None, previous_message_id=None)
        kind, previous_id = _parse_thread_param(thread_param)
        _check_threadable(request)
        if kind == "create":
            with self._lock:
                thread_id = f"thr_{next(self._ids):012d}"
            return ThreadTurn(body=request, thread_id=thread_id, previous_message_id=None)
        assert previous_id is not None
        sent_fixed = [f"`{name}`" for name in CREATE_ONLY_FIELDS if name in request]
        if sent_fixed:
            raise invalid_request(
                f'{" and ".join(sent_fixed)} cannot be sent with `thread.type` "continue": the thread keeps the '
                "values of the request that created it. To change them, send the full conversation with "
                '`thread: {"type": "create"}`.'
            )
        with self._lock:
            now = self._clock.now()
            self._drop_expired(now)
            thread = self._find(scope, previous_id)
            if previous_id != thread.head:
                raise invalid_request(
                    f"The response {previous_id} has already been continued, and each response can be continued "
                    "only once. Continue from the thread's most recent response `id`.",
                    error_code="thread_already_continued",
                )
            if thread.head_in_flight:
                raise invalid_request(
                    f"Another request is still continuing from {previous_id}. Wait for it to complete and continue "
                    'from its response `id`, or replay the full conversation with `thread: {"type": "create"}`.',
                    error_code="thread_continue_in_flight",
                )
            changed = [name for name in FINGERPRINT_FIELDS if _fingerprint(request)[name] != thread.fingerprint[name]]
            if changed:
                names = ", ".join(f"`{name}`" for name in changed)
                raise invalid_request(
                    f"{names} differ{'s' if len(changed) == 1 else ''} from the value stored with the thread. Send "
                    'the stored values, or replay the full conversation with `thread: {"type": "create"}` to change '
                    "them.",
                    error_code="thread_fingerprint_mismatch",
                )
            thread.head_in_flight = True
            thread.last_used = now
            new_messages = request.get("messages") or []
            rebuilt = {**request, **copy.deepcopy(thread.fixed)}
            rebuilt["messages"] = [*copy.deepcopy(thread.messages), *new_messages]
            return ThreadTurn(body=rebuilt, thread_id=thread.id, previous_message_id=previous_id)

    def complete(self, scope: str, turn: ThreadTurn, reply: Mapping[str, Any]) -> None:
        """Store the conversation of `turn` with `reply` (the response message as JSON), which becomes continuable.

        For a `create` this starts the thread; for a `continue` the continued reply becomes spent. No-op for an
        unthreaded turn. A `continue` whose thread has gone meanwhile (it cannot expire while in flight, but the
        store may have been cleared) stores nothing: the next `continue` then meets `thread_not_found`.
        """
        if turn.thread_id is None:
            return
        reply_id = str(reply["id"])
        stored = [without_cache_control(message) for message in turn.body.get("messages") or []]
        content = reply.get("content") or []
        if content:
            stored.append({"role": str(reply.get("role", "assistant")), "content": copy.deepcopy(list(content))})
        with self._lock:
            now = self._clock.now()
            self._drop_expired(now)
            if turn.previous_message_id is None:
                thread = _Thread(
                    id=turn.thread_id,
                    scope=scope,
                    fixed={name: copy.deepcopy(turn.body[name]) for name in CREATE_ONLY_FIELDS if name in turn.body},
                    fingerprint=_fingerprint(turn.body),
                    messages=stored,
                    head=reply_id,
                    last_used=now,
                )
                self._threads[thread.id] = thread
            else:
                existing = self._threads.get(turn.thread_id)
                if existing is None or existing.head != turn.previous_message_id:
                    return
                thread = existing
                thread.continued.add(thread.head)
                thread.head = reply_id
                thread.head_in_flight = False
                thread.messages = stored
                thread.last_used = now
            self._by_reply[(scope, reply_id)] = thread.id

    def abort(self, scope: str, turn: ThreadTurn) -> None:
        """The request of `turn` failed: its reply can be continued again. No-op for a `create` or unthreaded turn."""
        if turn.thread_id is None or turn.previous_message_id is None:
            return
        with self._lock:
            thread = self._threads.get(turn.thread_id)
            if thread is not None and thread.scope == scope and thread.head == turn.previous_message_id:
                thread.head_in_flight = False

    def response_fields(self, turn: ThreadTurn) -> dict[str, Any]:  # noqa: ARG002 - part of SERVER's interface
        """Extra top-level fields of the response: none, because threads leave the response shape unchanged."""
        return {}

    def entry_count(self) -> int:
        """How many threads are held (expired ones are dropped first)."""
        with self._lock:
            self._drop_expired(self._clock.now())
            return len(self._threads)

    def clear(self) -> None:
        """Forget every thread."""
        with self._lock:
            self._threads.clear()
            self._by_reply.clear()

    def _find(self, scope: str, previous_id: str) -> _Thread:
        thread_id = self._by_reply.get((scope, previous_id))
        thread = self._threads.get(thread_id) if thread_id is not None else None
        if thread is None:
            raise not_found(
                f"No usable thread state was found for previous_message_id {previous_id}. Replay the full "
                'conversation with `thread: {"type": "create"}` to start a new thread.',
                error_code="thread_not_found",
            )
        return thread

    def _drop_expired(self, now: float) -> None:
        expired = [
            thread
            for thread in self._threads.values()
            if not thread.head_in_flight and now >= thread.last_used + self._expiry
        ]
        for thread in expired:
            del self._threads[thread.id]
            for reply_id in (*thread.continued, thread.head):
                self._by_reply.pop((thread.scope, reply_id), None)


def without_cache_control(value: Any) -> Any:
    """A deep copy of a message (or block, or list of them) without `cache_control` at any depth where blocks nest."""
    if isinstance(value, Mapping):
        return {
            key: without_cache_control(item) if key in _KEYS_THAT_HOLD_BLOCKS else copy.deepcopy(item)
            for key, item in value.items()
            if key != "cache_control"
        }
    if isinstance(value, list):
        return [without_cache_control(item) for item in value]
    return copy.deepcopy(value)


def _parse_thread_param(thread: Any) -> tuple[str, str | None]:
    if not isinstance(thread, Mapping):
        raise invalid_request("thread: Input should be an object")
    kind = thread.get("type")
    if kind == "create":
        extra = sorted(set(thread) - {"type"})
        if extra:
            raise invalid_request(f"thread.{extra[0]}: Extra inputs are not permitted")
        return "create", None
    if kind == "continue":
        extra = sorted(set(thread) - {"type", "previous_message_id"})
        if extra:
            raise invalid_request(f"thread.{extra[0]}: Extra inputs are not permitted")
        previous_id = thread.get("previous_message_id")
        if not isinstance(previous_id, str) or not previous_id:
            raise invalid_request("thread.previous_message_id: Field required (a non-empty string)")
        return "continue", previous_id
    raise invalid_request(f"thread.type: Input should be 'create' or 'continue', not {kind!r}")


def _check_threadable(request: Mapping[str, Any]) -> None:
    unsupported: list[str] = []
    if request.get("context_management") is not None:
        unsupported.append("context_management")
    if request.get("fallbacks"):
        unsupported.append("fallbacks")
    thinking = request.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        unsupported.append("thinking")
    if unsupported:
        raise ThreadUnsupportedRequest(
            f"`thread` cannot be combined with {', '.join(f'`{name}`' for name in unsupported)}. Send the full "
            "conversation without `thread`, or change that field.",
            unsupported,
        )
    if request.get("compaction") is not None:
        raise ThreadUnsupportedRequest(
            "A compaction request (`compaction`) cannot be threaded. Send the full conversation without `thread`.",
            None,
        )


def _fingerprint(request: Mapping[str, Any]) -> dict[str, Any]:
    thinking = request.get("thinking")
    return {
        "model": request.get("model"),
        "speed": request.get("speed") or "standard",
        "thinking": thinking.get("type") if isinstance(thinking, Mapping) else None,
    }
