"""Gateway processes on one database behave as one gateway, on SQLite (one machine) and on PostgreSQL (many):
each continues the others' threads, two concurrent continues of one reply let exactly one through, budgets and
rate limits count every replica's requests, and a replica killed mid-stream loses nothing.

Every test runs real `turnkeep serve` processes; they wait for events (a server answering, the first bytes of a
stream, a lease expiring), never for a fixed time."""

from __future__ import annotations

import concurrent.futures
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import psycopg
import pytest
from serve_process import (
    MODEL,
    PATIENCE,
    Serve,
    continue_on,
    conversation,
    conversation_of,
    create_key,
    create_on,
    stream_continue,
)

from turnkeep.emulator import EmulatorServer
from turnkeep.store.pgserver import TemporaryServer

UPSTREAM_KEY = "replica-upstream"


# One worker runs the module, so its replicas (module fixtures) start once under `make test`'s parallel run.
# A test with its replicas' start took up to 38 s on two busy CPUs (load 5): the default 120 s limit is too tight.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gateway_replicas"), pytest.mark.timeout(300)]


def new_postgres_database(server: TemporaryServer) -> str:
    name = f"replicas_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    return server.url_for(name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database per backend for the module's tests (each test has tenants of its own)."""
    if request.param == "postgres":
        return new_postgres_database(request.getfixturevalue("postgres_server"))
    return str(tmp_path_factory.mktemp("replicas") / "gateway.db")


@pytest.fixture
def postgres_database(postgres_server: TemporaryServer) -> str:
    return new_postgres_database(postgres_server)


def serve_replicas(database: str, upstream: str, count: int = 2) -> Iterator[list[Serve]]:
    replicas: list[Serve] = []
    try:
        for _ in range(count):
            replicas.append(Serve(database, upstream, UPSTREAM_KEY, "--lease-seconds", "2"))
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.fixture(scope="module")
def running(database: str, turnkeep_emulator_server: EmulatorServer) -> Iterator[list[str]]:
    """Two replicas on the module's database, shared by its tests."""
    for replicas in serve_replicas(database, turnkeep_emulator_server.base_url):
        yield [replica.url for replica in replicas]


@pytest.fixture
def replicas(running: list[str], database: str, turnkeep_emulator: EmulatorServer) -> tuple[list[str], str]:
    del turnkeep_emulator  # reset for this test
    return running, create_key(database, f"tenant-{uuid.uuid4().hex[:8]}")


def test_two_replicas_continue_each_others_threads(replicas: tuple[list[str], str]) -> None:
    (first, second), key = replicas
    created = create_on(first, key, "My name is Ada.")
    on_second = continue_on(second, key, created.id, "I live in Paris.")
    on_first = continue_on(first, key, on_second.id, "What is my name?")
    assert on_first.content[0].text == "Your name is Ada."
    back = continue_on(second, key, on_first.id, "Where do I live?")
    assert back.content[0].text == "You live in Paris."


def test_two_concurrent_continues_of_one_reply_let_one_through(
    replicas: tuple[list[str], str], turnkeep_emulator: EmulatorServer
) -> None:
    (first, second), key = replicas
    created = create_on(first, key, "My name is Ada.")
    turnkeep_emulator.fault("slow:1.5", api_key=UPSTREAM_KEY)  # whichever goes first stays in flight upstream

    def attempt(url: str) -> str:
        try:
            return str(continue_on(url, key, created.id, "What is my name?").content[0].text)
        except anthropic.BadRequestError as err:
            return str(err.body["error"]["details"]["error_code"])  # type: ignore[index]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(attempt, [first, second]))
    assert outcomes[0] == "Your name is Ada."
    assert outcomes[1] in ("thread_continue_in_flight", "thread_already_continued")


def ask(url: str, key: str) -> int:
    """A stateless request through the gateway at `url`; its HTTP status."""
    with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as client:
        try:
            client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
        except anthropic.APIStatusError as err:
            refused = err
        else:
            return 200
    assert refused.status_code != 429 or refused.response.headers.get("retry-after")
    return refused.status_code


