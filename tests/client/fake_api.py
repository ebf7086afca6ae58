"""A scripted Messages API behind `httpx2.MockTransport`, for tests that need exact control of each response
(stop reasons, errors, a stream cut mid-way). The real `anthropic` SDK talks to it over its HTTP interface;
nothing of turnkeep is mocked. End-to-end behaviour is also tested against the emulator."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2

from turnkeep.core.catalog import default_catalog
from turnkeep.core.tokens import estimate_message, estimate_request


@dataclass
class Scripted:
    content: list[dict[str, Any]]
    stop_reason: str = "end_turn"
    usage: dict[str, Any] = field(default_factory=dict)
    stop_details: dict[str, Any] | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    cut_after_events: int | None = None  # streams only: drop the connection after this many events


class _CutStream(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    def __init__(self, chunks: list[bytes], cut: bool) -> None:
        self.chunks, self.cut = chunks, cut

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.cut:
            raise httpx2.ReadError("connection dropped")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.cut:
            raise httpx2.ReadError("connection dropped")


class FakeAPI:
    """Queue responses with `reply()` / `fail()`; inspect what was sent in `requests`."""

    def __init__(self, model: str = "claude-sonnet-4-6") -> None:
        self.model = model
        self.queue: list[Scripted] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)

    # -- scripting -------------------------------------------------------------------------------------------

    def reply(
        self,
        text: str | None = None,
        *,
        content: list[dict[str, Any]] | None = None,
        stop_reason: str = "end_turn",
        stop_details: dict[str, Any] | None = None,
        cut_after_events: int | None = None,
        **usage: Any,
    ) -> FakeAPI:
        blocks = content if content is not None else [{"type": "text", "text": text or ""}]
        self.queue.append(
            Scripted(blocks, stop_reason, usage, stop_details=stop_details, cut_after_events=cut_after_events)
        )
        return self

    def tool_call(self, *calls: tuple[str, dict[str, Any]], text: str | None = None) -> FakeAPI:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        for name, tool_input in calls:
            blocks.append({"type": "tool_use", "id": f"toolu_{next(self._ids):04d}", "name": name, "input": tool_input})
        return self.reply(content=blocks, stop_reason="tool_use")

    def fail(self, status: int, error_type: str, message: str = "scripted failure") -> FakeAPI:
        self.queue.append(Scripted([], status=status, error={"type": error_type, "message": message}))
        return self

    # -- clients ---------------------------------------------------------------------------------------------

    def client(self, **options: Any) -> anthropic.Anthropic:
        options.setdefault("max_retries", 0)
        transport = httpx2.MockTransport(self._handle)
        return anthropic.Anthropic(api_key="test-key", http_client=httpx2.Client(transport=transport), **options)

    def async_client(self, **options: Any) -> anthropic.AsyncAnthropic:
        options.setdefault("max_retries", 0)
        transport = httpx2.MockTransport(self._handle)
        return anthropic.AsyncAnthropic(
            api_key="test-key", http_client=httpx2.AsyncClient(transport=transport), **options
        )

    # -- the server side -------------------------------------------------------------------------------------

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if not self.queue:
            raise AssertionError(f"unexpected request: nothing scripted for {body.get('messages', [])[-1:]}")
        scripted = self.queue.pop(0)
        request_id = f"req_{next(self._ids):04d}"
        if scripted.error is not None:
            error = {"type": "error", "error": scripted.error, "request_id": request_id}
            return httpx2.Response(scripted.status, json=error, headers={"request-id": request_id})
        message = self._message(body, scripted)
        if body.get("stream"):
            events = list(_sse_events(message))
            cut = scripted.cut_after_events is not None
            if cut:
                events = events[: scripted.cut_after_events]
            return httpx2.Response(
                200,
                headers={"content-type": "text/event-stream", "request-id": request_id},
                stream=_CutStream(events, cut),
            )
        return httpx2.Response(200, json=message, headers={"request-id": request_id})

    def _message(self, body: dict[str, Any], scripted: Scripted) -> dict[str, Any]:
        # Unless a test scripts the usage, report the request's size as turnkeep estimates it: a server whose
        # tokenizer agrees with the estimator, so calibration stays at 1 and token-based policies act as planned.
        model = default_catalog().get(str(body.get("model", self.model)))
        size = estimate_request(body, model)
        reply = estimate_message({"role": "assistant", "content": scripted.content}, model) if scripted.content else 1
        usage = {"input_tokens": size, "output_tokens": reply, **scripted.usage}
        return {
            "id": f"msg_{next(self._ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", self.model),
            "content": scripted.content,
            "stop_reason": scripted.stop_reason,
            "stop_sequence": None,
            "stop_details": scripted.stop_details,
            "usage": usage,
        }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def _sse_events(message: dict[str, Any]) -> Iterator[bytes]:
    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 1}}
    yield _event("message_start", {"message": start})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield _event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            words = block["text"].split(" ")
            for position, word in enumerate(words):
                piece = word if position == len(words) - 1 else word + " "
                yield _event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        elif block["type"] == "tool_use":
            yield _event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            partial = json.dumps(block["input"])
            yield _event(
                "content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": partial}}
            )
        else:
            yield _event("content_block_start", {"index": index, "content_block": block})
        yield _event("content_block_stop", {"index": index})
    yield _event(
        "message_delta",
        {
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
    )
    yield _event("message_stop", {})
