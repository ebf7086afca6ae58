"""A real gateway on a loopback port: the sync SDK's thread helper, the Python example and the TypeScript example
(the official `@anthropic-ai/sdk` from npm) all hold a conversation through it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from turnkeep.server import GatewayServer

ROOT = Path(__file__).resolve().parents[2]
TYPESCRIPT = ROOT / "examples" / "typescript"
# One worker runs the module: one gateway (a module fixture) under `make test`'s parallel run.
pytestmark = pytest.mark.xdist_group("gateway_examples")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with GatewayServer(database=tmp_path_factory.mktemp("gateway") / "gateway.db") as running:
        yield running


def test_a_real_server_serves_the_sync_sdks_thread_helper(server: GatewayServer) -> None:
    with anthropic.Anthropic(api_key=server.create_key("smoke"), base_url=server.base_url, max_retries=0) as client:
        thread = client.beta.messages.thread(model="claude-sonnet-5", max_tokens=100)
        thread.send({"role": "user", "content": "My name is Ada."})
        reply = thread.send({"role": "user", "content": "What is my name?"})
        assert reply.content[0].text == "Your name is Ada."  # type: ignore[union-attr]
        with client.messages.stream(
            model="claude-sonnet-5", max_tokens=50, messages=[{"role": "user", "content": "Hello."}]
        ) as stream:
            assert stream.get_final_message().usage.output_tokens > 0


def run_example(command: list[str], server: GatewayServer, cwd: Path) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANTHROPIC_", "TURNKEEP_MODEL"))}
    env.update(ANTHROPIC_BASE_URL=server.base_url, ANTHROPIC_API_KEY=server.create_key("examples"))
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_python_example_remembers_through_the_gateway(server: GatewayServer) -> None:
    out = run_example([sys.executable, str(ROOT / "examples" / "gateway_chat.py")], server, ROOT)
    lines = out.splitlines()
    assert lines[lines.index("> What is my name?") + 1] == "Your name is Ada."
    assert lines[lines.index("> Where do I live?") + 1] == "You live in Paris."


def node_packages() -> Path:
    """`examples/typescript`'s packages, installed from npm into a cache directory keyed by package.json.

    Skipped when Node or npm is missing or the install fails, except under CI, where that is a failure.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    problem = None if node and npm else "node and npm are not installed"
    manifest = (TYPESCRIPT / "package.json").read_bytes()
    cache = Path(os.environ.get("TURNKEEP_NPM_CACHE", Path.home() / ".cache" / "turnkeep-npm"))
    target = cache / hashlib.sha256(manifest).hexdigest()[:16]
    if problem is None and not (target / "node_modules" / "@anthropic-ai" / "sdk").is_dir():
        # Installed into a directory of its own, then renamed into place: test runs in parallel (several
        # checkouts on one machine) never see, or write into, a half-installed cache.
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=cache))
        (staging / "package.json").write_bytes(manifest)
        assert npm is not None
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=staging, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            problem = f"npm install failed: {done.stderr.strip()[-500:]}"
            shutil.rmtree(staging, ignore_errors=True)
        else:
            try:
                staging.rename(target)  # atomic: another run sees no install or a whole one
            except OSError:  # the name is taken: by another run's whole install, or a broken leftover
                if not (target / "node_modules" / "@anthropic-ai" / "sdk").is_dir():
                    return staging
                shutil.rmtree(staging, ignore_errors=True)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return target


@pytest.mark.timeout(600)  # the first run installs the npm packages (up to 300 s), then compiles and runs
def test_the_typescript_example_remembers_through_the_gateway(server: GatewayServer, tmp_path: Path) -> None:
    packages = node_packages()
    work = tmp_path / "typescript"
    work.mkdir()
    for name in ("chat.ts", "tsconfig.json", "package.json"):
        shutil.copy(TYPESCRIPT / name, work / name)
    (work / "node_modules").symlink_to(packages / "node_modules")
    run_example([str(packages / "node_modules" / ".bin" / "tsc")], server, work)
    out = run_example(["node", "dist/chat.js"], server, work)
    lines = out.splitlines()
    assert lines[lines.index("> What is my name?") + 1] == "Your name is Ada."
    assert lines[lines.index("> Where do I live?") + 1] == "You live in Paris."
    assert lines[-1] == "Your name is Ada."


@pytest.mark.timeout(300)  # several Python processes: 12-17 s on two busy CPUs (load 5)
def test_the_python_example_in_the_gateway_guide_runs_as_written(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "gateway.md").read_text()
    blocks = [block.split("```", 1)[0] for block in guide.split("```python\n")[1:]]
    assert blocks
    for block in blocks:
        script = tmp_path / "block.py"
        script.write_text(block)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "Your name is Ada.\n"
