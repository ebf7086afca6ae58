"""Every rule the emulated Messages API enforces on a request, as small named checks raising `ApiError`.

`validate_request` runs `CHECKS` in order; the first broken rule answers, with the status and error type the
real API gives (Messages API reference §1, §4, §7, §8) and a message in its style: it starts with the location
of the offending field the way the API writes it (`messages.3.content.1.tool_use.id: ...`), and where the
reference quotes the API's wording, that wording is used verbatim. Errors the API tags with a code carry it in
`error.details.error_code`. Clients must branch on type and code, never on message text.

A thread `continue` request holds only the new messages: the checks that need the turns before them (the first
message's role, tool results answering the held reply, thinking signatures) are skipped for it. Validating the
rebuilt, thread-free body applies every rule.

Not checked here: unknown model ids (the app answers 404 first), the 32 MB size limit (the app checks the raw
bytes against `MAX_REQUEST_BYTES`), thread state (`thread_*` codes belong to the threads module) and the
compaction signature of a `compaction` block (the compaction module).

Consecutive messages with the same role are **not** an error: the API merges them into one turn, so the
tool-pairing rule looks at merged turns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from turnkeep.core.catalog import THINKING_TYPES, ModelInfo
from turnkeep.emulator.errors import invalid_request
from turnkeep.emulator.signatures import prefix_digests, status_with_digest
from turnkeep.emulator.tokenizer import content_blocks, input_tokens

if TYPE_CHECKING:
    from turnkeep.emulator.history import Analysis

__all__ = [
    "CHECKS",
    "MAX_MESSAGES",
    "MAX_REQUEST_BYTES",
    "MESSAGES_FIELDS",
    "REMOVED_SAMPLING_VERSION",
    "Request",
    "breakpoint_ttl",
    "check_context_window",
    "text_problem",
    "validate_request",
]

#: Largest Messages request body, in bytes (413 `request_too_large` above it; checked by the app).
MAX_REQUEST_BYTES = 32 * 1024 * 1024
#: Most messages one request may hold.
MAX_MESSAGES = 100_000
#: The API version from which `temperature`, `top_p` and `top_k` are rejected.
REMOVED_SAMPLING_VERSION = "2026-10-21"
#: The API version from which assistant documents and user citations are rejected.
STRICT_CONTENT_VERSION = "2026-10-21"

THINKING_BINDING_BETA = "thinking-binding-controls-2026-08-01"
CONTEXT_1M_BETA = "context-1m-2025-08-07"

# Beta-only top-level parameters and the `anthropic-beta` values that enable each (any one will do).
_BETA_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "context_management": ("context-management-2025-06-27", "compact-2026-01-12"),
    "compaction": ("compact-2026-09-04",),
    "thread": ("message-threads-2026-08-12",),
    "fallbacks": ("server-side-fallback-2026-07-01", "server-side-fallback-2026-06-01"),
    "mcp_servers": ("mcp-client-2026-09-15", "mcp-client-2025-11-20", "mcp-client-2025-04-04"),
}
# Context-management edits: the beta each needs and the model capability it uses.
_EDITS: Mapping[str, tuple[str, str]] = {
    "clear_tool_uses_20250919": ("context-management-2025-06-27", "context_editing"),
    "clear_thinking_20251015": ("context-management-2025-06-27", "context_editing"),
    "compact_20260112": ("compact-2026-01-12", "compaction"),
}
_COMPACT_MIN_TRIGGER = 50_000

_SERVER_TOOL_BLOCKS = frozenset(
    {
        "server_tool_use",
        "mcp_tool_use",
        "mcp_tool_result",
        "mcp_tool_listing",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "advisor_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
    }
)
_ASSISTANT_ONLY_BLOCKS = frozenset({"thinking", "redacted_thinking", "tool_use", "fallback"} | _SERVER_TOOL_BLOCKS)
_USER_ONLY_BLOCKS = frozenset({"tool_result"})
_KNOWN_BLOCKS = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_result",
        "container_upload",
        "compaction",
        "tool_addition",
        "tool_removal",
    }
    | _ASSISTANT_ONLY_BLOCKS
)
_SYSTEM_MESSAGE_BLOCKS = frozenset({"text", "tool_addition", "tool_removal"})
# A final assistant message ending in one of these is a turn sent back to be resumed, not a prefill.
_RESUMABLE_LAST_BLOCKS = _SERVER_TOOL_BLOCKS | {"compaction"}
_ROLES = ("user", "assistant", "system")
_THINKING_TYPES = THINKING_TYPES
THINKING_DISPLAY_UPDATES_BETA = "thinking-display-updates-2026-08-18"
SYSTEM_TOOL_CHANGES_BETA = "mid-conversation-tool-changes-2026-07-01"
SYSTEM_OUTPUT_CONFIG_BETA = "mid-conversation-output-config-2026-07-01"
SYSTEM_CLEAR_AT_BETA = "mid-conversation-system-clear-at-2026-08-21"
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
# Every top-level field of a Messages request in SDK 2.16 (`MessageCreateParams` of the beta resource, which is
# a superset, plus `stream`); anything else is answered "Extra inputs are not permitted", as the API does.
MESSAGES_FIELDS = frozenset(
    {
        "billing_policy",
        "cache_control",
        "compaction",
        "container",
        "context_management",
        "diagnostics",
        "fallback_credit_token",
        "fallbacks",
        "inference_geo",
        "max_tokens",
        "mcp_servers",
        "messages",
        "metadata",
        "model",
        "output_config",
        "service_tier",
        "speed",
        "stop_sequences",
        "stream",
        "system",
        "thinking",
        "thread",
        "tool_choice",
        "tools",
        "user_profile_id",
        "workspace_id",
    }
)
_SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_IMAGE_SOURCES = ("base64", "url", "file")
_DOCUMENT_SOURCES = ("base64", "text", "content", "url", "file")
_TOOL_CHOICE_TYPES = ("any", "auto", "none", "tool")
TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")  # what the API accepts as a tool_use id (emulator.history checks it too)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")

_BINDING_MESSAGE = (
    "Invalid `signature` in `thinking` block. The block is bound to a different conversation: the system prompt, "
    "tools or earlier messages changed since it was created. Keep the history append-only, or remove the "
    "thinking blocks of the turns you keep when you trim or summarise."
)
_MODEL_BINDING_MESSAGE = (
    "Invalid `signature` in `thinking` block. The block was created by a model whose thinking this model cannot "
    "read. Remove the thinking blocks of the other model's turns after a model switch, or set "
    '`thinking.block_binding.prefix_mismatch_behavior: "drop_block"`.'
)
_PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. The conversation must end with a user message."
)


@dataclass(frozen=True)
class Request:
    """What every check sees: the parsed JSON body and the request's model, API version, betas and endpoint.

    `history` is `turnkeep.emulator.history.analyse(body)`, or None. When it finds every message simple (each
    passes every per-message rule wherever it stands), the checks that walk the messages look only at what spans
    them, from the remembered facts; otherwise they walk every message. Either way the same rules answer.
    """

    body: Mapping[str, Any]
    model: ModelInfo
    api_version: str
    betas: frozenset[str]
    endpoint: Literal["messages", "count_tokens"]
    history: Analysis | None = None

    @cached_property
    def messages(self) -> list[Mapping[str, Any]]:
        """The request's messages (a list of objects once `check_shape` has passed)."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @cached_property
    def simple(self) -> bool:
        """Every message is known to pass every per-message rule (see `history`)."""
        return self.history is not None and self.history.simple

    @cached_property
    def _blocks(self) -> dict[int, list[Mapping[str, Any]]]:
        return {}

    def has(self, name: str) -> bool:
        """True when the body sets `name` to something other than null."""
        return self.body.get(name) is not None

    @property
    def thread_continue(self) -> bool:
        """A thread `continue` request sends only the new messages; the server holds what came before."""
        thread = self.body.get("thread")
        return isinstance(thread, Mapping) and thread.get("type") == "continue"

    @property
    def compaction_request(self) -> bool:
        """An explicit compaction request (`compaction` set on the messages endpoint) samples nothing."""
        return self.endpoint == "messages" and self.has("compaction")

    def blocks(self, index: int) -> list[Mapping[str, Any]]:
        """Content blocks of `messages[index]` (string content as one text block); valid after `check_shape`."""
        blocks = self._blocks.get(index)
        if blocks is None:
            blocks = self._blocks[index] = content_blocks(self.messages[index].get("content"))
        return blocks


