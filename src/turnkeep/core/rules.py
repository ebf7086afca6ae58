"""The Messages API's request rules, written down once, on the client side.

Every request turnkeep sends goes through `normalize` (repair what can be repaired deterministically) and then
`validate` (reject what cannot, naming the first problem, its message and block, and a stable rule name). Both
are pure. `RULES` lists every rule `validate` enforces; the rule names are stable, for code to branch on.

Shapes are the SDK's own (`anthropic.types.MessageParam`): plain JSON dicts. A content block may also be an SDK
pydantic block (anything with `model_dump()`); it is read through its dump and, where `normalize` has to edit it,
replaced by the dumped dict. Unknown request keys are let through (the API may know them); unknown block types,
custom tools without `input_schema`, values nested deeper than `values.MAX_DEPTH` and lone surrogates are refused
up front (`check_values`, run first by `validate`), so no request the API must refuse is ever sent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, cast

from turnkeep.core import values
from turnkeep.core.catalog import ModelInfo
from turnkeep.core.memo import ByIdentity
from turnkeep.core.messages import block_view as _view
from turnkeep.errors import HistoryError, InvalidValue, PrefillNotSupported

if TYPE_CHECKING:
    from anthropic.types import MessageParam

__all__ = [
    "MAX_BREAKPOINTS",
    "MAX_MESSAGES",
    "MIN_THINKING_BUDGET",
    "RULES",
    "UNANSWERED_TOOL_CALL",
    "Checkpoint",
    "can_read_thinking",
    "check_model_lifecycle",
    "check_system_message_fields",
    "check_thinking_type",
    "check_tool_change_block",
    "check_tool_choice",
    "check_values",
    "is_prefill",
    "lifecycle_warning",
    "normalize",
    "strip_unreadable_thinking",
    "unanswered_tool_calls",
    "validate",
]

MAX_MESSAGES = 100_000
MAX_BREAKPOINTS = 4
MIN_THINKING_BUDGET = 1024
REMOVED_SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
CACHE_TTLS = ("5m", "1h")
UNANSWERED_TOOL_CALL = "tool call was not answered"
"""Content of the `tool_result` that `normalize(..., orphan_tool_calls="close")` adds for an unanswered call."""

OrphanMode = Literal["keep", "drop", "close"]

RULES: Mapping[str, str] = MappingProxyType(
    {
        # The request's parameters.
        "sampling_removed": "temperature, top_p and top_k were removed in API version 2026-10-21",
        "model_missing": "`model` is required and must be a non-empty string",
        "model_mismatch": "`model` must name the model whose facts the request is checked against",
        "max_tokens_invalid": "`max_tokens` is required and must be an integer >= 0",
        "max_tokens_above_limit": "`max_tokens` may not exceed the model's maximum output",
        "max_tokens_zero_not_allowed": "max_tokens 0 (cache warming) is not allowed with stream, enabled or "
        "adaptive thinking, output_config.format or a forced tool_choice (any/tool)",
        "messages_invalid": "`messages` is required and must be a list",
        "messages_empty": "`messages` must hold at least one message",
        "too_many_messages": "a request holds at most 100,000 messages",
        "model_retired": "a retired model is refused before sending; the error names its replacement",
        "thinking_type_unsupported": "thinking.type must be one the model accepts (its catalog `thinking`; "
        "'disabled' is not accepted everywhere)",
        "tool_choice_invalid": "tool_choice is {'type': 'auto' | 'any' | 'tool' | 'none'}; type 'tool' names a tool",
        "tool_choice_forced_unsupported": "a forced tool_choice (any/tool) on a model that rejects it",
        "tool_choice_unknown_tool": "tool_choice {'type': 'tool'} must name a tool in `tools`",
        "tool_choice_without_tools": "a forced tool_choice (any/tool) needs `tools`",
        "thinking_budget_invalid": "enabled thinking needs an integer budget_tokens >= 1024",
        "thinking_budget_not_below_max_tokens": "thinking.budget_tokens must be less than max_tokens",
        "stop_sequences_invalid": "`stop_sequences` must be a list of strings",
        "stop_sequence_empty": "a stop sequence must be a non-empty string",
        "compaction_with_context_management": "an explicit `compaction` request cannot be combined with "
        "context_management",
        "thread_continue_with_prefix": "a thread 'continue' request may not send system or tools (fixed at create)",
        "tools_invalid": "`tools` must be a list of tool definitions (objects)",
        "system_invalid": "`system` must be a string or a list of text blocks",
        "system_empty": "`system` text must be non-empty and not whitespace-only",
        # Messages: roles and order.
        "message_invalid": "a message is an object with a content string or a list of typed content blocks",
        "role_invalid": "a message's role is user, assistant or system",
        "first_message_not_user": "the first message must be a user message",
        "consecutive_same_role": "user and assistant messages must alternate (normalize() merges runs)",
        "system_message_unsupported": "role 'system' messages are only accepted by some models",
        "system_message_first": "a role 'system' message may not be the first message",
        "system_message_not_after_user": "a role 'system' message must directly follow a user message",
        "system_message_not_before_assistant": "a role 'system' message must be followed by an assistant message "
        "or be the last message",
        "system_message_not_text": "a role 'system' message holds text, or tool_addition / tool_removal blocks",
        "system_message_field_invalid": "a role 'system' message's clear_at is 'next_user_message' or 'never'; its "
        "output_config holds only effort (low, medium, high, xhigh, max)",
        "system_message_beta_required": "clear_at, output_config and tool_addition / tool_removal blocks of a "
        "role 'system' message need their beta in `betas`",
        "system_message_empty": "a role 'system' message's text must be non-empty and not whitespace-only",
        # Messages: content blocks.
        "empty_content": "message content may not be '' or []",
        "user_text_empty": "user text must be non-empty and not whitespace-only",
        "assistant_text_empty": "assistant text blocks must be non-empty (normalize() drops them)",
        "block_invalid": "a text, tool_use or tool_result block lacks a required field",
        "block_wrong_role": "thinking and tool_use blocks belong to assistant messages, tool_result to user messages",
        "thinking_block_invalid": "thinking blocks need `thinking` and a non-empty `signature`; redacted_thinking "
        "needs `data`",
        "document_in_assistant": "no document block inside an assistant message (API 2026-10-21)",
        "user_text_citations": "no user text block with non-empty citations (API 2026-10-21)",
        # Tool calls.
        "tool_use_id_duplicate": "tool_use ids must be unique in the request",
        "tool_use_unanswered": "every tool_use must be answered by a tool_result in the next (user) message",
        "tool_result_orphan": "a tool_result must answer a tool_use of the previous (assistant) message",
        "tool_result_duplicate": "a tool_use is answered by exactly one tool_result",
        "tool_result_not_first": "tool_result blocks come first in their message, before any other content",
        # Compaction blocks.
        "compaction_content_empty": "a compaction block's content is null or a non-empty string",
        "compaction_block_ambiguous": "at most one compaction block with content",
        "compaction_block_misplaced": "a compaction block with content must be the first block of its "
        "message; never in a role 'system' message",
        # Prompt caching.
        "cache_control_invalid": "cache_control is {'type': 'ephemeral', 'ttl'?: '5m' | '1h'}",
        "cache_control_on_thinking": "no cache_control on thinking or redacted_thinking blocks",
        "cache_control_too_many": "at most 4 cache breakpoints (tools, system, messages, +1 for a top-level "
        "cache_control)",
        "cache_ttl_order": "a 1h breakpoint may not follow a 5m one (order tools, system, messages)",
        # How a request must end (skipped while a history is being built: complete=False).
        "prefill_not_supported": "a final (prefill) assistant message on a model without prefill "
        "(raises PrefillNotSupported)",
        "prefill_trailing_whitespace": "a final (prefill) assistant message may not end in whitespace",
        "compaction_incomplete_turn": "an explicit compaction request may not end on an unanswered tool_use",
        # Hostile values (check_values), before any other rule.
        "value_too_deep": f"objects and lists nest at most {values.MAX_DEPTH} levels (tool inputs included)",
        "lone_surrogate": "text must be valid Unicode: no lone surrogate in a message, system prompt or tool",
        "block_type_unknown": "a content block's type is one the Messages API knows",
        "tool_schema_missing": "a custom tool definition needs `name` and an `input_schema` object",
    }
)


# --------------------------------------------------------------------------------------------------------------
# Reading blocks


def _block_type(block: object) -> str | None:
    view = _view(block)
    if view is None:
        return None
    block_type = view.get("type")
    return block_type if isinstance(block_type, str) else None


def _role(message: object) -> object:
    return message.get("role") if isinstance(message, Mapping) else None


def _content_list(message: object) -> list[Any] | None:
    """The message's content as a list of blocks (a string is one text block); None when it is neither."""
    if not isinstance(message, Mapping):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list | tuple):
        return list(content)
    return None


