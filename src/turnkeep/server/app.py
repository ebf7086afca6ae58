"""The gateway's HTTP face: a Starlette app that speaks the Messages API, durable threads, and our own resources.

| route                                   | what                                                              |
|-----------------------------------------|-------------------------------------------------------------------|
| `POST /v1/messages` with `thread`       | a durable thread turn (`server.threads`), JSON or SSE             |
| `POST /v1/messages` without `thread`    | passed through to upstream byte for byte, usage accounted         |
| `POST /v1/messages/count_tokens`        | passed through                                                    |
| `GET /v1/models`, `/v1/models/{id}`     | passed through                                                    |
| `/v1/turnkeep/conversations…`           | the tenant's conversations (`server.resources`), OpenAPI document |
| `GET /healthz`, `/readyz`, `/metrics`   | liveness, readiness (both stores answer), Prometheus text         |

Every request to `/v1/…` names a gateway key (`x-api-key`, or `authorization: Bearer …`). A request goes:
auth → size and body timeout → JSON → budget and rate limits → thread turn or pass-through → accounting. The
upstream key is the gateway's own: it is sent only upstream, never stored, logged or echoed.

Configuration order (`GatewayConfig`): explicit arguments (the `turnkeep serve` options), then the environment
for the upstream (`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`), then defaults.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anthropic
import httpx2
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnkeep.core.budget import Spent
from turnkeep.core.catalog import Catalog
from turnkeep.core.policies import Policy
from turnkeep.core.pricing import token_counts
from turnkeep.errors import BudgetExceeded, ConflictError, TurnkeepError, UnknownConversation, UsageError
from turnkeep.server.accounting import Billed, SSEUsage, billed
from turnkeep.server.errors import GatewayError, error_response, invalid_request
from turnkeep.server.metrics import Metrics
from turnkeep.server.tenancy import TenancyStore, Tenant
from turnkeep.server.threads import ThreadTurn, parse_thread_request, prepare_thread_turn
from turnkeep.store import Store

if TYPE_CHECKING:
    from turnkeep.client import AsyncConversation, Reply

__all__ = ["Gateway", "GatewayConfig", "create_app"]

CACHED_CONVERSATIONS = 256
"""Conversations a process keeps open between turns (a cache: correctness never depends on it)."""

log = logging.getLogger("turnkeep.gateway.access")

DEFAULT_UPSTREAM = "https://api.anthropic.com"
MAX_REQUEST_BYTES = 32 * 1024 * 1024  # the API's own limit for a Messages request
_FORWARDED_REQUEST_HEADERS = ("anthropic-version", "anthropic-beta", "content-type")
_FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-should-retry")


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway runs. `upstream_key` is a secret: kept out of `repr`, logs and the store."""

    upstream_url: str = DEFAULT_UPSTREAM
    upstream_key: str = field(default="", repr=False)
    max_request_bytes: int = MAX_REQUEST_BYTES
    body_timeout: float = 30.0
    """Seconds to receive a whole request body (a slow-loris client gets 408 `request_body_timeout`)."""
    upstream_timeout: float = 600.0
    upstream_retries: int = 0
    """The gateway's own retries of an upstream call. 0 by default: the client's SDK retries, not both."""
    lease_seconds: float = 60.0
    """A continue's lease on its conversation, renewed every third of it while the turn runs: a replica killed
    mid-turn frees its conversation after at most this long."""
    default_policy: str | None = None
    """Context policy of new threads (the CLI's grammar); a tenant's or the `x-turnkeep-policy` header's wins."""

    @classmethod
    def from_env(cls, **explicit: Any) -> GatewayConfig:
        """Explicit values, then `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`, then defaults."""
        values = {key: value for key, value in explicit.items() if value is not None}
        values.setdefault("upstream_key", os.environ.get("ANTHROPIC_API_KEY", ""))
        values.setdefault("upstream_url", os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_UPSTREAM)
        return cls(**values)


