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

import dataclasses
import os
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from llm_platform.catalog import ModelSpec, Serving
from llm_platform.catalog.schema import nginx_size_bytes
from llm_platform.conventions import API_KEY_ENV, GATE_MODULE, METRICS_PATH
from llm_platform.edge import NginxEdge
from llm_platform.engine import EngineInvocation, EngineMetrics, LoraAdapters, engine_for
from llm_platform.errors import TargetError
from llm_platform.manifests.edge_conf import EdgeLimits, EdgeRoutes
from llm_platform.processes import free_port, http_ok, process_alive, spawn, stop_group, wait_until_healthy
from llm_platform.targets.local_state import (
    CanaryRecord,
    LocalState,
    ProxyRecord,
    ServerRecord,
    read_or_create_api_key,
)


def socket_dir() -> Path:
    """Where the servers' Unix sockets live: a directory of this user's, mode 0700, short enough for the 108-byte
    limit of a socket path (a state directory deep in a test's tmp tree is not)."""
    directory = Path(tempfile.gettempdir()) / f"llm-platform-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise TargetError(f"{directory} is not a private directory of this user; remove it and try again")
    return directory


def half_the_cores() -> int:
    """The OpenMP threads each local server gets by default: the cores this process may run on, shared by two."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


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
    cpu_threads: int | None = field(default_factory=half_the_cores)
    """OpenMP threads of each unpinned server (``OMP_NUM_THREADS``; None: one per core). Half the cores by default:
    this target runs two servers at once (a blue/green switch, a canary beside its stable version, a trial beside the
    active server), and OpenMP threads that outnumber the cores spin at their barriers against each other. Measured
    on two cores (2026-12-07, the tiny demo model, two eager servers decoding at once): a 256-token completion took
    4.7-6.4 s with two threads each, 0.9-1.3 s with one; one server alone decoded as fast with one thread as with two
    (0.7-1.0 s)."""
    nginx: str = "nginx"
    """The edge's nginx executable (``PATH``, then ``/usr/sbin``)."""
    edge_timeout_s: float | None = None
    """Overrides the exposure's ``timeout_s`` at the local edge (tests use a short one; the catalog allows 600 s+)."""
    startup_timeout_s: float | None = None
    """Overrides the catalog's ``serving.startup_timeout_s`` (tests use a short one)."""
    drain_s: float = 2.0
    """How long an old server keeps running after the endpoint switched away from it, at least: the edge's old
    workers may still hand it a request they accepted before the reload."""
    max_drain_s: float = 120.0
    """How long an old server may keep running while the engine still reports requests running or waiting (a
    canary's queue when it is withdrawn): the requests in flight finish before it stops."""
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


