"""`turnkeep serve` as a real process for the replica, crash and shutdown tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
from click.testing import CliRunner

from turnkeep.cli import main

TURNKEEP = Path(sys.executable).with_name("turnkeep")
MODEL = "claude-sonnet-5"
THREADS = "message-threads-2026-08-12"
PATIENCE = 120.0
"""Seconds a test waits for an event (a server answering, a lease expiring) before it fails: generous, since a
busy machine is slow, and the wait ends as soon as the event happens."""


def create_key(database: str | Path, tenant: str = "acme", *options: str) -> str:
    result = CliRunner().invoke(main, ["keys", "create", "--tenant", tenant, "--database", str(database), *options])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


class Serve:
    """One `turnkeep serve` process on a free port; `url` once it answers."""

    def __init__(self, database: str | Path, upstream: str, upstream_key: str, *options: str) -> None:
        env = {**os.environ, "ANTHROPIC_API_KEY": upstream_key}
        env.pop("TURNKEEP_DATABASE_URL", None)
        command = [str(TURNKEEP), "serve", "--port", "0", "--database", str(database), "--no-access-log"]
        self.process = subprocess.Popen(
            [*command, "--upstream", upstream, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("turnkeep gateway listening on "), line + self.stderr()
        self.url = line.split()[4]
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                if httpx2.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert self.process.poll() is None, self.stderr()
            assert time.monotonic() < deadline, f"{self.url} did not start"
            time.sleep(0.05)

    def stderr(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def signal(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def wait(self) -> int:
        return self.process.wait(timeout=PATIENCE)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.communicate(timeout=PATIENCE)


def continue_on(url: str, key: str, previous: str, content: str) -> Any:
    with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as client:
        return client.beta.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": content}],
            thread={"type": "continue", "previous_message_id": previous},
            betas=[THREADS],
        )


def create_on(url: str, key: str, content: str) -> Any:
    with anthropic.Anthropic(api_key=key, base_url=url, max_retries=0) as client:
        return client.beta.messages.thread(model=MODEL, max_tokens=100).send({"role": "user", "content": content})


def stream_continue(url: str, key: str, previous: str, content: str) -> Iterator[bytes]:
    """A streamed continue over raw HTTP: yields the bytes as they arrive (the caller may stop at any point)."""
    body = {
        "model": MODEL,
        "max_tokens": 100,
        "stream": True,
        "messages": [{"role": "user", "content": content}],
        "thread": {"type": "continue", "previous_message_id": previous},
    }
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "anthropic-beta": THREADS}
    with (
        httpx2.Client(timeout=PATIENCE) as client,
        client.stream("POST", url + "/v1/messages", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        yield from response.iter_raw()


def conversation(url: str, key: str, conversation_id: str) -> dict[str, Any]:
    response = httpx2.get(f"{url}/v1/turnkeep/conversations/{conversation_id}", headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def conversation_of(url: str, key: str) -> str:
    """The id of the tenant's only conversation."""
    listing = httpx2.get(f"{url}/v1/turnkeep/conversations", headers={"x-api-key": key}).json()
    assert listing["total"] == 1, listing
    return str(listing["data"][0]["id"])
