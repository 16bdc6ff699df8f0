"""The embedded default target: vLLM on CPU as supervised subprocesses, behind a stable per-model endpoint.

Layout under ``state_dir`` (``local-target`` under the local home, ``$DAGSTER_HOME`` by default)::

    <model>/servers/<fingerprint>.json   one record per vLLM process (pid, port, log, weights) - survives restarts
    <model>/active.json                  the server the model's endpoint routes to
    <model>/proxy.json                   the endpoint: a small reverse proxy on a port that never changes
    logs/<model>-<fingerprint>-<time>.log

A server is identified by the fingerprint of its engine invocation (arguments + environment, port excluded), so
"the same config" is a precise notion: the benchmark reuses a running identical server, and promotion of a config
that was just benchmarked switches to that very process. Promotion is blue/green on one machine: the new server
must be healthy before the proxy routes to it, and the old one is stopped only after the switch, so the endpoint
the user calls never goes dark. Every running server is listed in a Prometheus file_sd target file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llm_platform.catalog import ModelSpec, Serving
from llm_platform.devhub import free_port
from llm_platform.engine import EngineInvocation, engine_invocation
from llm_platform.errors import TargetError

LOG_TAIL_LINES = 25


@dataclass(frozen=True)
class LocalTargetSettings:
    """How the local target runs vLLM; every field has a default that works on a 2-core machine."""

    state_dir: Path
    """Where server records, logs and the active pointer live (they outlive the runs that started the servers)."""
    file_sd_dir: Path
    """Where the Prometheus file_sd target files are written, one ``<model>.json`` per model."""
    python: str = sys.executable
    """Interpreter with vLLM installed."""
    host: str = "127.0.0.1"
    """Address the servers and the endpoint listen on."""
    kv_cache_space_gib: int = 1
    """``VLLM_CPU_KVCACHE_SPACE``: memory for the KV cache, per server, in GiB."""
    omp_threads_bind: str | None = "nobind"
    """``VLLM_CPU_OMP_THREADS_BIND``. ``nobind`` by default: vLLM's ``auto`` pins every server to the same cores,
    and during a blue/green switch the new server then never finishes starting next to the busy old one (seen on
    2 cores). Set ``auto`` or explicit lists (``0-1``) for a dedicated single-server machine."""
    startup_timeout_s: float | None = None
    """Overrides the catalog's ``serving.startup_timeout_s`` (tests use a short one)."""
    drain_s: float = 2.0
    """How long an old server keeps running after the endpoint switched away from it."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Further environment for the servers."""


@dataclass(frozen=True)
class ServerRecord:
    """One running (or recently running) vLLM process."""

    model: str
    fingerprint: str
    pid: int
    port: int
    host: str
    log_path: str
    weights_path: str
    started_at: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class ModelStatus:
    model: str
    endpoint: str | None
    active: ServerRecord | None
    servers: tuple[ServerRecord, ...]
    healthy: bool


