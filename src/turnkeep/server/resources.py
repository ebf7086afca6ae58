"""The tenant's conversations as JSON resources under `/v1/turnkeep/conversations` (OpenAPI: `OPENAPI`).

| route                                              | what                                                 |
|----------------------------------------------------|------------------------------------------------------|
| `GET /v1/turnkeep/conversations?limit=&offset=`    | the tenant's conversations, newest first             |
| `GET /v1/turnkeep/conversations/{id}`              | settings, branches and the messages of a branch      |
| `GET /v1/turnkeep/conversations/{id}/cost`         | total USD, tokens and the ledger                     |
| `GET /v1/turnkeep/conversations/{id}/explain`      | the plan of the next request, sent nowhere           |
| `POST /v1/turnkeep/conversations/{id}/fork`        | `{"name": …}`: a new branch at the head of `main`    |
| `GET /v1/turnkeep/conversations/{id}/export`       | the versioned JSON export (`turnkeep import` reads)  |
| `DELETE /v1/turnkeep/conversations/{id}`           | remove the conversation and its threads              |
| `GET /v1/turnkeep/openapi.json`                    | this API's OpenAPI 3.1 document                      |

A conversation of another tenant answers exactly like an unknown id (404).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from turnkeep.server.errors import invalid_request, not_found

if TYPE_CHECKING:
    from turnkeep.server.app import Gateway, Handler

__all__ = ["OPENAPI", "ROUTES"]

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


async def _openapi(gateway: Gateway, request: Request) -> Response:
    del gateway, request
    return JSONResponse(OPENAPI)


def _op(summary: str, *, body: bool = False, params: tuple[str, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in params
        ],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
            "404": {"$ref": "#/components/responses/Error"},
        },
    }
    if body:
        operation["requestBody"] = {
            "content": {"application/json": {"schema": {"type": "object", "properties": {"name": {"type": "string"}}}}}
        }
    return operation


_ID = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "turnkeep gateway: conversations", "version": "1"},
    "components": {
        "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        "responses": {
            "Error": {
                "description": "An error in the Messages API's shape",
                "content": {"application/json": {"schema": {"type": "object", "required": ["type", "error"]}}},
            }
        },
    },
    "paths": {
        _BASE: {"get": _op("The tenant's conversations, newest first", params=("limit", "offset"))},
        _BASE + "/{conversation_id}": {
            "parameters": [_ID],
            "get": _op("Settings, branches and messages of a branch", params=("branch",)),
            "delete": _op("Delete the conversation and its threads"),
        },
        _BASE + "/{conversation_id}/cost": {"parameters": [_ID], "get": _op("Total cost and the ledger")},
        _BASE + "/{conversation_id}/explain": {
            "parameters": [_ID],
            "get": _op("The plan of the next request, sent nowhere", params=("message",)),
        },
        _BASE + "/{conversation_id}/fork": {"parameters": [_ID], "post": _op("A new branch at main's head", body=True)},
        _BASE + "/{conversation_id}/export": {"parameters": [_ID], "get": _op("The versioned JSON export")},
    },
}

ROUTES: list[tuple[str, Handler, list[str]]] = [
    (_BASE, _list, ["GET"]),
    (_BASE + "/{conversation_id}", _get, ["GET"]),
    (_BASE + "/{conversation_id}", _delete, ["DELETE"]),
    (_BASE + "/{conversation_id}/cost", _cost, ["GET"]),
    (_BASE + "/{conversation_id}/explain", _explain, ["GET"]),
    (_BASE + "/{conversation_id}/fork", _fork, ["POST"]),
    (_BASE + "/{conversation_id}/export", _export, ["GET"]),
    ("/v1/turnkeep/openapi.json", _openapi, ["GET"]),
]