def _is_server_tool_block(block_type: str | None) -> bool:
    """Blocks of a tool the API runs itself (web search, code execution, MCP ...), never answered by the client."""
    if block_type is None:
        return False
    if block_type in ("server_tool_use", "mcp_tool_use", "mcp_tool_result"):
        return True
    return block_type.endswith("_tool_result") and block_type != "tool_result"


def _tool_use_ids(blocks: Sequence[Any]) -> list[tuple[int, str]]:
    """(block index, id) of the client tool calls among `blocks`."""
    found = []
    for index, block in enumerate(blocks):
        view = _view(block)
        if view is not None and view.get("type") == "tool_use" and isinstance(view.get("id"), str):
            found.append((index, view["id"]))
    return found


def _tool_result_ids(blocks: Sequence[Any]) -> set[str]:
    ids = set()
    for block in blocks:
        view = _view(block)
        if view is not None and view.get("type") == "tool_result" and isinstance(view.get("tool_use_id"), str):
            ids.add(view["tool_use_id"])
    return ids


def is_prefill(messages: Sequence[MessageParam]) -> bool:
    """Whether the conversation ends with an assistant message that the model would continue (a prefill).

    Not a prefill: a final assistant message with tool calls (it awaits tool results), one whose last block
    belongs to a server tool (a `pause_turn` reply sent back so the model resumes its own turn), or one ending in a
    compaction block (a reply paused by `pause_after_compaction`, sent back the same way).
    """
    if not messages or _role(messages[-1]) != "assistant":
        return False
    blocks = _content_list(messages[-1]) or []
    if _tool_use_ids(blocks):
        return False
    last = _block_type(blocks[-1]) if blocks else None
    return not (_is_server_tool_block(last) or last == "compaction")


def unanswered_tool_calls(messages: Sequence[MessageParam]) -> list[str]:
    """Ids of the tool calls in the last assistant message that the message after it does not answer, in order.

    When the conversation ends with that assistant message, these are all its calls: the results the caller
    still owes before the next request.
    """
    for index in range(len(messages) - 1, -1, -1):
        if _role(messages[index]) != "assistant":
            continue
        uses = _tool_use_ids(_content_list(messages[index]) or [])
        answered: set[str] = set()
        if index + 1 < len(messages) and _role(messages[index + 1]) == "user":
            answered = _tool_result_ids(_content_list(messages[index + 1]) or [])
        return [tool_id for _, tool_id in uses if tool_id not in answered]
    return []


# --------------------------------------------------------------------------------------------------------------
# validate


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What validating a request settled about its first `count` messages, so that the next request of the same
    conversation, which repeats them, need not walk them again: the digest of the last of them, and the state the
    walk carries across messages (tool ids seen, whether a compaction block with content was met).

    Only messages before the request's first cache breakpoint are settled: those never change as a conversation
    grows, while a moving breakpoint is taken off the message that carried it."""

    model: str
    count: int
    first: str
    last: str
    tool_use_ids: frozenset[str]
    compaction_with_content: bool


def validate(
    request: Mapping[str, Any],
    model: ModelInfo,
    *,
    complete: bool = True,
    since: Checkpoint | None = None,
) -> Checkpoint | None:
    """Raise `HistoryError` naming the first rule `request` breaks, or `PrefillNotSupported`; else return a
    `Checkpoint` for the next request of the same conversation (None when there is nothing to settle).

    `request` is the keyword arguments of `messages.create`. The walk goes: parameters, tools, system, then each
    message in order (its role and position, its link to the message before, its blocks), then the top-level
    cache_control, then how the request ends. With `complete=False` the request is a history still being built:
    the rules about its end (prefill, trailing whitespace of a final assistant message, tool calls awaiting
    results in it) are skipped, everything else is checked.

    `since` (from validating the previous request) lets the walk resume at its last settled message, which is
    checked again with its current neighbours; it is used only when that message is byte-identical, and it is
    the caller's promise that the messages before it are unchanged (a conversation only appends to them).
    """
    return _Validator(request, model).run(complete=complete, since=since)


def _exact_digest(message: object) -> str:
    return hashlib.sha256(json.dumps(message, sort_keys=True, default=str).encode()).hexdigest()


_digest = ByIdentity(_exact_digest, limit=1024)
"""A message's digest as it is (breakpoints included), remembered by identity (see `ByIdentity`): a turn asks for
the same few messages' digests again, and so does the next turn."""


def _has_breakpoint(value: object) -> bool:
    return values.has_key(value, "cache_control")  # iterative: a tool input may nest without bound


def _fail(rule: str, detail: str, message_index: int | None = None, block_index: int | None = None) -> HistoryError:
    assert rule in RULES, rule  # every rule raised is documented
    return HistoryError(rule, detail, message_index=message_index, block_index=block_index)


def _where(message_index: int, block_index: int | None) -> str:
    return f"messages[{message_index}]" + (f".content[{block_index}]" if block_index is not None else "")


