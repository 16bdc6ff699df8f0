"""The embedded default target's processes: engines on CPU as supervised subprocesses behind a per-model endpoint.

The state on disk (server records, the endpoint's pointer, Prometheus targets) is ``local_state.py``'s; this
module starts, switches and stops processes. A server is identified by the fingerprint of its engine invocation
(arguments + environment, port excluded), so "the same config" is a precise notion: the benchmark reuses a running
identical server, and promotion of a config that was just benchmarked switches to that very process. Promotion is
blue/green on one machine: the new server must be healthy before the proxy routes to it, and the old one is
stopped only after the switch, so the endpoint the user calls never goes dark. Every running server is listed in a
Prometheus file_sd target file.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llm_platform.catalog import ModelSpec, Serving
from llm_platform.catalog.schema import nginx_size_bytes
from llm_platform.conventions import API_KEY_ENV, GATE_HEALTH_PATH, GATE_MODULE
from llm_platform.engine import EngineInvocation, engine_for
from llm_platform.errors import TargetError
from llm_platform.processes import free_port, http_ok, process_alive, spawn, stop_group, wait_until_healthy
from llm_platform.targets.local_state import LocalState, ProxyRecord, ServerRecord, read_or_create_api_key


def socket_dir() -> Path:
    """Where the servers' Unix sockets live: a directory of this user's, mode 0700, short enough for the 108-byte
    limit of a socket path (a state directory deep in a test's tmp tree is not)."""
    directory = Path(tempfile.gettempdir()) / f"llm-platform-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TargetError(f"{directory} is not a private directory of this user; remove it and try again")
    return directory


@dataclass(frozen=True)
class LocalTargetSettings:
    """How the local target runs engines on CPU; every field has a default that works on a 2-core machine, and is
    the one place that default is written."""

    state_dir: Path
    """Where server records, logs and the active pointer live (they outlive the runs that started the servers)."""
    file_sd_dir: Path
    """Where the Prometheus file_sd target files are written, one ``<model>.json`` per model."""
    python: str = sys.executable
    """Interpreter with vLLM installed."""
    host: str = "127.0.0.1"
    """Address the servers and the endpoint listen on."""
    kv_cache_space_gib: int = 1
    """Memory for the KV cache, per server, in GiB (vLLM: ``VLLM_CPU_KVCACHE_SPACE``)."""
    omp_threads_bind: str | None = "nobind"
    """CPU thread binding (vLLM: ``VLLM_CPU_OMP_THREADS_BIND``). ``nobind`` by default: vLLM's ``auto`` pins every
    server to the same cores, and during a blue/green switch the new server then never finishes starting next to the
    busy old one (seen on 2 cores). Set ``auto`` or explicit lists (``0-1``) for a dedicated single-server machine."""
    startup_timeout_s: float | None = None
    """Overrides the catalog's ``serving.startup_timeout_s`` (tests use a short one)."""
    drain_s: float = 2.0
    """How long an old server keeps running after the endpoint switched away from it."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Further environment for the servers."""
    api_key_file: Path | None = None
    """File with the key every server's gate requires on every route but ``/health`` (``VLLM_API_KEY``; created
    with a random key when missing; None: no key). The key goes to the processes' environment only, never into
    their arguments, the fingerprint or a record."""


@dataclass(frozen=True)
class ModelStatus:
    model: str
    endpoint: str | None
    active: ServerRecord | None
    servers: tuple[ServerRecord, ...]
    healthy: bool


class LocalServers:
    """The local target's process supervision: starts, reuses, switches and stops engine servers (each behind its
    gate) for catalog models on this machine. Not a target of its own: :class:`~llm_platform.targets.local.LocalTarget`
    is the one ``ServingTarget`` here, built on it, as the CLI's ``local`` commands are."""

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
        self.state = LocalState(settings.state_dir, settings.file_sd_dir)
        self._clock = clock
        self._sleep = sleep
        self._healthy = health_check

    @property
    def api_key(self) -> str | None:
        """The servers' API key (read, or created, on first use)."""
        if self.settings.api_key_file is None:
            return None
        return read_or_create_api_key(self.settings.api_key_file)

    def invocation(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, port: int = 0, uds: str | None = None
    ) -> EngineInvocation:
        """The engine invocation for ``model``. Fingerprints use port 0 and no socket: both are chosen at start."""
        serving = serving or model.serving
        engine = engine_for(serving)
        env = {
            **engine.cpu_environment(
                kv_cache_space_gib=self.settings.kv_cache_space_gib, threads_bind=self.settings.omp_threads_bind
            ),
            **self.settings.extra_env,
        }
        return engine.invocation(
            serving,
            served_model_name=model.name,
            weights_path=weights_path,
            host=self.settings.host,
            port=port,
            uds=uds,
            extra_env=env,
        )

    def servers(self, model: str) -> list[ServerRecord]:
        """Records of the model's servers whose process is still alive; stale records are removed."""
        records = []
        for record in self.state.server_records(model):
            if process_alive(record.pid, record.marker):
                records.append(record)
            else:
                self.state.forget_server(model, record.fingerprint)
        return records

    def active(self, model: str) -> ServerRecord | None:
        fingerprint = self.state.active_fingerprint(model)
        if fingerprint is None:
            return None
        return next((r for r in self.servers(model) if r.fingerprint == fingerprint), None)

    def endpoint(self, model: str) -> str | None:
        """The stable URL of the model (its proxy), if the proxy runs."""
        proxy = self.state.proxy(model)
        if proxy is not None and process_alive(proxy.pid, proxy.marker):
            return f"http://{self.settings.host}:{proxy.port}"
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
        if self.state.server(model.name, fingerprint) is not None:  # same config but unhealthy: replace it
            self.stop_server(model.name, fingerprint)
        return self._start(model, fingerprint, weights_path, serving or model.serving, log)

    def _start(
        self, model: ModelSpec, fingerprint: str, weights_path: str, serving: Serving, log: Callable[[str], None]
    ) -> ServerRecord:
        port, metrics_port = free_port(), free_port()
        # vLLM listens on a Unix socket in a directory only this user can enter; the gate in front of it (its
        # parent process, in the same process group) is the only TCP listener and requires the key on every route.
        socket_path = socket_dir() / f"{fingerprint}-{port}.sock"
        socket_path.unlink(missing_ok=True)
        invocation = self.invocation(model, weights_path, serving, uds=str(socket_path))
        command = [
            *self._gate_command(model, port, ["--metrics-port", str(metrics_port), "--upstream-uds", str(socket_path)]),
            "--",
            *invocation.command(self.settings.python),
        ]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        log_path = self.state.log_path(f"{model.name}-{fingerprint}-{stamp}")
        # In the state directory, not the run's working directory, which may be gone before the server.
        environment = {**os.environ, **invocation.env, **self._secret_env()}
        process = spawn(command, log_path, cwd=self.settings.state_dir, env=environment)
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
            metrics_port=metrics_port,
            socket_path=str(socket_path),
        )
        self.state.save_server(record)
        log(f"model '{model.name}': starting vLLM {fingerprint} on port {port} (log: {log_path})")
        timeout_s = self.settings.startup_timeout_s or serving.startup_timeout_s
        try:
            wait_until_healthy(
                process, lambda: self._healthy(f"{record.base_url}/health"), what=f"model '{model.name}': vLLM",
                log_path=log_path, timeout_s=timeout_s, error=TargetError, clock=self._clock, sleep=self._sleep,
                interval_s=1.0,
            )  # fmt: skip
        except TargetError:
            self.stop_server(model.name, fingerprint)  # leaves no process behind
            raise
        log(f"model '{model.name}': server {fingerprint} is healthy on port {port}")
        self._write_scrape_targets(model.name)
        return record

    def promote(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, log: Callable[[str], None] = print
    ) -> ModelStatus:
        """Serve this config at the model's endpoint: start (or reuse) it, switch the endpoint, stop the old one."""
        record = self.ensure_server(model, weights_path, serving, log)
        endpoint = self._ensure_proxy(model)
        previous = self.active(model.name)
        self.state.route_to(record)
        log(f"model '{model.name}': endpoint {endpoint} now routes to server {record.fingerprint}")
        for other in self.servers(model.name):
            if other.fingerprint != record.fingerprint:
                if previous is not None and other.fingerprint == previous.fingerprint:
                    self._sleep(self.settings.drain_s)  # requests already in flight finish on the old server
                self.stop_server(model.name, other.fingerprint)
                log(f"model '{model.name}': stopped the previous server {other.fingerprint}")
        self._write_scrape_targets(model.name)
        return self.status(model.name)

    def _secret_env(self) -> dict[str, str]:
        """The key for the gate (and vLLM): in the environment of the process only."""
        return {API_KEY_ENV: self.api_key} if self.api_key else {}

    def _gate_command(self, model: ModelSpec, port: int, upstream: list[str]) -> list[str]:
        """``python -m llm_platform.gate`` on ``port`` with the model's body limit (``exposure.max_body_size``)."""
        return [
            self.settings.python, "-m", GATE_MODULE, "--host", self.settings.host, "--port", str(port),
            "--max-body-bytes", str(nginx_size_bytes(model.exposure.max_body_size)),
            "--api-key-env", API_KEY_ENV if self.api_key else "", *upstream,
        ]  # fmt: skip

    def _ensure_proxy(self, model: ModelSpec) -> str:
        existing = self.endpoint(model.name)
        if existing is not None:
            return existing
        recorded = self.state.proxy(model.name)
        port = recorded.port if recorded is not None else free_port()  # the endpoint keeps its port
        log_path = self.state.log_path(f"{model.name}-endpoint")
        command = self._gate_command(model, port, ["--active-file", str(self.state.active_file(model.name))])
        process = spawn(command, log_path, cwd=self.settings.state_dir, env={**os.environ, **self._secret_env()})
        self._children[process.pid] = process
        self.state.save_proxy(model.name, ProxyRecord(process.pid, port))
        url = f"http://{self.settings.host}:{port}"
        wait_until_healthy(
            process, lambda: self._healthy(f"{url}{GATE_HEALTH_PATH}"), what=f"model '{model.name}': the endpoint",
            log_path=log_path, timeout_s=30, error=TargetError, clock=self._clock, sleep=self._sleep, interval_s=0.2,
        )  # fmt: skip
        return url

    def stop_server(self, model: str, fingerprint: str) -> None:
        record = self.state.server(model, fingerprint)
        if record is not None:
            self._terminate(record.pid, record.marker)
            if record.socket_path:
                Path(record.socket_path).unlink(missing_ok=True)
        self.state.forget_server(model, fingerprint)
        self._write_scrape_targets(model)

    def _terminate(self, pid: int, marker: str, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; never touches a pid that is not ours (a child
        of this process is ours for sure; a pid from a record must still carry the server's command line)."""
        if not process_alive(pid, None if pid in self._children else marker):
            return
        stop_group(pid, child=self._children.pop(pid, None), grace_s=grace_s)

    def stop(self, model: str) -> None:
        """Stop everything of ``model``: its servers and its endpoint."""
        for record in self.servers(model):
            self.stop_server(model, record.fingerprint)
        proxy = self.state.proxy(model)
        if proxy is not None:
            self._terminate(proxy.pid, proxy.marker)
        self.state.forget_endpoint(model)

    def status(self, model: str) -> ModelStatus:
        active = self.active(model)
        endpoint = self.endpoint(model)
        healthy = active is not None and endpoint is not None and self._healthy(f"{endpoint}/health")
        return ModelStatus(model, endpoint, active, tuple(self.servers(model)), healthy)

    def models(self) -> list[str]:
        """Models that have state here (running or not)."""
        return self.state.models()

    def _write_scrape_targets(self, model: str) -> None:
        self.state.write_scrape_targets(model, self.servers(model))
