"""Conversations out of and into a store: lossless versioned JSON, and a readable Markdown transcript.

The JSON format (`"format": "turnkeep.conversation"`, `"version": 1`) holds everything a store keeps about a
conversation: settings, every node of the tree (messages exactly as stored, statuses, meta), branch heads, the
context policy's state and the request ledger, plus its creation and update times. Nodes are listed parents
first. An export never holds an API key: stores refuse to keep one.

`import_json` checks the whole file before writing anything (its structure, parent links, branch heads,
statuses, and every branch's messages against the Messages API rules) and raises `InvalidExport` naming the first
problem's position, e.g. `nodes[12].message.content[0]`. An import always gets a new conversation id unless one
is given, so importing the same file twice gives two conversations (node ids are scoped to their conversation).

It sits above the store (it reads policies and the model catalog, which the store never does): it uses only the
`Store` protocol, so every store exports and imports alike.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, cast

from turnkeep import config, export_values
from turnkeep.core import rules
from turnkeep.core.catalog import Catalog, ModelInfo
from turnkeep.core.explain import usd_text
from turnkeep.core.policies import RequestSettings, policy_from_settings
from turnkeep.errors import HistoryError, InvalidExport, UnknownConversation, UsageError
from turnkeep.store.base import NODE_STATUSES, LedgerEntry, Node, NodeStatus, Store, check_no_secrets, ledger_dict

if TYPE_CHECKING:
    from anthropic.types import MessageParam

__all__ = ["FORMAT", "VERSION", "InvalidExport", "export_json", "export_markdown", "import_json"]

FORMAT = "turnkeep.conversation"
VERSION = 2
_READS = (1, 2)  # version 1 kept one policy state for the whole conversation ("policy_state")

_TOP_LEVEL = {"format", "version", "id", "created_at", "updated_at", "settings", "nodes", "branches"}
_OPTIONAL_TOP_LEVEL = {"policy_states", "policy_state", "ledger", "id", "created_at", "updated_at"}
_NODE_KEYS = {"id", "parent_id", "message", "status", "meta"}
_LEDGER_OPTIONAL_TEXT = ("request_id", "message_id", "stop_reason", "error", "cache_miss_reason", "node_id")
_ROLES = ("user", "assistant", "system")


# --------------------------------------------------------------------------------------------------------------
# JSON


def _node_dict(node: Node) -> dict[str, Any]:
    return {
        "id": node.id,
        "parent_id": node.parent_id,
        "message": dict(node.message),
        "status": node.status,
        "meta": dict(node.meta),
    }


def export_json(store: Store, conversation_id: str) -> dict[str, Any]:
    """Everything the store keeps about a conversation, as JSON-ready data (see the module docstring)."""
    info = store.info(conversation_id)
    return {
        "format": FORMAT,
        "version": VERSION,
        "id": conversation_id,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
        "settings": store.settings(conversation_id),
        "nodes": [_node_dict(node) for node in store.nodes(conversation_id)],
        "branches": store.branches(conversation_id),
        "policy_states": store.policy_states(conversation_id),
        "ledger": [ledger_dict(entry) for entry in store.ledger(conversation_id)],
    }


def import_json(
    store: Store, data: object, *, conversation_id: str | None = None, catalog: Catalog | None = None
) -> str:
    """Check `data` (an `export_json` result, e.g. `json.load`ed from a file) and write it as a new conversation;
    returns its id (new unless `conversation_id` is given; ConflictError if that id is taken). Raises
    `InvalidExport` naming the first problem, having written nothing. Each branch's messages are checked against
    the model's facts in `catalog` (default: the built-in catalog with the user's overrides)."""
    checked = _check(data, catalog if catalog is not None else config.load_catalog())
    new_id = conversation_id or uuid.uuid4().hex
    store.restore(
        new_id,
        settings=checked.settings,
        nodes=checked.nodes,
        branches=checked.branches,
        ledger=checked.ledger,
        policy_states=checked.policy_states,
        created_at=checked.created_at,
        updated_at=checked.updated_at,
    )
    return new_id


class _Checked:
    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.nodes: list[Node] = []
        self.branches: dict[str, str | None] = {}
        self.ledger: list[LedgerEntry] = []
        self.policy_states: dict[str, dict[str, Any]] = {}
        self.created_at: float | None = None
        self.updated_at: float | None = None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _object(value: object, position: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidExport(position, f"expected an object, got {type(value).__name__}")
    return value


def _json_ready(value: object, position: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise InvalidExport(position, f"not JSON data: {err}") from err


def _check(data: object, catalog: Catalog) -> _Checked:
    problem = export_values.first_problem(data)
    if problem is not None:
        raise InvalidExport(*problem)
    top = _object(data, "export")
    if top.get("format") != FORMAT:
        raise InvalidExport("format", f"expected {FORMAT!r}, got {top.get('format')!r}")
    version = top.get("version")
    if version not in _READS or isinstance(version, bool):
        raise InvalidExport("version", f"unsupported version {version!r} (this turnkeep reads versions 1 and 2)")
    if "policy_state" in top and version != 1:
        raise InvalidExport("policy_state", "version 2 keeps one state per branch, in `policy_states`")
    for key in top:
        if key not in _TOP_LEVEL | _OPTIONAL_TOP_LEVEL:
            raise InvalidExport(key, "unknown field")
    for key in _TOP_LEVEL - _OPTIONAL_TOP_LEVEL:
        if key not in top:
            raise InvalidExport(key, "missing")
    checked = _Checked()
    for key in ("created_at", "updated_at"):
        value = top.get(key)
        if value is not None and not _is_number(value):
            raise InvalidExport(key, f"expected a number of seconds, got {value!r}")
        setattr(checked, key, value)
    if top.get("id") is not None and not isinstance(top.get("id"), str):
        raise InvalidExport("id", "expected a string")
    checked.settings = _settings(top["settings"])
    checked.nodes = _nodes(top["nodes"])
    checked.branches = _branches(top["branches"], {node.id for node in checked.nodes})
    if "policy_state" in top:  # version 1: the conversation's one state, written by its last turn
        state = dict(_object(top["policy_state"], "policy_state"))
        _json_ready(state, "policy_state")
        checked.policy_states = dict.fromkeys(_latest_branches(checked), state) if state else {}
    states = _object(top.get("policy_states", {}), "policy_states")
    for name, state in states.items():
        if name not in checked.branches:
            raise InvalidExport(f"policy_states[{name!r}]", "not a branch of this conversation")
        _json_ready(_object(state, f"policy_states[{name!r}]"), f"policy_states[{name!r}]")
        checked.policy_states[name] = dict(state)
    checked.ledger = _ledger(top.get("ledger", []))
    _check_messages(checked, catalog)
    return checked


def _latest_branches(checked: _Checked) -> list[str]:
    """The branches at the most recently written head (nodes are listed in write order): where a version-1
    file's one policy state was written."""
    order = {node.id: index for index, node in enumerate(checked.nodes)}
    heads = {name: order.get(head, -1) if head is not None else -1 for name, head in checked.branches.items()}
    latest = max(heads.values(), default=-1)
    return [name for name, index in heads.items() if index == latest and index >= 0]