@dataclass
class _Validator:
    request: Mapping[str, Any]
    model: ModelInfo
    breakpoints: int = 0
    first_5m: str | None = None  # where the first 5-minute breakpoint sits, for the TTL order rule
    tool_use_ids: set[str] = field(default_factory=set)
    compaction_with_content: bool = False

    def run(self, *, complete: bool, since: Checkpoint | None) -> Checkpoint | None:
        messages = self._check_required()
        check_model_lifecycle(self.model)
        self._check_options()
        check_tool_choice(self.request, self.model)
        self._check_tools()
        self._check_system()
        start = 0
        if (
            since is not None
            and since.model == self.model.id
            and 0 < since.count <= len(messages)
            and _digest(messages[since.count - 1]) == since.last
            # A window step or a summary changes the first message: then nothing is taken as settled.
            and _digest(messages[0]) == since.first
        ):
            start = since.count - 1  # the settled messages before it carry no breakpoint: nothing to count
            self.tool_use_ids = set(since.tool_use_ids)
            self.compaction_with_content = since.compaction_with_content
        # Hostile values first, in what has not been checked before (settled messages were, when they were new).
        check_values(self.request, start=start)
        settled = self._settled(messages, start)
        snapshot: tuple[frozenset[str], bool] | None = None
        for index in range(start, len(messages)):
            if index == settled - 1:
                snapshot = (frozenset(self.tool_use_ids), self.compaction_with_content)
            self._check_message(messages, index)
        cache_control = self.request.get("cache_control")
        if cache_control is not None:
            # Automatic caching puts its breakpoint on the last cacheable block: it counts, and comes last.
            self._breakpoint(cache_control, "cache_control (top level)", None, None)
        if complete:
            self._check_ending(messages)
        if snapshot is None:
            return None
        return Checkpoint(self.model.id, settled, _digest(messages[0]), _digest(messages[settled - 1]), *snapshot)

    @staticmethod
    def _settled(messages: Sequence[Any], start: int) -> int:
        """How many leading messages the next request will repeat unchanged: those before the first message with
        a cache breakpoint (its breakpoint may move), and never a final assistant message (a prefill is replaced
        by its reply). Messages before `start` are known to carry no breakpoint."""
        end = len(messages)
        if end and _role(messages[-1]) == "assistant":
            end -= 1
        for index in range(start, end):
            if _has_breakpoint(messages[index]):
                return index
        return end

    # ---- parameters

    def _check_required(self) -> Sequence[Any]:
        """The removed sampling parameters, then `model`, `max_tokens` and `messages`; returns the messages."""
        request, model = self.request, self.model
        for name in REMOVED_SAMPLING_PARAMS:
            if name in request:
                raise _fail("sampling_removed", f"`{name}` was removed in API version 2026-10-21; leave it out")
        model_id = request.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise _fail("model_missing", "`model` is required (a non-empty string)")
        if model_id != model.id and model_id not in model.aliases:
            raise _fail("model_mismatch", f"request model {model_id!r} is checked against the facts of {model.id!r}")
        max_tokens = request.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise _fail("max_tokens_invalid", f"`max_tokens` is required, an integer >= 0 (got {max_tokens!r})")
        if max_tokens > model.max_output:
            hint = "" if model.known else " (catalog defaults for an unknown model; add it to your catalog file)"
            raise _fail(
                "max_tokens_above_limit",
                f"max_tokens {max_tokens} exceeds the maximum output of {model.id!r}, {model.max_output}{hint}",
            )
        messages = request.get("messages")
        if not isinstance(messages, list | tuple):
            raise _fail("messages_invalid", "`messages` is required, a list of messages")
        if not messages:
            raise _fail("messages_empty", "`messages` is empty; a request needs at least one user message")
        if len(messages) > MAX_MESSAGES:
            raise _fail("too_many_messages", f"{len(messages)} messages; a request holds at most {MAX_MESSAGES:,}")
        return messages

    def _check_options(self) -> None:
        request, model = self.request, self.model
        max_tokens: int = request["max_tokens"]
        thinking = request.get("thinking")
        thinking_type = thinking.get("type") if isinstance(thinking, Mapping) else None
        if max_tokens == 0:
            reason = self._zero_max_tokens_conflict(thinking_type)
            if reason:
                raise _fail("max_tokens_zero_not_allowed", f"max_tokens 0 (cache warming) is not allowed with {reason}")
        if thinking is not None:
            check_thinking_type(thinking_type, model)
            if thinking_type == "enabled":
                budget = cast(Mapping[str, Any], thinking).get("budget_tokens")
                if not isinstance(budget, int) or isinstance(budget, bool) or budget < MIN_THINKING_BUDGET:
                    raise _fail(
                        "thinking_budget_invalid",
                        f"thinking.budget_tokens must be an integer >= {MIN_THINKING_BUDGET} (got {budget!r})",
                    )
                if budget >= max_tokens:
                    raise _fail(
                        "thinking_budget_not_below_max_tokens",
                        f"thinking.budget_tokens {budget} must be less than max_tokens {max_tokens}",
                    )
        stop_sequences = request.get("stop_sequences")
        if stop_sequences is not None:
            if not isinstance(stop_sequences, list | tuple):
                raise _fail("stop_sequences_invalid", "`stop_sequences` must be a list of strings")
            for index, sequence in enumerate(stop_sequences):
                if not isinstance(sequence, str):
                    raise _fail("stop_sequences_invalid", f"stop_sequences[{index}] is not a string")
                if not sequence:
                    raise _fail("stop_sequence_empty", f"stop_sequences[{index}] is empty")
        if request.get("compaction") is not None and request.get("context_management") is not None:
            raise _fail(
                "compaction_with_context_management",
                "an explicit `compaction` request cannot be combined with `context_management`",
            )
        if self._continues_thread():
            for name in ("system", "tools"):
                if request.get(name) is not None:
                    raise _fail(
                        "thread_continue_with_prefix",
                        f"a thread 'continue' request may not send `{name}`: it was fixed when the thread was created",
                    )

    def _zero_max_tokens_conflict(self, thinking_type: object) -> str | None:
        request = self.request
        if request.get("stream"):
            return "stream"
        if thinking_type in ("enabled", "adaptive"):
            return f"{thinking_type} thinking"
        output_config = request.get("output_config")
        if isinstance(output_config, Mapping) and output_config.get("format") is not None:
            return "output_config.format"
        tool_choice = request.get("tool_choice")
        if isinstance(tool_choice, Mapping) and tool_choice.get("type") in ("any", "tool"):
            return f"a forced tool_choice ({tool_choice.get('type')})"
        return None

    def _continues_thread(self) -> bool:
        thread = self.request.get("thread")
        return isinstance(thread, Mapping) and thread.get("type") == "continue"

    def _check_tools(self) -> None:
        tools = self.request.get("tools")
        if tools is None:
            return
        if not isinstance(tools, list | tuple):
            raise _fail("tools_invalid", "`tools` must be a list of tool definitions")
        for index, tool in enumerate(tools):
            view = _view(tool)
            if view is None:
                raise _fail("tools_invalid", f"tools[{index}] is not a tool definition (an object)")
            self._breakpoint(view.get("cache_control"), f"tools[{index}]", None, None)

    def _check_system(self) -> None:
        system = self.request.get("system")
        if system is None:
            return
        if isinstance(system, str):
            if not system.strip():
                raise _fail("system_empty", "`system` must contain non-whitespace text")
            return
        if not isinstance(system, list | tuple):
            raise _fail("system_invalid", "`system` must be a string or a list of text blocks")
        if not system:
            raise _fail("system_empty", "`system` is an empty list; leave it out instead")
        for index, block in enumerate(system):
            view = _view(block)
            if view is None or view.get("type") != "text" or not isinstance(view.get("text"), str):
                raise _fail("system_invalid", f"system[{index}] is not a text block")
            if not view["text"].strip():
                raise _fail("system_empty", f"system[{index}] must contain non-whitespace text")
            self._breakpoint(view.get("cache_control"), f"system[{index}]", None, None)

    # ---- one message

    def _check_message(self, messages: Sequence[Any], index: int) -> None:
        message = messages[index]
        if not isinstance(message, Mapping):
            raise _fail("message_invalid", "a message must be an object with role and content", index)
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise _fail("role_invalid", f"role {role!r} is not one of user, assistant, system", index)
        self._check_position(messages, index, role)
        content = message.get("content")
        if isinstance(content, str):
            blocks: list[tuple[int | None, Mapping[str, Any]]] = [(None, {"type": "text", "text": content})]
        elif isinstance(content, list | tuple):
            blocks = []
            for block_index, block in enumerate(content):
                view = _view(block)
                if view is None or not isinstance(view.get("type"), str):
                    raise _fail("message_invalid", "a content block must be an object with a type", index, block_index)
                blocks.append((block_index, view))
        elif role == "system" and content is None and "content" not in message:
            blocks = []  # a system message may carry only its output_config (checked with the message)
        else:
            raise _fail("message_invalid", "content must be a string or a list of content blocks", index)
        if role == "system":
            self._check_system_message(index, blocks)
            return
        if not content:
            detail = f"{role} message content may not be empty"
            raise _fail("empty_content", detail + " (normalize() drops empty messages)", index)
        previous_uses: dict[str, int] | None = None  # tool_use id -> block index, in the previous message
        if role == "user":
            previous_uses = self._check_previous_answered(messages, index, blocks)
        seen_results: set[str] = set()
        other_content = False
        for position, view in blocks:
            self._check_block(index, position, view, role, previous_uses, seen_results, other_content)
            if view["type"] not in ("tool_result", "compaction"):
                other_content = True

    def _check_position(self, messages: Sequence[Any], index: int, role: str) -> None:
        previous_role = _role(messages[index - 1]) if index > 0 else None
        if role == "system":
            if not self.model.system_messages:
                raise _fail(
                    "system_message_unsupported",
                    f"role 'system' messages are not supported on {self.model.id!r}; use the top-level `system`",
                    index,
                )
            if index == 0:
                raise _fail("system_message_first", "a role 'system' message may not be the first message", index)
            if previous_role != "user":
                raise _fail(
                    "system_message_not_after_user",
                    f"a role 'system' message must directly follow a user message, not {previous_role!r}",
                    index,
                )
            if index + 1 < len(messages) and _role(messages[index + 1]) != "assistant":
                raise _fail(
                    "system_message_not_before_assistant",
                    "a role 'system' message must be followed by an assistant message or be the last message",
                    index,
                )
            return
        if index == 0 and role != "user":
            raise _fail("first_message_not_user", f"the first message must be a user message, not {role!r}", index)
        if previous_role == role:
            raise _fail(
                "consecutive_same_role",
                f"two {role} messages in a row (messages[{index - 1}] and messages[{index}]); normalize() merges them",
                index,
            )

    def _check_system_message(self, index: int, blocks: list[tuple[int | None, Mapping[str, Any]]]) -> None:
        message = cast(Mapping[str, Any], cast(Sequence[Any], self.request["messages"])[index])
        has_config = check_system_message_fields(message, index, _betas(self.request))
        if not blocks and not has_config:
            raise _fail("system_message_empty", "a role 'system' message may not be empty", index)
        for block_index, view in blocks:
            if view["type"] in SYSTEM_MESSAGE_TOOL_BLOCKS:
                check_tool_change_block(view, index, block_index, _betas(self.request))
                self._breakpoint(view.get("cache_control"), _where(index, block_index), index, block_index)
                continue
            if view["type"] == "compaction":
                raise _fail(
                    "compaction_block_misplaced",
                    "a compaction block may not sit in a role 'system' message",
                    index,
                    block_index,
                )
            if view["type"] != "text" or not isinstance(view.get("text"), str):
                raise _fail(
                    "system_message_not_text",
                    f"a role 'system' message holds text, tool_addition or tool_removal blocks, not {view['type']!r}",
                    index,
                    block_index,
                )
            if not view["text"].strip():
                raise _fail(
                    "system_message_empty", "role 'system' text must contain non-whitespace text", index, block_index
                )
            self._breakpoint(view.get("cache_control"), _where(index, block_index), index, block_index)

    def _check_previous_answered(
        self, messages: Sequence[Any], index: int, blocks: list[tuple[int | None, Mapping[str, Any]]]
    ) -> dict[str, int] | None:
        """Check the previous assistant message's tool calls are all answered here; return them by id."""
        if index == 0 or _role(messages[index - 1]) != "assistant":
            return None
        uses = _tool_use_ids(_content_list(messages[index - 1]) or [])
        answered = _tool_result_ids([view for _, view in blocks])
        for block_index, tool_id in uses:
            if tool_id not in answered:
                raise _fail(
                    "tool_use_unanswered",
                    f"tool_use {tool_id!r} has no tool_result in the next message, messages[{index}] "
                    "(normalize(orphan_tool_calls='close' or 'drop') repairs this)",
                    index - 1,
                    block_index,
                )
        return {tool_id: block_index for block_index, tool_id in uses}

    def _check_block(
        self,
        index: int,
        block_index: int | None,
        view: Mapping[str, Any],
        role: str,
        previous_uses: dict[str, int] | None,
        seen_results: set[str],
        other_content: bool,
    ) -> None:
        block_type = view["type"]
        fail_here = _Here(index, block_index)
        if block_type == "text":
            text = view.get("text")
            if not isinstance(text, str):
                raise fail_here("block_invalid", "a text block needs `text` (a string)")
            if role == "user":
                if not text.strip():
                    raise fail_here(
                        "user_text_empty", "user text must contain non-whitespace text (normalize() drops it)"
                    )
                if view.get("citations"):
                    raise fail_here("user_text_citations", "user text blocks may not carry citations (API 2026-10-21)")
            elif not text:
                raise fail_here(
                    "assistant_text_empty", "assistant text blocks must be non-empty (normalize() drops them)"
                )
        elif block_type in ("thinking", "redacted_thinking"):
            if role != "assistant":
                raise fail_here("block_wrong_role", f"a {block_type} block belongs in an assistant message")
            if view.get("cache_control") is not None:
                raise fail_here("cache_control_on_thinking", f"a {block_type} block cannot carry cache_control")
            if block_type == "thinking":
                # `thinking` may be "" (display: "omitted" returns only the signature); the signature may not.
                if not isinstance(view.get("thinking"), str) or not _nonempty_str(view.get("signature")):
                    raise fail_here(
                        "thinking_block_invalid", "a thinking block needs `thinking` and `signature`, as returned"
                    )
            elif not _nonempty_str(view.get("data")):
                raise fail_here("thinking_block_invalid", "a redacted_thinking block needs `data`, as returned")
        elif block_type in ("tool_use", "server_tool_use"):
            if role != "assistant":
                raise fail_here("block_wrong_role", f"a {block_type} block belongs in an assistant message")
            tool_id = view.get("id")
            if not _nonempty_str(tool_id) or not isinstance(view.get("name"), str):
                raise fail_here("block_invalid", f"a {block_type} block needs `id`, `name` and `input`")
            if not isinstance(view.get("input"), Mapping):
                raise fail_here("block_invalid", f"a {block_type} block's `input` must be an object")
            if tool_id in self.tool_use_ids:
                raise fail_here("tool_use_id_duplicate", f"tool_use id {tool_id!r} is used twice")
            self.tool_use_ids.add(tool_id)
        elif block_type == "tool_result":
            if role != "user":
                raise fail_here("block_wrong_role", "a tool_result block belongs in a user message")
            tool_use_id = view.get("tool_use_id")
            if not _nonempty_str(tool_use_id):
                raise fail_here("block_invalid", "a tool_result block needs `tool_use_id`")
            if other_content:
                raise fail_here("tool_result_not_first", "tool_result blocks must come before any other content")
            if tool_use_id in seen_results:
                raise fail_here("tool_result_duplicate", f"tool_use {tool_use_id!r} is answered twice")
            seen_results.add(tool_use_id)
            # A thread 'continue' request answers the tool calls of the reply the server holds.
            if (previous_uses is None or tool_use_id not in previous_uses) and not (
                index == 0 and self._continues_thread()
            ):
                raise fail_here(
                    "tool_result_orphan",
                    f"tool_result for {tool_use_id!r} answers no tool_use of the previous (assistant) message",
                )
            self._nested_breakpoints(index, block_index, view)
        elif block_type == "document":
            if role == "assistant":
                raise fail_here("document_in_assistant", "document blocks may not sit in assistant messages")
        elif block_type == "compaction":
            content = view.get("content")
            if content is not None:
                if not _nonempty_str(content):
                    raise fail_here("compaction_content_empty", "a compaction block's content is null or non-empty")
                if self.compaction_with_content:
                    raise fail_here(
                        "compaction_block_ambiguous",
                        "more than one compaction block with content; send only the latest",
                    )
                self.compaction_with_content = True
                # The reference says "first in messages" (§1) but also that a compaction reply is appended to the
                # history as usual (§7), which puts the block mid-history; the API then ignores what precedes it.
                # So the block must lead its own message, wherever that message is.
                if block_index != 0:
                    raise fail_here(
                        "compaction_block_misplaced",
                        "a compaction block with content must be the first block of its message",
                    )
        if block_type not in ("thinking", "redacted_thinking"):
            where = _where(index, block_index)
            self._breakpoint(view.get("cache_control"), where, index, block_index)

    def _nested_breakpoints(self, index: int, block_index: int | None, view: Mapping[str, Any]) -> None:
        nested = view.get("content")
        if not isinstance(nested, list | tuple):
            return
        for inner_index, inner in enumerate(nested):
            inner_view = _view(inner)
            if inner_view is not None:
                where = f"{_where(index, block_index)}.content[{inner_index}]"
                self._breakpoint(inner_view.get("cache_control"), where, index, block_index)

    # ---- prompt caching

    def _breakpoint(self, cache_control: object, where: str, index: int | None, block_index: int | None) -> None:
        if cache_control is None:
            return
        if not isinstance(cache_control, Mapping) or cache_control.get("type") != "ephemeral":
            raise _fail(
                "cache_control_invalid", f"{where}: cache_control must be {{'type': 'ephemeral'}}", index, block_index
            )
        ttl = cache_control.get("ttl") or "5m"
        if ttl not in CACHE_TTLS:
            raise _fail(
                "cache_control_invalid",
                f"{where}: cache_control ttl must be '5m' or '1h', not {ttl!r}",
                index,
                block_index,
            )
        self.breakpoints += 1
        if self.breakpoints > MAX_BREAKPOINTS:
            raise _fail(
                "cache_control_too_many",
                f"{where}: breakpoint number {self.breakpoints}; at most {MAX_BREAKPOINTS} are allowed",
                index,
                block_index,
            )
        if ttl == "1h" and self.first_5m is not None:
            raise _fail(
                "cache_ttl_order",
                f"{where}: a 1h breakpoint after the 5m one at {self.first_5m}; longer TTLs must come first",
                index,
                block_index,
            )
        if ttl == "5m" and self.first_5m is None:
            self.first_5m = where

    # ---- how the request ends

    def _check_ending(self, messages: Sequence[Any]) -> None:
        last_index = len(messages) - 1
        last = messages[last_index]
        if _role(last) != "assistant":
            return  # a user message, or a role 'system' message (the model answers it), ends a request
        blocks = _content_list(last) or []
        explicit_compaction = self.request.get("compaction") is not None
        uses = _tool_use_ids(blocks)
        if uses:
            block_index, tool_id = uses[0]
            if explicit_compaction:
                raise _fail(
                    "compaction_incomplete_turn",
                    f"cannot compact a conversation whose last turn awaits the result of tool_use {tool_id!r}",
                    last_index,
                    block_index,
                )
            raise _fail(
                "tool_use_unanswered",
                f"the request ends awaiting the result of tool_use {tool_id!r}; append a user message with it",
                last_index,
                block_index,
            )
        # An explicit compaction request's reply is the compaction block, not a continuation of this message;
        # a final message ending in a server-tool block is a resumed turn (pause_turn), allowed on every model.
        if explicit_compaction or not is_prefill(messages):
            return
        if not self.model.prefill:
            raise PrefillNotSupported(self.model.id)
        content = cast(Mapping[str, Any], last).get("content")
        text_index: int | None = None if isinstance(content, str) else len(blocks) - 1
        final = _view(blocks[-1]) if blocks else None
        if final is not None and final.get("type") == "text":
            text = final.get("text")
            if isinstance(text, str) and text != text.rstrip():
                raise _fail(
                    "prefill_trailing_whitespace",
                    "the final assistant message (prefill) may not end in whitespace (normalize() strips it)",
                    last_index,
                    text_index,
                )


