"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, a throw-away cluster in a temporary
directory on a loopback port, run as an unprivileged user (``initdb`` and ``postgres`` refuse root: as root the
package's ``postgres`` account runs them), stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from llm_platform.processes import free_port

PG_ROOT = Path("/usr/lib/postgresql")
USER = "dagster"


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with ``initdb``, or None when the package is missing."""
    candidates = sorted(PG_ROOT.glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name))
    return candidates[-1].parent if candidates else None


@dataclass(frozen=True)
class PostgresServer:
    url: str
    """``postgresql+psycopg2://dagster@127.0.0.1:<port>/dagster`` (trust authentication on loopback; SQLAlchemy 2.1
    reads a bare ``postgresql://`` as psycopg 3, which dagster-postgres does not install)."""
    pid: int
    directory: Path


def _as_unprivileged(command: Sequence[str]) -> list[str]:
    if os.getuid() != 0:
        return list(command)
    pwd.getpwnam("postgres")  # the Debian package's account; KeyError when the package is missing
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """initdb + start on a free loopback port; on exit a fast shutdown (SIGINT to the postmaster's pid)."""
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (make test installs it)")
    directory = Path(tempfile.mkdtemp(prefix="llm-platform-pg-"))
    if os.getuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    data, port = directory / "data", free_port()
    subprocess.run(
        _as_unprivileged([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", USER, "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_unprivileged(
            [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    try:
        subprocess.run(
            _as_unprivileged([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, USER]),
            check=True,
            capture_output=True,
        )
        yield PostgresServer(f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{USER}", pid, directory)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # "fast" shutdown: disconnect clients, then exit
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(directory, ignore_errors=True)
