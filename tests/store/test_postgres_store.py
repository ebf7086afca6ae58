"""What is particular to PostgresStore: migrations, exact JSON, opening by URL, an unreachable or restarting
server, full-text search, and moving conversations between SQLite and PostgreSQL (`turnkeep copy`)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from click.testing import CliRunner
from store_helpers import AWKWARD_REPLY, AWKWARD_RESULT, SETTINGS, assistant, entry, user
from test_store_resume import compact, recording_client

from turnkeep import Conversation
from turnkeep.cli import main
from turnkeep.config import store_location
from turnkeep.emulator import EmulatorServer
from turnkeep.errors import ConfigError, ConflictError, StorageError, UsageError
from turnkeep.export import export_json
from turnkeep.store import AsyncPostgresStore, Node, PostgresStore, SQLiteStore, open_store
from turnkeep.store.copy import copy_conversations
from turnkeep.store.pgserver import TemporaryServer
from turnkeep.store.postgres import MIGRATIONS, redact

MODEL = "claude-sonnet-4-6"


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def schema_name() -> str:
    import uuid

    return f"test_{uuid.uuid4().hex[:12]}"


# -- schema and migrations -----------------------------------------------------------------------------------------


def test_a_new_schema_is_migrated_once_even_when_many_stores_open_it_at_once(postgres_server: TemporaryServer) -> None:
    schema = schema_name()
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(postgres_server.url, schema=schema, max_connections=1))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        with psycopg.connect(postgres_server.url) as connection:
            rows = connection.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
        assert rows == [(len(MIGRATIONS),)]
        stores[0].create("c1", SETTINGS)
        assert all(store.count_conversations() == 1 for store in stores)
    finally:
        for store in stores:
            store.close()


def test_a_version_one_database_is_upgraded_and_its_messages_become_searchable(
    postgres_server: TemporaryServer,
) -> None:
    schema = schema_name()
    message = {"role": "user", "content": "Where is the zeppelin hangar?"}
    with psycopg.connect(postgres_server.url, autocommit=True) as connection, connection.transaction():
        connection.execute(f"CREATE SCHEMA {schema}")
        connection.execute(f"SET search_path TO {schema}")
        connection.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        connection.execute(MIGRATIONS[0].encode())
        connection.execute("INSERT INTO schema_version VALUES (1)")
        # A conversation written by version 1 of the store.
        connection.execute(
            "INSERT INTO conversations (id, settings, title, created_at, updated_at) VALUES "
            "('old', %s::json, 'Where is the zeppelin hangar?', 1.5, 2.5)",
            (json.dumps(SETTINGS),),
        )
        connection.execute(
            "INSERT INTO nodes (conversation_id, id, parent_id, role, message, status, meta, search_text) "
            "VALUES ('old', 'n1', NULL, 'user', %s::json, 'ok', '{}', %s)",
            (json.dumps(message), message["content"]),
        )
        connection.execute("INSERT INTO branches (conversation_id, name, head) VALUES ('old', 'main', 'n1')")
    with PostgresStore(postgres_server.url, schema=schema) as store:
        assert [hit.node_id for hit in store.search("zeppelin")] == ["n1"]
        assert store.path("old", "n1")[0].message == message
        assert store.info("old").created_at == 1.5
        with psycopg.connect(postgres_server.url) as connection:
            assert connection.execute(f"SELECT version FROM {schema}.schema_version").fetchall() == [(len(MIGRATIONS),)]


def test_a_database_from_a_newer_turnkeep_is_refused_untouched(postgres_server: TemporaryServer) -> None:
    schema = schema_name()
    PostgresStore(postgres_server.url, schema=schema).close()
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        connection.execute(f"UPDATE {schema}.schema_version SET version = 99")
    with pytest.raises(StorageError, match=r"schema version 99.*upgrade turnkeep"):
        PostgresStore(postgres_server.url, schema=schema)
    with psycopg.connect(postgres_server.url) as connection:
        assert connection.execute(f"SELECT version FROM {schema}.schema_version").fetchall() == [(99,)]


def test_the_message_column_holds_the_compact_json_exactly(
    postgres_store: PostgresStore, postgres_server: TemporaryServer
) -> None:
    postgres_store.create("c1", SETTINGS)
    question = Node("q", None, AWKWARD_RESULT)
    reply = Node("r", "q", AWKWARD_REPLY)
    postgres_store.append("c1", "main", expected_head=None, nodes=[question, reply])
    with psycopg.connect(postgres_server.url) as connection:
        stored = connection.execute(
            f"SELECT message::text FROM {postgres_store.schema}.nodes WHERE id = 'r'"
        ).fetchone()
    assert stored == (json.dumps(AWKWARD_REPLY, ensure_ascii=False, separators=(",", ":")),)


def test_a_bad_schema_name_is_refused(postgres_server: TemporaryServer) -> None:
    with pytest.raises(UsageError, match="schema must be"):
        PostgresStore(postgres_server.url, schema="x; DROP TABLE y")


# -- opening by URL, and an unreachable server ---------------------------------------------------------------------


def test_open_store_takes_a_postgresql_url_and_never_makes_a_file_of_it(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        store.create("c1", SETTINGS)
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", postgres_url)
    with open_store(store_location()) as store:
        assert isinstance(store, PostgresStore)
        assert store.count_conversations() == 1
    assert list(tmp_path.iterdir()) == []


def test_a_url_of_another_kind_is_refused_rather_than_taken_for_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"mysql://ada:\*\*\*@db/chats.*cannot open"):
        open_store("mysql://ada:hunter2@db/chats")
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", "chats.db")
    with pytest.raises(ConfigError, match="TURNKEEP_DATABASE_URL must be a postgresql:// URL"):
        open_store(store_location())
    assert list(tmp_path.iterdir()) == []


def test_a_server_that_is_down_gives_one_storage_error_naming_host_and_port_but_not_the_password() -> None:
    port = closed_port()
    url = f"postgresql://ada:hunter2@127.0.0.1:{port}/chats"
    with pytest.raises(StorageError) as caught:
        PostgresStore(url, timeout=2)
    message = str(caught.value)
    assert f"127.0.0.1:{port}/chats" in message
    assert "hunter2" not in message
    assert "\n" not in message


def test_the_cli_reports_a_server_that_is_down_in_one_line_without_the_password() -> None:
    port = closed_port()
    result = CliRunner().invoke(main, ["--db", f"postgresql://ada:hunter2@127.0.0.1:{port}/chats", "ls"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot connect to PostgreSQL at 127.0.0.1:{port}/chats")
    assert result.output.count("\n") == 1
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        ("postgresql://ada:hunter2@db:5432/chats", "postgresql://ada:***@db:5432/chats"),
        (
            "postgresql://ada@db/chats?password=hunter2&sslmode=require",
            "postgresql://ada@db/chats?password=***&sslmode=require",
        ),
        ("host=db password='hun ter2' dbname=chats", "host=db password=*** dbname=chats"),
        ("postgresql://db/chats", "postgresql://db/chats"),
    ],
)
def test_a_password_in_a_connection_string_is_never_shown(conninfo: str, shown: str) -> None:
    assert redact(conninfo) == shown


def test_the_store_shows_where_it_is_without_the_password(postgres_server: TemporaryServer) -> None:
    url = postgres_server.url.replace("turnkeep@", "turnkeep:unused-secret@")
    with PostgresStore(url, schema=schema_name()) as store:
        assert "unused-secret" not in repr(store)
        assert store.server == f"{postgres_server.directory}:5432/postgres"


# -- search --------------------------------------------------------------------------------------------------------


def test_search_takes_phrases_or_and_exclusion_and_ranks_the_best_match_first(postgres_store: PostgresStore) -> None:
    postgres_store.create("c1", SETTINGS)
    nodes = [
        user("the red box is under the table", None, node_id="a"),
        assistant("a box, a box, a red box", "a", node_id="b"),
        user("the blue box", "b", node_id="c"),
        assistant("Nothing here.", "c", node_id="d"),
    ]
    postgres_store.append("c1", "main", expected_head=None, nodes=nodes)
    assert [hit.node_id for hit in postgres_store.search("box")] == ["b", "c", "a"]
    assert [hit.node_id for hit in postgres_store.search('"red box"')] == ["b", "a"]
    assert {hit.node_id for hit in postgres_store.search("blue OR table")} == {"a", "c"}
    assert [hit.node_id for hit in postgres_store.search("box -red")] == ["c"]
    assert [hit.node_id for hit in postgres_store.search("BOX blue")] == ["c"]
    assert postgres_store.search("(((") == []  # nothing to look for is no match, not an error


# -- the server restarting -----------------------------------------------------------------------------------------


def test_after_a_server_restart_the_pool_reconnects_and_a_failed_turn_retries(
    postgres_url: str, postgres_server: TemporaryServer
) -> None:
    """The server goes down while a reply is on its way: storing the reply fails with StorageError and the turn
    stays pending; once the server is back, the same store object reconnects and `retry()` completes the turn."""
    requests = 0

    def stop_the_server_during_the_second_request(request: httpx2.Request) -> None:
        nonlocal requests
        if request.url.path == "/v1/messages":
            requests += 1
            if requests == 2:
                postgres_server.stop(remove=False)

    with EmulatorServer() as emulator, PostgresStore(postgres_url, timeout=1) as store:
        client = emulator.client(
            http_client=httpx2.Client(event_hooks={"request": [stop_the_server_during_the_second_request]})
        )
        chat = Conversation(MODEL, store=store, client=client)
        chat.send("My name is Ada.")
        try:
            with pytest.raises(StorageError, match="unreachable"):
                chat.send("Remember that box 1 is red.")
        finally:
            postgres_server.start()
        reopened = Conversation.open(chat.id, store=store, client=emulator.client())
        assert reopened.pending
        assert reopened.retry().text
        assert not reopened.pending
        assert [m["role"] for m in reopened.messages] == ["user", "assistant"] * 2
        assert requests == 2


# -- moving conversations between SQLite and PostgreSQL -------------------------------------------------------------


def test_a_conversation_moved_to_postgresql_resends_the_same_request_bytes(
    tmp_path: Path, postgres_url: str, turnkeep_emulator: EmulatorServer
) -> None:
    bodies: list[dict[str, Any]] = []
    with SQLiteStore(tmp_path / "chats.db") as sqlite_store:
        chat = Conversation(MODEL, store=sqlite_store, client=recording_client(turnkeep_emulator, bodies))
        chat.send("My name is Ada. Ünïcode: 東京 ✓")
        chat.send("Remember that box 1 is red.")
        with PostgresStore(postgres_url) as postgres_store:
            copy_conversations(sqlite_store, postgres_store)
            Conversation.open(chat.id, store=sqlite_store, client=recording_client(turnkeep_emulator, bodies)).send(
                "What is my name?"
            )
            Conversation.open(chat.id, store=postgres_store, client=recording_client(turnkeep_emulator, bodies)).send(
                "What is my name?"
            )
    from_sqlite, from_postgres = bodies[-2], bodies[-1]
    assert compact(from_postgres) == compact(from_sqlite)


def filled_sqlite(path: Path, conversations: int) -> list[str]:
    """A SQLite store with conversations holding branches, a ledger, a policy state and awkward JSON."""
    ids = []
    with SQLiteStore(path) as store:
        for number in range(conversations):
            cid = f"conversation-{number}"
            store.create(cid, {**SETTINGS, "tools": [{"name": "lookup", "input_schema": {"z": 1, "a": 2}}]})
            question = Node(f"{cid}-q", None, AWKWARD_RESULT)
            reply = Node(f"{cid}-r", question.id, AWKWARD_REPLY, meta={"stop_reason": "end_turn"})
            store.append(cid, "main", expected_head=None, nodes=[question, reply], ledger=[entry("0.0123")])
            store.move_head(cid, "side", expected_head=None, new_head=question.id)
            store.append(cid, "side", expected_head=question.id, policy_state={"summary": "ß", "upto": 1})
            store.append(cid, "side", expected_head=question.id, nodes=[assistant("other", question.id)])
            ids.append(cid)
    return ids


def test_turnkeep_copy_moves_conversations_both_ways_losslessly_and_resumes(tmp_path: Path, postgres_url: str) -> None:
    ids = filled_sqlite(tmp_path / "chats.db", 4)
    runner = CliRunner()
    some = runner.invoke(main, ["copy", "--from", str(tmp_path / "chats.db"), "--to", postgres_url, ids[0]])
    assert (some.exit_code, some.output) == (0, "Copied 1 conversation (0 already there, 0 conflicting)\n")
    # Run again for all: the one already there is left, the rest are copied (an interrupted copy resumes).
    rest = runner.invoke(main, ["--db", str(tmp_path / "chats.db"), "copy", "--to", postgres_url])
    assert (rest.exit_code, rest.output) == (0, "Copied 3 conversations (1 already there, 0 conflicting)\n")
    back = runner.invoke(main, ["copy", "--from", postgres_url, "--to", str(tmp_path / "back.db")])
    assert (back.exit_code, back.output) == (0, "Copied 4 conversations (0 already there, 0 conflicting)\n")
    with (
        SQLiteStore(tmp_path / "chats.db") as original,
        PostgresStore(postgres_url) as moved,
        SQLiteStore(tmp_path / "back.db") as returned,
    ):
        for cid in ids:
            exported = compact(export_json(original, cid))
            assert compact(export_json(moved, cid)) == exported
            assert compact(export_json(returned, cid)) == exported
        assert [i.id for i in moved.list_conversations()] == [i.id for i in original.list_conversations()]


def test_turnkeep_copy_leaves_a_conflicting_conversation_alone_and_says_so(tmp_path: Path, postgres_url: str) -> None:
    [cid] = filled_sqlite(tmp_path / "chats.db", 1)
    with PostgresStore(postgres_url) as store:
        store.create(cid, {"model": "something else"})
        before = store.settings(cid)
    result = CliRunner().invoke(main, ["copy", "--from", str(tmp_path / "chats.db"), "--to", postgres_url])
    assert result.exit_code == 1
    assert f"Conflict: {cid} is already in the target with different content" in result.output
    with PostgresStore(postgres_url) as store:
        assert store.settings(cid) == before


def test_copying_an_unknown_conversation_is_a_usage_error(tmp_path: Path, postgres_url: str) -> None:
    filled_sqlite(tmp_path / "chats.db", 1)
    result = CliRunner().invoke(main, ["copy", "--from", str(tmp_path / "chats.db"), "--to", postgres_url, "nope"])
    assert result.exit_code == 2
    assert result.output == "Error: no conversation 'nope'\n"


# -- concurrency under the row lock --------------------------------------------------------------------------------


def wait_until_blocked_on_a_lock(url: str) -> None:
    """Return once some session of the server waits for a lock (the writer under test has queued up)."""
    with psycopg.connect(url, autocommit=True) as watcher:
        for _ in range(2000):
            row = watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.005)
    raise AssertionError("the writer never waited for the lock")


def test_a_writer_that_waited_for_the_lock_sees_the_head_the_other_moved(
    postgres_store: PostgresStore, postgres_server: TemporaryServer
) -> None:
    """A write queued behind another transaction on the same conversation checks the head that transaction
    committed, not the one it saw when it started waiting: it conflicts and writes nothing."""
    postgres_store.create("c1", SETTINGS)
    first, second = user("one", None, node_id="n1"), assistant("two", "n1", node_id="n2")
    postgres_store.append("c1", "main", expected_head=None, nodes=[first, second])
    outcome: list[str] = []

    def late_writer() -> None:
        try:
            postgres_store.append("c1", "main", expected_head="n2", nodes=[user("three", "n2")])
            outcome.append("committed")
        except ConflictError:
            outcome.append("conflict")

    schema = postgres_store.schema
    with psycopg.connect(postgres_server.url) as other:  # another host's transaction, holding the row lock
        other.execute(f"SELECT 1 FROM {schema}.conversations WHERE id = 'c1' FOR UPDATE")
        writer = threading.Thread(target=late_writer)
        writer.start()
        wait_until_blocked_on_a_lock(postgres_server.url)
        other.execute(f"UPDATE {schema}.branches SET head = 'n1' WHERE conversation_id = 'c1' AND name = 'main'")
        other.commit()
    writer.join(30)
    assert outcome == ["conflict"]
    assert postgres_store.branches("c1") == {"main": "n1"}
    assert [node.id for node in postgres_store.nodes("c1")] == ["n1", "n2"]


def test_writers_on_different_conversations_do_not_wait_for_each_other(
    postgres_store: PostgresStore, postgres_server: TemporaryServer
) -> None:
    for cid in ("busy", "free"):
        postgres_store.create(cid, SETTINGS)
    with psycopg.connect(postgres_server.url) as other:
        other.execute(f"SELECT 1 FROM {postgres_store.schema}.conversations WHERE id = 'busy' FOR UPDATE")
        # While "busy" is locked by another transaction, a turn on "free" goes through (a wait would hang here).
        postgres_store.append("free", "main", expected_head=None, nodes=[user("hello", None, node_id="h")])
        postgres_store.record("free", [entry("0.5")])
        assert postgres_store.branches("free") == {"main": "h"}
        other.rollback()


# -- the async store -----------------------------------------------------------------------------------------------


def test_the_async_store_shares_the_database_and_one_of_eight_racing_coroutines_commits(postgres_url: str) -> None:
    async def scenario() -> list[str]:
        async with await AsyncPostgresStore.open(postgres_url, max_connections=8) as store:
            await store.create("c1", SETTINGS)
            await store.append("c1", "main", expected_head=None, nodes=[user("hello", None, node_id="h")])

            async def racer(number: int) -> str:
                try:
                    await store.append("c1", "main", expected_head="h", nodes=[assistant(f"reply {number}", "h")])
                except ConflictError:
                    return "conflict"
                return "committed"

            return sorted(await asyncio.gather(*(racer(n) for n in range(8))))

    assert asyncio.run(scenario()) == ["committed"] + ["conflict"] * 7
    with PostgresStore(postgres_url) as sync_store:  # the same tables: the sync store sees what the async one wrote
        assert len(sync_store.nodes("c1")) == 2


def test_the_async_store_reports_a_server_that_is_down_without_the_password() -> None:
    port = closed_port()
    with pytest.raises(StorageError, match=f"cannot connect to PostgreSQL at 127.0.0.1:{port}/chats") as caught:
        asyncio.run(AsyncPostgresStore.open(f"postgresql://ada:hunter2@127.0.0.1:{port}/chats", timeout=2))
    assert "hunter2" not in str(caught.value)
