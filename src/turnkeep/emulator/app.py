"""The emulator's HTTP face: a Starlette app that speaks the Messages API on loopback.

`create_app()` builds one `Emulator` (all state of one instance: clock, prompt cache, diagnostics, bill,
threads, scripted replies and faults per API key) and thin routes over it:

| route                               | what                                                                  |
|-------------------------------------|-----------------------------------------------------------------------|
| `POST /v1/messages`                 | a reply as JSON, or as SSE events with `stream: true`                 |
| `POST /v1/messages/count_tokens`    | `{"input_tokens": N}`, exactly what `usage` bills for the same body   |
| `GET /v1/models`, `/v1/models/{id}` | the catalog as `anthropic.types.ModelInfo`, paginated like the API    |
| `GET`/`POST /_emulator/clock`       | read the clock; `{"advance": s}` or `{"set": ts}`                     |
| `POST /_emulator/script`            | `{"replies": [...]}` queued for the caller's API key                  |
| `POST /_emulator/faults`            | `{"faults": [...]}` queued for the caller's API key                   |
| `GET /_emulator/bill`               | the caller's bill (`?key=` another key, `?all=1` every key)           |
| `GET /_emulator/stats`              | cache entries, threads, diagnostics fingerprints held in memory       |
| `POST /_emulator/reset`             | forget cache, bill, queues, threads; `{"clock": true}` rewinds it     |

Request headers: `x-emulator-responder` (recall | echo | scripted), `x-emulator-script` (JSON of one scripted
reply), `x-emulator-fault` (JSON or a short form such as `529`), `x-emulator-advance` (seconds to move the clock
first). A `POST /v1/messages` goes: auth → size → JSON → fault → clock header → model → thread → validation →
compaction / context editing → tokens → responder → cache → usage → diagnostics → bill → thread/diagnostics
record → a `slow` fault's delay → response (the reply comes before the cache so a request rejected for a bad script
writes nothing; the delay comes after the bill, so a client that times out has still been billed).
Every response carries a `request-id` header (errors repeat it in their body).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnkeep.core import values
from turnkeep.core.catalog import THINKING_TYPES, Catalog, ModelInfo, default_catalog
from turnkeep.emulator import compaction, history, responders, tokenizer, validation
from turnkeep.emulator.billing import Bill
from turnkeep.emulator.cache import Diagnostics, PromptCache
from turnkeep.emulator.clock import Clock
from turnkeep.emulator.credits import Credits
from turnkeep.emulator.errors import ApiError, invalid_request, not_found
from turnkeep.emulator.faults import Fault, RandomFaults, parse_fault, parse_fault_header
from turnkeep.emulator.threads import ThreadStore, ThreadTurn
from turnkeep.emulator.validation import MAX_REQUEST_BYTES
from turnkeep.errors import InvalidValue

__all__ = ["Emulator", "create_app", "quiet_deliberate_drops", "sse_events"]


_REQUEST_ID_KEY = "turnkeep.request_id"
_EPOCH = "1970-01-01T00:00:00Z"  # ModelInfo.created_at "may be an epoch value if the release date is unknown"


class Emulator:
    """All state of one emulator instance, and the request pipeline over it (no HTTP here)."""

    def __init__(
        self,
        *,
        clock: Clock | str | None = None,
        responder: str = "recall",
        catalog: Catalog | None = None,
        fault_rate: float = 0.0,
        seed: int | None = None,
        memo: bool = True,
    ) -> None:
        if responder not in responders.MODES:
            raise InvalidValue(f"unknown responder {responder!r}; expected one of {', '.join(responders.MODES)}")
        self.clock = clock if isinstance(clock, Clock) else Clock("virtual" if clock == "virtual" else "real")
        self.start = self.clock.now()
        self.catalog = catalog if catalog is not None else default_catalog()
        self.responder = responder
        # Work out only what is new in each request's history (`turnkeep.emulator.history`); False reads every
        # request in full, the reference the memo is tested against. The answers are the same either way.
        self.memo = memo
        self.history = history.History()
        self.cache = PromptCache(self.clock, memo=memo)
        self.diagnostics = Diagnostics(self.clock, memo=memo)
        self.bill = Bill(self.catalog)
        self.threads = ThreadStore(self.clock)
        self.credits = Credits(self.clock)
        self.random_faults = RandomFaults(fault_rate, seed)
        self.scripts: dict[str, deque[dict[str, Any]]] = {}
        self.faults: dict[str, deque[Fault]] = {}
        self.in_flight = 0  # `POST /v1/messages` handlers running (a `slow` reply counts until its delay is over)
        #: Called with (API key, request body as sent, its segments) for every Messages request answered, once
        #: its reply is made and billed, before it is sent (so before a `slow` fault's delay or a stream's
        #: events): a tool that studies the requests (the simulator's bounds) reads them here rather than parsing
        #: and cutting them again.
        self.on_answer: Callable[[str, Mapping[str, Any], list[tokenizer.Segment]], None] | None = None
        self._salt = secrets.token_hex(4)
        self._counter = itertools.count(1)

    # --- ids ---

    def new_id(self, prefix: str) -> str:
        """A unique id such as `msg_01…` (not part of any cache key, so randomness is harmless)."""
        return f"{prefix}_01{self._salt}{next(self._counter):014d}"

    # --- queues ---

    def take_fault(self, scope: str, header: str | None) -> Fault | None:
        """The fault for this request: the header's, else the next queued for the key, else a random one."""
        if header:
            try:
                return parse_fault_header(header)
            except (ValueError, TypeError) as err:
                raise invalid_request(f"x-emulator-fault: {err}") from err
        queue = self.faults.get(scope)
        if queue:
            return queue.popleft()
        return self.random_faults.draw()

    def take_script(self, scope: str, header: str | None) -> dict[str, Any] | None:
        """The scripted reply for this request: the header's, else the next queued for the key, else None."""
        if header:
            try:
                script = json.loads(header)
            except (ValueError, RecursionError) as err:
                raise invalid_request(f"x-emulator-script: not JSON: {err}") from err
            if not isinstance(script, dict):
                raise invalid_request("x-emulator-script: must be a JSON object")
            _check_depth(script, "x-emulator-script")
            return script
        queue = self.scripts.get(scope)
        if queue:
            return queue.popleft()
        return None

    def queue_scripts(self, scope: str, replies: list[dict[str, Any]]) -> int:
        """Queue scripted replies for an API key; returns how many are queued now."""
        _check_depth(replies, "replies")
        queue = self.scripts.setdefault(scope, deque())
        queue.extend(replies)
        return len(queue)

    def queue_faults(self, scope: str, faults: list[Fault]) -> int:
        """Queue faults for an API key; returns how many are queued now."""
        queue = self.faults.setdefault(scope, deque())
        queue.extend(faults)
        return len(queue)

    def reset(self, *, clock: bool = False) -> None:
        """Forget the cache, diagnostics, bill, threads and queues; with `clock`, rewind a virtual clock."""
        self.cache.clear()
        self.diagnostics.clear()
        self.bill.reset()
        self.credits.reset()
        self.threads.clear()
        self.scripts.clear()
        self.faults.clear()
        if clock:
            if self.clock.mode != "virtual":
                raise invalid_request("only a virtual clock can be reset")
            self.clock.set(self.start)

    def stats(self) -> dict[str, Any]:
        """What the instance holds in memory (for soak tests: it should stay flat)."""
        return {
            "cache_entries": self.cache.entry_count(),
            "threads": self.threads.entry_count(),
            "diagnostics_entries": self.diagnostics.entry_count(),
            "queued_scripts": sum(len(q) for q in self.scripts.values()),
            "queued_faults": sum(len(q) for q in self.faults.values()),
            "in_flight": self.in_flight,
            "now": self.clock.now(),
        }

    # --- the pipeline ---

    def analyse(self, body: Mapping[str, Any]) -> history.Analysis | None:
        """The remembered facts of a request body's messages (`turnkeep.emulator.history`), or None without memo."""
        return self.history.analyse(body) if self.memo and type(body) is dict else None

    def check_depth(self, body: Any) -> history.Analysis | None:
        """Refuse a request body nested beyond the limit (see `_check_depth`), its messages judged by their
        remembered heights; returns the body's analysis (`analyse`) for the rest of the request."""
        analysis = self.analyse(body)
        limit = values.MAX_DEPTH + values.ENVELOPE_DEPTH
        if analysis is None or analysis.nests_deeper_than(limit, _nests_deeper_than):
            _check_depth(body, "")
        return analysis

    def model_for(self, body: Mapping[str, Any]) -> ModelInfo:
        """The catalog entry for the request's `model`; 400 when missing, 404 when unknown."""
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise invalid_request("model: Field required")
        if model_id not in self.catalog:
            raise not_found(f"model: {model_id}")
        model = self.catalog.get(model_id)
        if model.lifecycle == "retired":
            # The API answers a retired model like one it never had.
            raise not_found(f"model: {model_id}")
        return model

    def count_tokens(
        self,
        scope: str,
        body: Mapping[str, Any],
        *,
        api_version: str,
        betas: frozenset[str],
        analysis: history.Analysis | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/messages/count_tokens`: the input tokens of `body` (no cache, no bill).

        Compaction blocks and context-management edits apply as they would to `POST /v1/messages`, so the count is
        the input the same request is billed for (its top-level usage).
        """
        del scope  # counting is free and not scoped
        model = self.model_for(body)
        analysis = analysis if analysis is not None and analysis.body is body else self.analyse(body)
        validation.validate_request(
            body, model=model, api_version=api_version, betas=betas, endpoint="count_tokens", history=analysis
        )
        seen: Mapping[str, Any] = body
        if body.get("context_management") is not None or _has_compaction(body, analysis):
            seen = compaction.apply_context_management(body, generation=model.tokenizer).body
        if analysis is not None and seen is body:
            return {"input_tokens": analysis.input_tokens(model.tokenizer)}
        return {"input_tokens": tokenizer.input_tokens(seen, model.tokenizer)}

    def create_message(
        self,
        scope: str,
        body: Mapping[str, Any],
        *,
        api_version: str,
        betas: frozenset[str],
        mode: str,
        script_header: str | None = None,
        bill: bool = True,
        analysis: history.Analysis | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/messages` after auth, parsing and faults: the reply message as JSON (raises `ApiError`).
        `bill=False` leaves billing to the caller (a stream bills what it sent, see `_stream_response`).

        A scripted reply (`script_header`, else the key's queue) is taken only once the request is valid, so a
        rejected request does not use up the reply queued for the next one. `analysis`: `analyse(body)` when the
        caller has it already.
        """
        model = self.model_for(body)
        sent = body
        turn: ThreadTurn | None = None
        if body.get("thread") is not None:
            # The rest of the pipeline sees the rebuilt body, without `thread`: check its beta header here.
            validation.check_beta_parameters(
                validation.Request(body=body, model=model, api_version=api_version, betas=betas, endpoint="messages")
            )
            if not model.threads:
                raise invalid_request(
                    "thread: message threads are not supported on this model; send the full conversation "
                    "without `thread`",
                    error_code="thread_unsupported_request",
                )
            turn = self.threads.begin(scope, body)
            body = turn.body
            analysis = None
        try:
            credit = self.credits.redeem(scope, body, betas)
            message, segments = self._answer(
                scope,
                body,
                model,
                api_version=api_version,
                betas=betas,
                mode=mode,
                script_header=script_header,
                analysis=analysis,
            )
            if credit is not None:
                message["usage"]["fallback_credit"] = credit
            self._issue_credit(scope, body, message)
            if bill:
                self.bill.add(scope, model, message["usage"])
            if turn is not None:
                self.threads.complete(scope, turn, message)
                message.update(self.threads.response_fields(turn))
        except BaseException:
            if turn is not None:
                self.threads.abort(scope, turn)
            raise
        self.diagnostics.record(message["id"], scope=scope, model=model.id, segments=segments)
        if self.on_answer is not None:
            if analysis is not None and analysis.body is sent:
                cut = analysis.segments(model.tokenizer)
            else:
                cut = tokenizer.request_segments(sent, model.tokenizer)
            self.on_answer(scope, sent, cut)
        return message

    def _issue_credit(self, scope: str, body: Mapping[str, Any], message: dict[str, Any]) -> None:
        """A refusal that carries a fallback credit token (scripted; `true` mints one) can be redeemed later."""
        details = message.get("stop_details")
        if not isinstance(details, dict) or details.get("type") != "refusal":
            return
        token = details.get("fallback_credit_token")
        if token is True:
            token = details["fallback_credit_token"] = self.credits.mint()
        if isinstance(token, str) and token:
            recommended = details.get("recommended_model")
            self.credits.issue(scope, token, body, recommended if isinstance(recommended, str) else None)

    def _answer(
        self,
        scope: str,
        body: Mapping[str, Any],
        model: ModelInfo,
        *,
        api_version: str,
        betas: frozenset[str],
        mode: str,
        script_header: str | None,
        analysis: history.Analysis | None,
    ) -> tuple[dict[str, Any], list[tokenizer.Segment]]:
        if analysis is None or analysis.body is not body:
            analysis = self.analyse(body)
        validation.validate_request(
            body, model=model, api_version=api_version, betas=betas, endpoint="messages", history=analysis
        )
        generation = model.tokenizer
        seen: Mapping[str, Any] = body
        context_management: dict[str, Any] | None = None
        lead: list[dict[str, Any]] = []
        reply: responders.Reply | None = None
        usage: dict[str, Any] | None = None
        iterations: list[dict[str, Any]] = []
        if body.get("compaction") is not None:
            # A compaction request is the compaction call alone: its usage is its one `compaction` iteration.
            block = compaction.explicit_compaction(body, generation=generation)
            reply = responders.Reply([block], "compaction")
            usage = compaction.explicit_compaction_usage(body, block, generation=generation)
        elif body.get("context_management") is not None or _has_compaction(body, analysis):
            outcome = compaction.apply_context_management(body, generation=generation)
            seen = outcome.body
            iterations = list(outcome.iterations)
            if "context_management" in body:
                context_management = {"applied_edits": list(outcome.applied_edits)}
            if outcome.compaction_block is not None:
                lead = [outcome.compaction_block]
                if outcome.pause:
                    # Paused right after compacting: no sampling happened, so the top level is the compaction call.
                    reply = responders.Reply(lead, "compaction")
                    usage = {**{k: v for k, v in iterations[0].items() if k != "type"}, "iterations": iterations}
        if analysis is not None and seen is body:
            segments = analysis.segments(generation)
        else:
            segments = tokenizer.request_segments(seen, generation)
        if reply is None:
            # The reply first, then the cache: a request rejected for a bad script writes no cache entry.
            reply = self._sample(scope, seen, model, body=body, lead=lead, mode=mode, script_header=script_header)
        if usage is None:
            cached = self.cache.process(
                scope=scope, model=model, segments=segments, automatic_ttl=_automatic_ttl(body.get("cache_control"))
            )
            # A compaction block leading the reply is the compaction call's output (its own iteration), not this one's.
            sampled = reply.content[len(lead) :]
            usage = {**cached.usage_fields(), "output_tokens": tokenizer.output_tokens(sampled, generation)}
            if iterations:
                usage["iterations"] = [*iterations, {"type": "message", **usage}]
        usage["service_tier"] = "standard"
        message: dict[str, Any] = {
            "id": self.new_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": reply.content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": reply.stop_sequence,
            "stop_details": reply.stop_details,
            "usage": usage,
        }
        if context_management is not None:
            message["context_management"] = context_management
        diagnostics = body.get("diagnostics")
        if isinstance(diagnostics, Mapping):
            previous = diagnostics.get("previous_message_id")
            message["diagnostics"] = self.diagnostics.diagnose(
                previous if isinstance(previous, str) else None, scope=scope, model=model.id, segments=segments
            )
        return message, segments

    def _sample(
        self,
        scope: str,
        seen: Mapping[str, Any],
        model: ModelInfo,
        *,
        body: Mapping[str, Any],
        lead: list[dict[str, Any]],
        mode: str,
        script_header: str | None,
    ) -> responders.Reply:
        """The model's reply to `seen` (what it sees), signed against `body` (what the client keeps)."""
        script = self.take_script(scope, script_header)
        try:
            return responders.respond(
                seen,
                model=model,
                generation=model.tokenizer,
                mode="scripted" if script is not None else mode,
                script_reply=script,
                ids=self.new_id,
                sign_body=body,
                lead=lead,
            )
        except ValueError as err:
            raise invalid_request(f"emulator script: {err}") from err


def _has_compaction(body: Mapping[str, Any], analysis: history.Analysis | None) -> bool:
    return analysis.compaction if analysis is not None else _has_compaction_block(body)


def _has_compaction_block(body: Mapping[str, Any]) -> bool:
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(
            isinstance(block, Mapping) and block.get("type") == "compaction" for block in content
        ):
            return True
    return False


def _automatic_ttl(cache_control: object) -> str | None:
    if not isinstance(cache_control, Mapping):
        return None
    ttl = cache_control.get("ttl", "5m")
    return str(ttl) if ttl in ("5m", "1h") else "5m"


# --- SSE -------------------------------------------------------------------------------------------------------------


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str, size: int = 24) -> list[str]:
    """`text` in pieces of about `size` characters, split after whitespace; joined they give `text` back."""
    if not text:
        return []
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        token = word if not current and not pieces else " " + word
        if current and len(current) + len(token) > size:
            pieces.append(current)
            current = token
        else:
            current += token
    pieces.append(current)
    return [piece for piece in pieces if piece]


def sse_events(message: Mapping[str, Any]) -> Iterator[bytes]:
    """The SSE events of a finished reply, in the order of reference §3; folded they give `message` back."""
    usage = message["usage"]
    start_usage = {k: v for k, v in usage.items() if k != "iterations"}
    start_usage["output_tokens"] = 1
    start = {key: value for key, value in message.items() if key not in ("content", "usage", "context_management")}
    start.update(content=[], stop_reason=None, stop_sequence=None, stop_details=None, usage=start_usage)
    yield _event("message_start", {"type": "message_start", "message": start})
    yield _event("ping", {"type": "ping"})
    for index, block in enumerate(message["content"]):
        yield from _block_events(index, block)
    delta_usage = {
        key: usage[key]
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
        if key in usage
    }
    for key in ("iterations", "fallback_credit"):
        if key in usage:
            delta_usage[key] = usage[key]
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {
            "stop_reason": message["stop_reason"],
            "stop_sequence": message["stop_sequence"],
            "stop_details": message.get("stop_details"),
        },
        "usage": delta_usage,
    }
    if "context_management" in message:
        delta["context_management"] = message["context_management"]
    yield _event("message_delta", delta)
    yield _event("message_stop", {"type": "message_stop"})


