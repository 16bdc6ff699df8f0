"""The embedded default's background services: the local hub (olah), Prometheus and Dagster (``dagster dev``).

Each runs as its own process group (``processes.spawn``) with a record in ``$DAGSTER_HOME/services/<name>.json``
(pid, URL, log), so ``llm-platform local stop`` finds and stops them from any shell, and a record whose process is
gone (or whose pid now belongs to something else) is never signalled. SIGINT and SIGTERM are restored to their
defaults in the child: started from a non-interactive shell with ``&`` they are inherited as ignored, and
``dagster dev`` would then outlive every attempt to stop it.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from llm_platform.devhub import default_olah_command
from llm_platform.errors import PlatformError
from llm_platform.processes import free_port, http_answers, spawn, stop_group, wait_until_healthy

DAGSTER_PORT = 3000
#: The PrometheusRule shipped for clusters; the local Prometheus loads its groups as well (source checkouts).
ALERT_RULES = Path(__file__).resolve().parents[1] / "k8s" / "observability" / "prometheusrule.yaml"
PROMETHEUS_PORT = 9090
SCRAPE_INTERVAL_S = 5


class ServiceError(PlatformError):
    """A local service did not start (the message ends with the tail of its log)."""


@dataclass(frozen=True)
class ServiceRecord:
    name: str
    pid: int
    url: str
    log_path: str
    command: tuple[str, ...]


def _port_free(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
            return False
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True


class LocalServices:
    """Start, find and stop the background services of one ``$DAGSTER_HOME``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.records_dir = home / "services"

    def _record_path(self, name: str) -> Path:
        return self.records_dir / f"{name}.json"

    def record(self, name: str) -> ServiceRecord | None:
        """The running service ``name``, or None (a stale record is removed)."""
        path = self._record_path(name)
        try:
            data = json.loads(path.read_text())
            record = ServiceRecord(**{**data, "command": tuple(data["command"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not self._is_running(record):
            path.unlink(missing_ok=True)
            return None
        return record

    @staticmethod
    def _is_running(record: ServiceRecord) -> bool:
        try:
            cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(record.command) and record.command[0].encode() in b" ".join(cmdline)

    def start(
        self,
        name: str,
        command: Sequence[str],
        ready_url: str,
        url: str,
        env: Mapping[str, str],
        timeout_s: float,
        cwd: Path | None = None,
    ) -> ServiceRecord:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.records_dir / f"{name}.log"
        process = spawn(command, log_path, cwd=cwd or self.home, env={**os.environ, **env}, restore_signals=True)
        record = ServiceRecord(name, process.pid, url, str(log_path), tuple(command))
        self._record_path(name).write_text(json.dumps(asdict(record)))
        try:
            wait_until_healthy(
                process, lambda: http_answers(ready_url), what=name, log_path=log_path, timeout_s=timeout_s,
                error=ServiceError,
            )  # fmt: skip
        except ServiceError:
            self.stop(name)
            raise
        return record

    def stop(self, name: str, timeout_s: float = 30.0) -> bool:
        """Stop the service's whole process group (SIGTERM, then SIGKILL); False if it was not running."""
        record = self.record(name)
        if record is None:
            return False
        stop_group(record.pid, grace_s=timeout_s)
        self._record_path(name).unlink(missing_ok=True)
        return True

    def running(self) -> list[ServiceRecord]:
        names = sorted(path.stem for path in self.records_dir.glob("*.json")) if self.records_dir.is_dir() else []
        return [record for name in names if (record := self.record(name)) is not None]

    # -- the three services ---------------------------------------------------------------------------------

    def start_hub(self, mirrors: Path) -> ServiceRecord:
        """olah serving the git repositories under ``mirrors`` (offline), like ``devhub.LocalHub`` but detached."""
        olah = default_olah_command()
        if not olah.exists():
            raise ServiceError(f"olah is not installed at {olah}; run `make run` or set LLM_PLATFORM_OLAH")
        port = free_port()
        workdir = self.home / "local-hub-cache"
        workdir.mkdir(parents=True, exist_ok=True)
        config = self.records_dir / "olah.toml"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {port}\n"
            f'repos-path = "{workdir}"\n'
            f'mirrors-path = ["{mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{port}"\n'
            "[accessibility]\n"
            "offline = true\n"
        )
        url = f"http://127.0.0.1:{port}"
        return self.start("hub", [str(olah), "-c", str(config)], f"{url}/api/models/none/none", url, {}, 60)

    def start_prometheus(self, file_sd_dir: Path, port: int = PROMETHEUS_PORT) -> ServiceRecord:
        """Prometheus scraping every vLLM server the local target lists in its file_sd files."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise ServiceError("prometheus is not installed; `apt-get install prometheus` (make run does)")
        port = port if _port_free(port) else free_port()
        file_sd_dir.mkdir(parents=True, exist_ok=True)
        config = self.home / "prometheus" / "prometheus.yml"
        config.parent.mkdir(parents=True, exist_ok=True)
        rules = ""
        if ALERT_RULES.is_file():  # the production alerts, evaluated here too
            groups = yaml.safe_load(ALERT_RULES.read_text())["spec"]["groups"]
            (config.parent / "rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
            rules = f"rule_files: ['{config.parent / 'rules.yml'}']\n"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL_S}s\n"
            f"  evaluation_interval: {SCRAPE_INTERVAL_S}s\n"
            f"{rules}"
            "scrape_configs:\n"
            "  - job_name: vllm\n"
            "    file_sd_configs:\n"
            f"      - files: ['{file_sd_dir}/*.json']\n"
            "        refresh_interval: 5s\n"
        )
        url = f"http://127.0.0.1:{port}"
        command = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.home / 'prometheus' / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=7d",
        ]
        return self.start("prometheus", command, f"{url}/-/ready", url, {}, 60)

    def start_dagster(
        self, workspace: Path, dagster: Path, env: Mapping[str, str], port: int = DAGSTER_PORT
    ) -> ServiceRecord:
        """``dagster dev`` (webserver + daemon) for the workspace, against this ``$DAGSTER_HOME``."""
        port = port if _port_free(port) else free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(dagster), "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
        env = {**env, "DAGSTER_HOME": str(self.home)}
        return self.start("dagster", command, f"{url}/server_info", url, env, 180, cwd=workspace.parent)
