"""What only the SQLite store promises: a private file, WAL, migrations, one-query paths, FTS, error wrapping."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from store_helpers import AWKWARD_REPLY, SETTINGS, assistant, entry, user

from turnkeep.errors import ConflictError, StorageError, UsageError
from turnkeep.store import Node, SQLiteStore
from turnkeep.store.sqlite import MIGRATIONS


def test_the_file_is_private_and_uses_wal_with_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "turnkeep.db"
    with SQLiteStore(path) as store:
        store.create("c1", SETTINGS)
        store.append("c1", "main", expected_head=None, nodes=[user("hi", None)])
        connection = store._connection
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
        for name in os.listdir(path.parent):  # the WAL and shared-memory files too
            assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600, name


def test_migrations_bring_a_new_file_to_the_latest_version_once(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    SQLiteStore(path).close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"conversations", "nodes", "branches", "ledger", "branch_policy_state", "messages_fts"} <= tables
    connection.close()
    with SQLiteStore(path) as again:  # reopening applies nothing twice
        again.create("c1", SETTINGS)
        assert again.settings("c1") == SETTINGS


def test_a_version_one_file_gives_its_one_policy_state_to_the_branches_at_the_latest_head(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path)
    connection.executescript(MIGRATIONS[0])
    connection.execute("PRAGMA user_version = 1")
    connection.execute(
        "INSERT INTO conversations (id, settings, created_at, updated_at, touched) VALUES ('c1', ?, 0, 0, 1)",
        (json.dumps(SETTINGS),),
    )
    for node_id, parent, role in (("n1", None, "user"), ("n2", "n1", "assistant"), ("n3", "n1", "assistant")):
        connection.execute(
            "INSERT INTO nodes (conversation_id, id, parent_id, role, message, status, meta) "
            "VALUES ('c1', ?, ?, ?, ?, 'ok', '{}')",
            (node_id, parent, role, json.dumps({"role": role, "content": "hi"})),
        )
    # main and its copy at n2; side at n3, written last: the one state was side's.
    heads = [("main", "n2"), ("copy", "n2"), ("side", "n3")]
    connection.executemany("INSERT INTO branches (conversation_id, name, head) VALUES ('c1', ?, ?)", heads)
    connection.execute("INSERT INTO policy_state (conversation_id, state) VALUES ('c1', '{\"start\": 2}')")
    connection.commit()
    connection.close()
    with SQLiteStore(path) as store:
        assert store.policy_states("c1") == {"side": {"start": 2}}  # the others plan afresh
        store.append("c1", "main", expected_head="n2", policy_state={"start": 4})
        assert store.policy_state("c1", "main") == {"start": 4}  # each branch keeps its own from now on
        assert store.policy_state("c1", "side") == {"start": 2}


def test_a_file_from_a_newer_turnkeep_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    connection.close()
    with pytest.raises(StorageError, match="schema version"):
        SQLiteStore(path)
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    connection.close()


def test_a_file_that_is_not_a_database_gives_a_storage_error_with_its_cause(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite file" * 100)
    with pytest.raises(StorageError) as raised:
        SQLiteStore(path)
    assert isinstance(raised.value.__cause__, sqlite3.Error)


def test_a_directory_in_the_way_gives_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "taken.db").mkdir()
    with pytest.raises(StorageError, match=r"taken\.db"):
        SQLiteStore(tmp_path / "taken.db")


def test_everything_written_is_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteStore(path) as store:
        store.create("c1", SETTINGS)
        root = user("hello", None)
        reply = Node("r1", root.id, AWKWARD_REPLY, "ok", {"kind": "reply"})
        store.append("c1", "main", expected_head=None, nodes=[root, reply], ledger=[entry()], policy_state={"a": 1})
        store.move_head("c1", "alt", expected_head=None, new_head=root.id)
        before = (store.nodes("c1"), store.branches("c1"), store.ledger("c1"), store.policy_state("c1"))
    with SQLiteStore(path) as reopened:
        after = (reopened.nodes("c1"), reopened.branches("c1"), reopened.ledger("c1"), reopened.policy_state("c1"))
    assert after == before


def test_the_message_column_holds_the_compact_json_exactly(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create("c1", SETTINGS)
        store.append("c1", "main", expected_head=None, nodes=[user("q", None), Node("r", None, AWKWARD_REPLY)])
        [(raw,)] = store._connection.execute("SELECT message FROM nodes WHERE id = 'r'").fetchall()
    assert raw == json.dumps(AWKWARD_REPLY, ensure_ascii=False, separators=(",", ":"))
    assert "思考" in raw  # stored as UTF-8 text, not \\u escapes


def test_a_path_is_loaded_with_one_query_however_long_it_is(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create("c1", SETTINGS)
        head = None
        chain = []
        for number in range(300):
            node = user(f"m{number}", head) if number % 2 == 0 else assistant(f"m{number}", head)
            chain.append(node)
            head = node.id
        store.append("c1", "main", expected_head=None, nodes=chain)
        statements: list[str] = []
        store._connection.set_trace_callback(statements.append)
        assert store.path("c1", head) == chain
        store._connection.set_trace_callback(None)
    selects = [s for s in statements if "SELECT" in s.upper()]
    assert len(selects) == 2  # the conversation exists; the recursive path query


def test_two_store_objects_on_one_file_see_each_others_heads(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as first, SQLiteStore(tmp_path / "t.db") as second:
        first.create("c1", SETTINGS)
        question = user("q", None)
        second.append("c1", "main", expected_head=None, nodes=[question])
        with pytest.raises(ConflictError):
            first.append("c1", "main", expected_head=None, nodes=[user("other", None)])
        assert first.nodes("c1") == [question]


def test_a_malformed_full_text_query_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create("c1", SETTINGS)
        store.append("c1", "main", expected_head=None, nodes=[user("alpha beta gamma", None)])
        for query in ('"unbalanced', "alpha AND", "turn-keep"):
            with pytest.raises(UsageError, match="bad search query") as raised:
                store.search(query)
            assert repr(query) in str(raised.value)
        assert [hit.snippet for hit in store.search("beta OR zeta")] == ["alpha [beta] gamma"]
        assert len(store.search("gam*")) == 1


def test_concurrent_threads_on_one_store_object_all_get_their_writes_in(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db", synchronous="NORMAL") as store:
        errors: list[BaseException] = []

        def writer(number: int) -> None:
            try:
                cid = f"c{number}"
                store.create(cid, SETTINGS)
                head = None
                for turn in range(10):
                    node = user(f"{number}-{turn}", head)
                    store.append(cid, "main", expected_head=head, nodes=[node], ledger=[entry()])
                    head = node.id
                    assert store.path(cid, head)[-1] == node
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert store.count_conversations() == 6
        assert all(info.message_count == 10 for info in store.list_conversations())


def test_a_failed_write_inside_sqlite_rolls_back_and_is_a_storage_error(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "t.db") as store:
        store.create("c1", SETTINGS)
        root = user("q", None)
        store.append("c1", "main", expected_head=None, nodes=[root])
        # A trigger standing in for a failing disk: the write fails half-way, inside the transaction.
        store._connection.execute(
            "CREATE TEMP TRIGGER fail_ledger BEFORE INSERT ON ledger BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
        with pytest.raises(StorageError, match="disk on fire") as raised:
            store.append(
                "c1",
                "main",
                expected_head=root.id,
                nodes=[assistant("a", root.id)],
                settle={root.id: "refused"},
                ledger=[entry()],
            )
        assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
        assert store.nodes("c1") == [root]
        assert store.branches("c1") == {"main": root.id}
        store._connection.execute("DROP TRIGGER fail_ledger")
        store.append("c1", "main", expected_head=root.id, nodes=[assistant("a", root.id)], ledger=[entry()])
        assert len(store.nodes("c1")) == 2


def test_an_in_memory_database_works_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SQLiteStore(":memory:") as store:
        store.create("c1", SETTINGS)
        store.append("c1", "main", expected_head=None, nodes=[user("ephemeral words", None)])
        assert [hit.snippet for hit in store.search("ephemeral")] == ["[ephemeral] words"]
    assert list(tmp_path.iterdir()) == []