def _at(message_index: int, *path: object) -> str:
    return ".".join(["messages", str(message_index), *(str(part) for part in path)])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def text_problem(text: str) -> str | None:
    """Why a text block's text is rejected, or None."""
    if not text:
        return "text content blocks must be non-empty"
    if text.isspace():
        return "text content blocks must contain non-whitespace text"
    return None


# --- shape -------------------------------------------------------------------------------------------------


def check_shape(request: Request) -> None:
    """Required fields and their types: `model` (string), `messages` (a list of 1..100,000 objects with a role
    and string-or-block content, each block an object with a known `type`), `max_tokens` (an integer ≥ 0,
    required on the messages endpoint), `system` (string or text blocks), `tools` (a list of objects)."""
    body = request.body
    if not isinstance(body.get("model"), str):
        raise invalid_request("model: Field required" if "model" not in body else "model: Input should be a string")
    if request.endpoint == "messages" and "max_tokens" not in body:
        raise invalid_request("max_tokens: Field required")
    if "max_tokens" in body:
        max_tokens = body["max_tokens"]
        if not _is_int(max_tokens):
            raise invalid_request("max_tokens: Input should be a valid integer")
        if max_tokens < 0:
            raise invalid_request("max_tokens: Input should be greater than or equal to 0")
    if "messages" not in body:
        raise invalid_request("messages: Field required")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid_request("messages: Input should be a valid list")
    if not messages:
        raise invalid_request("messages: at least one message is required")
    if len(messages) > MAX_MESSAGES:
        raise invalid_request(f"messages: too many messages: {len(messages)} > {MAX_MESSAGES}, the maximum allowed")
    if not request.simple:
        for index, message in enumerate(messages):
            _check_message_shape(index, message)
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise invalid_request("system: Input should be a valid string or a list of text blocks")
        for index, block in enumerate(system):
            if not isinstance(block, Mapping) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise invalid_request(f"system.{index}: Input should be a text block with a string `text`")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools)):
        raise invalid_request("tools: Input should be a valid list of tool definitions")


def _check_message_shape(index: int, message: Any) -> None:
    if not isinstance(message, Mapping):
        raise invalid_request(f"{_at(index)}: Input should be a valid dictionary")
    role = message.get("role")
    if role not in _ROLES:
        raise invalid_request(f"{_at(index, 'role')}: Input should be 'user', 'assistant' or 'system'")
    if "content" not in message:
        if role == "system" and isinstance(message.get("output_config"), Mapping):
            return
        raise invalid_request(f"{_at(index, 'content')}: Field required")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_request(f"{_at(index, 'content')}: Input should be a valid string or list of content blocks")
    for block_index, block in enumerate(content):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise invalid_request(f"{_at(index, 'content', block_index)}: Input should be an object with a `type`")
        kind = block["type"]
        if kind not in _KNOWN_BLOCKS:
            raise invalid_request(
                f"{_at(index, 'content', block_index, 'type')}: Input tag '{kind}' found using 'type' does not "
                "match any of the expected tags"
            )


# --- request parameters ------------------------------------------------------------------------------------


def check_removed_sampling_parameters(request: Request) -> None:
    """From API version 2026-10-21, `temperature`, `top_p` and `top_k` are rejected, even at default values."""
    if request.api_version < REMOVED_SAMPLING_VERSION:
        return
    for name in ("temperature", "top_p", "top_k"):
        if name in request.body:
            raise invalid_request(
                f"{name}: this parameter was removed in API version {REMOVED_SAMPLING_VERSION}; remove it "
                "from the request"
            )


def check_extra_fields(request: Request) -> None:
    """Top-level fields the API does not know are rejected ("Extra inputs are not permitted"); the removed
    sampling parameters are still known to API versions before 2026-10-21. `count_tokens` takes the same body
    (its reply-shaping fields are ignored there)."""
    for name in request.body:
        if name in MESSAGES_FIELDS or (name in _SAMPLING_PARAMETERS and request.api_version < REMOVED_SAMPLING_VERSION):
            continue
        raise invalid_request(f"{name}: Extra inputs are not permitted")


