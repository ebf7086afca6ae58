"""The gateway's answers to a refused request, in the API's own error shape.

```
HTTP <status>
{"type": "error", "error": {"type": "<type>", "message": "<message>", "details": {"error_code": "<code>"}},
 "request_id": "req_..."}
```

Clients (and the official SDKs) tell errors apart by status, type and `error_code` exactly as with the API, so a
thread error from the gateway is the SDK's own `ThreadNotFoundError`, `ThreadAlreadyContinuedError`, and so on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

__all__ = ["ERROR_TYPES", "GatewayError", "error_response", "invalid_request", "not_found"]

ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    """A refusal with its HTTP status; the error type follows from the status unless given."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return {"type": "error", "error": error, "request_id": request_id}


def invalid_request(message: str, *, error_code: str | None = None) -> GatewayError:
    return GatewayError(400, message, error_code=error_code)


def not_found(message: str, *, error_code: str | None = None) -> GatewayError:
    return GatewayError(404, message, error_code=error_code)


def error_response(error: GatewayError, request_id: str) -> Response:
    """The error as the API sends it, with the `request-id` header."""
    return Response(
        json.dumps(error.body(request_id), separators=(",", ":")),
        status_code=error.status,
        media_type="application/json",
        headers={**error.headers, "request-id": request_id},
    )