def _block_events(index: int, block: Mapping[str, Any]) -> Iterator[bytes]:
    kind = block.get("type")

    def delta(payload: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})

    if kind == "text":
        start = {key: value for key, value in block.items() if key != "text"}
        start["text"] = ""
        yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        for piece in _chunks(str(block.get("text", ""))):
            yield delta({"type": "text_delta", "text": piece})
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        for piece in _chunks(str(block.get("thinking", ""))):
            yield delta({"type": "thinking_delta", "thinking": piece})
        yield delta({"type": "signature_delta", "signature": block.get("signature", "")})
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
        if arguments != "{}":
            for position in range(0, len(arguments), 16):
                yield delta({"type": "input_json_delta", "partial_json": arguments[position : position + 16]})
    elif kind == "compaction":
        start = {**block, "content": None, "encrypted_content": None}
        yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
        yield delta(
            {
                "type": "compaction_delta",
                "content": block.get("content"),
                "encrypted_content": block.get("encrypted_content"),
            }
        )
    else:
        yield _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
    yield _event("content_block_stop", {"type": "content_block_stop", "index": index})


# --- HTTP ------------------------------------------------------------------------------------------------------------


class _RequestIds:
    """ASGI middleware: give each request an id (`req_…`) and put it in a `request-id` header on the response."""

    def __init__(self, app: ASGIApp, *, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.emulator.new_id("req")
        scope[_REQUEST_ID_KEY] = request_id
        header = (b"request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _request_id(request: Request) -> str:
    return str(request.scope.get(_REQUEST_ID_KEY, "req_unknown"))


def _error_response(error: ApiError, request: Request) -> JSONResponse:
    request_id = _request_id(request)
    return JSONResponse(
        error.body(request_id), status_code=error.status, headers={**error.headers, "request-id": request_id}
    )


def _api_key(request: Request) -> str:
    """The caller's API key (the billing and cache scope); 401 when there is none."""
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer ") and authorization[7:].strip():
        return authorization[7:].strip()
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    raise ApiError(401, "authentication_error", "x-api-key header is required")


def _optional_key(request: Request) -> str | None:
    try:
        return _api_key(request)
    except ApiError:
        return None


async def _json_body(request: Request, *, limit: int | None = None, depth: bool = True) -> Any:
    """The request's decoded JSON; `depth`: refuse one nested deeper than the API allows (False: the caller
    checks it its own way)."""
    declared = request.headers.get("content-length")
    if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit}).")
    raw = await request.body()
    if limit is not None and len(raw) > limit:
        raise ApiError(413, "request_too_large", f"Request exceeds the maximum allowed number of bytes ({limit}).")
    if not raw.strip():
        raise invalid_request("The request body is not valid JSON: empty body")
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise invalid_request(f"The request body is not valid JSON: {err}") from err
    except RecursionError as err:  # the json module gives up near 1,000 levels
        raise invalid_request(f"The request body nests more than {values.MAX_DEPTH} levels deep") from err
    if depth:
        _check_depth(body, "")
    return body