class _Here:
    """Builds errors located at one block."""

    def __init__(self, index: int, block_index: int | None) -> None:
        self.index = index
        self.block_index = block_index

    def __call__(self, rule: str, detail: str) -> HistoryError:
        return _fail(rule, detail, self.index, self.block_index)


def _nonempty_str(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


# --------------------------------------------------------------------------------------------------------------
# Model facts: rules that depend on what the catalog says about the model (lifecycle, thinking types, forced tool
# choice, mid-conversation system messages, which thinking blocks a model can read). Each is a small function of
# the request and the model's `ModelInfo`, so the emulator's validator and these rules can be tested on one table.

#: Beta headers of the richer role 'system' messages (SDK 2.16 `BetaSystemMessageParam`).
SYSTEM_MESSAGE_TOOL_CHANGES_BETA = "mid-conversation-tool-changes-2026-07-01"
SYSTEM_MESSAGE_OUTPUT_CONFIG_BETA = "mid-conversation-output-config-2026-07-01"
SYSTEM_MESSAGE_CLEAR_AT_BETA = "mid-conversation-system-clear-at-2026-08-21"
SYSTEM_MESSAGE_TOOL_BLOCKS = ("tool_addition", "tool_removal")
SYSTEM_MESSAGE_CLEAR_AT = ("next_user_message", "never")
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
_TOOL_REFERENCES = {
    "tool_addition": ("tool_reference", "mcp_tool_reference", "mcp_toolset_reference", "tool_definition"),
    "tool_removal": ("tool_reference", "mcp_tool_reference", "mcp_toolset_reference"),
}


def _betas(request: Mapping[str, Any]) -> frozenset[str]:
    betas = request.get("betas")
    if isinstance(betas, str):
        return frozenset(b.strip() for b in betas.split(","))
    if isinstance(betas, list | tuple):
        return frozenset(str(b) for b in betas)
    return frozenset()


def check_model_lifecycle(model: ModelInfo) -> None:
    """A retired model is refused before sending (the API would answer 404), naming its replacement."""
    if model.lifecycle != "retired":
        return
    when = f" on {model.retires_at}" if model.retires_at else ""
    instead = f"; use {model.replacement!r} instead" if model.replacement else "; choose a current model"
    raise _fail("model_retired", f"model {model.id!r} was retired{when}{instead}")


def lifecycle_warning(model: ModelInfo) -> str | None:
    """The warning a deprecated model deserves (date and replacement), or None for an active or retired one."""
    if model.lifecycle != "deprecated":
        return None
    # The SDK's wording ("end of life"), which reads true before and after the date (core has no clock).
    when = f" (end of life: {model.retires_at})" if model.retires_at else ""
    instead = f"; move to {model.replacement!r}" if model.replacement else ""
    return f"model {model.id!r} is deprecated{when}{instead}"


def check_thinking_type(thinking_type: object, model: ModelInfo) -> None:
    """`thinking.type` is one of the types the model accepts: exactly its catalog list ("disabled" included only
    where the model accepts it). Leaving `thinking` out is always accepted: the model uses its own default."""
    if thinking_type in model.thinking:
        return
    accepted = ", ".join(model.thinking) or "none (leave `thinking` out)"
    raise _fail(
        "thinking_type_unsupported",
        f"thinking type {thinking_type!r} is not accepted by {model.id!r} (accepted: {accepted})",
    )


def check_tool_choice(request: Mapping[str, Any], model: ModelInfo) -> None:
    """`tool_choice`: a known type; a forced one (any/tool) needs `tools` and a model that accepts it; type 'tool'
    names a tool of `tools`."""
    choice = request.get("tool_choice")
    if choice is None:
        return
    view = _view(choice)
    kind = view.get("type") if view is not None else None
    if kind not in TOOL_CHOICE_TYPES:
        raise _fail("tool_choice_invalid", f"tool_choice type {kind!r} is not one of {', '.join(TOOL_CHOICE_TYPES)}")
    assert view is not None
    if kind not in ("any", "tool"):
        return
    if not model.forced_tool_choice:
        raise _fail(
            "tool_choice_forced_unsupported",
            f"{model.id!r} rejects a forced tool_choice ({kind!r}); use 'auto' and say in the prompt which tool to use",
        )
    thread = request.get("thread")
    if isinstance(thread, Mapping) and thread.get("type") == "continue":
        return  # the tools were fixed when the thread was created: not in this request
    tools = request.get("tools")
    names = {
        tool_view.get("name")
        for tool in (tools if isinstance(tools, list | tuple) else ())
        if (tool_view := _view(tool)) is not None
    }
    if not names:
        raise _fail("tool_choice_without_tools", f"tool_choice {kind!r} forces a tool call but `tools` is empty")
    if kind == "tool":
        name = view.get("name")
        if not isinstance(name, str):
            raise _fail("tool_choice_invalid", "tool_choice {'type': 'tool'} needs the tool's `name`")
        if name not in names:
            raise _fail("tool_choice_unknown_tool", f"tool_choice names tool {name!r}, which is not in `tools`")


def check_system_message_fields(message: Mapping[str, Any], index: int, betas: frozenset[str]) -> bool:
    """The extra fields of a role 'system' message (`clear_at`, `output_config`), each behind its beta; True when
    the message carries an output_config (which lets it go without content)."""
    clear_at = message.get("clear_at")
    if clear_at is not None:
        if clear_at not in SYSTEM_MESSAGE_CLEAR_AT:
            raise _fail(
                "system_message_field_invalid",
                f"clear_at must be 'next_user_message' or 'never', not {clear_at!r}",
                index,
            )
        _require_beta(SYSTEM_MESSAGE_CLEAR_AT_BETA, "clear_at", betas, index, None)
    config = message.get("output_config")
    if config is None:
        return False
    if not isinstance(config, Mapping) or set(config) - {"effort"}:
        raise _fail(
            "system_message_field_invalid",
            "a role 'system' message's output_config holds only `effort` (`format` stays top-level)",
            index,
        )
    effort = config.get("effort")
    if effort is not None and effort not in EFFORT_LEVELS:
        raise _fail(
            "system_message_field_invalid", f"output_config.effort must be one of {', '.join(EFFORT_LEVELS)}", index
        )
    _require_beta(SYSTEM_MESSAGE_OUTPUT_CONFIG_BETA, "output_config", betas, index, None)
    return effort is not None or "content" in message


def check_tool_change_block(
    view: Mapping[str, Any], index: int, block_index: int | None, betas: frozenset[str]
) -> None:
    """A tool_addition / tool_removal block in a role 'system' message: a `tool` of a kind its type accepts."""
    block_type = str(view["type"])
    tool = view.get("tool")
    tool_kind = tool.get("type") if isinstance(tool, Mapping) else None
    if tool_kind not in _TOOL_REFERENCES[block_type]:
        raise _fail(
            "block_invalid",
            f"a {block_type} block needs `tool`, one of {', '.join(_TOOL_REFERENCES[block_type])}",
            index,
            block_index,
        )
    _require_beta(SYSTEM_MESSAGE_TOOL_CHANGES_BETA, f"a {block_type} block", betas, index, block_index)


def _require_beta(beta: str, what: str, betas: frozenset[str], index: int, block_index: int | None) -> None:
    if beta not in betas:
        raise _fail(
            "system_message_beta_required",
            f"{what} in a role 'system' message needs the beta {beta!r}",
            index,
            block_index,
        )


def can_read_thinking(reader: ModelInfo, writer: ModelInfo) -> bool:
    """Whether `reader` accepts the thinking blocks `writer` produced.

    A binding model's blocks are readable only by the models its catalog entry names (`thinking_readers`; itself by
    default). A binding reader needs the prefix record only binding writers put in a block, so it reads no block of
    a non-binding model; non-binding models read each other's blocks."""
    if writer.thinking_binding:
        return reader.id in writer.thinking_readers or any(alias in writer.thinking_readers for alias in reader.aliases)
    return not reader.thinking_binding


def strip_unreadable_thinking(
    messages: Sequence[MessageParam],
    writers: Sequence[str | None],
    reader: ModelInfo,
    lookup: Callable[[str], ModelInfo],
) -> list[MessageParam]:
    """The history as `reader` can take it: thinking and redacted_thinking blocks of assistant messages whose
    writer (`writers[i]`, the model that produced `messages[i]`; None when unknown) `reader` cannot read are
    removed. Pure; messages that need no change are returned as they are (the cache prefix stays byte-stable).

    A message that held only thinking is dropped (it had no tool call to answer) and the history is then normalized,
    which merges the user messages around it.

    Stripping is consistent across switches: blocks a model wrote were made with exactly the earlier blocks its
    own reading group keeps, so the prefix they are bound to is the one sent back."""
    if len(writers) != len(messages):
        raise InvalidValue(f"writers has {len(writers)} entries for {len(messages)} messages")
    kept: list[MessageParam] = []
    dropped = False
    for message, writer_id in zip(messages, writers, strict=True):
        if writer_id is None or _role(message) != "assistant" or writer_id == reader.id:
            kept.append(message)
            continue
        writer = lookup(writer_id)
        if writer.id == reader.id or can_read_thinking(reader, writer):
            kept.append(message)
            continue
        content = message.get("content")
        if not isinstance(content, list | tuple):
            kept.append(message)
            continue
        blocks = [block for block in content if _block_type(block) not in ("thinking", "redacted_thinking")]
        if len(blocks) == len(content):
            kept.append(message)
        elif blocks:
            kept.append(cast("MessageParam", {**message, "content": blocks}))
        else:
            dropped = True
    return normalize(kept) if dropped else kept


# --------------------------------------------------------------------------------------------------------------
# normalize


@dataclass
class _Turn:
    """One message during normalization. `role` is None for messages normalize leaves exactly as they are."""

    source: Any
    role: Literal["user", "assistant"] | None
    content: str | list[Any] = ""
    changed: bool = False

    @property
    def empty(self) -> bool:
        return self.role is not None and not self.content

    def blocks(self) -> list[Any]:
        if isinstance(self.content, str):
            return [{"type": "text", "text": self.content}]
        return self.content

    def materialize(self) -> Any:
        if self.role is None or (not self.changed and type(self.source) is dict):
            # Unchanged: the very message (a long history is not copied; nothing changes a message in place).
            return self.source
        content = self.content if isinstance(self.content, str) else list(self.content)
        return {**self.source, "content": content}


def normalize(messages: Sequence[MessageParam], *, orphan_tool_calls: OrphanMode = "keep") -> list[MessageParam]:
    """Repair what can be repaired deterministically; return a new list (the input is never mutated).

    In order: drop empty text blocks (assistant: ""; user: whitespace-only; such a block is dropped even when it
    carries cache_control, since breakpoints are placed after normalization), drop messages left empty, merge
    consecutive user or assistant messages, deal with orphan tool calls, and strip trailing whitespace from the
    final assistant message's last text block (dropping the block, then the message, if nothing is left).

    `orphan_tool_calls`: "keep" leaves them (validate() reports them); "drop" removes tool_use blocks the next
    message does not answer and tool_result blocks that answer nothing (or a call already answered); "close"
    answers each unanswered call with an error tool_result (content `UNANSWERED_TOOL_CALL`, placed after the
    results already in the next user message, which is created if needed) and drops orphan results. The tool
    calls of a final assistant message await their results and are never orphans.

    Idempotent; blocks are never reordered; thinking, redacted_thinking, compaction and tool_use blocks are kept
    as they are (content blocks are shared with the input, not copied). A message that needs no change keeps its
    form (string or list), so the request prefix stays byte-stable for the prompt cache. Role 'system' messages,
    unknown roles and malformed messages are never merged, moved or edited: validate() reports what is wrong.
    """
    if orphan_tool_calls not in ("keep", "drop", "close"):
        raise InvalidValue(f"orphan_tool_calls must be 'keep', 'drop' or 'close', not {orphan_tool_calls!r}")
    turns = [_turn(message) for message in messages]
    for turn in turns:
        _drop_empty_text(turn)
    turns = _merge(turns)
    if orphan_tool_calls != "keep":
        turns = _resolve_orphans(turns, orphan_tool_calls)
    _strip_final(turns)
    return [cast("MessageParam", turn.materialize()) for turn in turns]


def _turn(message: object) -> _Turn:
    if isinstance(message, Mapping):
        role = message.get("role")
        content = message.get("content")
        if role in ("user", "assistant"):
            if isinstance(content, str):
                return _Turn(message, role, content)
            if isinstance(content, list | tuple):
                return _Turn(message, role, list(content))
    return _Turn(message, None)


def _is_empty_text(block: object, role: str) -> bool:
    view = _view(block)
    if view is None or view.get("type") != "text" or not isinstance(view.get("text"), str):
        return False
    text: str = view["text"]
    return not text.strip() if role == "user" else not text


def _drop_empty_text(turn: _Turn) -> None:
    if turn.role is None:
        return
    if isinstance(turn.content, str):
        if _is_empty_text({"type": "text", "text": turn.content}, turn.role):
            turn.content, turn.changed = "", True
        return
    kept = [block for block in turn.content if not _is_empty_text(block, turn.role)]
    if len(kept) != len(turn.content):
        turn.content, turn.changed = kept, True


def _merge(turns: list[_Turn]) -> list[_Turn]:
    """Drop emptied messages, then merge runs of user (or assistant) messages into their first message."""
    merged: list[_Turn] = []
    for turn in turns:
        if turn.empty:
            continue
        previous = merged[-1] if merged else None
        if previous is not None and turn.role is not None and previous.role == turn.role:
            merged[-1] = _Turn(previous.source, previous.role, previous.blocks() + turn.blocks(), changed=True)
        else:
            merged.append(turn)
    return merged


def _orphans(turns: list[_Turn]) -> tuple[dict[int, list[str]], set[tuple[int, int]]]:
    """Unanswered tool calls (turn index -> ids) and orphan tool results ((turn index, block index))."""
    unanswered: dict[int, list[str]] = {}
    orphan_results: set[tuple[int, int]] = set()
    last = len(turns) - 1
    for index, turn in enumerate(turns):
        if turn.role == "assistant" and index < last:
            following = turns[index + 1]
            answered = _tool_result_ids(following.blocks()) if following.role == "user" else set()
            missing = [tool_id for _, tool_id in _tool_use_ids(turn.blocks()) if tool_id not in answered]
            if missing:
                unanswered[index] = missing
        elif turn.role == "user":
            previous = turns[index - 1] if index > 0 else None
            calls = (
                {tool_id for _, tool_id in _tool_use_ids(previous.blocks())}
                if previous is not None and previous.role == "assistant"
                else set()
            )
            for block_index, block in enumerate(turn.blocks()):
                view = _view(block)
                if view is not None and view.get("type") == "tool_result":
                    # A second result for the same call answers nothing either.
                    if view.get("tool_use_id") not in calls:
                        orphan_results.add((index, block_index))
                    calls.discard(view.get("tool_use_id"))
    return unanswered, orphan_results


def _resolve_orphans(turns: list[_Turn], mode: OrphanMode) -> list[_Turn]:
    # Each round removes orphan blocks or answers calls; merging what emptied messages leave behind can create new
    # orphans only by dropping blocks, so the loop ends (in practice after one or two rounds).
    while True:
        unanswered, orphan_results = _orphans(turns)
        if not unanswered and not orphan_results:
            return turns
        repaired: list[_Turn] = []
        for index, turn in enumerate(turns):
            if turn.role is None:
                repaired.append(turn)
                continue
            blocks = turn.blocks()
            kept: list[Any] = []
            for block_index, block in enumerate(blocks):
                if turn.role == "user" and (index, block_index) in orphan_results:
                    continue
                if turn.role == "assistant" and mode == "drop" and _unanswered_use(block, unanswered.get(index)):
                    continue
                kept.append(block)
            changed = len(kept) != len(blocks)
            if mode == "close" and turn.role == "user" and index - 1 in unanswered:
                # Answers go after the results already there: tool_result blocks lead their message.
                at = next((i for i, block in enumerate(kept) if _block_type(block) != "tool_result"), len(kept))
                kept[at:at] = _closing_results(unanswered[index - 1])
                changed = True
            if changed:
                repaired.append(_Turn(turn.source, turn.role, kept, changed=True))
            else:
                repaired.append(turn)
            if mode == "close" and turn.role == "assistant" and index in unanswered:
                following = turns[index + 1]
                if following.role != "user":
                    repaired.append(_Turn({"role": "user"}, "user", _closing_results(unanswered[index]), changed=True))
        turns = _merge(repaired)


def _unanswered_use(block: object, unanswered: list[str] | None) -> bool:
    view = _view(block)
    if not unanswered or view is None:
        return False
    return view.get("type") == "tool_use" and view.get("id") in unanswered


def _closing_results(tool_ids: list[str]) -> list[Any]:
    return [
        {"type": "tool_result", "tool_use_id": tool_id, "is_error": True, "content": UNANSWERED_TOOL_CALL}
        for tool_id in tool_ids
    ]


def _strip_final(turns: list[_Turn]) -> None:
    """Strip trailing whitespace off the final assistant message (a prefill), dropping what is left empty."""
    while turns and turns[-1].role == "assistant":
        turn = turns[-1]
        if isinstance(turn.content, str):
            stripped = turn.content.rstrip()
            if stripped == turn.content:
                return
            turn.content, turn.changed = stripped, True
        else:
            view = _view(turn.content[-1]) if turn.content else None
            if view is None or view.get("type") != "text" or not isinstance(view.get("text"), str):
                return
            text: str = view["text"]
            stripped = text.rstrip()
            if stripped == text:
                return
            turn.content = turn.content[:-1] + ([{**view, "text": stripped}] if stripped else [])
            turn.changed = True
        if turn.empty:
            turns.pop()


# --------------------------------------------------------------------------------------------------------------
# Hostile values: checked before every other rule, so nothing later walks data it cannot handle

KNOWN_BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "container_upload",
        "compaction",
        "tool_addition",
        "tool_removal",
        "fallback",
        "server_tool_use",
        "mcp_tool_use",
        "mcp_tool_result",
        "mcp_tool_listing",
    }
)