def _write_json(path: Path, payload: object) -> None:
    """Atomic write (temp file + rename) so that a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    temporary.replace(path)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
            return marker in proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return True


def _recorded_process(record: Mapping[str, object]) -> tuple[int, str]:
    """(pid, command-line marker) of a server or proxy record: the marker tells our process from a reused pid."""
    return int(str(record["pid"])), f"--port {record['port']}"


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback URLs we built
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalTarget:
    """Starts, reuses, promotes and stops vLLM servers for catalog models on this machine."""

    # Popen objects of the servers this process started, so that their exit is reaped (no zombies).
    _children: dict[int, subprocess.Popen[bytes]] = {}  # noqa: RUF012 - deliberately shared by instances

    def __init__(
        self,
        settings: LocalTargetSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        health_check: Callable[[str], bool] = http_ok,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._healthy = health_check

    # -- paths and records ---------------------------------------------------------------------------------------

    def _model_dir(self, model: str) -> Path:
        return self.settings.state_dir / model

    def _server_file(self, model: str, fingerprint: str) -> Path:
        return self._model_dir(model) / "servers" / f"{fingerprint}.json"

    def invocation(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, port: int = 0
    ) -> EngineInvocation:
        """The engine invocation for ``model``. Fingerprints use port 0: the real port is chosen at start."""
        env = {"VLLM_CPU_KVCACHE_SPACE": str(self.settings.kv_cache_space_gib), **self.settings.extra_env}
        if self.settings.omp_threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.settings.omp_threads_bind
        return engine_invocation(
            serving or model.serving,
            served_model_name=model.name,
            weights_path=weights_path,
            host=self.settings.host,
            port=port,
            extra_env=env,
        )

    def servers(self, model: str) -> list[ServerRecord]:
        """Records of the model's servers whose process is still alive; stale records are removed."""
        directory = self._model_dir(model) / "servers"
        records = []
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            data = _read_json(path)
            record = ServerRecord(**data) if data else None  # type: ignore[arg-type]
            if record is not None and process_alive(record.pid, f"--port {record.port}"):
                records.append(record)
            else:
                path.unlink(missing_ok=True)
        return records

    def active(self, model: str) -> ServerRecord | None:
        data = _read_json(self._model_dir(model) / "active.json")
        if not data:
            return None
        return next((r for r in self.servers(model) if r.fingerprint == data.get("fingerprint")), None)

    def endpoint(self, model: str) -> str | None:
        """The stable URL of the model (its proxy), if the proxy runs."""
        data = _read_json(self._model_dir(model) / "proxy.json")
        if data and process_alive(*_recorded_process(data)):
            return f"http://{self.settings.host}:{data['port']}"
        return None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def ensure_server(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, log: Callable[[str], None] = print
    ) -> ServerRecord:
        """A healthy server running exactly this config: the one already running, or a new one."""
        invocation = self.invocation(model, weights_path, serving)
        fingerprint = invocation.fingerprint
        for record in self.servers(model.name):
            if record.fingerprint == fingerprint and self._healthy(f"{record.base_url}/health"):
                log(f"model '{model.name}': reusing the running server {record.fingerprint} on port {record.port}")
                return record
        stale = self._server_file(model.name, fingerprint)
        if stale.exists():  # same config but unhealthy: replace it
            self.stop_server(model.name, fingerprint)
        return self._start(model, fingerprint, weights_path, serving or model.serving, log)

    def _start(
        self, model: ModelSpec, fingerprint: str, weights_path: str, serving: Serving, log: Callable[[str], None]
    ) -> ServerRecord:
        port = free_port()
        invocation = self.invocation(model, weights_path, serving, port=port)
        command = invocation.command(self.settings.python)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        log_path = self.settings.state_dir / "logs" / f"{model.name}-{fingerprint}-{stamp}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **invocation.env},
                cwd=self.settings.state_dir,  # not the run's working directory, which may be gone before the server
                start_new_session=True,  # its own process group: stop() signals vLLM and its workers together
            )
        self._children[process.pid] = process
        record = ServerRecord(
            model=model.name,
            fingerprint=fingerprint,
            pid=process.pid,
            port=port,
            host=self.settings.host,
            log_path=str(log_path),
            weights_path=weights_path,
            started_at=datetime.now(UTC).isoformat(),
        )
        _write_json(self._server_file(model.name, fingerprint), asdict(record))
        log(f"model '{model.name}': starting vLLM {fingerprint} on port {port} (log: {log_path})")
        timeout_s = self.settings.startup_timeout_s or serving.startup_timeout_s
        deadline = self._clock() + timeout_s
        while True:
            if process.poll() is not None:
                self._forget(model.name, fingerprint)
                raise TargetError(
                    f"model '{model.name}': vLLM exited with code {process.returncode} while starting; last lines "
                    f"of {log_path}:\n{log_tail(log_path)}"
                )
            if self._healthy(f"{record.base_url}/health"):
                log(f"model '{model.name}': server {fingerprint} is healthy on port {port}")
                self._write_file_sd(model.name)
                return record
            if self._clock() > deadline:
                self.stop_server(model.name, fingerprint)
                raise TargetError(
                    f"model '{model.name}': vLLM did not become healthy within {timeout_s:.0f} s (startup timeout); "
                    f"last lines of {log_path}:\n{log_tail(log_path)}"
                )
            self._sleep(1.0)

    def promote(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, log: Callable[[str], None] = print
    ) -> ModelStatus:
        """Serve this config at the model's endpoint: start (or reuse) it, switch the endpoint, stop the old one."""
        record = self.ensure_server(model, weights_path, serving, log)
        endpoint = self._ensure_proxy(model.name)
        previous = self.active(model.name)
        _write_json(
            self._model_dir(model.name) / "active.json",
            {"fingerprint": record.fingerprint, "port": record.port, "host": record.host},
        )
        log(f"model '{model.name}': endpoint {endpoint} now routes to server {record.fingerprint}")
        for other in self.servers(model.name):
            if other.fingerprint != record.fingerprint:
                if previous is not None and other.fingerprint == previous.fingerprint:
                    self._sleep(self.settings.drain_s)  # requests already in flight finish on the old server
                self.stop_server(model.name, other.fingerprint)
                log(f"model '{model.name}': stopped the previous server {other.fingerprint}")
        self._write_file_sd(model.name)
        return self.status(model.name)

    def _ensure_proxy(self, model: str) -> str:
        existing = self.endpoint(model)
        if existing is not None:
            return existing
        data = _read_json(self._model_dir(model) / "proxy.json") or {}
        port = int(str(data.get("port") or free_port()))
        log_path = self.settings.state_dir / "logs" / f"{model}-endpoint.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            self.settings.python,
            "-m",
            "llm_platform.targets.proxy",
            "--host",
            self.settings.host,
            "--port",
            str(port),
            "--active-file",
            str(self._model_dir(model) / "active.json"),
        ]
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.settings.state_dir,
                start_new_session=True,
            )
        self._children[process.pid] = process
        _write_json(self._model_dir(model) / "proxy.json", {"pid": process.pid, "port": port})
        url = f"http://{self.settings.host}:{port}"
        deadline = self._clock() + 30
        while not self._healthy(f"{url}/-/proxy-health"):
            if process.poll() is not None or self._clock() > deadline:
                raise TargetError(
                    f"model '{model}': the endpoint proxy did not start; see {log_path}:\n{log_tail(log_path)}"
                )
            self._sleep(0.2)
        return url

    def stop_server(self, model: str, fingerprint: str) -> None:
        data = _read_json(self._server_file(model, fingerprint))
        if data:
            self._terminate(*_recorded_process(data))
        self._forget(model, fingerprint)

    def _forget(self, model: str, fingerprint: str) -> None:
        self._server_file(model, fingerprint).unlink(missing_ok=True)
        self._write_file_sd(model)

    def _terminate(self, pid: int, marker: str, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; never touches a pid that is not ours (a child
        of this process is ours for sure; a pid from a record must still carry the server's command line)."""
        if not process_alive(pid, None if pid in self._children else marker):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            child = self._children.get(pid)
            if child is not None:
                child.poll()
            if not process_alive(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)

    def stop(self, model: str) -> None:
        """Stop everything of ``model``: its servers and its endpoint."""
        for record in self.servers(model):
            self.stop_server(model, record.fingerprint)
        proxy = _read_json(self._model_dir(model) / "proxy.json")
        if proxy:
            self._terminate(*_recorded_process(proxy))
        (self._model_dir(model) / "active.json").unlink(missing_ok=True)
        (self.settings.file_sd_dir / f"{model}.json").unlink(missing_ok=True)

    def status(self, model: str) -> ModelStatus:
        active = self.active(model)
        endpoint = self.endpoint(model)
        healthy = active is not None and endpoint is not None and self._healthy(f"{endpoint}/health")
        return ModelStatus(model, endpoint, active, tuple(self.servers(model)), healthy)

    def models(self) -> list[str]:
        """Models that have state here (running or not)."""
        root = self.settings.state_dir
        return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "logs") if root.is_dir() else []

    def _write_file_sd(self, model: str) -> None:
        active = _read_json(self._model_dir(model) / "active.json") or {}
        groups = [
            {
                "targets": [f"{record.host}:{record.port}"],
                "labels": {
                    "model": model,
                    "fingerprint": record.fingerprint,
                    "role": "active" if record.fingerprint == active.get("fingerprint") else "candidate",
                },
            }
            for record in self.servers(model)
        ]
        _write_json(self.settings.file_sd_dir / f"{model}.json", groups)
