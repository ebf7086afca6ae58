"""`turnkeep keys` and `turnkeep serve`: keys shown once and stored hashed; the server runs until terminated."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import pytest
from click.testing import CliRunner

from turnkeep.cli import main
from turnkeep.server import SQLiteTenancy

TURNKEEP = Path(sys.executable).with_name("turnkeep")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TURNKEEP_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_keys_are_printed_once_listed_by_prefix_and_revoked(home: Path) -> None:
    created = CliRunner().invoke(main, ["keys", "create", "--tenant", "acme", "--usd-per-day", "5"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("tk-")
    assert key.encode() not in b"".join(path.read_bytes() for path in home.glob("turnkeep.db*"))
    tenancy = SQLiteTenancy(home / "turnkeep.db")
    tenant = tenancy.tenant_for_key(key)
    assert tenant is not None
    assert str(tenant.limits.usd_per_day) == "5"
    tenancy.close()
    listed = CliRunner().invoke(main, ["keys", "list"])
    assert key[:11] in listed.stdout
    assert key not in listed.stdout
    revoked = CliRunner().invoke(main, ["keys", "revoke", key[:11]])
    assert revoked.stdout == "revoked 1 key\n"
    assert "revoked" in CliRunner().invoke(main, ["keys", "list"]).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["keys", "create", "--tenant", "acme", "--usd-per-day", "lots"], "'lots' is not an amount in USD"),
        (["keys", "create", "--tenant", "acme", "--policy", "nonsense(x=1)"], "unknown policy"),
        (["keys", "revoke", "tk-zzzzzzzz"], "no active key starts with"),
    ],
)
def test_bad_key_commands_are_one_line_errors(home: Path, args: list[str], message: str) -> None:
    del home
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_answers_threads_until_terminated_and_logs_no_content(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    key = CliRunner().invoke(main, ["keys", "create", "--tenant", "acme", "--database", str(database)]).stdout.strip()
    process = subprocess.Popen(
        [str(TURNKEEP), "serve", "--upstream", "emulator", "--port", "0", "--database", str(database)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("turnkeep gateway listening on http://127.0.0.1:")
        client = anthropic.Anthropic(api_key=key, base_url=banner.split()[4], max_retries=0)
        deadline = time.monotonic() + 120  # generous for a busy machine: the loop ends once it answers
        while True:
            try:
                thread = client.beta.messages.thread(model="claude-sonnet-5", max_tokens=100)
                thread.send({"role": "user", "content": "My secret is swordfish."})
                break
            except anthropic.APIConnectionError:
                assert time.monotonic() < deadline, "the gateway did not start serving"
                time.sleep(0.05)
        reply = thread.send({"role": "user", "content": "What is my secret?"})
        assert "swordfish" in reply.content[0].text  # type: ignore[union-attr]
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in stderr
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [line["thread"] for line in logged if line["path"] == "/v1/messages"] == ["create", "continue"]
    assert "swordfish" not in stderr
    assert key not in stderr


def test_keys_find_a_postgres_database_by_option_by_the_main_option_or_by_the_environment(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    from turnkeep.server.pgtenancy import PostgresTenancy

    runner = CliRunner()
    by_option = runner.invoke(main, ["keys", "create", "--tenant", "acme", "--db", postgres_url])
    by_main_option = runner.invoke(main, ["--db", postgres_url, "keys", "create", "--tenant", "acme"])
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", postgres_url)
    by_environment = runner.invoke(main, ["keys", "create", "--tenant", "globex"])
    keys = [result.stdout.strip() for result in (by_option, by_main_option, by_environment)]
    tenancy = PostgresTenancy(postgres_url)
    try:
        assert [getattr(tenancy.tenant_for_key(key), "name", None) for key in keys] == ["acme", "acme", "globex"]
    finally:
        tenancy.close()
    assert not (home / "turnkeep.db").exists()  # nothing went to the default SQLite file
    listed = runner.invoke(main, ["keys", "list"]).stdout
    assert sorted(line.split()[1] for line in listed.splitlines()) == ["acme", "acme", "globex"]


def test_a_database_url_that_is_not_postgres_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    del home
    monkeypatch.setenv("TURNKEEP_DATABASE_URL", "mysql://db/turnkeep")
    result = CliRunner().invoke(main, ["keys", "list"])
    assert result.exit_code != 0
    assert "TURNKEEP_DATABASE_URL must be a postgresql:// URL" in result.output
    assert "Traceback" not in result.output
