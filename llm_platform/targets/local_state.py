"""The local target's state on disk: what runs, what the endpoint routes to, and what Prometheus scrapes.

Layout under ``state_dir`` (``local-target`` under the local home, ``$DAGSTER_HOME`` by default)::

    <model>/servers/<fingerprint>.json   one record per vLLM process (pid, port, log, weights) - survives restarts
    <model>/active.json                  the server the model's endpoint routes to (the stable track)
    <model>/canary.json                  during a canary rollout: the canary's server, its weight, its owner
    <model>/proxy.json                   the endpoint: nginx (llm_platform/edge.py) on a port that never changes
    <model>/edge/                        its configuration, pid file and logs
    logs/<model>-<fingerprint>-<time>.log

and one Prometheus file_sd target file per model in ``file_sd_dir``. Every write is atomic (temp file + rename), so
that the edge and Prometheus never read half a record. Nothing here starts or signals a process.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from llm_platform.conventions import CANARY_TRACK, STABLE_TRACK, TRACK_METRIC_LABEL


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
    metrics_port: int = 0
    """The gate's metrics listener (``/metrics`` for Prometheus; the API port serves no metrics)."""
    socket_path: str = ""
    """vLLM's Unix socket behind the gate (reachable by this user only)."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}"

    @property
    def marker(self) -> str:
        """What the process's command line carries: tells our server from an unrelated process reusing the pid."""
        return port_marker(self.port)


@dataclass(frozen=True)
class ProxyRecord:
    """The model's edge (nginx): its master's pid, the port clients call, what its command line carries."""

    pid: int
    port: int
    marker: str


@dataclass(frozen=True)
class CanaryRecord:
    """The server a canary rollout sends a share of the model's traffic to, and who drives it."""

    fingerprint: str
    weight: int
    """Percent of the model's requests the edge sends to it."""
    owner: str
    """The run driving the rollout (its Dagster run id, or the CLI's), for the messages of whoever finds it."""
    heartbeat: float
    """Wall-clock time (Unix seconds) of the owner's last step or judgement: a stale one means the owner died."""


def port_marker(port: int) -> str:
    return f"--port {port}"


def write_json(path: Path, payload: object) -> None:
    """Atomic write (temp file + rename) so that a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    temporary.replace(path)


def read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class LocalState:
    """Records of the local target's servers, endpoints and scrape targets."""

    def __init__(self, state_dir: Path, file_sd_dir: Path) -> None:
        self.state_dir = state_dir
        self.file_sd_dir = file_sd_dir

    def _model_dir(self, model: str) -> Path:
        return self.state_dir / model

    def _server_file(self, model: str, fingerprint: str) -> Path:
        return self._model_dir(model) / "servers" / f"{fingerprint}.json"

    def active_file(self, model: str) -> Path:
        """The server the model's endpoint routes to (the edge's configuration is rendered from it)."""
        return self._model_dir(model) / "active.json"

    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    # -- servers -------------------------------------------------------------------------------------------------

    def server_records(self, model: str) -> list[ServerRecord]:
        """Every recorded server of ``model`` (alive or not: the caller checks; an unreadable record is dropped)."""
        directory = self._model_dir(model) / "servers"
        records = []
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            data = read_json(path)
            try:
                records.append(ServerRecord(**data))  # type: ignore[arg-type]
            except TypeError:
                path.unlink(missing_ok=True)
        return records

    def server(self, model: str, fingerprint: str) -> ServerRecord | None:
        data = read_json(self._server_file(model, fingerprint))
        try:
            return ServerRecord(**data) if data else None  # type: ignore[arg-type]
        except TypeError:
            return None

    def save_server(self, record: ServerRecord) -> None:
        write_json(self._server_file(record.model, record.fingerprint), asdict(record))

    def forget_server(self, model: str, fingerprint: str) -> None:
        self._server_file(model, fingerprint).unlink(missing_ok=True)

    # -- the endpoint --------------------------------------------------------------------------------------------

    def active_fingerprint(self, model: str) -> str | None:
        data = read_json(self.active_file(model)) or {}
        fingerprint = data.get("fingerprint")
        return str(fingerprint) if fingerprint else None

    def route_to(self, record: ServerRecord) -> None:
        """Point the model's endpoint at ``record`` (the proxy picks it up on its next request)."""
        write_json(
            self.active_file(record.model),
            {"fingerprint": record.fingerprint, "port": record.port, "host": record.host},
        )

    def proxy(self, model: str) -> ProxyRecord | None:
        data = read_json(self._model_dir(model) / "proxy.json")
        try:
            return ProxyRecord(int(str(data["pid"])), int(str(data["port"])), str(data["marker"])) if data else None
        except (KeyError, ValueError):
            return None

    def edge_dir(self, model: str) -> Path:
        """The model's nginx: its configuration, pid file and logs."""
        return self._model_dir(model) / "edge"

    # -- a canary rollout ----------------------------------------------------------------------------------------

    def canary(self, model: str) -> CanaryRecord | None:
        data = read_json(self._model_dir(model) / "canary.json")
        try:
            return CanaryRecord(**data) if data else None  # type: ignore[arg-type]
        except TypeError:
            return None

    def save_canary(self, model: str, record: CanaryRecord) -> None:
        write_json(self._model_dir(model) / "canary.json", asdict(record))

    def forget_canary(self, model: str) -> None:
        (self._model_dir(model) / "canary.json").unlink(missing_ok=True)

    def save_proxy(self, model: str, record: ProxyRecord) -> None:
        write_json(self._model_dir(model) / "proxy.json", asdict(record))

    def forget_endpoint(self, model: str) -> None:
        self.active_file(model).unlink(missing_ok=True)
        self.forget_canary(model)
        (self.file_sd_dir / f"{model}.json").unlink(missing_ok=True)

    # -- what Prometheus scrapes ---------------------------------------------------------------------------------

    def write_scrape_targets(self, model: str, servers: Sequence[ServerRecord]) -> None:
        """The model's file_sd target file: every running server, labelled with its role (active or candidate) and
        its rollout track (stable, canary, or candidate for a benchmark's server: never counted as either)."""
        active = self.active_fingerprint(model)
        canary = self.canary(model)

        def track(fingerprint: str) -> str:
            if fingerprint == active:
                return STABLE_TRACK
            return CANARY_TRACK if canary is not None and canary.fingerprint == fingerprint else "candidate"

        groups: list[Mapping[str, object]] = [
            {
                "targets": [f"{record.host}:{record.metrics_port}"],
                "labels": {
                    "model": model,
                    "fingerprint": record.fingerprint,
                    "role": "active" if record.fingerprint == active else "candidate",
                    TRACK_METRIC_LABEL: track(record.fingerprint),
                },
            }
            for record in servers
        ]
        write_json(self.file_sd_dir / f"{model}.json", groups)

    def models(self) -> list[str]:
        """Models that have state here (running or not)."""
        root = self.state_dir
        return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "logs") if root.is_dir() else []


def read_or_create_api_key(path: Path) -> str:
    """The key in ``path``; a new random one written there first (readable by this user only) when it is missing."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(32))
    try:
        os.link(temporary, path)  # atomic, and refused if another process won the race: one key for everyone
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
    return path.read_text().strip()
