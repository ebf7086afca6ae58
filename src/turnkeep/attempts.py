"""Every HTTP attempt the SDK makes for a call, observed below the SDK, so the ledger can bill each one.

The SDK retries on its own (connection errors, timeouts, 408/409/429/5xx) and hands back only the last
attempt's outcome; a timed-out, dropped or truncated response never reaches turnkeep with its usage. So each
call is tagged (a header carrying an `AttemptLog`'s token) and the SDK client's `httpx2` transport is wrapped by
`ObservingTransport` / `AsyncObservingTransport`: for a tagged request the wrapper strips the tag, forwards the
request unchanged, and reads what passes — the status, the `request-id`, and the usage of the JSON body or of the
SSE events (`message_start`, the deltas, `message_delta`, `message_stop`, `error`) as the SDK reads them. An
untagged request (another library's, `count_tokens`) passes through untouched.

What an attempt tells (`Attempt`): whether the request left the client (`sent`), the status, whether its reply
arrived whole (`finished`, usage exact), or only partly (`usage` from `message_start`, `output_text` of the
deltas read so far), or not at all. `turnkeep.attempt_costs` turns that into ledger entries.

Wrapping touches the SDK client's private `_client` (its `httpx2.Client`), the one place turnkeep does: when it
is missing (a client of another shape), nothing is observed and the ledger falls back to what the SDK returns.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

__all__ = ["AsyncObservingTransport", "Attempt", "AttemptLog", "ObservingTransport", "install"]

TAG_HEADER = "x-turnkeep-attempt-log"
_MAX_BODY = 64 * 1024 * 1024  # a JSON body longer than this is not kept for parsing (usage then unknown)
# The request never reached the server whole: nothing was generated, nothing billed.
_NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.WriteError, httpx2.WriteTimeout)

_DELTA_EVENT = b"event: content_block_delta\n"


def _data(event: bytes) -> bytes:
    """The data of one server-sent event (its `data:` lines, joined)."""
    return b"\n".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))


_logs: weakref.WeakValueDictionary[str, AttemptLog] = weakref.WeakValueDictionary()
_logs_lock = threading.Lock()


@dataclass(slots=True)
class Attempt:
    """One HTTP request the SDK sent for a call, and what came back of it."""

    started: float
    streamed: bool = False
    """The response is a stream of events (known once it began: a request body is not parsed to tell)."""
    sent: bool = True
    status: int | None = None
    request_id: str | None = None
    error_type: str | None = None
    """The API's `error.type`: of an error status's body, or of an SSE `error` event."""
    failure: str | None = None
    """The transport failure that ended it (`ReadTimeout: …`), if one did."""
    message_id: str | None = None
    model: str | None = None
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None
    """Exact when `finished`; else what `message_start` said (input side exact, output so far)."""
    deltas: list[bytes] = field(default_factory=list, repr=False)
    """Each `content_block_delta` event read, as it came: decoded only if asked (`output_text`), which a stream
    that ends whole never is."""
    finished: bool = False
    """The whole reply arrived: the JSON body parsed, or `message_stop` was read."""
    ended: float | None = None

    @property
    def output_text(self) -> list[str]:
        """The text, thinking and tool input the deltas carried (as far as they were read)."""
        texts: list[str] = []
        for raw in self.deltas:
            try:
                event = json.loads(_data(raw))
            except ValueError:
                continue  # a delta cut off mid-way: what it said is unknown
            delta = event.get("delta") if isinstance(event, dict) else None
            if isinstance(delta, dict):
                texts.extend(
                    delta[key] for key in ("text", "thinking", "partial_json") if isinstance(delta.get(key), str)
                )
        return texts

    @property
    def answered_with_error(self) -> bool:
        """The API answered with an error status (billed nothing)."""
        return self.status is not None and self.status >= 400

    @property
    def latency(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


class AttemptLog:
    """The attempts of one turn's calls, in order; `take()` hands over those since the last take."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self._attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def tag(self, client: Any, request: Mapping[str, Any]) -> dict[str, Any]:
        """`request` with the tag header that routes its attempts here (unchanged when `client` cannot be
        observed, so an unobservable client still works)."""
        tagged = dict(request)
        if not install(client):
            return tagged
        with _logs_lock:
            _logs[self.token] = self
        tagged["extra_headers"] = {**dict(request.get("extra_headers") or {}), TAG_HEADER: self.token}
        return tagged

    def begin(self) -> Attempt:
        attempt = Attempt(started=time.monotonic())
        with self._lock:
            self._attempts.append(attempt)
        return attempt

    def take(self) -> list[Attempt]:
        with self._lock:
            taken, self._attempts = self._attempts, []
        return taken


def _log_for(request: httpx2.Request) -> AttemptLog | None:
    token = request.headers.get(TAG_HEADER)
    if token is None:
        return None
    del request.headers[TAG_HEADER]  # ours alone: it never goes on the wire
    with _logs_lock:
        return _logs.get(token)


def install(client: Any) -> bool:
    """Wrap the SDK client's transports (once); False when the client has no `httpx2` client to wrap."""
    http = getattr(client, "_client", None)
    wrappers: tuple[tuple[type, type], ...] = (
        (httpx2.Client, ObservingTransport),
        (httpx2.AsyncClient, AsyncObservingTransport),
    )
    for client_type, wrapper in wrappers:
        if isinstance(http, client_type):
            target: Any = http  # the SDK's httpx2 client: its transports are private attributes
            if not isinstance(target._transport, wrapper):
                target._transport = wrapper(target._transport)
            mounts: dict[Any, Any] = target._mounts
            for pattern, transport in list(mounts.items()):
                if transport is not None and not isinstance(transport, wrapper):
                    mounts[pattern] = wrapper(transport)
            return True
    return False