def _known_block_type(block_type: str) -> bool:
    # Server tools add result block types over time; their family (`*_tool_result`) is recognisable.
    return block_type in KNOWN_BLOCK_TYPES or block_type.endswith("_tool_result")


def check_values(request: Mapping[str, Any], *, start: int = 0) -> None:
    """Raise `HistoryError` for the first value in `request` the API cannot take: nesting beyond
    `values.MAX_DEPTH`, a lone surrogate, an unknown content block type, or a custom tool without `input_schema`.
    Iterative throughout: it is what makes every later (recursive) reader safe. Messages before `start` are
    taken as checked already."""
    for key in ("system", "tools"):
        _value_problem(request.get(key), key, None, None)
    tools = request.get("tools")
    if isinstance(tools, list | tuple):
        for index, tool in enumerate(tools):
            view = _view(tool)
            # A server tool has a versioned `type` (web_search_20250305 ...); a custom tool has no type or "custom".
            if view is None or view.get("type") not in (None, "custom"):
                continue
            if not (isinstance(view.get("name"), str) and isinstance(view.get("input_schema"), Mapping)):
                raise _fail("tool_schema_missing", f"tools[{index}] needs `name` and an `input_schema` object")
    messages = request.get("messages")
    if not isinstance(messages, list | tuple):
        return
    for index in range(start, len(messages)):
        message = messages[index]
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list | tuple):
            _value_problem(message, f"messages[{index}]", index, None)
            continue
        for block_index, block in enumerate(content):
            view = _view(block)
            _value_problem(view if view is not None else block, _where(index, block_index), index, block_index)
            block_type = view.get("type") if view is not None else None
            if isinstance(block_type, str) and not _known_block_type(block_type):
                raise _fail(
                    "block_type_unknown",
                    f"{_where(index, block_index)}: unknown content block type {block_type!r}",
                    index,
                    block_index,
                )
        if isinstance(message, Mapping):
            rest = {key: item for key, item in message.items() if key != "content"}
            _value_problem(rest, f"messages[{index}]", index, None)


def _value_problem(value: object, path: str, index: int | None, block_index: int | None) -> None:
    problem = values.find_problem(value, path, secrets=False)
    if problem is None:
        return
    rule = "value_too_deep" if problem.kind == "depth" else "lone_surrogate"
    raise _fail(rule, f"{problem.path}: {problem.detail}", index, block_index)