def in_flight(metrics_url: str, metrics: EngineMetrics) -> float:
    """Requests running or waiting on the server, from its own ``/metrics`` (0 when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{metrics_url}{METRICS_PATH}", timeout=2) as response:  # noqa: S310 - ours
            text = response.read().decode()
    except OSError:
        return 0.0
    gauges = {*metrics.names(metrics.requests_running), *metrics.names(metrics.requests_waiting)}
    return sum(
        sample.value for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name in gauges
    )  # fmt: skip


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
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.state = LocalState(settings.state_dir, settings.file_sd_dir)
        self._clock = clock
        self._sleep = sleep
        self._healthy = health_check
        self._wall_clock = wall_clock

    @property
    def api_key(self) -> str | None:
        """The servers' API key (read, or created, on first use)."""
        if self.settings.api_key_file is None:
            return None
        return read_or_create_api_key(self.settings.api_key_file)

    def invocation(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, port: int = 0,
        uds: str | None = None, adapters: LoraAdapters | None = None,
    ) -> EngineInvocation:  # fmt: skip
        """The engine invocation for ``model`` (with ``adapters`` on its weights). Fingerprints use port 0 and no
        socket: both are chosen at start."""
        serving = serving or model.serving
        engine = engine_for(serving)
        env = {
            **engine.cpu_environment(
                kv_cache_space_gib=self.settings.kv_cache_space_gib,
                threads_bind=self.settings.omp_threads_bind,
                threads=self.settings.cpu_threads,
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
            adapters=adapters,
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
        """The stable URL of the model (its edge), if the edge runs."""
        proxy = self.state.proxy(model)
        if proxy is not None and process_alive(proxy.pid, proxy.marker):
            return f"http://{self.settings.host}:{proxy.port}"
        return None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def ensure_server(
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, log: Callable[[str], None] = print,
        adapters: LoraAdapters | None = None,
    ) -> ServerRecord:  # fmt: skip
        """A healthy server running exactly this config: the one already running, or a new one."""
        invocation = self.invocation(model, weights_path, serving, adapters=adapters)
        fingerprint = invocation.fingerprint
        for record in self.servers(model.name):
            if record.fingerprint == fingerprint and self._healthy(f"{record.base_url}/health"):
                log(f"model '{model.name}': reusing the running server {record.fingerprint} on port {record.port}")
                return record
        if self.state.server(model.name, fingerprint) is not None:  # same config but unhealthy: replace it
            self.stop_server(model.name, fingerprint)
        return self._start(model, fingerprint, weights_path, serving or model.serving, log, adapters)

    def _start(
        self, model: ModelSpec, fingerprint: str, weights_path: str, serving: Serving, log: Callable[[str], None],
        adapters: LoraAdapters | None,
    ) -> ServerRecord:  # fmt: skip
        port, metrics_port = free_port(), free_port()
        # vLLM listens on a Unix socket in a directory only this user can enter; the gate in front of it (its
        # parent process, in the same process group) is the only TCP listener and requires the key on every route.
        socket_path = socket_dir() / f"{fingerprint}-{port}.sock"
        socket_path.unlink(missing_ok=True)
        invocation = self.invocation(model, weights_path, serving, uds=str(socket_path), adapters=adapters)
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
        self, model: ModelSpec, weights_path: str, serving: Serving | None = None, log: Callable[[str], None] = print,
        adapters: LoraAdapters | None = None,
    ) -> ModelStatus:  # fmt: skip
        """Serve this config at the model's endpoint: start (or reuse) it, switch the endpoint, stop the old one."""
        record = self.ensure_server(model, weights_path, serving, log, adapters)
        previous = self.active(model.name)
        self.state.route_to(record)
        self.state.forget_canary(model.name)
        endpoint = self._apply_edge(model)
        log(f"model '{model.name}': endpoint {endpoint} now routes to server {record.fingerprint}")
        self._stop_all_but(model, record.fingerprint, previous, log)
        return self.status(model.name)

    def _stop_all_but(
        self, model: ModelSpec, keep: str, previous: ServerRecord | None, log: Callable[[str], None]
    ) -> None:
        """Stop every server of ``model`` but ``keep``; the one that served until now after the drain period."""
        for other in self.servers(model.name):
            if other.fingerprint != keep:
                if previous is not None and other.fingerprint == previous.fingerprint:
                    self._drain(model, other)  # requests already in flight finish on the old server
                self.stop_server(model.name, other.fingerprint)
                log(f"model '{model.name}': stopped the previous server {other.fingerprint}")
        self._write_scrape_targets(model.name)

    # -- a canary rollout: the candidate beside the stable server, the edge splitting by weight -------------------

    def canary(self, model: str) -> CanaryRecord | None:
        """The model's canary rollout, if one is recorded (its owner may have died: see the heartbeat)."""
        return self.state.canary(model)

    def start_canary(
        self, model: ModelSpec, weights_path: str, *, owner: str, serving: Serving | None = None,
        log: Callable[[str], None] = print, adapters: LoraAdapters | None = None,
    ) -> ServerRecord:  # fmt: skip
        """Start (or reuse) the candidate's server beside the active one, at weight 0, scraped as the canary."""
        if self.active(model.name) is None:
            raise TargetError(f"model '{model.name}': a canary needs a stable server to compare with; none serves")
        record = self.ensure_server(model, weights_path, serving, log, adapters)
        self.state.save_canary(model.name, CanaryRecord(record.fingerprint, 0, owner, self._wall_clock()))
        self._write_scrape_targets(model.name)
        self._apply_edge(model)
        log(f"model '{model.name}': canary server {record.fingerprint} runs beside the stable one, at 0 %")
        return record

    def set_canary_weight(self, model: ModelSpec, percent: int) -> None:
        """Send ``percent`` of the model's requests to the canary (the edge reloads gracefully)."""
        canary = self._require_canary(model.name)
        self.state.save_canary(model.name, dataclasses.replace(canary, weight=percent, heartbeat=self._wall_clock()))
        self._apply_edge(model)

    def touch_canary(self, model: str) -> None:
        """The owner is alive: refresh the heartbeat."""
        canary = self._require_canary(model)
        self.state.save_canary(model, dataclasses.replace(canary, heartbeat=self._wall_clock()))

    def finish_canary(self, model: ModelSpec, *, promoted: bool, log: Callable[[str], None] = print) -> None:
        """Promoted: the canary's server becomes the stable one and serves alone, the old one stops after the drain;
        aborted: the stable server takes all traffic again (it never restarted) and the canary's server stops."""
        canary = self._require_canary(model.name)
        previous = self.active(model.name)
        server = self.state.server(model.name, canary.fingerprint)
        if promoted:
            if server is None:
                raise TargetError(f"model '{model.name}': the canary's server {canary.fingerprint} is gone")
            self.state.route_to(server)
        self.state.forget_canary(model.name)
        self._apply_edge(model)
        if promoted:
            log(f"model '{model.name}': the canary {canary.fingerprint} is the stable server now")
            self._stop_all_but(model, canary.fingerprint, previous, log)
            return
        log(f"model '{model.name}': canary {canary.fingerprint} withdrawn, all traffic on the stable server")
        if server is not None and (previous is None or previous.fingerprint != server.fingerprint):
            self._drain(model, server)
            self.stop_server(model.name, server.fingerprint)

    def _drain(self, model: ModelSpec, server: ServerRecord) -> None:
        """Wait ``drain_s``, then, up to ``max_drain_s``, while the edge's workers of an earlier configuration are
        still answering requests (some of them may be on this server, or about to be sent to it) or the server
        itself reports requests running or waiting. The engine's own gauges alone miss a request that is still in
        the gate or the engine's HTTP layer: stopping then would answer it with a 502."""
        self._sleep(self.settings.drain_s)
        deadline = self._clock() + self.settings.max_drain_s
        edge, metrics = self._edge(model.name), engine_for(model.serving).metrics
        while (edge.retiring_workers() or in_flight(server.metrics_url, metrics) > 0) and self._clock() < deadline:
            self._sleep(0.5)

    def _require_canary(self, model: str) -> CanaryRecord:
        canary = self.state.canary(model)
        if canary is None:
            raise TargetError(f"model '{model}': no canary rollout is in progress")
        return canary

    # -- the edge ------------------------------------------------------------------------------------------------

    def _edge(self, model: str) -> NginxEdge:
        recorded = self.state.proxy(model)
        port = recorded.port if recorded is not None else free_port()  # the endpoint keeps its port
        return NginxEdge(
            self.state.edge_dir(model), (self.settings.host, port), nginx=self.settings.nginx, clock=self._clock,
            sleep=self._sleep,
        )  # fmt: skip

    def _apply_edge(self, model: ModelSpec) -> str:
        """Start or reload the model's edge with its exposure's limits and the recorded routes; returns its URL."""
        active, canary = self.active(model.name), self.state.canary(model.name)
        canary_server = self.state.server(model.name, canary.fingerprint) if canary is not None else None
        routes = EdgeRoutes(
            stable=f"{active.host}:{active.port}" if active is not None else None,
            canary=f"{canary_server.host}:{canary_server.port}" if canary_server is not None else None,
            canary_weight=canary.weight if canary is not None and canary_server is not None else 0,
        )
        limits = EdgeLimits.of(model.exposure)
        if self.settings.edge_timeout_s is not None:
            limits = dataclasses.replace(limits, timeout_s=self.settings.edge_timeout_s)
        edge = self._edge(model.name)
        pid = edge.apply(limits, routes)
        self.state.save_proxy(model.name, ProxyRecord(pid, edge.listen[1], edge.marker))
        return edge.url

    def _secret_env(self) -> dict[str, str]:
        """The key for the gate (and vLLM): in the environment of the process only."""
        return {API_KEY_ENV: self.api_key} if self.api_key else {}

    def _gate_command(self, model: ModelSpec, port: int, upstream: list[str]) -> list[str]:
        """``python -m llm_platform.gate`` on ``port`` with the model's body limit (``exposure.max_body_size``)."""
        return [
            self.settings.python, "-m", GATE_MODULE, "--host", self.settings.host, "--port", str(port),
            "--max-body-bytes", str(nginx_size_bytes(model.exposure.max_body_size)),
            "--api-key-env", API_KEY_ENV if self.api_key else "",
            *(f"--served-name={name}" for name in model.served_names), *upstream,
        ]  # fmt: skip

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
        self._edge(model).stop()
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
