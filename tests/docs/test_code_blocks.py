"""Every code block of README.md and docs/*.md runs as written, on a machine without an API key.

How a block is run depends on its fence:

- ```` ```python ````: executed in a fresh namespace, in a working directory and `TURNKEEP_HOME` of its own.
- ```` ```console ````: each `$ ` line runs in bash (`set -euo pipefail`) with `turnkeep` on the PATH; the lines
  without `$ ` are output shown to the reader. The blocks of one document share a `TURNKEEP_HOME`, in order,
  so `ask -c` in a later block continues the conversation of an earlier one. ```` ```sh ```` runs every line.
- `key` after the language (```` ```python key ````): the block talks to Claude and needs `ANTHROPIC_API_KEY`;
  here the emulator stands in for the API, given to the SDK the way a reader's key would be (environment).
- `server` (```` ```console server ````): the first command serves until Ctrl-C; it is started, must print that
  it listens, and must stop on SIGINT with one line (no traceback); the other lines run while it serves.
- `(not run: REASON)`: skipped, with the reason the fence gives.

Blocks without a language, `text` and `json` are output or data, not code.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from turnkeep.emulator import EmulatorServer

ROOT = Path(__file__).parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE = {"python", "console", "sh", "bash"}
# Checked, output and all, by tests of their own.
COVERED_ELSEWHERE = {"policies.md": "tests/client/test_docs_policies.py runs these and checks what they print"}
TIMEOUT = 300  # seconds for a whole block: generous, for a busy machine; a block takes a few seconds idle


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    language: str
    words: tuple[str, ...]
    skip: str | None
    body: str

    @property
    def id(self) -> str:
        return f"{self.document.name}:{self.line}"


def blocks() -> list[Block]:
    found: list[Block] = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            info = match["info"].strip()
            language, _, rest = info.partition(" ")
            if language not in CODE:
                continue
            skip = re.search(r"\(not run: (?P<reason>[^)]+)\)", rest)
            found.append(
                Block(
                    document=document,
                    line=text.count("\n", 0, match.start()) + 1,
                    language=language,
                    words=tuple(re.sub(r"\(.*?\)", "", rest).split()),
                    skip=skip["reason"] if skip else None,
                    body=match["body"],
                )
            )
    return found


def test_the_readme_and_every_guide_have_blocks_that_run() -> None:
    documents = {block.document.name for block in blocks() if block.skip is None}
    assert {"README.md", "cli.md", "emulator.md", "store.md", "simulation.md"} <= documents


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_no_command_is_hidden_in_an_indented_block(document: Path) -> None:
    # An indented block is code Markdown shows but this runner would not see: write it fenced.
    outside_fences = FENCE.sub("", document.read_text(encoding="utf-8"))
    indented = [line for line in outside_fences.splitlines() if re.match(r"^ {4}\S", line)]
    assert not [line for line in indented if line.lstrip().startswith(("turnkeep ", "$ ", "import ", "from "))]


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One TURNKEEP_HOME (and working directory) per document, shared by its blocks in order."""
    return {document.name: tmp_path_factory.mktemp(document.stem) for document in DOCUMENTS}


def _environment(home: Path, block: Block, emulator: EmulatorServer) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "TURNKEEP_"))}
    env["TURNKEEP_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    if "key" in block.words:
        env["ANTHROPIC_API_KEY"] = "test-key"
        env["ANTHROPIC_BASE_URL"] = emulator.base_url
    return env


def _commands(block: Block) -> list[str]:
    if block.language == "console":
        return [line[2:] for line in block.body.splitlines() if line.startswith("$ ")]
    return [line for line in block.body.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture
def served() -> Iterator[list[subprocess.Popen[str]]]:
    """The servers a block started; any still running when the test ends is killed."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.slow
@pytest.mark.timeout(2 * TIMEOUT)  # a block of several commands takes up to ~20 s idle; 10x that and more
@pytest.mark.parametrize(
    "block",
    # The blocks of a document run in order in one process (`make test` runs tests in parallel processes).
    [pytest.param(block, id=block.id, marks=pytest.mark.xdist_group(block.document.name)) for block in blocks()],
)
def test_the_block_runs_as_written(
    block: Block,
    homes: dict[str, Path],
    turnkeep_emulator: EmulatorServer,
    served: list[subprocess.Popen[str]],
) -> None:
    if block.skip is not None:
        pytest.skip(block.skip)
    if block.language == "python" and block.document.name in COVERED_ELSEWHERE:
        pytest.skip(COVERED_ELSEWHERE[block.document.name])
    home = homes[block.document.name]
    cwd = home / "work"
    cwd.mkdir(exist_ok=True)
    env = _environment(home, block, turnkeep_emulator)
    if block.language == "python":
        _run_python(block, env, cwd)
        return
    commands = _commands(block)
    assert commands, f"{block.id}: a shell block with no command"
    if "server" in block.words:
        _serve(commands.pop(0), env, cwd, served)
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{block.id} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    for process in served:
        _stop(process, block)


def _run_python(block: Block, env: dict[str, str], cwd: Path) -> None:
    # A child process: the block runs with exactly the environment and imports a reader's script would have.
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", block.body],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"


def _serve(command: str, env: dict[str, str], cwd: Path, served: list[subprocess.Popen[str]]) -> None:
    process = subprocess.Popen(
        ["bash", "-c", f"exec {command}"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served.append(process)  # at once: however this test ends, the fixture stops it
    assert process.stdout is not None
    first = process.stdout.readline()  # blocks until the server says it listens (or dies)
    if not first and process.stderr is not None and "in use" in (err := process.stderr.read()):
        process.communicate()
        pytest.skip(f"{command!r}: its port is taken on this machine ({err.strip()})")
    assert "listening on http://" in first, (
        f"{command!r} printed {first!r}; {process.stderr.read() if process.stderr else ''}"
    )
    base_url = first.split()[4]
    with httpx2.Client(base_url=base_url, timeout=5.0) as http:  # serving, not just bound: then Ctrl-C is clean
        for _ in range(2_400):
            try:
                http.get("/v1/models", headers={"x-api-key": "test-key"})
                break
            except httpx2.TransportError:
                time.sleep(0.05)


def _stop(process: subprocess.Popen[Any], block: Block) -> None:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode in (0, 130), f"{block.id}: the server exited {process.returncode}: {err}"
    assert "Traceback" not in err, err
    assert "Aborted!" not in err, err
    assert len(err.strip().splitlines()) <= 1, err
