"""The local target's edge: one nginx per model in front of its servers (the engine behind ingress-nginx's
annotations, so the limits a catalog entry promises are enforced where the tests can see them).

Every change of the routes (a promotion, a canary step) renders the whole configuration again
(``manifests/edge_conf.py``), has ``nginx -t`` check it, and reloads nginx with SIGHUP: nginx's graceful reload keeps
the requests in flight (a streaming generation included) on the old workers until they finish, and the new
workers take the next ones. A reload is done when the edge answers the new configuration's generation on its
health path *and* no worker of an earlier configuration still accepts connections (the master starts the new workers
before it tells the old ones to stop: for a moment both take new connections, and a request could still be routed by
the old configuration). A configuration nginx refuses is never loaded: the running one stays.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from llm_platform.conventions import EDGE_HEALTH_PATH
from llm_platform.errors import TargetError
from llm_platform.manifests.edge_conf import WORKER_PROCESSES, EdgeLimits, EdgeRoutes, render_edge_conf
from llm_platform.processes import (
    Clock,
    Sleep,
    children_of,
    command_line,
    process_alive,
    spawn,
    stop_group,
    wait_until_healthy,
)

DEFAULT_NGINX = "nginx"
RELOAD_TIMEOUT_S = 30.0
#: The title nginx gives a worker that accepts connections; one told to stop gracefully closes its listening sockets
#: and becomes "nginx: worker process is shutting down".
ACCEPTING_WORKER_TITLE = "nginx: worker process"


def edge_generation(url: str, timeout_s: float = 2.0) -> int | None:
    """The generation the edge at ``url`` runs (None when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{url}{EDGE_HEALTH_PATH}", timeout=timeout_s) as response:  # noqa: S310
            return int(response.read().decode().split()[-1])
    except (OSError, urllib.error.URLError, ValueError, IndexError):
        return None


def accepting_workers(master: int) -> int:
    """How many workers of the nginx ``master`` accept new connections (read from their titles in ``/proc``)."""
    count = 0
    for child in children_of(master):
        try:
            title = command_line(child)
        except OSError:
            continue  # gone while we looked
        count += title.strip() == ACCEPTING_WORKER_TITLE
    return count


def nginx_binary(configured: str = DEFAULT_NGINX) -> str:
    """The nginx executable (``PATH``, then ``/usr/sbin``, where Debian puts it), or a clear error."""
    found = shutil.which(configured) or shutil.which(configured, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise TargetError(
            f"the local edge needs nginx ('{configured}' not found): install it with 'apt-get install nginx' "
            "(make system-packages)"
        )
    return found


class NginxEdge:
    """One model's nginx: its configuration, pid and generation live in ``directory``."""

    # Popen objects of the edges this process started, so that a stopped one is reaped (no zombie to wait for).
    _children: dict[int, subprocess.Popen[bytes]] = {}  # noqa: RUF012 - deliberately shared by instances

    def __init__(
        self,
        directory: Path,
        listen: tuple[str, int],
        *,
        nginx: str = DEFAULT_NGINX,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        generation_of: Callable[[str], int | None] = edge_generation,
        accepting_workers_of: Callable[[int], int] = accepting_workers,
    ) -> None:
        self.directory = directory
        self.listen = listen
        self.nginx = nginx
        self._clock = clock
        self._sleep = sleep
        self._generation_of = generation_of
        self._accepting_workers_of = accepting_workers_of

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.listen[1]}"

    @property
    def conf_path(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def marker(self) -> str:
        """What the nginx master's command line carries: tells our edge from a process that reused its pid."""
        return f"-c {self.conf_path}"

    def pid(self) -> int | None:
        """The master's pid while it runs."""
        try:
            pid = int((self.directory / "nginx.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid, self.marker) else None

    def _generation(self) -> int:
        try:
            return int((self.directory / "generation").read_text())
        except (OSError, ValueError):
            return 0

    def apply(self, limits: EdgeLimits, routes: EdgeRoutes) -> int:
        """Serve ``routes`` with ``limits``: start nginx, or reload it; returns the master's pid once the edge answers
        with the new configuration."""
        binary = nginx_binary(self.nginx)
        generation = self._generation() + 1
        for sub in ("tmp", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        text = render_edge_conf(
            listen=self.listen, prefix=self.directory, limits=limits, routes=routes, generation=generation
        )
        candidate = self.directory / "nginx.conf.new"
        candidate.write_text(text)
        check = subprocess.run(
            [binary, "-t", "-q", "-p", str(self.directory), "-e", str(self.directory / "error.log"),
             "-c", str(candidate)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if check.returncode != 0:
            raise TargetError(
                f"the edge's new nginx configuration was refused, the running one kept: {check.stderr.strip()}"
            )
        candidate.replace(self.conf_path)
        (self.directory / "generation").write_text(str(generation))
        pid = self.pid()
        if pid is None:
            log_path = self.directory / "nginx.log"
            process = spawn(
                [binary, "-p", str(self.directory), "-e", str(self.directory / "error.log"), "-c", str(self.conf_path)],
                log_path, cwd=self.directory,
            )  # fmt: skip
            self._children[process.pid] = process
            try:
                wait_until_healthy(
                    process, lambda: self._generation_of(self.url) == generation, what="the local edge (nginx)",
                    log_path=log_path, timeout_s=RELOAD_TIMEOUT_S, error=TargetError, clock=self._clock,
                    sleep=self._sleep, interval_s=0.1,
                )  # fmt: skip
            except TargetError:
                stop_group(process.pid, child=self._children.pop(process.pid, None), grace_s=10)
                raise
            return process.pid
        os.kill(pid, signal.SIGHUP)
        deadline = self._clock() + RELOAD_TIMEOUT_S
        while (
            self._generation_of(self.url) != generation or self._accepting_workers_of(pid) != WORKER_PROCESSES
        ):  # fmt: skip
            if self._clock() > deadline:
                raise TargetError(f"the local edge (nginx, pid {pid}) did not take its new configuration within "
                                  f"{RELOAD_TIMEOUT_S:.0f} s; see {self.directory / 'error.log'}")  # fmt: skip
            self._sleep(0.1)
        return pid

    def retiring_workers(self) -> int:
        """Workers of an earlier configuration still finishing the requests they accepted (nginx's graceful reload:
        an old worker exits once its last request is answered). While there are any, a server the new configuration
        no longer routes to may still be handed a request or be streaming one: it must not stop yet."""
        pid = self.pid()
        return 0 if pid is None else max(0, len(children_of(pid)) - WORKER_PROCESSES)

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            stop_group(pid, child=self._children.pop(pid, None), grace_s=10)
