"""Import checks every value: one `InvalidExport` naming the JSON path, nothing written, for every hostile value."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import SETTINGS, assistant, entry, new_id, user

from turnkeep.export import InvalidExport, export_json, import_json
from turnkeep.store import MemoryStore, Store


def exported() -> dict[str, Any]:
    store = MemoryStore()
    cid = new_id()
    store.create(cid, SETTINGS)
    question = user("question", None)
    store.append(cid, "main", expected_head=None, nodes=[question, assistant("answer", question.id)])
    store.record(cid, [entry()])
    return json.loads(json.dumps(export_json(store, cid)))


BASE = exported()

HOSTILE = {
    ("ledger", 0, "cost_usd"): ["-5", "NaN", "Infinity", "1e999999", "sNaN", "1" * 100],
    ("ledger", 0, "usage", "input_tokens"): [-7, 10**400, 2**53 + 1, 1.5, True],
    ("ledger", 0, "calibration"): [[10**400, 1], [1.0, 2], [-1, 3]],
    ("ledger", 0, "latency_ms"): [float("inf"), float("nan"), -1],
    ("ledger", 0, "at"): [float("inf"), -5.0],
    ("created_at",): [float("inf"), float("-inf"), -1],
}
CASES = [(path, value) for path, hostile in HOSTILE.items() for value in hostile]


def with_value(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def position(path: tuple[Any, ...]) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path).lstrip(".")


@pytest.mark.parametrize(("path", "value"), CASES, ids=[f"{position(p)}={v!r:.20}" for p, v in CASES])
def test_each_hostile_value_is_one_invalid_export_naming_its_path(
    store: Store, path: tuple[Any, ...], value: Any
) -> None:
    before = store.count_conversations()
    with pytest.raises(InvalidExport) as raised:
        import_json(store, with_value(path, value))
    assert raised.value.position == position(path)
    assert store.count_conversations() == before


def test_an_export_without_main_is_refused(store: Store) -> None:
    data = copy.deepcopy(BASE)
    data["branches"] = {"other": data["branches"]["main"]}
    with pytest.raises(InvalidExport, match="branches: the branch `main` is missing"):
        import_json(store, data)


LEAVES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["NaN", "-Infinity", "1e999999", "-0.5", "sk-ant-api03-" + "k" * 30, "\ud800"]),
    st.none(),
)
FIELDS = [
    ("ledger", 0, "cost_usd"),
    ("ledger", 0, "usage", "output_tokens"),
    ("ledger", 0, "calibration"),
    ("ledger", 0, "latency_ms"),
    ("updated_at",),
    ("settings", "system"),
    ("nodes", 0, "message", "content"),
    ("nodes", 1, "meta"),
]
FUZZ_EXAMPLES = 150


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(path=st.sampled_from(FIELDS), value=st.one_of(LEAVES, st.lists(LEAVES, max_size=3)))
def test_fuzzed_imports_either_import_cleanly_or_raise_one_invalid_export(path: tuple[Any, ...], value: Any) -> None:
    store = MemoryStore()
    try:
        cid = import_json(store, with_value(path, value))
    except InvalidExport:
        assert store.count_conversations() == 0
        return
    # What was accepted is usable: it exports again and its cost adds up.
    export_json(store, cid)
    assert all(not e.cost_usd.startswith("-") for e in store.ledger(cid))