def _check_depth(value: Any, path: str) -> None:
    """Refuse values nested beyond `values.MAX_DEPTH` with a 400 naming where (an assumption: the API's own limit
    is not documented; this one keeps every reply within what the SDK's streaming JSON parser accepts)."""
    limit = values.MAX_DEPTH + values.ENVELOPE_DEPTH
    if not _nests_deeper_than(value, limit):
        return
    where = values.depth_exceeds(value, limit)
    if where is not None:
        location = f"{path}{where}".lstrip(".") or "body"
        raise invalid_request(f"{location}: nested more than {values.MAX_DEPTH} levels deep")


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether a container inside `value` sits deeper than `limit` (the top is at depth 0), as
    `values.depth_exceeds` judges it: the quick pass over every request body, which names no path, so the path
    is only built for a body that is refused. Leaves are told by their exact type first (a decoded body is
    mostly strings and numbers, and an abstract-class check on each costs more than the rest of the walk)."""
    if not isinstance(value, Mapping | list | tuple):
        return False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children: Iterable[Any] = item.values() if type(item) is dict or isinstance(item, Mapping) else item
        for child in children:
            kind = type(child)
            if kind in _LEAVES:
                continue
            if kind is dict or kind is list or isinstance(child, Mapping | list | tuple):
                stack.append((child, depth + 1))
    return False


_LEAVES = frozenset({str, int, float, bool, type(None)})


def _json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid_request("The request body must be a JSON object")
    return value


def _betas(request: Request) -> frozenset[str]:
    header = request.headers.get("anthropic-beta", "")
    return frozenset(part.strip() for part in header.split(",") if part.strip())


def _api_version(request: Request) -> str:
    version = request.headers.get("anthropic-version")
    if not version:
        raise invalid_request("anthropic-version: header is required")
    return version


def _advance(emulator: Emulator, request: Request) -> None:
    value = request.headers.get("x-emulator-advance")
    if value is None:
        return
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise invalid_request(f"x-emulator-advance: expected seconds >= 0, got {value!r}")
    emulator.clock.advance(seconds)


def _mode(emulator: Emulator, request: Request) -> str:
    mode = request.headers.get("x-emulator-responder", emulator.responder)
    if mode not in responders.MODES:
        raise invalid_request(f"x-emulator-responder: expected one of {', '.join(responders.MODES)}, got {mode!r}")
    return mode


class _Drop(Exception):
    """Raised inside a response to close the connection part-way through (the `drop` fault)."""


class _HideDeliberateDrops(logging.Filter):
    """Keeps the server's error log free of the tracebacks of connections dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Drop))


