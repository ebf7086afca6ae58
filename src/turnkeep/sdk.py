"""Everything turnkeep needs from the `anthropic` SDK beyond calling it, in one place.

The drivers in `client.py` call the SDK only through these helpers, so when the SDK changes one of them,
`tests/client/test_sdk_adapter.py` fails here rather than a conversation failing somewhere else:

- which resource a request goes to (`messages` or, with `betas`, `beta.messages`);
- which keyword arguments `messages.create` takes (so a misspelt option is refused before anything is stored);
- the request id of a response (the SDK keeps it on a private attribute of non-streamed messages);
- what a stream had received when it stopped (the SDK has no public accessor for a partial snapshot);
- which raw transport errors the SDK lets through unwrapped (they become `TransportError`).
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, cast

import httpx2
from anthropic.types import Message

from turnkeep.errors import TransportError

__all__ = [
    "error_request_id",
    "is_transport_failure",
    "messages_resource",
    "request_id",
    "request_parameters",
    "split_betas",
    "stream_snapshot",
    "transport_error",
]


def split_betas(request: dict[str, Any]) -> tuple[dict[str, Any], list[str] | None]:
    """The request without `betas`, and the betas (None when there are none)."""
    request = dict(request)
    betas = request.pop("betas", None)
    return request, (list(betas) if betas else None)


def messages_resource(client: Any, betas: list[str] | None) -> Any:
    """`client.beta.messages` when the request needs betas, else `client.messages` (sync or async alike)."""
    return client.beta.messages if betas else client.messages


@functools.cache
def request_parameters() -> frozenset[str]:
    """The keyword arguments `messages.create` (or its beta twin, which takes more) accepts."""
    from anthropic.resources.beta.messages import Messages as BetaMessages
    from anthropic.resources.messages import Messages

    names: set[str] = set()
    for method in (Messages.create, BetaMessages.create):
        names |= {
            name
            for name, parameter in inspect.signature(method).parameters.items()
            if name != "self" and parameter.kind is inspect.Parameter.KEYWORD_ONLY
        }
    return frozenset(names)


def request_id(message: Message) -> str | None:
    """The `request-id` the API answered a non-streamed message with (the SDK stores it privately)."""
    value = getattr(message, "_request_id", None)
    return value if isinstance(value, str) else None


def error_request_id(error: BaseException | None) -> str | None:
    """The request id an SDK error carries, if any."""
    value = getattr(error, "request_id", None)
    return value if isinstance(value, str) else None


def stream_snapshot(stream: Any) -> Message | None:
    """What a `MessageStream` / `AsyncMessageStream` had received when it stopped (None before
    `message_start`). The SDK keeps the accumulating message privately; `get_final_message()` would wait."""
    if stream is None:
        return None
    snapshot = stream._current_snapshot_or_none()
    return cast(Message, snapshot) if snapshot is not None else None


def is_transport_failure(error: BaseException) -> bool:
    """A failure below the SDK's own errors that it lets through raw: the connection closing mid-body during a
    stream (an `httpx2` transport error) or a truncated JSON body it could not parse."""
    return isinstance(error, httpx2.TransportError | json.JSONDecodeError)


def transport_error(error: BaseException) -> TransportError:
    """The turnkeep error for a raw transport failure (raise it `from error`)."""
    return TransportError(
        f"the connection to the API failed mid-response ({type(error).__name__}: {error}); "
        "the turn is pending: retry() resends it, rollback() drops it"
    )
