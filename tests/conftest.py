"""Shared fixtures: the repository paths and the example catalog."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Imported where used: pytest-xdist's controller loads this file before it starts the workers, and Dagster with the
# platform's resources is ~2.5 s of that, on the critical path of every run (the controller collects nothing).
if TYPE_CHECKING:
    import dagster as dg

    from llm_platform.catalog import Catalog
    from llm_platform.defs.resources import LocalTargetResource, TargetResource, WeightsResource
    from llm_platform.devhub import LocalHub
    from llm_platform.targets.local_servers import LocalServers
    from tests.kubeemu import RunningCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CATALOG = REPO_ROOT / "catalog" / "models.yaml"
#: What a ``slow`` test without ``seconds=`` is assumed to take (a vLLM start and a benchmark).
SLOW_DEFAULT_S = 60.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest test files first, by the ``seconds`` their ``slow`` marks state (the rest keep their order).

    ``make test`` deals whole files to its pytest-xdist workers, each taking the next file when it is done with
    one; starting the longest first is what keeps one worker from ending with the production topology alone
    (longest-processing-time first)."""
    weight: dict[str, float] = {}
    for item in items:
        mark = item.get_closest_marker("slow")
        seconds = float(mark.kwargs.get("seconds", SLOW_DEFAULT_S)) if mark else 0.0
        weight[str(item.path)] = weight.get(str(item.path), 0.0) + seconds
    items.sort(key=lambda item: -weight[str(item.path)])


def deployed_serving(instance: dg.DagsterInstance, model: str) -> dict[str, object]:
    """The serving section the newest ``vllm_deployment`` of ``model`` recorded (what serves now)."""
    from llm_platform.defs.partitions import latest_materialization

    materialization = latest_materialization(instance, "vllm_deployment", model)
    assert materialization is not None, f"{model} was never deployed"
    value = materialization.metadata["serving"].value
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="session")
def example_catalog() -> Catalog:
    from llm_platform.catalog_files import load_catalog

    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One olah process for the session, serving git repositories published under its mirrors directory."""
    from llm_platform.devhub import LocalHub

    root = tmp_path_factory.mktemp("local-hub")
    with LocalHub(root / "mirrors", log_path=root / "olah.log") as hub:
        yield hub


@pytest.fixture
def cluster() -> Iterator[RunningCluster]:
    """A fresh Kubernetes API emulator on a real port (no controllers: tests play them)."""
    from tests.kubeemu import running_cluster

    with running_cluster() as running:
        yield running


TINY_REPO = "llm-platform/tiny-llama"


#: Where the lifecycle's Prometheus is when a test has none (only a canary promotion queries it).
NO_PROMETHEUS = "http://127.0.0.1:9"


def lifecycle_resources(
    target: TargetResource, weights: WeightsResource | None = None, prometheus_url: str = NO_PROMETHEUS
) -> dict[str, object]:
    """Every resource the lifecycle assets take, as the code location configures them (values in the instance)."""
    from llm_platform.defs.resources import PrometheusResource, WeightsResource
    from llm_platform.defs.storage import InstanceValueIOManager

    return {
        "io_manager": InstanceValueIOManager(),
        "target": target,
        "weights": weights or WeightsResource(),
        "prometheus": PrometheusResource(url=prometheus_url),
    }


def local_servers(state_dir: Path) -> LocalServers:
    """The local target's servers under ``state_dir`` (to inspect or stop them)."""
    from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings

    return LocalServers(LocalTargetSettings(state_dir=state_dir, file_sd_dir=state_dir / "file_sd"))


@dataclass
class ServedTiny:
    """The tiny demo model published on the local hub, downloaded, and promoted on the local target."""

    catalog: Catalog
    weights: WeightsResource
    local_target: LocalTargetResource
    weights_path: str
    endpoint: str
    fingerprint: str
    #: A test served another config or exposure: the next test that uses the server promotes the session's back first
    #: (at its setup, not at the modifier's teardown: the last test of a run then costs no server start).
    reconfigured: bool = False

    def restore_session_config(self) -> None:
        """The session's catalog serving again, if a test left another (a server start if the engine config differs)."""
        if self.reconfigured:
            self.local_target.target().promote(self.catalog.model("tiny-llama"), self.weights_path, log=lambda _: None)
            self.reconfigured = False

    def resources(self, prometheus_url: str = NO_PROMETHEUS) -> dict[str, object]:
        """The lifecycle resources on this server's model store and local target."""
        return lifecycle_resources(self.local_target, self.weights, prometheus_url)

    @property
    def api_key(self) -> str:
        """The key the local target's servers require on ``/v1/``."""
        return Path(self.local_target.api_key_file).read_text().strip()