class Gateway:
    """Everything one gateway process holds: the stores, the upstream clients, metrics. No conversation state:
    each turn reads what it needs from the stores, so any replica can serve any request."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        store: Store,
        tenancy: TenancyStore,
        catalog: Catalog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from turnkeep import config as turnkeep_config

        if not config.upstream_key:
            raise UsageError("the gateway needs an upstream API key (--upstream-key or ANTHROPIC_API_KEY)")
        self.config = config
        self.store = store
        self.tenancy = tenancy
        self.catalog = catalog or turnkeep_config.load_catalog()
        self.clock = clock
        self.metrics = Metrics()
        timeout = httpx2.Timeout(config.upstream_timeout, connect=10.0)
        self.upstream = anthropic.AsyncAnthropic(
            api_key=config.upstream_key,
            base_url=config.upstream_url,
            max_retries=config.upstream_retries,
            timeout=timeout,
        )
        self.http = httpx2.AsyncClient(base_url=config.upstream_url, timeout=timeout)
        self._conversations: OrderedDict[str, AsyncConversation] = OrderedDict()

    def policy(self, spec: str | None) -> Policy | None:
        """A context policy from its spelling (None: the default, FullHistory)."""
        from turnkeep.core.policies.grammar import parse_policy

        spec = spec or self.config.default_policy
        if spec is None:
            return None
        try:
            return parse_policy(spec)
        except UsageError as err:
            raise invalid_request(f"x-turnkeep-policy: {err}") from err

    def conversation(self, conversation_id: str, head: str | None) -> AsyncConversation:
        """The conversation, from this process's cache when its head is still the store's `head`, else reopened.

        The cache only saves work (reading the path, relearning sizes, validating from the start): a conversation
        another replica moved on is reopened from the store.
        """
        from turnkeep.client import AsyncConversation

        cached = self._conversations.get(conversation_id)
        if cached is not None:
            path = cached.transcript
            if (path[-1].id if path else None) == head:
                self._conversations.move_to_end(conversation_id)
                return cached
            del self._conversations[conversation_id]
        return AsyncConversation.open(conversation_id, store=self.store, catalog=self.catalog, client=self.upstream)

    def keep(self, conversation: AsyncConversation) -> None:
        """Cache a conversation after a committed turn (least recently used ones go first)."""
        self._conversations[conversation.id] = conversation
        self._conversations.move_to_end(conversation.id)
        while len(self._conversations) > CACHED_CONVERSATIONS:
            self._conversations.popitem(last=False)

    def forget(self, conversation_id: str) -> None:
        self._conversations.pop(conversation_id, None)

    def account_turn(self, tenant: str, model: str, before: Spent, after: Spent, reply: Reply | None) -> None:
        """Add what a threaded turn spent to the tenant's counters and the metrics."""
        usd = after.usd - before.usd
        input_tokens, output_tokens = (
            after.input_tokens - before.input_tokens,
            after.output_tokens - before.output_tokens,
        )
        if not usd and not input_tokens and not output_tokens:
            return
        cache_read = cache_write = 0
        for response in reply.responses if reply is not None else ():
            counts = token_counts(response.usage)
            cache_read += counts.cache_read
            cache_write += counts.cache_write
        self.tenancy.record_usage(
            tenant, model, input_tokens=input_tokens, output_tokens=output_tokens, usd=usd, now=self.clock()
        )
        self.metrics.bill(tenant, Billed(model, input_tokens, output_tokens, cache_read, cache_write, usd))

    def account(self, tenant: str, model: str, usage: Mapping[str, Any]) -> None:
        """Add one upstream request's usage (empty for a failed call) to the tenant's counters and the metrics."""
        cost = billed(model, usage, self.catalog)
        self.tenancy.record_usage(
            tenant,
            model,
            input_tokens=cost.input_tokens,
            output_tokens=cost.output_tokens,
            usd=cost.usd,
            now=self.clock(),
        )
        self.metrics.bill(tenant, cost)

    def admit(self, tenant: Tenant) -> None:
        """Refuse (429 with `retry-after`) a tenant over its budget or its per-minute limits. Checks only: what
        counts against the limits is what reached upstream (`account`)."""
        now = self.clock()
        limits = tenant.limits
        day_start = now - now % 86400
        next_day = day_start + 86400
        checks: list[tuple[Decimal | None, float, float, str]] = [
            (limits.usd_per_day, day_start, next_day, "day"),
        ]
        if limits.usd_per_month is not None:
            t = time.gmtime(now)
            month_start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
            year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
            checks.append((limits.usd_per_month, month_start, calendar.timegm((year, month, 1, 0, 0, 0)), "month"))
        for budget, since, until, period in checks:
            if budget is None:
                continue
            spent = self.tenancy.usage(tenant.name, since=since, until=now).usd
            if spent >= budget:
                raise _too_many(
                    f"The budget of ${budget} per {period} for this key's tenant is spent (${spent:.4f}).",
                    until - now,
                )
        refused = self.tenancy.admit(tenant.name, limits, now=now)
        if refused is not None:
            limit = limits.requests_per_minute if refused == "requests" else limits.tokens_per_minute
            raise _too_many(f"This key's tenant is limited to {limit} {refused} per minute.", 60 - now % 60)

    async def aclose(self) -> None:
        await self.upstream.close()
        await self.http.aclose()