def _settings(value: object) -> dict[str, Any]:
    settings = _object(value, "settings")
    try:
        check_no_secrets(settings)
    except UsageError as err:
        raise InvalidExport(str(err).split(":", 1)[0], "credentials are never stored or imported") from err
    model = settings.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidExport("settings.model", f"expected a model id, got {model!r}")
    max_tokens = settings.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidExport("settings.max_tokens", f"expected a positive integer, got {max_tokens!r}")
    _json_ready(settings, "settings")
    try:
        policy_from_settings(settings.get("policy") or {})
    except UsageError as err:
        raise InvalidExport("settings.policy", str(err)) from err
    return dict(settings)


def _message(value: object, position: str) -> dict[str, Any]:
    message = _object(value, position)
    role = message.get("role")
    if role not in _ROLES:
        raise InvalidExport(f"{position}.role", f"expected one of {', '.join(_ROLES)}, got {role!r}")
    content = message.get("content")
    if isinstance(content, list):
        for index, block in enumerate(content):
            where = f"{position}.content[{index}]"
            if not isinstance(_object(block, where).get("type"), str):
                raise InvalidExport(where, "a content block needs a string `type`")
    elif not isinstance(content, str):
        raise InvalidExport(f"{position}.content", "expected a string or a list of content blocks")
    _json_ready(message, position)
    return dict(message)