def client_runs(script: str) -> list[list[str]]:
    """The benchmark client's argument lists a benchmark Job's script carries (its runs file's here-document)."""
    from llm_platform.conventions import BENCH_RUNS_FILE

    lines = script.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cat > ") and BENCH_RUNS_FILE in line)
    runs: list[list[str]] = json.loads(lines[start + 1])
    return runs


#: The test catalogs' serving section. ``--enforce-eager``: vLLM's torch.compile is 10-30 s of every server start on
#: two cores (measured: a start 39-55 s compiled, 26-28 s eager; decoding as fast within noise) and nothing the tests
#: assert depends on it. The default compiled path still starts for real in the suite: the KV-saturation test's
#: catalog (tests/integration/test_prometheus.py) and the catalog that ``make run`` serves leave the flag out.
TINY_SERVING: dict[str, object] = {
    "max_model_len": 2048, "max_num_seqs": 32, "startup_timeout_s": 300, "extra_args": ["--enforce-eager"]
}  # fmt: skip


def tiny_catalog(platform: dict[str, object] | None = None, **sections: object) -> Catalog:
    """A one-model catalog of the tiny demo model; ``sections`` override slo/serving/... ."""
    from llm_platform.catalog import parse_catalog

    model: dict[str, object] = {
        "name": "tiny-llama",
        "source": {"repo": TINY_REPO},
        "serving": TINY_SERVING,
        "slo": {"ttft_p95_ms": 30000, "itl_p95_ms": 5000, "min_output_tokens_per_s": 1, "max_error_rate": 0},
    }
    model.update(sections)
    return parse_catalog({"platform": platform or {}, "models": [model]})


@contextmanager
def running_prometheus(file_sd_dir: Path, home: Path) -> Iterator[str]:
    """A real Prometheus (the Debian package) scraping the local target's file_sd files; its URL."""
    from llm_platform.processes import free_port
    from llm_platform.services import LocalServices

    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (make test installs the Debian package)")
    services = LocalServices(home)
    record = services.start_prometheus(file_sd_dir, port=free_port())
    try:
        yield record.url
    finally:
        services.stop("prometheus")


@pytest.fixture(autouse=True)
def _served_tiny_in_its_session_config(request: pytest.FixtureRequest) -> None:
    """Every test that uses the session's server finds it serving the session's catalog (see ``reconfigured``)."""
    if "served_tiny" in request.fixturenames:
        served: ServedTiny = request.getfixturevalue("served_tiny")
        served.restore_session_config()


@pytest.fixture(scope="session")
def served_tiny(local_hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTiny]:
    """One real vLLM-on-CPU server for the whole session (the expensive fixture every serving test shares)."""
    from llm_platform.defs.resources import LocalTargetResource, WeightsResource
    from llm_platform.dev.tiny_model import make_tiny_model
    from llm_platform.devhub import publish_model

    root = tmp_path_factory.mktemp("served-tiny")
    publish_model(local_hub.mirrors_root, TINY_REPO, make_tiny_model(root / "source"))
    catalog = tiny_catalog()
    model = catalog.model("tiny-llama")
    weights = WeightsResource(store_path=str(root / "store"), hf_endpoint=local_hub.endpoint)
    manifest = weights.download(model, model.source.revision).manifest
    weights_path = weights.snapshot_path(manifest)
    local_target = LocalTargetResource(
        weights=weights,
        state_dir=str(root / "target"),
        file_sd_dir=str(root / "file_sd"),
        artifacts_root=str(root / "artifacts"),
        api_key_file=str(root / "api-key"),
    )
    target = local_target.target()
    try:
        status = target.promote(model, weights_path)
        assert status.endpoint is not None and status.active is not None
        yield ServedTiny(catalog, weights, local_target, weights_path, status.endpoint, status.active.fingerprint)
    finally:
        target.stop(model.name)
