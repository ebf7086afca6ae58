"""Two gateway processes on one database behave as one: each continues the other's threads, and two concurrent
continues of one reply let exactly one through. (On SQLite; the same test on PostgreSQL needs its tenancy store.)"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from click.testing import CliRunner

from turnkeep.cli import main
from turnkeep.emulator import EmulatorServer

TURNKEEP = Path(sys.executable).with_name("turnkeep")
MODEL = "claude-sonnet-5"
UPSTREAM_KEY = "replica-upstream"


@pytest.fixture
def replicas(tmp_path: Path, turnkeep_emulator: EmulatorServer) -> Iterator[tuple[list[str], str]]:
    database = tmp_path / "gateway.db"
    key = CliRunner().invoke(main, ["keys", "create", "--tenant", "acme", "--database", str(database)]).stdout.strip()
    env = {**os.environ, "ANTHROPIC_API_KEY": UPSTREAM_KEY}
    processes = [
        subprocess.Popen(
            [
                str(TURNKEEP),
                "serve",
                "--port",
                "0",
                "--database",
                str(database),
                "--no-access-log",
                "--upstream",
                turnkeep_emulator.base_url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        urls = []
        for process in processes:
            assert process.stdout is not None
            urls.append(process.stdout.readline().split()[4])
        for url in urls:
            wait_until_serving(url)
        yield urls, key
    finally:
        for process in processes:
            process.terminate()
            process.communicate(timeout=30)


def wait_until_serving(url: str) -> None:
    import httpx2

    deadline = time.monotonic() + 120  # generous for a busy machine: the loop ends once it answers
    while True:
        try:
            httpx2.get(url + "/healthz", timeout=1)
            return
        except httpx2.HTTPError:
            assert time.monotonic() < deadline, f"{url} did not start"
            time.sleep(0.05)


def continue_on(url: str, key: str, previous: str, content: str) -> anthropic.types.beta.BetaMessage:
    with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as client:
        return client.beta.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": content}],
            thread={"type": "continue", "previous_message_id": previous},
            betas=["message-threads-2026-08-12"],
        )


def test_two_replicas_continue_each_others_threads(replicas: tuple[list[str], str]) -> None:
    (first, second), key = replicas
    with anthropic.Anthropic(api_key=key, base_url=first, max_retries=0) as client:
        thread = client.beta.messages.thread(model=MODEL, max_tokens=100)
        created = thread.send({"role": "user", "content": "My name is Ada."})
    on_second = continue_on(second, key, created.id, "I live in Paris.")
    on_first = continue_on(first, key, on_second.id, "What is my name?")
    assert on_first.content[0].text == "Your name is Ada."  # type: ignore[union-attr]
    back = continue_on(second, key, on_first.id, "Where do I live?")
    assert back.content[0].text == "You live in Paris."  # type: ignore[union-attr]


def test_two_concurrent_continues_of_one_reply_let_one_through(
    replicas: tuple[list[str], str], turnkeep_emulator: EmulatorServer
) -> None:
    (first, second), key = replicas
    with anthropic.Anthropic(api_key=key, base_url=first, max_retries=0) as client:
        created = client.beta.messages.thread(model=MODEL, max_tokens=100).send(
            {"role": "user", "content": "My name is Ada."}
        )
    turnkeep_emulator.fault("slow:1.5", api_key=UPSTREAM_KEY)  # whichever goes first stays in flight upstream

    def attempt(url: str) -> str:
        try:
            return continue_on(url, key, created.id, "What is my name?").content[0].text  # type: ignore[union-attr]
        except anthropic.BadRequestError as err:
            return str(err.body["error"]["details"]["error_code"])  # type: ignore[index]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(attempt, [first, second]))
    assert outcomes[0] == "Your name is Ada."
    assert outcomes[1] in ("thread_continue_in_flight", "thread_already_continued")