def _nodes(value: object) -> list[Node]:
    if not isinstance(value, list):
        raise InvalidExport("nodes", "expected a list of nodes")
    nodes: list[Node] = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        position = f"nodes[{index}]"
        raw = _object(item, position)
        for key in raw:
            if key not in _NODE_KEYS:
                raise InvalidExport(f"{position}.{key}", "unknown field")
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidExport(f"{position}.id", f"expected a non-empty string, got {node_id!r}")
        if node_id in seen:
            raise InvalidExport(f"{position}.id", f"duplicate node id {node_id!r}")
        parent = raw.get("parent_id")
        if parent is not None and parent not in seen:
            raise InvalidExport(
                f"{position}.parent_id", f"{parent!r} is not an earlier node (orphan, or parents not listed first)"
            )
        message = _message(raw.get("message"), f"{position}.message")
        status = raw.get("status")
        if status not in NODE_STATUSES:
            raise InvalidExport(
                f"{position}.status", f"expected one of {', '.join(sorted(NODE_STATUSES))}, got {status!r}"
            )
        if status == "partial" and message["role"] != "assistant":
            raise InvalidExport(f"{position}.status", "only an assistant reply can be partial")
        if status == "pending" and message["role"] == "assistant":
            raise InvalidExport(f"{position}.status", "an assistant reply is never pending")
        meta = _object(raw.get("meta", {}), f"{position}.meta")
        _json_ready(meta, f"{position}.meta")
        seen.add(node_id)
        nodes.append(Node(node_id, parent, message, cast(NodeStatus, status), dict(meta)))
    return nodes


def _branches(value: object, ids: set[str]) -> dict[str, str | None]:
    branches = _object(value, "branches")
    for name, head in branches.items():
        if not name:
            raise InvalidExport("branches", "a branch name must be non-empty")
        if head is not None and head not in ids:
            raise InvalidExport(f"branches[{name!r}]", f"head {head!r} is not a node")
    return dict(branches)