class _Reader:
    """Folds the bytes of one response into its `Attempt` (JSON body or SSE events), as they are read."""

    def __init__(self, attempt: Attempt, response: httpx2.Response) -> None:
        self.attempt = attempt
        self.sse = attempt.streamed = "text/event-stream" in response.headers.get("content-type", "")
        encoding = response.headers.get("content-encoding", "identity").lower()
        self._inflate = (
            zlib.decompressobj(16 + zlib.MAX_WBITS)
            if encoding == "gzip"
            else zlib.decompressobj()
            if encoding == "deflate"
            else None
        )
        self._readable = encoding in ("identity", "gzip", "deflate")
        self._buffer = b""
        self._body = bytearray()
        self._closed = False

    def read_whole(self, content: bytes) -> None:
        """The whole decoded body at once."""
        self._inflate, self._readable = None, True
        self.feed(content)
        if self.sse:
            self.feed(b"\n\n")  # a last event without its blank line
        self.close()

    def feed(self, chunk: bytes) -> None:
        if not self._readable:
            return
        if self._inflate is not None:
            try:
                chunk = self._inflate.decompress(chunk)
            except zlib.error:
                self._readable = False
                return
        if not self.sse:
            if len(self._body) + len(chunk) <= _MAX_BODY:
                self._body += chunk
            return
        self._buffer += chunk.replace(b"\r\n", b"\n")
        if b"\n\n" in self._buffer:
            *events, self._buffer = self._buffer.split(b"\n\n")  # one pass over a chunk of many events
            for raw in events:
                self._event(raw)

    def _event(self, raw: bytes) -> None:
        if raw.startswith(_DELTA_EVENT):  # the most frequent by far: kept as it came, decoded only if asked
            self.attempt.deltas.append(raw)
            return
        data = _data(raw)
        try:
            event = json.loads(data) if data else None
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        attempt, kind = self.attempt, event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            attempt.message_id, attempt.model = message.get("id"), message.get("model")
            attempt.usage = dict(message.get("usage") or {})
        elif kind == "content_block_delta":
            attempt.deltas.append(raw)  # a delta without its `event:` line
        elif kind == "message_delta":
            usage = event.get("usage")
            if isinstance(usage, dict) and attempt.usage is not None:
                attempt.usage.update({key: value for key, value in usage.items() if value is not None})
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                attempt.stop_reason = delta["stop_reason"]
        elif kind == "message_stop":
            attempt.finished = attempt.usage is not None
        elif kind == "error" and isinstance(event.get("error"), dict):
            attempt.error_type = str(event["error"].get("type"))

    def close(self, failure: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        attempt = self.attempt
        attempt.ended = time.monotonic()
        if failure is not None and attempt.failure is None:
            attempt.failure = f"{type(failure).__name__}: {failure}"
        if self.sse or not self._body:
            return
        try:
            body = json.loads(bytes(self._body))
        except ValueError:
            return  # a truncated body: what it would have said is unknown
        if not isinstance(body, dict):
            return
        if body.get("type") == "error" and isinstance(body.get("error"), dict):
            attempt.error_type = str(body["error"].get("type"))
        elif isinstance(body.get("usage"), dict):
            attempt.usage = dict(body["usage"])
            attempt.message_id, attempt.model = body.get("id"), body.get("model")
            attempt.stop_reason = body.get("stop_reason")
            attempt.finished = True


def _responded(attempt: Attempt, response: httpx2.Response) -> _Reader:
    attempt.status = response.status_code
    attempt.request_id = response.headers.get("request-id")
    reader = _Reader(attempt, response)
    content = getattr(response, "_content", None)
    if isinstance(content, bytes):
        # A response built in memory (e.g. by `httpx2.MockTransport`) was read, and decoded, when it was made: its
        # stream will not be iterated again.
        reader.read_whole(content)
    return reader


def _failed(attempt: Attempt, error: BaseException) -> None:
    attempt.ended = time.monotonic()
    attempt.sent = not isinstance(error, _NOT_SENT)
    attempt.failure = f"{type(error).__name__}: {error}"


class _ObservedStream(httpx2.SyncByteStream):
    def __init__(self, inner: Any, reader: _Reader) -> None:
        self._inner, self._reader = inner, reader

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk
        except BaseException as err:
            self._reader.close(err)
            raise

    def close(self) -> None:
        self._reader.close()
        self._inner.close()


class _AsyncObservedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, reader: _Reader) -> None:
        self._inner, self._reader = inner, reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._reader.feed(chunk)
                yield chunk
        except BaseException as err:
            self._reader.close(err)
            raise

    async def aclose(self) -> None:
        self._reader.close()
        await self._inner.aclose()


class ObservingTransport(httpx2.BaseTransport):
    """Forwards every request to `inner`; records the attempts of tagged ones in their `AttemptLog`."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        log = _log_for(request)
        if log is None:
            return self.inner.handle_request(request)
        attempt = log.begin()
        try:
            response = self.inner.handle_request(request)
        except BaseException as err:
            _failed(attempt, err)
            raise
        response.stream = _ObservedStream(response.stream, _responded(attempt, response))
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncObservingTransport(httpx2.AsyncBaseTransport):
    """The async twin of `ObservingTransport`."""

    def __init__(self, inner: httpx2.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        log = _log_for(request)
        if log is None:
            return await self.inner.handle_async_request(request)
        attempt = log.begin()
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as err:
            _failed(attempt, err)
            raise
        response.stream = _AsyncObservedStream(response.stream, _responded(attempt, response))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
