"""End to end through a real ``dagster dev`` (webserver + daemon, queued runs): ``llm-platform promote`` over
GraphQL, one promotion per model at a time, the asset page in headless Chromium, and a clean stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from llm_platform.dagster_api import DagsterApi
from llm_platform.defs.jobs import promotion_request
from llm_platform.processes import free_port
from llm_platform.services import LocalServices
from tests.conftest import REPO_ROOT, TINY_REPO, TINY_SERVING, ServedTiny, local_servers

pytestmark = pytest.mark.integration

SMALL = ["--benchmark-prompts", "6", "--benchmark-concurrency", "1,2"]


@dataclass(frozen=True)
class DagsterDev:
    home: Path
    url: str


def _catalog_file(path: Path) -> Path:
    model = {
        "name": "tiny-llama",
        "source": {"repo": TINY_REPO},
        "serving": TINY_SERVING,  # the session server's config: the benchmark reuses it
        "slo": {"ttft_p95_ms": 60000, "itl_p95_ms": 10000, "min_output_tokens_per_s": 0.1, "max_error_rate": 0},
    }
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


@pytest.fixture(scope="module")
def dagster_dev(served_tiny: ServedTiny, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """``dagster dev`` on the repository's instance settings, with the session's local hub as HF_ENDPOINT."""
    home = tmp_path_factory.mktemp("dagster-dev-home")
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    services = LocalServices(home)
    env = {
        "HF_ENDPOINT": str(served_tiny.weights.hf_endpoint),
        "LLM_PLATFORM_CATALOG": str(_catalog_file(home / "models.yaml")),
        # No Prometheus for this Dagster: the drift sensor skips instead of reading another test's metrics.
        "LLM_PLATFORM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
    }
    record = services.start_dagster(REPO_ROOT / "workspace.yaml", Path(sys.executable).parent / "dagster", env)
    try:
        yield DagsterDev(home, record.url)
    finally:
        local_servers(home / "local-target").stop("tiny-llama")
        stopped = services.stop("dagster")
        assert stopped
        # The whole process group (webserver, daemon, code server, run workers) is gone.
        assert subprocess.run(["pgrep", "-g", str(record.pid)], capture_output=True, check=False).returncode == 1


def _promote(dev: DagsterDev, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_platform.cli", "promote", "tiny-llama", "--dagster-url", dev.url, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "LLM_PLATFORM_CATALOG": str(dev.home / "models.yaml")},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.mark.slow(seconds=100)
def test_promote_over_graphql_runs_the_lifecycle_on_the_local_target(dagster_dev: DagsterDev) -> None:
    result = _promote(dagster_dev, "--revision", "main", *SMALL, "--wait")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("submitted lifecycle run ")
    assert f"{dagster_dev.url}/runs/" in result.stdout
    assert '[vllm_deployment] Finished execution of step "vllm_deployment"' in result.stdout
    assert "check slo_ttft_p95_ms: passed" in result.stdout
    assert "is promoted" in result.stdout
    status = local_servers(dagster_dev.home / "local-target").status("tiny-llama")
    assert status.healthy and status.endpoint is not None


def test_promotions_of_one_model_run_one_after_another(dagster_dev: DagsterDev) -> None:
    """Two promote runs submitted at once: the queue admits the second only when the first has ended. (The
    catalog's config, which already serves after the test above: the benchmark reuses the running server.)

    The earlier runs' local storage is deleted first, as a run pod's disk is on Kubernetes: the promotions read
    the weights manifest from the instance."""
    shutil.rmtree(dagster_dev.home / "storage", ignore_errors=True)
    api = DagsterApi(dagster_dev.url)
    job, config = promotion_request(benchmark={"prompts_per_level": 6, "concurrency_levels": [1, 2]})
    runs = [api.submit(job, "tiny-llama", config, tags={"test": "concurrency"}) for _ in range(2)]
    outcomes = [api.follow(run_id, log=lambda _: None) for run_id in runs]

    assert [outcome.status for outcome in outcomes] == ["SUCCESS", "SUCCESS"]
    with dg.DagsterInstance.from_config(str(dagster_dev.home)) as instance:
        records = [instance.get_run_record_by_id(run_id) for run_id in runs]
    spans = sorted((record.start_time, record.end_time) for record in records if record is not None)
    assert len(spans) == 2 and all(start and end for start, end in spans)
    (_, first_end), (second_start, _) = spans
    assert second_start >= first_end, "two promotions of one model overlapped"  # type: ignore[operator]


def test_the_asset_page_shows_the_benchmark_in_headless_chromium(dagster_dev: DagsterDev, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs the Debian package)")
    url = f"{dagster_dev.url}/assets/smoke_benchmark?partition=tiny-llama"
    common = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000",
              "--virtual-time-budget=20000"]  # fmt: skip
    screenshot = tmp_path / "smoke_benchmark.png"
    subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
    for shown in ("smoke_benchmark", "output_throughput", "p95_ttft_ms", "config_fingerprint", "weights_sha"):
        assert shown in dom.stdout, f"{shown} is not on the asset page"
    assert "Join the Dagster community" not in dom.stdout


def test_run_config_probes_are_refused_by_the_real_code_location(
    dagster_dev: DagsterDev, served_tiny: ServedTiny
) -> None:
    """The attack of the security review, over GraphQL against ``dagster dev``: a run that points the target at
    an empty key file (its candidate server would answer without a key) is refused at submission, and a run whose
    config reads the environment fails at its first step without echoing the value."""
    from llm_platform.errors import PlatformError

    api = DagsterApi(dagster_dev.url)
    job, config = promotion_request(revision="main", benchmark={"prompts_per_level": 6, "concurrency_levels": [1]})
    for resource, field, value in (
        ("target", "api_key_file", "/dev/null"),
        ("target", "python", "/bin/sh"),
        ("weights", "hf_endpoint", "http://127.0.0.1:1"),
        ("prometheus", "url", "x"),
    ):
        hostile = {**config, "resources": {resource: {"config": {field: value}}}}
        with pytest.raises(PlatformError, match=f'unexpected config entry "{field}"'):
            api.submit(job, "tiny-llama", hostile, tags={"test": "probe"})
    reading = {"ops": {**config["ops"], "serving_config": {"config": {"overrides": {"dtype": {"env": "HF_ENDPOINT"}}}}}}
    run_id = api.submit(job, "tiny-llama", reading, tags={"test": "probe"})
    outcome = api.follow(run_id, log=lambda _: None)
    assert outcome.status == "FAILURE", outcome
    assert any("environment references ({env: …}) are not accepted" in failure for failure in outcome.failures), outcome
    assert not any(failure.startswith("dagster.") for failure in outcome.failures), outcome  # the sentence, no class
    with dg.DagsterInstance.from_config(str(dagster_dev.home)) as instance:
        stored = "\n".join(str(entry) for entry in instance.all_logs(run_id))
    assert str(served_tiny.weights.hf_endpoint) not in stored  # the variable's value, which the config asked for
