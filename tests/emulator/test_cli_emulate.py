"""`turnkeep emulate`: its help, its errors, and a real server started as a separate process."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx2
from click.testing import CliRunner

from turnkeep.cli import TurnkeepGroup, main
from turnkeep.errors import ConfigError

TURNKEEP = Path(sys.executable).parent / "turnkeep"


def test_help_describes_the_options_and_gives_an_example() -> None:
    result = CliRunner().invoke(main, ["emulate", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--clock", "--responder", "--fault-rate", "--seed"):
        assert option in result.output
    assert "ANTHROPIC_BASE_URL" in result.output


def test_the_group_lists_the_emulate_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "emulate" in result.output


def test_a_bad_option_is_one_line_on_stderr_and_exit_status_2() -> None:
    result = CliRunner().invoke(main, ["emulate", "--clock", "sometimes"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: ")
    assert "sometimes" in result.stderr


def test_a_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["emulate", "--port", str(port)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")
    assert result.stderr.count("\n") == 1


def test_the_command_serves_the_api_until_terminated() -> None:
    process = subprocess.Popen(
        [str(TURNKEEP), "emulate", "--port", "0", "--clock", "virtual"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("turnkeep emulator listening on http://127.0.0.1:")
        base_url = banner.split()[4]
        client = anthropic.Anthropic(api_key="cli-key", base_url=base_url, max_retries=0)
        # The socket listens before the banner is printed: connecting at once, without retries, works.
        models = client.models.list()
        assert any(model.id == "claude-sonnet-5" for model in models)
        reply = client.messages.create(
            model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "My name is Ada."}]
        )
        assert reply.content[0].type == "text"
        assert reply.content[0].text == "Noted: your name is Ada."
        client.close()
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught, as a terminated process should.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in stderr


def test_a_library_usage_error_in_any_command_is_one_line_and_exit_status_2() -> None:
    group = TurnkeepGroup(name="turnkeep")

    @group.command()
    def broken() -> None:
        raise ConfigError("TURNKEEP_HOME points to a file,\nnot a directory")

    result = CliRunner().invoke(group, ["broken"])
    assert result.exit_code == 2
    assert result.stderr == "Error: TURNKEEP_HOME points to a file, not a directory\n"


def test_ctrl_c_stops_the_emulator_with_one_line() -> None:
    process = subprocess.Popen(
        [str(TURNKEEP), "emulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    assert process.stdout is not None
    banner = process.stdout.readline()
    assert banner.startswith("turnkeep emulator listening on http://127.0.0.1:")
    wait_until_serving(banner.split()[4])
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0
    assert stderr == "turnkeep emulator stopped.\n"


def wait_until_serving(base_url: str) -> None:
    """Wait for the first answered request (an event, not a time): the port is bound before uvicorn serves."""
    with httpx2.Client(base_url=base_url, timeout=5.0) as http:
        for _ in range(2_400):
            try:
                http.get("/v1/models", headers={"x-api-key": "cli-key"})
                return
            except httpx2.TransportError:
                time.sleep(0.05)
    raise AssertionError(f"{base_url} never answered")


def _interruptible() -> None:
    """In the child: Ctrl-C as a terminal sends it, even when the test runner was started with SIGINT ignored (as
    a shell's background job is, and its children inherit)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