def quiet_deliberate_drops(logger_name: str = "uvicorn.error") -> None:
    """Stop `logger_name` from logging a traceback for each `drop` fault (idempotent)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, _HideDeliberateDrops) for existing in logger.filters):
        logger.addFilter(_HideDeliberateDrops())


class _MeteredStream(StreamingResponse):
    """An SSE response that settles its bill once, when it ends: whole, cut by a fault, or left by the client (its
    body may then never start, so the settling is here and not only in the body)."""

    def __init__(self, content: AsyncIterator[bytes], settle: Callable[[], None], **options: Any) -> None:
        super().__init__(content, **options)
        self._settle = settle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._settle()


def _stream_response(
    message: Mapping[str, Any],
    fault: Fault | None,
    request_id: str,
    bill: Callable[[Mapping[str, Any]], None],
    generation: int,
) -> Response:
    """The reply as SSE; `bill` gets the usage of what was sent: the whole reply when every event went out, else
    the input and the output of the deltas sent before the stream stopped (a fault, or the client leaving)."""
    sent: list[str] = []
    settled = False

    def settle(complete: bool) -> None:
        nonlocal settled
        if settled:
            return
        settled = True
        usage = message["usage"]
        if not complete and "iterations" not in usage:  # a compaction's iterations are billed whole
            output = max(tokenizer.text_tokens("".join(sent), generation), 1)
            usage = {**usage, "output_tokens": min(output, int(usage.get("output_tokens") or output))}
        bill(usage)

    async def body() -> AsyncIterator[bytes]:
        for index, event in enumerate(sse_events(message)):
            if fault is not None and fault.kind in ("sse_error", "drop") and index == fault.after:
                settle(complete=False)
                if fault.kind == "drop":
                    raise _Drop("connection dropped by an emulated fault")
                yield _event("error", fault.error_body(request_id))
                return
            sent.extend(_delta_text(event))
            yield event
            await asyncio.sleep(0)
        settle(complete=True)  # before the body's end reaches the client: a finished reader sees the bill

    return _MeteredStream(
        body(),
        lambda: settle(complete=False),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "request-id": request_id},
    )


def _delta_text(event: bytes) -> list[str]:
    """The generated text an SSE event carries (text, thinking, tool input), for billing a cut stream."""
    if not event.startswith(b"event: content_block_delta"):
        return []
    delta = json.loads(event.split(b"data: ", 1)[1]).get("delta", {})
    return [delta[key] for key in ("text", "thinking", "partial_json") if isinstance(delta.get(key), str)]


class _PartialResponse(Response):
    """A 200 JSON response that sends only the first half of its body, then closes (the `drop` fault)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002 - ASGI signature
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise _Drop("connection dropped by an emulated fault")