def _too_many(message: str, seconds: float) -> GatewayError:
    wait = max(1, int(seconds + 0.999))
    return GatewayError(429, message, headers={"retry-after": str(wait), "retry-after-ms": str(int(seconds * 1000))})


# --- request plumbing ------------------------------------------------------------------------------------------------


def _request_id(request: Request) -> str:
    return str(request.scope.get("turnkeep.request_id", "req_gw"))


def _authenticate(gateway: Gateway, request: Request) -> Tenant:
    key = request.headers.get("x-api-key")
    if key is None:
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
    if not key:
        raise GatewayError(401, "x-api-key header is required")
    tenant = gateway.tenancy.tenant_for_key(key)
    if tenant is None:
        raise GatewayError(401, "invalid x-api-key")
    request.scope["turnkeep.tenant"] = tenant.name
    return tenant


async def _read_body(gateway: Gateway, request: Request) -> bytes:
    """The body, within the size limit (413) and the time limit (408 `request_body_timeout`)."""
    limit = gateway.config.max_request_bytes
    declared = request.headers.get("content-length")
    too_large = GatewayError(413, f"Request exceeds the maximum allowed number of bytes ({limit}).")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(gateway.config.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError as err:
        raise GatewayError(
            408,
            f"The request body was not received within {gateway.config.body_timeout:g} seconds.",
            error_code="request_body_timeout",
        ) from err
    except ClientDisconnect as err:
        raise invalid_request("the client closed the connection before sending the whole body") from err
    return b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise invalid_request(f"The request body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise invalid_request("The request body must be a JSON object")
    return body


def _upstream_error(err: anthropic.APIStatusError) -> GatewayError:
    """An upstream error answered to the client as upstream gave it (status, type, message, code, retry hints)."""
    body = err.body if isinstance(err.body, Mapping) else {}
    error = body.get("error") if isinstance(body.get("error"), Mapping) else body
    details = error.get("details") if isinstance(error, Mapping) else None
    headers = {
        name: err.response.headers[name] for name in _FORWARDED_RESPONSE_HEADERS[1:] if name in err.response.headers
    }
    return GatewayError(
        err.status_code,
        str(error.get("message") if isinstance(error, Mapping) and error.get("message") else err.message),
        error_type=str(error.get("type")) if isinstance(error, Mapping) and error.get("type") else None,
        error_code=str(details["error_code"]) if isinstance(details, Mapping) and details.get("error_code") else None,
        headers=headers,
    )


def _as_gateway_error(err: Exception) -> GatewayError | None:
    """The API-shaped answer to an exception raised while serving a request (None: a bug, re-raised)."""
    if isinstance(err, GatewayError):
        return err
    if isinstance(err, anthropic.APIStatusError):
        return _upstream_error(err)
    if isinstance(err, anthropic.APITimeoutError | httpx2.TimeoutException):
        return GatewayError(504, "The upstream API did not answer in time.")
    if isinstance(err, anthropic.APIConnectionError | httpx2.HTTPError):
        return GatewayError(502, "The connection to the upstream API failed.")
    if isinstance(err, json.JSONDecodeError):
        return GatewayError(502, "The upstream API sent an incomplete response.")
    if isinstance(err, BudgetExceeded):
        return GatewayError(429, str(err))
    if isinstance(err, ConflictError):
        return invalid_request(str(err), error_code="thread_continue_in_flight")
    if isinstance(err, UnknownConversation):
        return GatewayError(404, "Not found")
    if isinstance(err, UsageError):
        return invalid_request(str(err))
    if isinstance(err, TurnkeepError):
        return GatewayError(500, f"The gateway could not complete the request: {type(err).__name__}")
    return None


Handler = Callable[[Gateway, Request], Awaitable[Response]]


def _endpoint(gateway: Gateway, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(gateway, request)
        except Exception as err:
            answer = _as_gateway_error(err)
            if answer is None:
                logging.getLogger("turnkeep.gateway").exception("unexpected error", exc_info=err)
                answer = GatewayError(500, "The gateway failed unexpectedly.")
            return error_response(answer, _request_id(request))

    return endpoint


# --- the Messages API ------------------------------------------------------------------------------------------------


async def _messages(gateway: Gateway, request: Request) -> Response:
    tenant = _authenticate(gateway, request)
    raw = await _read_body(gateway, request)
    body = _json_object(raw)
    if body.get("thread") is not None:
        thread_request = parse_thread_request(body)
        policy = request.headers.get("x-turnkeep-policy") or tenant.policy
        gateway.admit(tenant)
        request.scope["turnkeep.thread"] = thread_request.kind
        turn = await prepare_thread_turn(gateway, tenant.name, thread_request, policy)
        headers = {"request-id": _request_id(request), "x-turnkeep-conversation-id": turn.conversation_id}
        if body.get("stream") is True:
            try:
                await turn.begin_stream()
            except BaseException:
                await turn.close()
                raise
            return _TurnStream(turn, headers={**headers, "cache-control": "no-cache"})
        try:
            return JSONResponse(await turn.run(), headers=headers)
        finally:
            await turn.close()
    gateway.admit(tenant)
    return await _pass_through(gateway, request, "/v1/messages", raw, tenant=tenant.name, model=body.get("model"))


class _TurnStream(StreamingResponse):
    """A streamed thread turn. The turn is closed however the response ends: finished, failed, or cut short by
    the client (Starlette then cancels the stream, and the turn's unfinished reply is kept pending)."""

    def __init__(self, turn: ThreadTurn, headers: Mapping[str, str]) -> None:
        super().__init__(turn.stream(), media_type="text/event-stream", headers=headers)
        self.turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.turn.close()


async def _count_tokens(gateway: Gateway, request: Request) -> Response:
    _authenticate(gateway, request)
    raw = await _read_body(gateway, request)
    _json_object(raw)
    return await _pass_through(gateway, request, "/v1/messages/count_tokens", raw, tenant=None, model=None)


async def _models(gateway: Gateway, request: Request) -> Response:
    _authenticate(gateway, request)
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return await _pass_through(gateway, request, path, None, tenant=None, model=None)


def _upstream_headers(gateway: Gateway, request: Request) -> dict[str, str]:
    headers = {name: request.headers[name] for name in _FORWARDED_REQUEST_HEADERS if name in request.headers}
    headers.setdefault("anthropic-version", "2023-06-01")
    headers["x-api-key"] = gateway.config.upstream_key
    return headers


async def _pass_through(
    gateway: Gateway, request: Request, path: str, raw: bytes | None, *, tenant: str | None, model: object
) -> Response:
    """Send the request upstream unchanged (but for the key) and relay the answer; a stream is relayed as it
    arrives. With `tenant`, a successful reply's usage is accounted to it."""
    method = "GET" if raw is None else "POST"
    outgoing = gateway.http.build_request(method, path, content=raw, headers=_upstream_headers(gateway, request))
    response = await gateway.http.send(outgoing, stream=True)
    headers = {name: response.headers[name] for name in _FORWARDED_RESPONSE_HEADERS if name in response.headers}
    headers["request-id"] = _request_id(request)
    if "upstream-request-id" not in headers and "request-id" in response.headers:
        headers["upstream-request-id"] = response.headers["request-id"]
    streaming = response.headers.get("content-type", "").startswith("text/event-stream")
    if response.status_code != 200 or not streaming:
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        if tenant is not None and response.status_code == 200:
            _account_json(gateway, tenant, content, model)
        return Response(content, status_code=response.status_code, headers=headers)

    folder = SSEUsage()
    request_id = _request_id(request)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                folder.feed(chunk)
                yield chunk
        except httpx2.HTTPError:
            # Upstream cut the stream: end ours with the API's own error event, so the client's SDK raises.
            error = GatewayError(502, "The upstream stream was cut before the reply was complete.")
            yield f"event: error\ndata: {json.dumps(error.body(request_id))}\n\n".encode()
        finally:
            await response.aclose()
            if tenant is not None and folder.usage:
                gateway.account(tenant, folder.model or str(model), folder.usage)

    return StreamingResponse(relay(), status_code=200, headers=headers)


def _account_json(gateway: Gateway, tenant: str, content: bytes, model: object) -> None:
    try:
        message = json.loads(content)
    except ValueError:
        return  # a truncated body: the client sees the same, and no usage can be read from it
    if isinstance(message, dict) and isinstance(message.get("usage"), dict):
        gateway.account(tenant, str(message.get("model") or model), message["usage"])


# --- operations ------------------------------------------------------------------------------------------------------


async def _healthz(gateway: Gateway, request: Request) -> Response:
    del gateway, request
    return JSONResponse({"status": "ok"})


async def _readyz(gateway: Gateway, request: Request) -> Response:
    del request
    try:
        gateway.store.count_conversations()
        gateway.tenancy.tenant("")
    except TurnkeepError as err:
        return JSONResponse({"status": "unavailable", "reason": type(err).__name__}, status_code=503)
    return JSONResponse({"status": "ready"})


async def _metrics(gateway: Gateway, request: Request) -> Response:
    del request
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)


class _Observe:
    """ASGI middleware: a request id on every answer, a latency and status metric, one access-log line.

    The log line holds no message content and no key: request id, tenant, method, path, status, duration.
    """

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_gw" + secrets.token_hex(12)
        scope["turnkeep.request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"request-id"]
                headers.append((b"request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route_label(scope.get("path", ""))
            self.gateway.metrics.observe(route, status, seconds)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    json.dumps(
                        {
                            "request_id": request_id,
                            "tenant": scope.get("turnkeep.tenant"),
                            "method": scope.get("method"),
                            "path": scope.get("path"),
                            "thread": scope.get("turnkeep.thread"),
                            "status": status,
                            "ms": round(seconds * 1000, 2),
                        },
                        separators=(",", ":"),
                    )
                )


def _route_label(path: str) -> str:
    if path.startswith("/v1/turnkeep/"):
        return "/v1/turnkeep"
    if path.startswith("/v1/models"):
        return "/v1/models"
    return path if path in ("/v1/messages", "/v1/messages/count_tokens", "/healthz", "/readyz", "/metrics") else "other"


def create_app(gateway: Gateway) -> Starlette:
    """The gateway's ASGI app over `gateway` (`app.state.gateway`); its lifespan closes the upstream clients."""
    from contextlib import asynccontextmanager

    from turnkeep.server import resources

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        try:
            yield
        finally:
            await gateway.aclose()

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, _endpoint(gateway, handler), methods=methods)

    routes = [
        route("/v1/messages", _messages, ["POST"]),
        route("/v1/messages/count_tokens", _count_tokens, ["POST"]),
        route("/v1/models", _models, ["GET"]),
        route("/v1/models/{model_id:path}", _models, ["GET"]),
        route("/healthz", _healthz, ["GET"]),
        route("/readyz", _readyz, ["GET"]),
        route("/metrics", _metrics, ["GET"]),
        *[route(path, handler, methods) for path, handler, methods in resources.ROUTES],
    ]

    async def not_found_handler(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        error = GatewayError(status, f"Not found: {request.url.path}" if status == 404 else str(exc))
        return error_response(error, _request_id(request))

    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware

    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Observe, gateway=gateway)],
        exception_handlers={HTTPException: not_found_handler},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