def _beta_hint(betas: Sequence[str]) -> str:
    hint = f"`anthropic-beta: {betas[0]}`"
    if len(betas) > 1:
        hint += " (or " + ", ".join(f"`{beta}`" for beta in betas[1:]) + ")"
    return hint


def check_beta_parameters(request: Request) -> None:
    """Beta-only parameters (`context_management`, `compaction`, `thread`, `fallbacks`, `mcp_servers`,
    `thinking.block_binding`) need their `anthropic-beta` header; the message names it."""
    for name, betas in _BETA_PARAMETERS.items():
        if request.has(name) and not request.betas.intersection(betas):
            raise invalid_request(f"{name}: this parameter requires the beta header {_beta_hint(betas)}")
    thinking = request.body.get("thinking")
    if (
        isinstance(thinking, Mapping)
        and thinking.get("block_binding") is not None
        and THINKING_BINDING_BETA not in request.betas
    ):
        raise invalid_request(
            f"thinking.block_binding: this parameter requires the beta header {_beta_hint([THINKING_BINDING_BETA])}"
        )
    thread = request.body.get("thread")
    if thread is not None and (not isinstance(thread, Mapping) or thread.get("type") not in ("create", "continue")):
        raise invalid_request(
            "thread.type: Input tag found using 'type' does not match any of the expected tags: 'continue', 'create'"
        )


def check_context_management(request: Request) -> None:
    """`context_management.edits`: known edit types, each with its own beta and supported by the model; a
    compaction trigger is at least 50,000 input tokens. `compaction` cannot be combined with it."""
    management = request.body.get("context_management")
    if management is None:
        return
    if request.has("compaction"):
        raise invalid_request("compaction: cannot be combined with `context_management`")
    if not isinstance(management, Mapping):
        raise invalid_request("context_management: Input should be a valid dictionary")
    edits = management.get("edits") or []
    if not isinstance(edits, list):
        raise invalid_request("context_management.edits: Input should be a valid list")
    for index, edit in enumerate(edits):
        kind = edit.get("type") if isinstance(edit, Mapping) else None
        where = f"context_management.edits.{index}"
        if not isinstance(edit, Mapping) or not isinstance(kind, str) or kind not in _EDITS:
            raise invalid_request(
                f"{where}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
                + ", ".join(f"'{name}'" for name in _EDITS)
            )
        beta, capability = _EDITS[kind]
        if beta not in request.betas:
            raise invalid_request(f"{where}: `{kind}` requires the beta header {_beta_hint([beta])}")
        if not getattr(request.model, capability):
            raise invalid_request(f"{where}: `{kind}` is not supported on this model")
        trigger = edit.get("trigger")
        if kind == "compact_20260112" and isinstance(trigger, Mapping):
            value = trigger.get("value")
            if not isinstance(value, int) or isinstance(value, bool) or value < _COMPACT_MIN_TRIGGER:
                raise invalid_request(
                    f"{where}.trigger.value: Input should be greater than or equal to {_COMPACT_MIN_TRIGGER}"
                )


def check_compaction_parameter(request: Request) -> None:
    """An explicit compaction request (`compaction: {"type": "summarize"}`) returns only the compaction block, so
    it rejects what only shapes a reply: `stop_sequences`, a forced `tool_choice`, `output_config.format`.
    `count_tokens` accepts the parameter and ignores it."""
    if not request.compaction_request:
        return
    compaction = request.body["compaction"]
    if not isinstance(compaction, Mapping) or compaction.get("type") != "summarize":
        raise invalid_request("compaction.type: Input should be 'summarize'")
    if not request.model.compaction:
        raise invalid_request("compaction: compaction is not supported on this model")
    if request.body.get("stop_sequences"):
        raise invalid_request("compaction: cannot be combined with `stop_sequences`")
    if _forced_tool_choice(request.body):
        raise invalid_request("compaction: cannot be combined with a `tool_choice` of type 'any' or 'tool'")
    if _output_format(request.body):
        raise invalid_request("compaction: cannot be combined with `output_config.format`")


def _forced_tool_choice(body: Mapping[str, Any]) -> bool:
    choice = body.get("tool_choice")
    return isinstance(choice, Mapping) and choice.get("type") in ("any", "tool")


def _output_format(body: Mapping[str, Any]) -> bool:
    config = body.get("output_config")
    return isinstance(config, Mapping) and config.get("format") is not None


def _thinking_type(body: Mapping[str, Any]) -> str | None:
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping):
        kind = thinking.get("type")
        return kind if isinstance(kind, str) else None
    return None


def check_max_tokens(request: Request) -> None:
    """`max_tokens` is at most the model's maximum output; 0 (warm the cache only) is not allowed with
    `stream`, enabled or adaptive thinking, `output_config.format` or a forced tool choice."""
    if request.endpoint != "messages":
        return
    max_tokens: int = request.body["max_tokens"]
    if max_tokens > request.model.max_output:
        raise invalid_request(
            f"max_tokens: {max_tokens} > {request.model.max_output}, which is the maximum allowed number of "
            f"output tokens for {request.body['model']}"
        )
    if max_tokens != 0:
        return
    if request.body.get("stream") is True:
        raise invalid_request("max_tokens: must be greater than 0 when `stream` is true")
    if _thinking_type(request.body) in ("enabled", "adaptive"):
        raise invalid_request("max_tokens: must be greater than 0 when thinking is enabled")
    if _output_format(request.body):
        raise invalid_request("max_tokens: must be greater than 0 when `output_config.format` is set")
    if _forced_tool_choice(request.body):
        raise invalid_request("max_tokens: must be greater than 0 when `tool_choice` forces a tool")


