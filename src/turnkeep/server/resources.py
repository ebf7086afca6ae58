"""The tenant's conversations as JSON resources under `/v1/turnkeep/conversations` (OpenAPI: `OPENAPI`).

| route                                              | what                                                 |
|----------------------------------------------------|------------------------------------------------------|
| `GET /v1/turnkeep/conversations?limit=&offset=`    | the tenant's conversations, newest first             |
| `GET /v1/turnkeep/conversations/{id}`              | settings, branches and the messages of a branch      |
| `GET /v1/turnkeep/conversations/{id}/cost`         | total USD, tokens and the ledger                     |
| `GET /v1/turnkeep/conversations/{id}/explain`      | the plan of the next request, sent nowhere           |
| `POST /v1/turnkeep/conversations/{id}/fork`        | `{"name": …}`: a new branch at the head of `main`    |
| `GET /v1/turnkeep/conversations/{id}/export`       | the versioned JSON export (`turnkeep import` reads)  |
| `POST /v1/turnkeep/conversations/import`           | an export in, as a new conversation of the tenant    |
| `DELETE /v1/turnkeep/conversations/{id}`           | remove the conversation and its threads              |
| `GET /v1/turnkeep/openapi.json`                    | this API's OpenAPI 3.1 document                      |

A conversation of another tenant answers exactly like an unknown id (404). An import is checked whole before
anything is written (a refused one names the first problem and changes nothing); it never keeps the export's id.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turnkeep.server.errors import invalid_request, not_found

if TYPE_CHECKING:
    from turnkeep.server.app import Gateway, Handler

__all__ = ["OPENAPI", "ROUTES", "SCHEMAS"]

_BASE = "/v1/turnkeep/conversations"


def _owned(gateway: Gateway, request: Request) -> tuple[str, str]:
    from turnkeep.server.app import _authenticate

    tenant = _authenticate(gateway, request).name
    conversation_id = request.path_params["conversation_id"]
    if not gateway.tenancy.owns(tenant, conversation_id):
        raise not_found(f"No conversation {conversation_id!r}.")
    return tenant, conversation_id


def _int_param(request: Request, name: str, default: int, high: int) -> int:
    text = request.query_params.get(name, str(default))
    if not text.isdigit() or int(text) > high:
        raise invalid_request(f"{name}: must be an integer between 0 and {high}")
    return int(text)


async def _list(gateway: Gateway, request: Request) -> Response:
    from turnkeep.server.app import _authenticate

    tenant = _authenticate(gateway, request).name
    limit = max(1, _int_param(request, "limit", 20, 100))
    offset = _int_param(request, "offset", 0, 10**9)
    ids, total = gateway.tenancy.conversations(tenant, limit, offset)
    data = []
    for conversation_id in ids:
        info = gateway.store.info(conversation_id)
        data.append(
            {
                "id": info.id,
                "title": info.title,
                "model": info.model,
                "created_at": info.created_at,
                "updated_at": info.updated_at,
                "message_count": info.message_count,
                "cost_usd": info.cost_usd,
            }
        )
    return JSONResponse({"data": data, "total": total, "has_more": offset + len(ids) < total, "offset": offset})


async def _get(gateway: Gateway, request: Request) -> Response:
    _, conversation_id = _owned(gateway, request)
    branches = gateway.store.branches(conversation_id)
    branch = request.query_params.get("branch", "main")
    if branch not in branches:
        raise not_found(f"No branch {branch!r} in conversation {conversation_id!r}.")
    settings = gateway.store.settings(conversation_id)
    path = gateway.store.path(conversation_id, branches[branch])
    return JSONResponse(
        {
            "id": conversation_id,
            "model": settings.get("model"),
            "system": settings.get("system"),
            "max_tokens": settings.get("max_tokens"),
            "tools": settings.get("tools"),
            "policy": settings.get("policy"),
            "branches": branches,
            "branch": branch,
            "messages": [
                {"id": node.id, "parent_id": node.parent_id, "status": node.status, **dict(node.message)}
                for node in path
            ],
        }
    )


async def _cost(gateway: Gateway, request: Request) -> Response:
    from turnkeep.store.base import ledger_dict

    _, conversation_id = _owned(gateway, request)
    info = gateway.store.info(conversation_id)
    ledger = gateway.store.ledger(conversation_id)
    return JSONResponse(
        {
            "id": conversation_id,
            "cost_usd": info.cost_usd,
            "requests": len(ledger),
            "ledger": [ledger_dict(entry) for entry in ledger],
        }
    )


async def _explain(gateway: Gateway, request: Request) -> Response:
    from turnkeep.client import AsyncConversation

    _, conversation_id = _owned(gateway, request)
    conversation = AsyncConversation.open(
        conversation_id, store=gateway.store, catalog=gateway.catalog, client=gateway.upstream
    )
    content = request.query_params.get("message")
    plan = conversation.explain(content)
    return JSONResponse(
        {"id": conversation_id, "explanation": str(plan), "request": json.loads(json.dumps(plan.request, default=str))}
    )


async def _fork(gateway: Gateway, request: Request) -> Response:
    _, conversation_id = _owned(gateway, request)
    raw = await request.body()
    try:
        command = json.loads(raw) if raw.strip() else {}
    except ValueError as err:
        raise invalid_request(f"The request body is not valid JSON: {err}") from err
    name = command.get("name") if isinstance(command, dict) else None
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise invalid_request("name: must be a non-empty string")
    branches = gateway.store.branches(conversation_id)
    name = name or f"fork-{len(branches)}"
    if name in branches:
        raise invalid_request(f"name: the branch {name!r} exists already")
    gateway.store.move_head(conversation_id, name, expected_head=None, new_head=branches["main"])
    return JSONResponse({"id": conversation_id, "branch": name, "head": branches["main"]}, status_code=201)


async def _export(gateway: Gateway, request: Request) -> Response:
    from turnkeep.export import export_json

    _, conversation_id = _owned(gateway, request)
    return JSONResponse(export_json(gateway.store, conversation_id))


async def _delete(gateway: Gateway, request: Request) -> Response:
    tenant, conversation_id = _owned(gateway, request)
    gateway.store.delete(conversation_id)
    gateway.tenancy.forget_conversation(tenant, conversation_id)
    return JSONResponse({"id": conversation_id, "deleted": True})


async def _import(gateway: Gateway, request: Request) -> Response:
    """A conversation from an export (the format `/export` writes), owned by the tenant, under a new id."""
    from turnkeep.errors import InvalidExport
    from turnkeep.export import import_json
    from turnkeep.server.app import _authenticate, _json_object, _read_body
    from turnkeep.server.tenancy import ThreadRow
    from turnkeep.server.threads import new_reply_id

    tenant = _authenticate(gateway, request).name
    data = _json_object(await _read_body(gateway, request))
    try:
        conversation_id = import_json(gateway.store, data, catalog=gateway.catalog)  # a refusal writes nothing
    except InvalidExport as err:
        raise invalid_request(f"The export cannot be imported: {err}") from err
    try:
        gateway.tenancy.claim_conversation(tenant, conversation_id, now=gateway.clock())
        # A conversation whose main branch ends with a reply can be continued as a thread from that reply.
        head = gateway.store.branches(conversation_id).get("main")
        path = gateway.store.path(conversation_id, head) if head is not None else []
        previous = None
        if path and path[-1].message.get("role") == "assistant" and path[-1].status == "ok":
            model = gateway.store.settings(conversation_id).get("model")
            previous = new_reply_id()
            fingerprint = {"model": model, "speed": "standard", "thinking": None}
            gateway.tenancy.record_thread(
                tenant, ThreadRow(previous, conversation_id, path[-1].id, fingerprint), now=gateway.clock()
            )
    except BaseException:
        gateway.tenancy.forget_conversation(tenant, conversation_id)
        gateway.store.delete(conversation_id)
        raise
    return JSONResponse({"id": conversation_id, "previous_message_id": previous}, status_code=201)


async def _openapi(gateway: Gateway, request: Request) -> Response:
    del gateway, request
    return JSONResponse(OPENAPI)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(
    summary: str,
    result: str,
    *,
    status: str = "200",
    body: str | None = None,
    params: tuple[tuple[str, str, str], ...] = (),
    errors: tuple[str, ...] = ("404",),
) -> dict[str, Any]:
    """An operation answering `result` (a schema name); `params` are (name, type, description) of the query."""
    responses: dict[str, Any] = {
        status: {"description": "OK", "content": {"application/json": {"schema": _ref(result)}}},
        "401": {"$ref": "#/components/responses/Error"},
    }
    for code in errors:
        responses[code] = {"$ref": "#/components/responses/Error"}
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": kind}, "description": text}
            for name, kind, text in params
        ],
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return operation


_ID = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_TIME = {"type": "number", "description": "Unix seconds"}
_USD = {"type": "string", "description": "USD as a decimal string"}

SCHEMAS: dict[str, Any] = {
    "ConversationSummary": {
        "type": "object",
        "required": ["id", "title", "model", "created_at", "updated_at", "message_count", "cost_usd"],
        "properties": {
            "id": {"type": "string"},
            "title": _TEXT_OR_NULL,
            "model": _TEXT_OR_NULL,
            "created_at": _TIME,
            "updated_at": _TIME,
            "message_count": {"type": "integer", "description": "stored messages of every branch"},
            "cost_usd": _USD,
        },
    },
    "ConversationList": {
        "type": "object",
        "required": ["data", "total", "has_more", "offset"],
        "properties": {
            "data": {"type": "array", "items": _ref("ConversationSummary")},
            "total": {"type": "integer"},
            "has_more": {"type": "boolean"},
            "offset": {"type": "integer"},
        },
    },
    "StoredMessage": {
        "type": "object",
        "required": ["id", "parent_id", "status", "role", "content"],
        "properties": {
            "id": {"type": "string", "description": "the message's node id in the conversation's tree"},
            "parent_id": _TEXT_OR_NULL,
            "status": {"type": "string", "enum": ["ok", "pending", "partial", "refused"]},
            "role": {"type": "string", "enum": ["user", "assistant", "system"]},
            "content": {"type": ["string", "array"], "description": "as the Messages API writes it"},
        },
    },
    "Conversation": {
        "type": "object",
        "required": ["id", "model", "system", "max_tokens", "tools", "policy", "branches", "branch", "messages"],
        "properties": {
            "id": {"type": "string"},
            "model": _TEXT_OR_NULL,
            "system": {"type": ["string", "array", "null"]},
            "max_tokens": {"type": ["integer", "null"]},
            "tools": {"type": ["array", "null"]},
            "policy": {"type": ["object", "null"]},
            "branches": {
                "type": "object",
                "additionalProperties": _TEXT_OR_NULL,
                "description": "branch name → head message id",
            },
            "branch": {"type": "string"},
            "messages": {"type": "array", "items": _ref("StoredMessage")},
        },
    },
    "LedgerEntry": {
        "type": "object",
        "required": ["purpose", "model", "usage", "cost_usd", "latency_ms", "at"],
        "properties": {
            "purpose": {"type": "string"},
            "model": {"type": "string"},
            "request_id": _TEXT_OR_NULL,
            "message_id": _TEXT_OR_NULL,
            "stop_reason": _TEXT_OR_NULL,
            "usage": {"type": "object"},
            "cost_usd": _USD,
            "latency_ms": {"type": "number"},
            "at": _TIME,
            "error": _TEXT_OR_NULL,
            "cache_miss_reason": _TEXT_OR_NULL,
            "node_id": _TEXT_OR_NULL,
            "calibration": {"type": ["array", "null"], "items": {"type": "integer"}},
        },
    },
    "Cost": {
        "type": "object",
        "required": ["id", "cost_usd", "requests", "ledger"],
        "properties": {
            "id": {"type": "string"},
            "cost_usd": _USD,
            "requests": {"type": "integer"},
            "ledger": {"type": "array", "items": _ref("LedgerEntry")},
        },
    },
    "Explanation": {
        "type": "object",
        "required": ["id", "explanation", "request"],
        "properties": {
            "id": {"type": "string"},
            "explanation": {"type": "string", "description": "the plan, as `turnkeep explain` prints it"},
            "request": {"type": "object", "description": "the Messages API request the next turn would send"},
        },
    },
    "ForkRequest": {
        "type": "object",
        "properties": {"name": {"type": "string", "description": "the new branch (default fork-N)"}},
    },
    "Fork": {
        "type": "object",
        "required": ["id", "branch", "head"],
        "properties": {"id": {"type": "string"}, "branch": {"type": "string"}, "head": _TEXT_OR_NULL},
    },
    "Export": {
        "type": "object",
        "description": "The versioned export of a conversation (`turnkeep export` and `turnkeep import` read and write "
        "the same); its `id` is not kept by an import.",
        "required": ["format", "version", "settings", "nodes", "branches"],
        "properties": {
            "format": {"type": "string", "enum": ["turnkeep.conversation"]},
            "version": {"type": "integer"},
            "id": {"type": "string"},
            "created_at": _TIME,
            "updated_at": _TIME,
            "settings": {"type": "object"},
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "parent_id", "message", "status", "meta"],
                    "properties": {
                        "id": {"type": "string"},
                        "parent_id": _TEXT_OR_NULL,
                        "message": {"type": "object"},
                        "status": {"type": "string"},
                        "meta": {"type": "object"},
                    },
                },
            },
            "branches": {"type": "object", "additionalProperties": _TEXT_OR_NULL},
            "policy_states": {"type": "object"},
            "ledger": {"type": "array", "items": _ref("LedgerEntry")},
        },
    },
    "Imported": {
        "type": "object",
        "required": ["id", "previous_message_id"],
        "properties": {
            "id": {"type": "string", "description": "the new conversation's id"},
            "previous_message_id": {
                "type": ["string", "null"],
                "description": "continue the conversation as a message thread from here (null unless its main "
                "branch ends with a reply)",
            },
        },
    },
    "Deleted": {
        "type": "object",
        "required": ["id", "deleted"],
        "properties": {"id": {"type": "string"}, "deleted": {"type": "boolean"}},
    },
    "Error": {
        "type": "object",
        "required": ["type", "error", "request_id"],
        "properties": {
            "type": {"type": "string", "enum": ["error"]},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {"type": "object", "properties": {"error_code": {"type": "string"}}},
                },
            },
            "request_id": {"type": "string"},
        },
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "turnkeep gateway: conversations", "version": "1"},
    "components": {
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        "schemas": SCHEMAS,
        "responses": {
            "Error": {
                "description": "An error in the Messages API's shape",
                "content": {"application/json": {"schema": _ref("Error")}},
            }
        },
    },
    "paths": {
        _BASE: {
            "get": _op(
                "The tenant's conversations, newest first",
                "ConversationList",
                params=(("limit", "integer", "1 to 100 (20)"), ("offset", "integer", "rows to skip (0)")),
                errors=("400",),
            ),
        },
        _BASE + "/import": {
            "post": _op(
                "A new conversation of the tenant's from an export",
                "Imported",
                status="201",
                body="Export",
                errors=("400", "413"),
            ),
        },
        _BASE + "/{conversation_id}": {
            "parameters": [_ID],
            "get": _op(
                "Settings, branches and the messages of a branch",
                "Conversation",
                params=(("branch", "string", "the branch to read (main)"),),
            ),
            "delete": _op("Delete the conversation and its threads", "Deleted"),
        },
        _BASE + "/{conversation_id}/cost": {"parameters": [_ID], "get": _op("Total cost and the ledger", "Cost")},
        _BASE + "/{conversation_id}/explain": {
            "parameters": [_ID],
            "get": _op(
                "The plan of the next request, sent nowhere",
                "Explanation",
                params=(("message", "string", "the next user message"),),
            ),
        },
        _BASE + "/{conversation_id}/fork": {
            "parameters": [_ID],
            "post": _op("A new branch at main's head", "Fork", status="201", body="ForkRequest", errors=("400", "404")),
        },
        _BASE + "/{conversation_id}/export": {
            "parameters": [_ID],
            "get": _op("The versioned JSON export", "Export"),
        },
    },
}

ROUTES: list[tuple[str, Handler, list[str]]] = [
    (_BASE, _list, ["GET"]),
    (_BASE + "/import", _import, ["POST"]),
    (_BASE + "/{conversation_id}", _get, ["GET"]),
    (_BASE + "/{conversation_id}", _delete, ["DELETE"]),
    (_BASE + "/{conversation_id}/cost", _cost, ["GET"]),
    (_BASE + "/{conversation_id}/explain", _explain, ["GET"]),
    (_BASE + "/{conversation_id}/fork", _fork, ["POST"]),
    (_BASE + "/{conversation_id}/export", _export, ["GET"]),
    ("/v1/turnkeep/openapi.json", _openapi, ["GET"]),
]