def test_budgets_and_rate_limits_count_the_requests_of_every_replica(
    running: list[str], database: str, turnkeep_emulator: EmulatorServer
) -> None:
    del turnkeep_emulator
    first, second = running
    spender = create_key(database, f"spender-{uuid.uuid4().hex[:8]}", "--usd-per-day", "0.000001")
    chatty = create_key(database, f"chatty-{uuid.uuid4().hex[:8]}", "--requests-per-minute", "2")
    assert ask(first, spender) == 200
    assert ask(second, spender) == 429  # the first replica's spending counts here too
    # Two requests in one minute, one on each replica; the third is refused on either. (Should the clock pass into
    # a new minute between them, the minute's count starts again: then the case is tried again, with a new tenant.)
    for _ in range(3):
        minute = int(time.time() // 60)
        statuses = [ask(first, chatty), ask(second, chatty), ask(first, chatty)]
        if int(time.time() // 60) == minute:
            assert statuses == [200, 200, 429]
            break
        chatty = create_key(database, f"chatty-{uuid.uuid4().hex[:8]}", "--requests-per-minute", "2")
    else:
        pytest.fail("three tries each crossed a minute boundary")


def test_a_replica_killed_mid_stream_leaves_the_turn_pending_and_another_completes_it(
    postgres_database: str,
) -> None:
    key = create_key(postgres_database)
    # An upstream of its own: the killed replica's call stays asleep there, away from other tests.
    with EmulatorServer() as upstream:
        for doomed, survivor in serve_replicas(postgres_database, upstream.base_url):
            created = create_on(doomed.url, key, "My name is Ada.")
            upstream.fault("slow:6", api_key=UPSTREAM_KEY)  # the doomed replica's turn is in flight upstream
            stream = stream_continue(doomed.url, key, created.id, "What is my name?")
            assert b"event: message_start" in next(stream)  # the turn is under way: its message is stored
            doomed.signal(signal.SIGKILL)
            doomed.wait()
            stream.close()

            conversation_id = conversation_of(survivor.url, key)
            messages = conversation(survivor.url, key, conversation_id)["messages"]
            assert [(m["role"], m["status"]) for m in messages][-1] == ("user", "pending")
            assert messages[-1]["content"] == "What is my name?"

            # The dead replica's lease expires (2 s); until then the survivor says the continue is in flight.
            deadline = time.monotonic() + PATIENCE
            while True:
                try:
                    reply = continue_on(survivor.url, key, created.id, "What is my name?")
                    break
                except anthropic.BadRequestError as err:
                    refused = err
                assert refused.body["error"]["details"]["error_code"] == "thread_continue_in_flight"  # type: ignore[index]
                assert time.monotonic() < deadline, "the dead replica's lease never expired"
                time.sleep(0.1)
            assert reply.content[0].text == "Your name is Ada."
            messages = conversation(survivor.url, key, conversation_id)["messages"]
            assert [(m["role"], m["status"]) for m in messages] == [
                ("user", "ok"),
                ("assistant", "ok"),
                ("user", "ok"),
                ("assistant", "ok"),
            ]
            assert messages[2]["content"] == "What is my name?"
            assert continue_on(survivor.url, key, reply.id, "And again?").content[0].text


def test_several_workers_serve_one_port_as_replicas(postgres_database: str, turnkeep_emulator: EmulatorServer) -> None:
    key = create_key(postgres_database)
    server = Serve(postgres_database, turnkeep_emulator.base_url, UPSTREAM_KEY, "--workers", "2")
    try:
        created = create_on(server.url, key, "My name is Ada.")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: ask(server.url, key), range(8)))
        assert statuses == [200] * 8
        reply = continue_on(server.url, key, created.id, "What is my name?")
        assert reply.content[0].text == "Your name is Ada."
        # SIGTERM to the parent reaches the worker serving a stream, which finishes it before exiting.
        turnkeep_emulator.fault("slow:1", api_key=UPSTREAM_KEY)
        stream = stream_continue(server.url, key, reply.id, "What is my name?")
        received = next(stream)
        server.signal(signal.SIGTERM)
        received += b"".join(stream)
        assert server.wait() == 0
    finally:
        server.stop()
    assert b"event: message_stop" in received
    assert b"Your name is Ada." in received


def test_sigterm_lets_a_stream_in_flight_finish_then_exits(tmp_path: Path, turnkeep_emulator: EmulatorServer) -> None:
    from turnkeep.store import SQLiteStore

    database = tmp_path / "gateway.db"
    key = create_key(database)
    server = Serve(database, turnkeep_emulator.base_url, UPSTREAM_KEY)
    try:
        created = create_on(server.url, key, "My name is Ada.")
        turnkeep_emulator.fault("slow:1", api_key=UPSTREAM_KEY)  # the reply is still on its way at SIGTERM
        stream = stream_continue(server.url, key, created.id, "What is my name?")
        received = next(stream)
        server.signal(signal.SIGTERM)
        received += b"".join(stream)
        # The stream ran to its end; then the process ends by the signal (uvicorn re-raises it once it is done).
        assert server.wait() == -signal.SIGTERM
    finally:
        server.stop()
    assert b"event: message_stop" in received
    assert b"Your name is Ada." in received
    with SQLiteStore(database) as store:
        (info,) = store.list_conversations()
        path = store.path(info.id, store.branches(info.id)["main"])
    assert [(n.message["role"], n.status) for n in path][-2:] == [("user", "ok"), ("assistant", "ok")]