def check_thinking_config(request: Request) -> None:
    """`thinking.type` is adaptive, enabled or disabled and supported by the model ("disabled" always is);
    `enabled` needs `budget_tokens` ≥ 1024 and below `max_tokens`; `block_binding.prefix_mismatch_behavior` is
    "error" or "drop_block"."""
    thinking = request.body.get("thinking")
    if thinking is None:
        return
    kind = _thinking_type(request.body)
    if not isinstance(thinking, Mapping) or kind not in _THINKING_TYPES:
        raise invalid_request(
            "thinking.type: Input tag found using 'type' does not match any of the expected tags: "
            + ", ".join(f"'{t}'" for t in _THINKING_TYPES)
        )
    supported = request.model.thinking
    if kind not in supported:
        message = f"thinking.type.{kind} is not supported for this model."
        if kind == "disabled" and "between_tools" in supported:
            message += " Use thinking.type.between_tools to turn off thinking before the first tool call."
        elif kind == "enabled" and "adaptive" in supported:
            message += " Use thinking.type.adaptive and output_config.effort to control thinking behavior."
        elif kind == "adaptive" and "enabled" in supported:
            message += " Use thinking.type.enabled with thinking.budget_tokens."
        raise invalid_request(message)
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if budget is None:
            raise invalid_request("thinking.enabled.budget_tokens: Field required")
        if not _is_int(budget):
            raise invalid_request("thinking.enabled.budget_tokens: Input should be a valid integer")
        if budget < 1024:
            raise invalid_request("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if request.endpoint == "messages" and budget >= request.body["max_tokens"]:
            raise invalid_request(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
                "https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size"
            )
    display = thinking.get("display")
    if display is not None:
        if display not in ("summarized", "omitted", "updates") or kind not in ("adaptive", "enabled"):
            raise invalid_request(f"thinking.{kind}.display: Input should be 'summarized', 'omitted' or 'updates'")
        if display == "updates" and THINKING_DISPLAY_UPDATES_BETA not in request.betas:
            raise invalid_request(
                f"thinking.{kind}.display: 'updates' requires the beta header "
                f"{_beta_hint([THINKING_DISPLAY_UPDATES_BETA])}"
            )
    binding = thinking.get("block_binding")
    if binding is not None:
        behavior = binding.get("prefix_mismatch_behavior") if isinstance(binding, Mapping) else "?"
        if behavior not in (None, "error", "drop_block"):
            raise invalid_request(
                f"thinking.{kind}.block_binding.prefix_mismatch_behavior: Input should be 'error' or 'drop_block'"
            )


def check_system_prompt(request: Request) -> None:
    """The top-level `system` text must be non-empty and not only whitespace (as a string or in each block)."""
    system = request.body.get("system")
    if system is None:
        return
    if isinstance(system, str):
        problem = text_problem(system)
        if problem:
            raise invalid_request(f"system: {problem}")
        return
    for index, block in enumerate(system):
        problem = text_problem(block["text"])
        if problem:
            raise invalid_request(f"system.{index}.text: {problem}")


def check_tools(request: Request) -> None:
    """Custom tools have a valid `name` and an `input_schema`; tool names are unique."""
    tools = request.body.get("tools") or []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        name = tool.get("name")
        custom = tool.get("type") in (None, "custom")
        if custom:
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise invalid_request(f"tools.{index}.custom.name: String should match pattern '{_TOOL_NAME.pattern}'")
            if not isinstance(tool.get("input_schema"), Mapping):
                raise invalid_request(f"tools.{index}.custom.input_schema: Field required")
        if isinstance(name, str):
            if name in seen:
                raise invalid_request("tools: Tool names must be unique.")
            seen.add(name)


def check_tool_choice(request: Request) -> None:
    """`tool_choice.type` is auto, any, tool or none; type "tool" names the tool."""
    choice = request.body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind not in _TOOL_CHOICE_TYPES:
        raise invalid_request(
            "tool_choice.type: Input tag found using 'type' does not match any of the expected tags: "
            + ", ".join(f"'{t}'" for t in _TOOL_CHOICE_TYPES)
        )
    if kind == "tool" and not isinstance(choice.get("name"), str):
        raise invalid_request("tool_choice.tool.name: Field required")
    if kind not in ("any", "tool"):
        return
    if not request.model.forced_tool_choice:
        raise invalid_request(
            f"tool_choice.type: '{kind}' is not supported for this model; use 'auto' and ask for the tool in the prompt"
        )
    names = {tool.get("name") for tool in request.body.get("tools") or []}
    if not names:
        raise invalid_request(f"tool_choice: a tool_choice of type '{kind}' requires `tools`")
    if kind == "tool" and choice["name"] not in names:
        raise invalid_request(f"tool_choice.tool.name: no tool named '{choice['name']}' in `tools`")


# --- messages ----------------------------------------------------------------------------------------------


def check_first_message(request: Request) -> None:
    """The conversation starts with a user turn, except when it starts with a compaction block (which stands in
    for the turns it summarises) or continues a thread (the server holds the start)."""
    if request.thread_continue:
        return
    first = request.messages[0]
    if first.get("role") == "assistant":
        blocks = request.blocks(0)
        if blocks and blocks[0].get("type") == "compaction":
            return
        raise invalid_request('messages.0.role: the first message must use the "user" role')


def check_compaction_blocks(request: Request) -> None:
    """At most one `compaction` block with content; one with content is the first block of its message; none is
    inside a system message (`compaction_block_ambiguous` / `compaction_block_misplaced`); its content is null or a
    non-empty string. An explicit compaction request cannot end on an unfinished assistant turn
    (`compaction_incomplete_turn`)."""
    with_content: tuple[int, int] | None = None
    remembered = request.history
    none = request.simple or (remembered is not None and remembered.messages_is_list and not remembered.compaction)
    for message_index, message in enumerate(() if none else request.messages):
        for block_index, block in enumerate(request.blocks(message_index)):
            if block.get("type") != "compaction":
                continue
            where = _at(message_index, "content", block_index)
            if message.get("role") == "system":
                raise invalid_request(
                    f"{where}: a `compaction` block cannot be placed in a system message",
                    error_code="compaction_block_misplaced",
                )
            content = block.get("content")
            if content is None:
                continue  # a failed compaction is a no-op wherever it sits
            if not isinstance(content, str):
                raise invalid_request(f"{where}.compaction.content: Input should be a valid string")
            if not content:
                raise invalid_request(f"{where}.compaction.content: empty string content is not allowed")
            if block_index != 0:
                raise invalid_request(
                    f"{where}: a `compaction` block must be the first block of its message; the conversation it "
                    "summarises comes before it",
                    error_code="compaction_block_misplaced",
                )
            if with_content is not None:
                raise invalid_request(
                    f"{where}: `messages` holds more than one `compaction` block with content (the other is "
                    f"{_at(with_content[0], 'content', with_content[1])}); send only the block the conversation "
                    "returned last",
                    error_code="compaction_block_ambiguous",
                )
            with_content = (message_index, block_index)
    if request.compaction_request:
        _check_finished_turn(request)


def _check_finished_turn(request: Request) -> None:
    last = len(request.messages) - 1
    if request.messages[last].get("role") != "assistant":
        return
    blocks = request.blocks(last)
    unanswered = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
    paused = bool(blocks) and blocks[-1].get("type") in ("server_tool_use", "mcp_tool_use")
    if unanswered or paused:
        raise invalid_request(
            f"messages.{last}: the conversation ends on an assistant turn that is not finished "
            "(a tool call has no result); send the tool results before compacting",
            error_code="compaction_incomplete_turn",
        )


def check_system_messages(request: Request) -> None:
    """`role: "system"` messages: only on models that support them; not first; after a user message; followed by
    an assistant message or last; text content only, non-empty."""
    if request.simple:
        return
    messages = request.messages
    for index, message in enumerate(messages):
        if message.get("role") != "system":
            continue
        if not request.model.system_messages:
            raise invalid_request(f"{_at(index, 'role')}: role 'system' is not supported on this model")
        if index == 0:
            raise invalid_request(f"{_at(index, 'role')}: a 'system' message cannot be the first message")
        if messages[index - 1].get("role") != "user":
            raise invalid_request(f"{_at(index, 'role')}: a 'system' message must follow a 'user' message")
        if index + 1 < len(messages) and messages[index + 1].get("role") != "assistant":
            raise invalid_request(
                f"{_at(index, 'role')}: a 'system' message must be followed by an 'assistant' message or be the "
                "last message"
            )
        _check_system_message_fields(request, index, message)
        blocks = request.blocks(index)
        if not blocks and not isinstance(message.get("output_config"), Mapping):
            raise invalid_request(f"{_at(index)}: system messages must have non-empty content")
        for block_index, block in enumerate(blocks):
            if block["type"] not in _SYSTEM_MESSAGE_BLOCKS:
                raise invalid_request(
                    f"{_at(index, 'content', block_index)}: system messages may only contain text, tool_addition "
                    "and tool_removal blocks"
                )
            if block["type"] in ("tool_addition", "tool_removal"):
                _check_tool_change(request, index, block_index, block)
            if block["type"] == "text":
                text = block.get("text")
                problem = text_problem(text if isinstance(text, str) else "")
                if problem:
                    raise invalid_request(f"{_at(index, 'content', block_index, 'text')}: {problem}")


def _check_system_message_fields(request: Request, index: int, message: Mapping[str, Any]) -> None:
    """`clear_at` and `output_config` (effort only) of a role 'system' message, each behind its beta."""
    clear_at = message.get("clear_at")
    if clear_at is not None:
        if clear_at not in ("next_user_message", "never"):
            raise invalid_request(f"{_at(index, 'clear_at')}: Input should be 'next_user_message' or 'never'")
        if SYSTEM_CLEAR_AT_BETA not in request.betas:
            raise invalid_request(
                f"{_at(index, 'clear_at')}: this field requires the beta header {_beta_hint([SYSTEM_CLEAR_AT_BETA])}"
            )
    config = message.get("output_config")
    if config is None:
        return
    if not isinstance(config, Mapping):
        raise invalid_request(f"{_at(index, 'output_config')}: Input should be a valid dictionary")
    for name in config:
        if name != "effort":
            raise invalid_request(f"{_at(index, 'output_config', name)}: Extra inputs are not permitted")
    effort = config.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise invalid_request(
            f"{_at(index, 'output_config', 'effort')}: Input should be " + ", ".join(f"'{e}'" for e in _EFFORTS)
        )
    if SYSTEM_OUTPUT_CONFIG_BETA not in request.betas:
        raise invalid_request(
            f"{_at(index, 'output_config')}: this field requires the beta header "
            f"{_beta_hint([SYSTEM_OUTPUT_CONFIG_BETA])}"
        )


_TOOL_CHANGE_KINDS: Mapping[str, tuple[str, ...]] = {
    "tool_addition": ("tool_reference", "mcp_tool_reference", "mcp_toolset_reference", "tool_definition"),
    "tool_removal": ("tool_reference", "mcp_tool_reference", "mcp_toolset_reference"),
}


def _check_tool_change(request: Request, index: int, block_index: int, block: Mapping[str, Any]) -> None:
    kind = block["type"]
    where = _at(index, "content", block_index, kind)
    if SYSTEM_TOOL_CHANGES_BETA not in request.betas:
        raise invalid_request(f"{where}: this block requires the beta header {_beta_hint([SYSTEM_TOOL_CHANGES_BETA])}")
    tool = block.get("tool")
    tool_kind = tool.get("type") if isinstance(tool, Mapping) else None
    if tool_kind not in _TOOL_CHANGE_KINDS[kind]:
        raise invalid_request(
            f"{where}.tool: Input tag '{tool_kind}' found using 'type' does not match any of the expected tags: "
            + ", ".join(f"'{t}'" for t in _TOOL_CHANGE_KINDS[kind])
        )


def check_message_content(request: Request) -> None:
    """Per-message content rules: user content is non-empty and its text blocks are non-empty and not only
    whitespace; assistant messages are non-empty (only the final one may be empty) and their text blocks are
    non-empty; thinking, tool_use and server-tool blocks only in assistant messages, tool_result only in
    user messages; tool_use blocks have a valid, unique `id`, a `name` and an object `input`."""
    if request.simple and _unique_tool_ids(request):  # each message is valid on its own: what spans them?
        return
    messages = request.messages
    last = len(messages) - 1
    tool_ids: set[str] = set()
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "system":
            continue
        content = message.get("content")
        if role == "user":
            if content in ("", []):
                raise invalid_request(f"{_at(index)}: user messages must have non-empty content")
            if isinstance(content, str):
                problem = text_problem(content)
                if problem:
                    raise invalid_request(f"{_at(index, 'content')}: {problem}")
                continue
        elif content in ("", []):
            if index != last:
                raise invalid_request(
                    f"{_at(index)}: all messages must have non-empty content except for the optional final "
                    "assistant message"
                )
            continue
        other_content = False
        for block_index, block in enumerate(request.blocks(index)):
            _check_block(index, block_index, role, block, tool_ids)
            if block["type"] == "tool_result" and other_content:
                raise invalid_request(
                    f"{_at(index, 'content', block_index)}: `tool_result` blocks must come first in the user "
                    "message, before any other content"
                )
            if block["type"] not in ("tool_result", "compaction"):
                other_content = True


def _unique_tool_ids(request: Request) -> bool:
    """No `tool_use` id repeats across the messages of a simple request (each message alone is known valid)."""
    assert request.history is not None
    if not request.history.tools:
        return True
    seen: set[str] = set()
    for facts in request.history.messages:
        assert facts.content is not None
        for tool_id in facts.content.tool_uses:
            if tool_id in seen:
                return False
            seen.add(tool_id)
    return True


def _check_block(index: int, block_index: int, role: Any, block: Mapping[str, Any], tool_ids: set[str]) -> None:
    kind = block["type"]
    where = f"messages.{index}.content.{block_index}"
    if role == "user" and kind in _ASSISTANT_ONLY_BLOCKS:
        raise invalid_request(f"{where}: `{kind}` blocks may only appear in assistant messages")
    if role == "assistant" and kind in _USER_ONLY_BLOCKS:
        raise invalid_request(f"{where}: `{kind}` blocks may only appear in user messages")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise invalid_request(f"{where}.text: Input should be a valid string")
        problem = text_problem(text)
        # Assistant text may be whitespace (mid-conversation); only empty text is rejected there.
        if problem and (role == "user" or not text):
            raise invalid_request(f"{where}.text: {problem}")
    elif kind == "tool_use":
        tool_id = block.get("id")
        if not isinstance(tool_id, str) or not TOOL_ID.match(tool_id):
            raise invalid_request(f"{where}.tool_use.id: String should match pattern '{TOOL_ID.pattern}'")
        if tool_id in tool_ids:
            raise invalid_request(f"{where}.tool_use.id: `tool_use` ids must be unique; {tool_id} is repeated")
        tool_ids.add(tool_id)
        if not isinstance(block.get("name"), str) or not block["name"]:
            raise invalid_request(f"{where}.tool_use.name: Field required")
        if not isinstance(block.get("input"), Mapping):
            raise invalid_request(f"{where}.tool_use.input: Input should be a valid dictionary")
    elif kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
        raise invalid_request(f"{where}.tool_result.tool_use_id: Field required")
    elif kind == "thinking":
        if not isinstance(block.get("thinking"), str):
            raise invalid_request(f"{where}.thinking.thinking: Field required")
        if not isinstance(block.get("signature"), str):
            raise invalid_request(f"{where}.thinking.signature: Field required")
    elif kind == "redacted_thinking" and not isinstance(block.get("data"), str):
        raise invalid_request(f"{where}.redacted_thinking.data: Field required")
    elif kind == "image":
        _check_source(f"{where}.image", block, _IMAGE_SOURCES, _IMAGE_MEDIA_TYPES)
    elif kind == "document":
        _check_source(f"{where}.document", block, _DOCUMENT_SOURCES, None)


def _check_source(
    where: str, block: Mapping[str, Any], kinds: tuple[str, ...], media_types: tuple[str, ...] | None
) -> None:
    """An image or document `source`: a known type with the fields that type requires."""
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise invalid_request(f"{where}.source: Field required")
    kind = source.get("type")
    if kind not in kinds:
        raise invalid_request(
            f"{where}.source: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            + ", ".join(f"'{k}'" for k in kinds)
        )
    required = {"base64": ("media_type", "data"), "text": ("media_type", "data"), "url": ("url",)}.get(
        str(kind), ("file_id",) if kind == "file" else ("content",)
    )
    for name in required:
        if source.get(name) is None:
            raise invalid_request(f"{where}.source.{kind}.{name}: Field required")
    media_type = source.get("media_type")
    if kind == "base64":
        allowed = media_types or ("application/pdf",)
        if media_type not in allowed:
            raise invalid_request(
                f"{where}.source.base64.media_type: Input should be " + ", ".join(f"'{m}'" for m in allowed)
            )
        if not isinstance(source["data"], str) or not source["data"]:
            raise invalid_request(f"{where}.source.base64.data: base64 data must be a non-empty string")
    if kind == "text" and media_type != "text/plain":
        raise invalid_request(f"{where}.source.text.media_type: Input should be 'text/plain'")


def check_versioned_content(request: Request) -> None:
    """From API version 2026-10-21: no `document` block in an assistant message, no user text block with
    non-empty `citations`."""
    if request.api_version < STRICT_CONTENT_VERSION or request.simple:
        return
    for index, message in enumerate(request.messages):
        role = message.get("role")
        for block_index, block in enumerate(request.blocks(index)):
            if role == "assistant" and block["type"] == "document":
                raise invalid_request(
                    f"{_at(index, 'content', block_index)}: `document` blocks are not allowed in assistant "
                    f"messages in API version {STRICT_CONTENT_VERSION}"
                )
            if role == "user" and block["type"] == "text" and block.get("citations"):
                raise invalid_request(
                    f"{_at(index, 'content', block_index)}.text.citations: user text blocks cannot carry "
                    f"citations in API version {STRICT_CONTENT_VERSION}"
                )


def _turns(request: Request) -> Iterator[tuple[str, list[tuple[int, int, Mapping[str, Any]]]]]:
    """Messages grouped into turns: consecutive messages with the same role are merged, as the API merges them."""
    role: str | None = None
    blocks: list[tuple[int, int, Mapping[str, Any]]] = []
    for index, message in enumerate(request.messages):
        message_role = str(message.get("role"))
        if message_role != role and role is not None:
            yield role, blocks
            blocks = []
        role = message_role
        blocks.extend((index, block_index, block) for block_index, block in enumerate(request.blocks(index)))
    if role is not None:
        yield role, blocks


def check_tool_pairing(request: Request) -> None:
    """Every `tool_use` is answered by a `tool_result` with its id in the next turn, and every `tool_result`
    answers a `tool_use` of the previous assistant turn. A `tool_use` in the final turn is still open (no error);
    in a thread continue the first turn's results answer the server-held reply."""
    if request.simple and _pairs_every_tool_call(request):
        return
    turns = list(_turns(request))
    open_ids: dict[str, int] = {}  # tool_use id -> message index, from the previous assistant turn
    for turn_index, (role, blocks) in enumerate(turns):
        if role == "user":
            answered: set[str] = set()
            for index, block_index, block in blocks:
                if block["type"] != "tool_result":
                    continue
                tool_use_id = block["tool_use_id"]
                if tool_use_id not in open_ids and not (turn_index == 0 and request.thread_continue):
                    raise invalid_request(
                        f"{_at(index, 'content', block_index)}: unexpected `tool_use_id` found in `tool_result` "
                        f"blocks: {tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message."
                    )
                answered.add(tool_use_id)
            _raise_unanswered(open_ids, answered)
            open_ids = {}
        elif role == "assistant":
            _raise_unanswered(open_ids, set())
            open_ids = {block["id"]: index for index, _, block in blocks if block["type"] == "tool_use"}


def _pairs_every_tool_call(request: Request) -> bool:
    """`check_tool_pairing` passes: the same turns and the same rule, over the remembered tool ids."""
    assert request.history is not None
    if not request.history.tools:
        return True  # no tool_use and no tool_result: nothing to pair
    turns: list[tuple[str, list[str], list[str]]] = []  # (role, tool_use ids, tool_result ids), merged by role
    for facts in request.history.messages:
        assert facts.content is not None
        role = str(facts.role)
        if not turns or turns[-1][0] != role:
            turns.append((role, [], []))
        turns[-1][1].extend(facts.content.tool_uses)
        turns[-1][2].extend(facts.content.tool_results)
    open_ids: set[str] = set()
    for turn_index, (role, uses, results) in enumerate(turns):
        if role == "user":
            if not (turn_index == 0 and request.thread_continue) and any(r not in open_ids for r in results):
                return False
            if any(tool_id not in results for tool_id in open_ids):
                return False
            open_ids = set()
        elif role == "assistant":
            if open_ids:
                return False
            open_ids = set(uses)
    return True


def _raise_unanswered(open_ids: Mapping[str, int], answered: set[str]) -> None:
    missing = [tool_id for tool_id in open_ids if tool_id not in answered]
    if missing:
        raise invalid_request(
            f"messages.{open_ids[missing[0]]}: `tool_use` ids were found without `tool_result` blocks immediately "
            f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in "
            "the next message."
        )


def check_final_assistant_turn(request: Request) -> None:
    """A final assistant message is a prefill: rejected on models without prefill, and it must not end in
    whitespace. A turn sent back to be resumed (it ends in a server-tool block after `pause_turn`, or in a
    compaction block after `pause_after_compaction`) is not a prefill; nor is anything in a compaction request,
    which samples nothing."""
    if request.compaction_request:
        return
    last = len(request.messages) - 1
    if request.messages[last].get("role") != "assistant":
        return
    blocks = request.blocks(last)
    if blocks and blocks[-1]["type"] in _RESUMABLE_LAST_BLOCKS:
        return
    if not request.model.prefill:
        raise invalid_request(_PREFILL_MESSAGE)
    if blocks and blocks[-1]["type"] == "text":
        text = blocks[-1].get("text")
        if isinstance(text, str) and text != text.rstrip():
            raise invalid_request("messages: final assistant content cannot end with trailing whitespace")


def _cache_points(request: Request) -> Iterator[tuple[str, str | None, Any]]:
    """(location, block type, cache_control) of every block carrying `cache_control`, in prefix order."""
    yield from _head_cache_points(request)
    yield from _message_cache_points(request)


def _head_cache_points(request: Request) -> Iterator[tuple[str, str | None, Any]]:
    for index, tool in enumerate(request.body.get("tools") or []):
        if "cache_control" in tool and tool["cache_control"] is not None:
            yield f"tools.{index}", None, tool["cache_control"]
    system = request.body.get("system")
    if isinstance(system, list):
        for index, block in enumerate(system):
            if block.get("cache_control") is not None:
                yield f"system.{index}", "text", block["cache_control"]


def _message_cache_points(request: Request) -> Iterator[tuple[str, str | None, Any]]:
    for message_index in range(len(request.messages)):
        for block_index, block in enumerate(request.blocks(message_index)):
            nested = block.get("content")
            if isinstance(nested, list):
                for inner_index, inner in enumerate(nested):
                    if isinstance(inner, Mapping) and inner.get("cache_control") is not None:
                        where = _at(message_index, "content", block_index, "content", inner_index)
                        yield where, inner.get("type"), inner["cache_control"]
            if block.get("cache_control") is not None:
                yield _at(message_index, "content", block_index), block["type"], block["cache_control"]


def check_cache_control(request: Request) -> None:
    """`cache_control` is `{"type": "ephemeral", "ttl"?: "5m"|"1h"}`; never on thinking blocks; at most 4
    breakpoints (a top-level `cache_control` counts as one, on the last block); in prefix order (tools, system,
    messages) a 1h breakpoint may not follow a 5m one."""
    ttls: list[str] = []
    top_level = request.body.get("cache_control")
    more = 0  # breakpoints of messages beyond the TTLs remembered (the count alone refuses those requests)
    if request.simple:
        # The messages' breakpoints are known to be valid: only their count and TTLs matter here, in order.
        assert request.history is not None
        head = list(_head_cache_points(request))
        last = request.history.messages[-1]
        remembered = list(last.ttls_so_far)
        more = last.breakpoints_so_far - len(remembered)
    else:
        head, remembered = list(_cache_points(request)), []
    tail = [("cache_control", None, top_level)] if top_level is not None else []
    for where, kind, control in head:
        ttls.append(breakpoint_ttl(where, kind, control))
    ttls += remembered
    for where, kind, control in tail:
        ttls.append(breakpoint_ttl(where, kind, control))
    if len(ttls) + more > 4:
        raise invalid_request(f"A maximum of 4 blocks with cache_control may be provided. Found {len(ttls) + more}.")
    if "1h" in ttls and "5m" in ttls and ttls.index("5m") < len(ttls) - 1 - ttls[::-1].index("1h"):
        raise invalid_request(
            "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. Note that "
            "blocks are processed in the following order: `tools`, `system`, `messages`."
        )


def breakpoint_ttl(where: str, kind: str | None, control: Any) -> str:
    """The TTL of a breakpoint, or the error that refuses it."""
    if kind in ("thinking", "redacted_thinking"):
        raise invalid_request(f"{where}.{kind}.cache_control: cache_control cannot be set on {kind} blocks")
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        raise invalid_request(f"{where}.cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise invalid_request(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _drop_allowed(request: Request) -> bool:
    thinking = request.body.get("thinking")
    binding = thinking.get("block_binding") if isinstance(thinking, Mapping) else None
    return (
        THINKING_BINDING_BETA in request.betas
        and isinstance(binding, Mapping)
        and binding.get("prefix_mismatch_behavior") == "drop_block"
    )


def check_thinking_signatures(request: Request) -> None:
    """Thinking blocks come back unmodified: the signature must verify for the text and, on models that bind
    thinking to its prefix, for everything before the block. A prefix mismatch is tolerated when the request
    opts into `block_binding.prefix_mismatch_behavior: "drop_block"` (beta `thinking-binding-controls-2026-08-01`):
    the server drops the block. A block written by a model whose thinking this one may not read (see
    `ModelInfo.thinking_readers`) fails the same way, and is dropped the same way. Thread continue requests are
    skipped: earlier turns are the server's own."""
    if request.thread_continue or request.simple:  # a simple message holds no thinking block
        return
    positions = [
        (index, block_index)
        for index, message in enumerate(request.messages)
        if message.get("role") == "assistant"
        for block_index, block in enumerate(request.blocks(index))
        if block["type"] == "thinking"
    ]
    if not positions:
        return
    digests = prefix_digests(request.body, positions) if request.model.thinking_binding else {}
    for index, block_index in positions:
        block = request.blocks(index)[block_index]
        status = status_with_digest(
            request.model, digests.get((index, block_index)), block["thinking"], block["signature"]
        )
        where = _at(index, "content", block_index)
        if status == "invalid":
            raise invalid_request(f"{where}: Invalid `signature` in `thinking` block")
        if status == "prefix_mismatch" and not _drop_allowed(request):
            raise invalid_request(f"{where}: {_BINDING_MESSAGE}")
        if status == "model_mismatch" and not _drop_allowed(request):
            raise invalid_request(f"{where}: {_MODEL_BINDING_MESSAGE}")


def _effective_body(body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The body as the model sees it: the API drops everything before the last compaction block with content."""
    for index in range(len(messages) - 1, -1, -1):
        blocks = content_blocks(messages[index].get("content"))
        first = blocks[0] if blocks else None
        if isinstance(first, Mapping) and first.get("type") == "compaction" and first.get("content") is not None:
            return {**body, "messages": messages[index:]} if index else body
    return body


def check_context_window(
    body: Mapping[str, Any], model: ModelInfo, betas: frozenset[str] = frozenset(), history: Analysis | None = None
) -> None:
    """The prompt fits the model's context window (after dropping what a compaction block replaces); the beta
    `context-1m-2025-08-07` raises Sonnet 4.5's window to 1M tokens. `history`: `analyse(body)`, whose
    remembered token counts then serve (when no message holds a compaction block)."""
    window = model.context_window
    if CONTEXT_1M_BETA in betas and model.id.startswith("claude-sonnet-4-5"):
        window = max(window, 1_000_000)
    if history is not None and not history.compaction:
        tokens = history.input_tokens(model.tokenizer)
    else:
        messages = body.get("messages")
        effective = _effective_body(body, messages) if isinstance(messages, list) else body
        tokens = input_tokens(effective, model.tokenizer)
    if tokens > window:
        raise invalid_request(f"prompt is too long: {tokens} tokens > {window} maximum")


def check_prompt_length(request: Request) -> None:
    """`check_context_window` on the request. Skipped when context-management edits are set: they shrink the
    prompt first, so the server checks the edited request instead."""
    management = request.body.get("context_management")
    if isinstance(management, Mapping) and management.get("edits"):
        return
    check_context_window(request.body, request.model, request.betas, request.history)


Check = Callable[[Request], None]

#: The checks `validate_request` runs, in order; the first broken rule answers.
CHECKS: tuple[Check, ...] = (
    check_shape,
    check_removed_sampling_parameters,
    check_extra_fields,
    check_beta_parameters,
    check_context_management,
    check_compaction_parameter,
    check_max_tokens,
    check_thinking_config,
    check_system_prompt,
    check_tools,
    check_tool_choice,
    check_first_message,
    check_compaction_blocks,
    check_system_messages,
    check_message_content,
    check_versioned_content,
    check_tool_pairing,
    check_final_assistant_turn,
    check_cache_control,
    check_thinking_signatures,
    check_prompt_length,
)


def validate_request(
    body: Mapping[str, Any],
    *,
    model: ModelInfo,
    api_version: str,
    betas: frozenset[str],
    endpoint: Literal["messages", "count_tokens"] = "messages",
    history: Analysis | None = None,
) -> None:
    """Raise the `ApiError` the Messages API would answer `body` with, or return when the request is valid.

    `endpoint="count_tokens"` applies the same rules except those about `max_tokens` (not required there) and
    the explicit `compaction` parameter (accepted and ignored there). `history`: `analyse(body)`, to check only
    what is new in a conversation (see `Request`); the answer is the same without it.
    """
    request = Request(body=body, model=model, api_version=api_version, betas=betas, endpoint=endpoint, history=history)
    for check in CHECKS:
        check(request)