def _message_response(message: Mapping[str, Any], fault: Fault | None, request_id: str) -> Response:
    content = json.dumps(message, separators=(",", ":")).encode()
    headers = {"request-id": request_id}
    if fault is not None and fault.kind == "truncate":
        return Response(content[: len(content) // 2], media_type="application/json", headers=headers)
    if fault is not None and fault.kind == "drop":
        return _PartialResponse(content, media_type="application/json", headers=headers)
    return Response(content, media_type="application/json", headers=headers)


def _model_info(model: ModelInfo) -> dict[str, Any]:
    """A catalog entry in the shape of `anthropic.types.ModelInfo`."""

    def support(flag: bool) -> dict[str, bool]:
        return {"supported": flag}

    line = next((name for name in ("haiku", "sonnet", "opus", "fable", "mythos") if name in model.id), None)
    thinking = set(model.thinking)

    def instant(date: str | None) -> str | None:
        return f"{date}T00:00:00Z" if date else None

    return {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        "created_at": instant(model.released) or _EPOCH,
        "deprecated_at": instant(model.deprecated_at),
        "lifecycle": model.lifecycle,
        "retires_at": instant(model.retires_at),
        "line": line,
        "max_input_tokens": model.context_window,
        "max_tokens": model.max_output,
        "capabilities": {
            "batch": support(True),
            "citations": support(True),
            "code_execution": support(True),
            "context_management": {
                "supported": model.context_editing or model.compaction,
                "clear_thinking_20251015": support(model.context_editing),
                "clear_tool_uses_20250919": support(model.context_editing),
                "compact_20260112": support(model.compaction),
            },
            "effort": {
                "supported": True,
                "low": support(True),
                "medium": support(True),
                "high": support(True),
                "max": support(True),
            },
            "image_input": support(True),
            "pdf_input": support(True),
            "server_tools": {"supported": True, "code_execution": support(True), "web_search": support(True)},
            "structured_outputs": support(True),
            "thinking": {
                "supported": bool(thinking - {"disabled"}),
                "types": {name: support(name in thinking) for name in THINKING_TYPES},
            },
        },
    }


def create_app(
    *,
    clock: Clock | str | None = None,
    responder: str = "recall",
    catalog: Catalog | None = None,
    fault_rate: float = 0.0,
    seed: int | None = None,
    memo: bool = True,
) -> Starlette:
    """A new emulator app with its own state (`app.state.emulator`).

    `clock`: a `Clock`, `"real"` (default) or `"virtual"`; `responder`: the default reply mode; `catalog`: the
    models served (default: the shipped catalog); `fault_rate`/`seed`: seeded random faults for soak tests;
    `memo`: work out only what is new in each request's history (False: read every request in full; the
    answers are the same).
    """
    emulator = Emulator(clock=clock, responder=responder, catalog=catalog, fault_rate=fault_rate, seed=seed, memo=memo)

    async def messages(request: Request) -> Response:
        emulator.in_flight += 1
        response: Response | None = None
        try:
            response = await answer(request)
            return response
        finally:
            if not isinstance(response, _MeteredStream):  # a stream is in flight until it has ended
                emulator.in_flight -= 1

    async def read_body(request: Request) -> tuple[dict[str, Any], history.Analysis | None]:
        """The request's JSON object, and what the emulator worked out about it while checking its depth."""
        value = await _json_body(request, limit=MAX_REQUEST_BYTES, depth=False)
        analysis = emulator.check_depth(value)
        return _json_object(value), analysis

    async def answer(request: Request) -> Response:
        try:
            scope = _api_key(request)
            body, analysis = await read_body(request)
            fault = emulator.take_fault(scope, request.headers.get("x-emulator-fault"))
            if fault is not None and fault.kind == "status":
                raise ApiError(
                    fault.status, fault.error_type, fault.message, error_code=fault.error_code, headers=fault.headers()
                )
            _advance(emulator, request)
            api_version = _api_version(request)
            mode = _mode(emulator, request)
            stream = body.get("stream") is True
            slow = fault is not None and fault.kind == "slow"
            message = emulator.create_message(
                scope,
                body,
                api_version=api_version,
                betas=_betas(request),
                mode=mode,
                script_header=request.headers.get("x-emulator-script"),
                bill=not stream or slow,  # a stream bills what it sent, unless the client gave up waiting
                analysis=analysis,
            )
        except ApiError as err:
            return _error_response(err, request)
        except Exception as err:  # an emulator bug answers like the API's own 500, with the request id
            return _error_response(ApiError(500, "api_error", f"emulator error: {err!r}"), request)
        if fault is not None and fault.kind == "slow":
            # The work is done and billed first: a client that times out meanwhile has still been billed, as a
            # real server that is generating when the client gives up bills what it generated.
            await asyncio.sleep(fault.seconds)
            if emulator.clock.mode == "virtual":
                emulator.clock.advance(fault.seconds)
        if stream:
            model = emulator.model_for(body)

            def settle(usage: Mapping[str, Any]) -> None:
                if not slow:
                    emulator.bill.add(scope, model, usage)
                emulator.in_flight -= 1

            return _stream_response(message, fault, _request_id(request), settle, model.tokenizer)
        return _message_response(message, fault, _request_id(request))

    async def count_tokens(request: Request) -> Response:
        try:
            scope = _api_key(request)
            body, analysis = await read_body(request)
            _advance(emulator, request)
            counted = emulator.count_tokens(
                scope, body, api_version=_api_version(request), betas=_betas(request), analysis=analysis
            )
        except ApiError as err:
            return _error_response(err, request)
        except Exception as err:
            return _error_response(ApiError(500, "api_error", f"emulator error: {err!r}"), request)
        return JSONResponse(counted)

    async def list_models(request: Request) -> Response:
        try:
            _api_key(request)
            ids = list(emulator.catalog)
            limit_text = request.query_params.get("limit", "20")
            if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
                raise invalid_request("limit: must be an integer between 1 and 1000")
            limit = int(limit_text)
            after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
            if after is not None:
                ids = ids[_position(ids, after) + 1 :]
                page, has_more = ids[:limit], len(ids) > limit
            elif before is not None:
                ids = ids[: _position(ids, before)]
                page, has_more = ids[-limit:], len(ids) > limit
            else:
                page, has_more = ids[:limit], len(ids) > limit
        except ApiError as err:
            return _error_response(err, request)
        data = [_model_info(emulator.catalog.get(model_id)) for model_id in page]
        return JSONResponse(
            {
                "data": data,
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def get_model(request: Request) -> Response:
        try:
            _api_key(request)
            model_id = request.path_params["model_id"]
            if model_id not in emulator.catalog:
                raise not_found(f"model: {model_id}")
        except ApiError as err:
            return _error_response(err, request)
        return JSONResponse(_model_info(emulator.catalog.get(model_id)))

    async def clock_endpoint(request: Request) -> Response:
        try:
            if request.method == "POST":
                command = _json_object(await _json_body(request))
                if "set" in command:
                    if emulator.clock.mode != "virtual":
                        raise invalid_request("only a virtual clock can be set")
                    emulator.clock.set(_seconds(command["set"], "set"))
                if "advance" in command:
                    emulator.clock.advance(_seconds(command["advance"], "advance"))
        except ApiError as err:
            return _error_response(err, request)
        except ValueError as err:
            return _error_response(invalid_request(str(err)), request)
        return JSONResponse({"now": emulator.clock.now(), "mode": emulator.clock.mode})

    async def script_endpoint(request: Request) -> Response:
        try:
            scope = _api_key(request)
            command = _json_object(await _json_body(request))
            replies = command.get("replies")
            if not isinstance(replies, list) or not all(isinstance(reply, dict) for reply in replies):
                raise invalid_request("replies: expected a list of reply objects")
            queued = emulator.queue_scripts(scope, replies)
        except ApiError as err:
            return _error_response(err, request)
        return JSONResponse({"queued": queued})

    async def faults_endpoint(request: Request) -> Response:
        try:
            scope = _api_key(request)
            command = _json_object(await _json_body(request))
            specs = command.get("faults")
            if not isinstance(specs, list):
                raise invalid_request("faults: expected a list of faults")
            try:
                faults = [parse_fault(spec) for spec in specs]
            except (ValueError, TypeError) as err:
                raise invalid_request(f"faults: {err}") from err
            queued = emulator.queue_faults(scope, faults)
        except ApiError as err:
            return _error_response(err, request)
        return JSONResponse({"queued": queued})

    async def bill_endpoint(request: Request) -> Response:
        key = request.query_params.get("key") or _optional_key(request)
        if request.query_params.get("all") in ("1", "true") or key is None:
            # Unauthenticated: every key's totals, but never the keys themselves.
            everyone = emulator.bill.summary()
            everyone["scopes"] = {_masked_key(scope): bill for scope, bill in everyone["scopes"].items()}
            for bill in everyone["scopes"].values():
                bill.pop("scope", None)
            return JSONResponse(everyone)
        return JSONResponse(emulator.bill.summary(key))

    async def stats_endpoint(request: Request) -> Response:
        del request
        return JSONResponse(emulator.stats())

    async def reset_endpoint(request: Request) -> Response:
        try:
            raw = await request.body()
            command = _json_object(json.loads(raw)) if raw.strip() else {}
            emulator.reset(clock=bool(command.get("clock")))
        except ApiError as err:
            return _error_response(err, request)
        except ValueError as err:
            return _error_response(invalid_request(f"not JSON: {err}"), request)
        return JSONResponse({"reset": True, "now": emulator.clock.now()})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 405:
            error = ApiError(
                405, "invalid_request_error", f"Method {request.method} not allowed for {request.url.path}"
            )
        elif status == 404:
            error = not_found(f"Not found: {request.url.path}")
        else:
            error = ApiError(status, "api_error", str(exc))
        return _error_response(error, request)

    routes = [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/_emulator/clock", clock_endpoint, methods=["GET", "POST"]),
        Route("/_emulator/script", script_endpoint, methods=["POST"]),
        Route("/_emulator/faults", faults_endpoint, methods=["POST"]),
        Route("/_emulator/bill", bill_endpoint, methods=["GET"]),
        Route("/_emulator/stats", stats_endpoint, methods=["GET"]),
        Route("/_emulator/reset", reset_endpoint, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_RequestIds, emulator=emulator)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.emulator = emulator
    return app


def _masked_key(key: str) -> str:
    """An API key as the all-keys bill shows it: enough to tell keys apart, never enough to use one."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return f"{key[:4]}…{key[-4:]} ({digest})" if len(key) >= 16 else f"key {digest}"


def _position(ids: list[str], model_id: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise invalid_request(f"no model with id {model_id!r} to page from") from None


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_request(f"{name}: expected a number of seconds")
    return float(value)
