"""Every job in the production topology: the instance in a real PostgreSQL, and each run in its own process with a
fresh, empty ``DAGSTER_HOME`` and working directory that are deleted when it ends (``EphemeralRunLauncher``, what a
``K8sRunLauncher`` pod gives a run). Nothing a run needs may sit on an earlier run's disk.

For one model, in order, through Dagster's GraphQL API (a real ``dagster-webserver`` launching the runs):
``lifecycle`` → ``auto_tune`` → ``benchmark_live`` from the schedule's run request → the drift sensor's promote
run request → the revision sensor's lifecycle run request, each executed and successful; then a ``promote`` with
``--set`` that misses an SLO fails with that reason, never a storage error. Each promotion after the first reads the
weights manifest that an earlier run recorded, from the instance: its disk is gone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from llm_platform.catalog_files import load_catalog
from llm_platform.conventions import TUNED_ASSET
from llm_platform.dagster_api import DagsterApi, RunOutcome
from llm_platform.defs.jobs import BENCHMARK_LIVE_JOB, LIFECYCLE_JOB, PROMOTE_JOB, schedule_name
from llm_platform.defs.partitions import latest_materialization
from llm_platform.defs.sensors import REVISION_SENSOR_NAME, SENSOR_NAME, build_drift_sensor
from llm_platform.defs.tuning import AUTO_TUNE_JOB
from llm_platform.dev.pod_runs import RUN_DIR_PREFIX
from llm_platform.devhub import LocalHub, publish_model
from llm_platform.processes import free_port
from llm_platform.services import LocalServices
from tests.conftest import REPO_ROOT, TINY_SERVING, deployed_serving, local_servers
from tests.fakeprom import FakePrometheus
from tests.integration.test_drift_sensor import SATURATED
from tests.postgres import postgres_bin, running_postgres

pytestmark = pytest.mark.integration

MODEL = "tiny-llama"
REPO = "llm-platform/tiny-topology"
#: The catalog's benchmark section: what every promotion measures, whoever asks (the CLI, the sensors).
SMALL = {"prompts_per_level": 6, "concurrency_levels": [1, 2], "num_warmups": 1}
SLO = {"ttft_p95_ms": 60000, "itl_p95_ms": 10000, "min_output_tokens_per_s": 0.1, "max_error_rate": 0}


@dataclass
class Topology:
    api: DagsterApi
    instance: dg.DagsterInstance
    catalog_path: Path
    source: Path
    hub: LocalHub
    prometheus: FakePrometheus
    scratch: Path
    local_home: Path

    def follow(self, run_id: str) -> RunOutcome:
        return self.api.follow(run_id, log=lambda _: None, poll_s=1.0, timeout_s=900)

    def submit(self, job: str, request: dg.RunRequest) -> RunOutcome:
        """What the daemon does with a schedule's or sensor's run request: a run of ``job`` with its config."""
        assert request.partition_key == MODEL
        run_config = request.run_config if isinstance(request.run_config, dict) else {}
        return self.follow(self.api.submit(job, MODEL, run_config, tags=dict(request.tags)))

    def definitions(self) -> dg.Definitions:
        """The code location as the daemon loads it (same catalog, same environment)."""
        from llm_platform.definitions import build_definitions

        return build_definitions(load_catalog(self.catalog_path), "local")

    def deployed(self) -> dict[str, object]:
        return deployed_serving(self.instance, MODEL)

    def leftover_run_directories(self, timeout_s: float = 60.0) -> list[str]:
        """Run directories still on disk once every run worker has exited (a run's status is final in the
        instance a moment before its process ends and removes them)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = sorted(path.name for path in self.scratch.iterdir() if path.name.startswith(RUN_DIR_PREFIX))
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


def _catalog(path: Path, prometheus_url: str, slo: dict[str, float]) -> Path:
    model = {
        "name": MODEL,
        "source": {"repo": REPO, "track_revision": True},
        "serving": TINY_SERVING,
        "slo": slo,
        "benchmark": SMALL,
    }
    path.write_text(yaml.safe_dump({"platform": {"prometheus_url": prometheus_url}, "models": [model]}))
    return path


