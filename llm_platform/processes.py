"""Supervising the processes the project starts (vLLM servers, the endpoint proxy, olah, Prometheus, Dagster, run
workers): spawn in an own process group with the output in a log file, wait for health with a deadline, stop the
whole group, show the log's tail. One implementation for every caller; clock and sleep are injected wherever it
waits, so that waiting is testable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llm_platform.errors import PlatformError

LOG_TAIL_LINES = 25
Clock = Callable[[], float]
Sleep = Callable[[float], None]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    """Whether ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URLs we built
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def http_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether anything answers HTTP at ``url`` (an error status is an answer: the server is up)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):  # noqa: S310 - loopback URLs we built
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def command_line(pid: int) -> str:
    """The command line of ``pid`` as one string, its arguments joined by spaces (a retitled process shows its title,
    e.g. nginx's workers or ``VLLM::EngineCore``). Raises ``OSError`` when the process is gone."""
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def process_alive(pid: int, marker: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, with ``marker``, whether its command line contains it: a pid file
    that outlived its process must not make us signal an unrelated process that reused the pid."""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    proc = Path("/proc") / str(pid)
    try:
        if proc.joinpath("stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
        if marker is not None:
            return marker in command_line(pid)
    except (OSError, IndexError):
        return False
    return True


def children_of(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is ``pid``, read from ``/proc``."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(") ", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue  # gone while we looked
        if int(ppid) == pid and state != "Z":
            children.append(int(stat.parent.name))
    return children


def group_alive(pgid: int) -> bool:
    """Whether any process of the group (the process and every child it started) is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _restore_signals() -> None:
    # Started from a non-interactive shell with `&`, SIGINT/SIGTERM arrive ignored and are inherited as such:
    # `dagster dev` would then outlive every attempt to stop it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def spawn(
    command: Sequence[str],
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    restore_signals: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of its own process group (so that stopping it stops its children too), with
    stdout and stderr appended to ``log_path``; ``restore_signals`` gives it default SIGINT/SIGTERM handling."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_restore_signals if restore_signals else None,
        )


def wait_until_healthy(
    process: subprocess.Popen[bytes],
    healthy: Callable[[], bool],
    *,
    what: str,
    log_path: Path,
    timeout_s: float,
    error: type[PlatformError] = PlatformError,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    interval_s: float = 0.5,
) -> None:
    """Return once ``healthy()``; raise ``error`` (with the log's tail) when the process exits first or the deadline
    passes. The caller decides what to stop on failure."""
    deadline = clock() + timeout_s
    while True:
        if process.poll() is not None:
            raise error(
                f"{what} exited with code {process.returncode} while starting; last lines of {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        if healthy():
            return
        if clock() > deadline:
            raise error(
                f"{what} did not become healthy within {timeout_s:.0f} s; last lines of {log_path}:\n"
                f"{log_tail(log_path)}"
            )
        sleep(interval_s)


def _reap_if_ours(pid: int) -> None:
    """Reap ``pid`` if it is an exited child of this process whose ``Popen`` is gone (a service started by this
    process and stopped by its record): a zombie still counts as a member of its group, so the wait for the group
    would otherwise last the whole grace period."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop_group(
    pid: int,
    *,
    child: subprocess.Popen[bytes] | None = None,
    grace_s: float = 20.0,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace_s``; reap ``child`` (the Popen of this
    process's own child) so that no zombie is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def ended() -> bool:
        """Whether the whole group is gone, once our leader (an exited one is a zombie, still a member) is reaped."""
        if child is not None:
            child.poll()
        else:
            _reap_if_ours(pid)
        return not group_alive(pid)

    deadline = clock() + grace_s
    while clock() < deadline:
        if ended():
            break
        sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for _ in range(50):  # a killed group ends at once; up to 5 s for the kernel to let go of it
            if ended():
                break
            sleep(0.1)
    if child is not None:
        child.wait(timeout=10)