def _ledger(value: object) -> list[LedgerEntry]:
    if not isinstance(value, list):
        raise InvalidExport("ledger", "expected a list of entries")
    entries = []
    for index, item in enumerate(value):
        position = f"ledger[{index}]"
        raw = _object(item, position)
        unknown = set(raw) - set(LedgerEntry.__dataclass_fields__)
        if unknown:
            raise InvalidExport(f"{position}.{sorted(unknown)[0]}", "unknown field")
        for key in ("purpose", "model", "cost_usd"):
            if not isinstance(raw.get(key), str):
                raise InvalidExport(f"{position}.{key}", f"expected a string, got {raw.get(key)!r}")
        try:
            Decimal(raw["cost_usd"])
        except InvalidOperation as err:
            raise InvalidExport(f"{position}.cost_usd", f"not a decimal amount: {raw['cost_usd']!r}") from err
        for key in ("latency_ms", "at"):
            if not _is_number(raw.get(key)):
                raise InvalidExport(f"{position}.{key}", f"expected a number, got {raw.get(key)!r}")
        for key in _LEDGER_OPTIONAL_TEXT:
            if raw.get(key) is not None and not isinstance(raw.get(key), str):
                raise InvalidExport(f"{position}.{key}", f"expected a string or null, got {raw.get(key)!r}")
        usage = _object(raw.get("usage"), f"{position}.usage")
        _json_ready(usage, f"{position}.usage")
        pair = raw.get("calibration")
        if pair is not None and not (
            isinstance(pair, list) and len(pair) == 2 and all(type(n) is int and n >= 0 for n in pair)
        ):
            raise InvalidExport(f"{position}.calibration", f"expected [estimated, measured] token counts, got {pair!r}")
        estimated = raw.get("estimated", False)
        if not isinstance(estimated, bool):
            raise InvalidExport(f"{position}.estimated", f"expected true or false, got {estimated!r}")
        entries.append(
            LedgerEntry(
                purpose=raw["purpose"],
                model=raw["model"],
                request_id=raw.get("request_id"),
                message_id=raw.get("message_id"),
                stop_reason=raw.get("stop_reason"),
                usage=dict(usage),
                cost_usd=raw["cost_usd"],
                latency_ms=raw["latency_ms"],
                at=raw["at"],
                error=raw.get("error"),
                cache_miss_reason=raw.get("cache_miss_reason"),
                node_id=raw.get("node_id"),
                calibration=(pair[0], pair[1]) if pair is not None else None,
                estimated=estimated,
            )
        )
    return entries


def _check_messages(checked: _Checked, catalog: Catalog) -> None:
    """Each branch's sendable messages must form a valid (possibly unfinished) history for its model."""
    index_of = {node.id: index for index, node in enumerate(checked.nodes)}
    settings = checked.settings
    model = catalog.get(settings["model"])
    base: dict[str, Any] = {"model": model.id, "max_tokens": settings["max_tokens"]}
    for key in ("system", "tools"):
        if settings.get(key) is not None:
            base[key] = settings[key]
    for name, head in checked.branches.items():
        path: list[int] = []
        while head is not None:
            path.append(index_of[head])
            head = checked.nodes[index_of[head]].parent_id
        sendable = [index for index in reversed(path) if checked.nodes[index].status in ("ok", "pending")]
        if not sendable:
            continue
        messages = [cast("MessageParam", dict(checked.nodes[index].message)) for index in sendable]
        merged = False
        try:
            try:
                rules.validate({**base, "messages": messages}, model, complete=False)
            except HistoryError as err:
                if err.rule != "consecutive_same_role":
                    raise
                # A run of same-role messages is legal in a stored history: the client merges it when sending.
                merged = True
                rules.validate({**base, "messages": rules.normalize(messages)}, model, complete=False)
        except HistoryError as err:
            position = _position(err, sendable, messages, merged)
            raise InvalidExport(position, f"{err.detail} (rule: {err.rule}; branch {name!r})") from err
        except UsageError as err:
            raise InvalidExport("settings", f"{err} (branch {name!r})") from err
        _check_policy_state(
            checked,
            model,
            [m for i, m in zip(sendable, messages, strict=True) if checked.nodes[i].status == "ok"],
            name,
        )


def _check_policy_state(checked: _Checked, model: ModelInfo, messages: list[MessageParam], branch: str) -> None:
    """The policy must be able to plan the branch's next request from the imported state (a hand-edited state
    of the wrong shape would otherwise fail every later turn)."""
    if not messages:
        return
    settings = checked.settings
    policy = policy_from_settings(settings.get("policy") or {})
    request_settings = RequestSettings(model, settings["max_tokens"], settings.get("system"), settings.get("tools"))
    state = checked.policy_states.get(branch, {})
    try:
        policy.plan(rules.normalize(messages), state, request_settings)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
        raise InvalidExport(
            f"policy_states[{branch!r}]", f"{policy.name} cannot use it ({type(err).__name__}: {err})"
        ) from err


