"""The emulator's API errors: one exception that knows its HTTP status and renders the API's error body.

Every rejection the emulator answers with is an `ApiError`. It carries what the real API sends back:

```
HTTP <status>
{"type": "error",
 "error": {"type": "<error_type>", "message": "<message>", "details": {"error_code": "<code>"}},
 "request_id": "req_..."}
```

`details` is present only when the error has an `error_code` (compaction, threads and the other errors the
API tags with one). The status → type table is `ERROR_TYPES`; `api_error()` picks the type from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from turnkeep.errors import InvalidValue

__all__ = [
    "ERROR_TYPES",
    "ApiError",
    "api_error",
    "invalid_request",
    "not_found",
]

#: The error type the API sends for each status (Messages API reference §8).
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """An error response of the emulated API: status, error type, message, optional error code and headers."""

    status: int
    error_type: str
    message: str
    error_code: str | None
    headers: dict[str, str]

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        error_code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON error body the API sends, tagged with `request_id`."""
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code is not None:
            error["details"] = {"error_code": self.error_code}
        return {"type": "error", "error": error, "request_id": request_id}

    def __repr__(self) -> str:
        code = f", error_code={self.error_code!r}" if self.error_code else ""
        return f"ApiError({self.status}, {self.error_type!r}, {self.message!r}{code})"


def api_error(
    status: int, message: str, *, error_code: str | None = None, headers: Mapping[str, str] | None = None
) -> ApiError:
    """An `ApiError` whose type follows from `status` (`ERROR_TYPES`; other 5xx are `api_error`)."""
    error_type = ERROR_TYPES.get(status)
    if error_type is None:
        if status < 500:
            raise InvalidValue(f"no API error type is defined for HTTP status {status}")
        error_type = "api_error"
    return ApiError(status, error_type, message, error_code=error_code, headers=headers)


def invalid_request(message: str, *, error_code: str | None = None) -> ApiError:
    """A 400 `invalid_request_error`."""
    return ApiError(400, "invalid_request_error", message, error_code=error_code)


def not_found(message: str, *, error_code: str | None = None) -> ApiError:
    """A 404 `not_found_error`."""
    return ApiError(404, "not_found_error", message, error_code=error_code)