@pytest.fixture(scope="module")
def topology(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed: make test installs the Debian package postgresql")
    from llm_platform.dev.tiny_model import make_tiny_model

    root = tmp_path_factory.mktemp("topology")
    source = make_tiny_model(root / "source")
    publish_model(local_hub.mirrors_root, REPO, source)
    prometheus = FakePrometheus().start()
    home, scratch, local_home = root / "dagster_home", root / "runs", root / "local-home"
    for directory in (home, scratch, local_home):
        directory.mkdir()
    catalog_path = _catalog(root / "models.yaml", prometheus.url, SLO)
    with running_postgres() as postgres:
        (home / "dagster.yaml").write_text(
            yaml.safe_dump(
                {
                    "storage": {"postgres": {"postgres_url": postgres.url}},
                    "run_launcher": {
                        "module": "llm_platform.dev.pod_runs",
                        "class": "EphemeralRunLauncher",
                        "config": {"scratch_dir": str(scratch)},
                    },
                    # Runs launch at submission: no daemon, so that no schedule or sensor ticks on its own while
                    # the test evaluates them (the queue's one-run-per-model rule has its own test).
                    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
                    "telemetry": {"enabled": False},
                }
            )
        )
        # What the Helm values give the code server and the run pods: the catalog mounted from its ConfigMap, the
        # hub, and (local target only) the directory that plays the cluster's volumes. No Prometheus variable: the
        # sensors read the catalog's platform.prometheus_url.
        env = {
            "LLM_PLATFORM_CATALOG": str(catalog_path),
            "HF_ENDPOINT": local_hub.endpoint,
            "LLM_PLATFORM_LOCAL_HOME": str(local_home),
        }
        os.environ.pop("LLM_PLATFORM_PROMETHEUS_URL", None)
        services = LocalServices(home)
        port = free_port()
        webserver = Path(sys.executable).parent / "dagster-webserver"
        command = [str(webserver), "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)]
        url = f"http://127.0.0.1:{port}"
        services.start("webserver", command, f"{url}/server_info", url, {**env, "DAGSTER_HOME": str(home)}, 180)
        previous = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                yield Topology(DagsterApi(url), instance, catalog_path, source, local_hub, prometheus, scratch,
                               local_home)  # fmt: skip
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            local_servers(local_home / "local-target").stop(MODEL)
            services.stop("webserver")
            prometheus.stop()


def _promote(topology: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_platform.cli", "promote", MODEL, "--dagster-url", topology.api.base_url,
         "--wait", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip


# Three vLLM starts (each run is a fresh pod) and an auto-tune search: past the suite's 10-minute default on a
# loaded two-core machine. The runs' own deadlines (``follow``'s 900 s) still catch a hang.
@pytest.mark.timeout(1800)
@pytest.mark.slow(seconds=520)
def test_every_job_runs_when_each_run_has_its_own_fresh_disk(topology: Topology) -> None:
    # 1. lifecycle: weights → config → smoke benchmark → deployment, in a run whose disk is then deleted.
    first = _promote(topology, "--revision", "main")
    assert first.returncode == 0, first.stdout + first.stderr
    assert topology.leftover_run_directories() == []
    assert type(topology.instance.run_storage).__name__ == "PostgresRunStorage"

    # 2. auto_tune, a small search (one candidate: the deployed max_num_seqs, so every trial measures the serving
    #    process and none starts a server of its own), nothing adopted at a 1000 % margin.
    search = {"max_num_seqs": [TINY_SERVING["max_num_seqs"]], "max_num_batched_tokens": [], "load_high": 2,
              "input_len": 32, "repeats": 2, "output_len": 8, "margin_pct": 1000.0}  # fmt: skip
    server_logs = topology.local_home / "local-target" / "logs"
    started_before = sorted(server_logs.iterdir())
    run_id = topology.api.submit(AUTO_TUNE_JOB, MODEL, {"ops": {TUNED_ASSET: {"config": search}}}, tags={})
    tuned = topology.follow(run_id)
    assert tuned.succeeded, tuned.failures
    assert sorted(server_logs.iterdir()) == started_before  # no server started: the trials measured the serving one
    tuned_event = latest_materialization(topology.instance, TUNED_ASSET, MODEL)
    assert tuned_event is not None and tuned_event.metadata["adopted"].value is False
    assert (Path(str(tuned_event.metadata["artifacts"].value)) / "trials.csv").is_file()

    definitions = topology.definitions()
    repository = definitions.get_repository_def()

    # 3. benchmark_live from the nightly schedule's run request: reads the deployment record.
    schedule = repository.get_schedule_def(schedule_name(MODEL))
    # A schedule's context opens an instance of its own from the instance's reference: closed with the context (left
    # open, it stayed the thread's current instance after it was gone, and the next Definitions built in that
    # process failed with "Attempted to resolve undefined DagsterInstance weakref").
    with dg.build_schedule_context(
        instance=topology.instance, scheduled_execution_time=datetime.now(UTC), repository_def=repository
    ) as schedule_context:
        tick = schedule.evaluate_tick(schedule_context)
    (nightly,) = tick.run_requests or []
    live = topology.submit(BENCHMARK_LIVE_JOB, nightly)
    assert live.succeeded, live.failures
    live_event = latest_materialization(topology.instance, "live_benchmark", MODEL)
    assert live_event is not None
    artefacts = Path(str(live_event.metadata["artifacts"].value))
    assert artefacts.is_relative_to(topology.local_home) and (artefacts / "results.csv").is_file()

    # 4. The drift sensor (Prometheus from the catalog) sees a saturated KV cache and requests a promotion. It is the
    #    code location's sensor, ticking an hour later (its lookback needs the deployed config to have served).
    topology.prometheus.models = {MODEL: SATURATED}
    assert repository.get_sensor_def(SENSOR_NAME)
    drift = build_drift_sensor(load_catalog(topology.catalog_path), clock=lambda: time.time() + 3600)
    with dg.build_sensor_context(topology.instance, resources=definitions.resources) as context:
        result = drift(context)
    assert isinstance(result, dg.SensorResult)
    requests = list(result.run_requests or [])
    assert topology.prometheus.queries, "the sensor did not query the catalog's platform.prometheus_url"
    (redeploy,) = requests
    overrides = redeploy.run_config["ops"]["serving_config"]["config"]["overrides"]
    assert overrides == {"gpu_memory_utilization": "0.92"}
    promoted = topology.submit(PROMOTE_JOB, redeploy)  # reads the weights manifest the first run recorded
    assert promoted.succeeded, promoted.failures
    assert topology.deployed()["gpu_memory_utilization"] == 0.92
    smoke = latest_materialization(topology.instance, "smoke_benchmark", MODEL)
    plan = smoke.metadata["plan"].value if smoke is not None else None
    assert isinstance(plan, dict) and plan["prompts_per_level"] == SMALL["prompts_per_level"]  # the catalog's size

    # 5. A new commit on the hub: the revision sensor's lifecycle run downloads and promotes it.
    (topology.source / "README.md").write_text("# tiny-topology, second revision\n")
    new_sha = publish_model(topology.hub.mirrors_root, REPO, topology.source, message="second revision")
    revision = repository.get_sensor_def(REVISION_SENSOR_NAME)
    with dg.build_sensor_context(topology.instance, resources=definitions.resources) as context:
        result = revision(context)
    assert isinstance(result, dg.SensorResult)
    (relaunch,) = result.run_requests or []
    lifecycle = topology.submit(LIFECYCLE_JOB, relaunch)
    assert lifecycle.succeeded, lifecycle.failures
    weights = latest_materialization(topology.instance, "model_weights", MODEL)
    assert weights is not None and weights.metadata["revision_sha"].value == new_sha
    assert topology.deployed()["gpu_memory_utilization"] == 0.92  # the new weights kept the tuned config

    # 6. The catalog (configuration, not code) now asks for an SLO no config meets; after a code-location reload
    #    a promotion of the serving config fails on that SLO, with its own reason (judged on the benchmark of its
    #    promotion: the engine config is the one serving).
    _catalog(topology.catalog_path, topology.prometheus.url, {**SLO, "min_output_tokens_per_s": 1e9})
    topology.api.client.reload_repository_location("llm_platform")
    failed = _promote(topology, "--set", "gpu_memory_utilization=0.92")
    assert failed.returncode == 1
    assert "slo_min_output_tokens_per_s" in failed.stdout + failed.stderr
    assert "loading input" not in failed.stdout + failed.stderr
    assert topology.leftover_run_directories() == []
    runs = topology.instance.get_runs()
    assert len(runs) == 6
    assert all(run.tags.get("llm-platform/run-worker-pid") for run in runs)