def _position(err: HistoryError, sendable: Sequence[int], messages: Sequence[MessageParam], merged: bool) -> str:
    """Where in the file a rule broken at `messages[i].content[j]` of a branch's request is. After merging runs of
    one role, the i-th merged message is its run's messages' blocks end to end."""
    if err.message_index is None:
        return "settings"
    index, block = err.message_index, err.block_index
    if merged:
        starts = [i for i, m in enumerate(messages) if i == 0 or m["role"] != messages[i - 1]["role"]]
        index = starts[min(index, len(starts) - 1)]
        while (
            block is not None and index + 1 < len(messages) and messages[index + 1]["role"] == messages[index]["role"]
        ):
            content = messages[index]["content"]
            size = 1 if isinstance(content, str) else len(list(content))
            if block < size:
                break
            block -= size
            index += 1
    where = f"nodes[{sendable[min(index, len(sendable) - 1)]}].message"
    return where + (f".content[{block}]" if block is not None else "")


# --------------------------------------------------------------------------------------------------------------
# Markdown


def _fence(text: str, language: str = "") -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text}\n{fence}"


def _block_markdown(block: Mapping[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "thinking":
        thought = str(block.get("thinking", "")).strip()
        return "\n".join(["> *Thinking:*", *(f"> {line}" for line in thought.splitlines())])
    if kind == "redacted_thinking":
        return "> *(redacted thinking)*"
    if kind in ("tool_use", "server_tool_use"):
        arguments = json.dumps(block.get("input", {}), ensure_ascii=False, indent=2)
        return f"**Tool call** `{block.get('name')}` (`{block.get('id')}`)\n\n{_fence(arguments, 'json')}"
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            text = "\n".join(str(b.get("text", f"({b.get('type')})")) for b in content if isinstance(b, Mapping))
        else:
            text = "" if content is None else str(content)
        error = " (error)" if block.get("is_error") else ""
        return f"**Tool result** for `{block.get('tool_use_id')}`{error}\n\n{_fence(text)}"
    return f"*({kind} block)*"


def _heading(node: Node) -> str:
    role = node.message.get("role")
    title = {"user": "User", "assistant": "Assistant", "system": "System instruction"}.get(str(role), str(role))
    if node.meta.get("kind") == "tool_results":
        title = "Tool results"
    marks = {
        "pending": "pending: no reply yet",
        "partial": "partial reply: cut off, never sent back",
        "refused": "refused: left out of later requests",
    }
    mark = marks.get(node.status)
    if mark is None and node.meta.get("stop_reason") == "refusal":
        mark = "refusal"
    return f"## {title}" + (f" *({mark})*" if mark else "")


def export_markdown(store: Store, conversation_id: str, branch: str = "main") -> str:
    """A readable transcript of one branch: roles, text, tool calls and results; refusals, partial replies and a
    pending message are marked."""
    branches = store.branches(conversation_id)
    if branch not in branches:
        raise UnknownConversation(f"conversation {conversation_id!r} has no branch {branch!r}")
    info = store.info(conversation_id)
    lines = [
        f"# {info.title or 'Untitled conversation'}",
        "",
        f"Conversation `{conversation_id}` · model `{info.model}` · branch `{branch}` · "
        f"{len(store.path(conversation_id, branches[branch]))} messages · {usd_text(info.cost_usd)}",
    ]
    system = store.settings(conversation_id).get("system")
    if isinstance(system, str | list):
        text = system if isinstance(system, str) else "\n\n".join(_block_markdown(b) for b in system)
        lines += ["", "## System", "", text]
    for node in store.path(conversation_id, branches[branch]):
        content = node.message.get("content")
        blocks: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        body = "\n\n".join(_block_markdown(block) for block in blocks if isinstance(block, Mapping))
        lines += ["", _heading(node), "", body]
    return "\n".join(lines) + "\n"
