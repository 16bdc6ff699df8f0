"""checkov (3.3, in its own virtualenv like olah) over everything the project ships or renders: ``k8s/``, every
object ``llm-platform render`` writes for the example catalog plus the smoke and live benchmark Jobs, and the
Dockerfile. No failure beyond ``.checkov.yaml``'s skip list, each skip with its reason."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.catalog_files import load_catalog
from llm_platform.manifests.jobs import render_benchmark_job
from llm_platform.manifests.render import dump_yaml, render_files
from tests.conftest import EXAMPLE_CATALOG, REPO_ROOT

pytestmark = pytest.mark.integration

CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"


def _failures(*args: str) -> list[str]:
    result = subprocess.run(
        [str(CHECKOV), *args, "--config-file", str(REPO_ROOT / ".checkov.yaml"), "--compact", "--quiet", "-o", "json"],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    reports: Any = json.loads(result.stdout) if result.stdout.strip() else []
    reports = reports if isinstance(reports, list) else [reports]
    return [
        f"{check['check_id']} {check['check_name']} in {check['file_path']} ({check.get('resource', '')})"
        for report in reports
        for check in report.get("results", {}).get("failed_checks", [])
    ]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("rendered")
    catalog = load_catalog(EXAMPLE_CATALOG)
    for name, objects in render_files(catalog).items():
        (directory / name).write_text(dump_yaml(objects))
    for model in catalog.models:
        jobs = [
            render_benchmark_job(catalog.platform, model, "main", BenchmarkPlan(), "run"),
            render_benchmark_job(catalog.platform, model, "main", BenchmarkPlan(), "run", against="http://svc:8000"),
        ]
        (directory / f"{model.name}.benchmark-jobs.yaml").write_text(dump_yaml(jobs))
    return directory


def test_checkov_is_installed() -> None:
    assert CHECKOV.exists(), "checkov is not installed in .venv-checkov (make test installs it)"


@pytest.mark.parametrize(
    "target",
    [
        ["-d", "k8s"],
        ["-f", "Dockerfile", "--framework", "dockerfile"],
    ],
    ids=["k8s", "Dockerfile"],
)
def test_shipped_files_pass_checkov(target: list[str]) -> None:
    assert _failures(*target) == []


def test_every_rendered_object_passes_checkov(rendered: Path) -> None:
    assert len(list(rendered.glob("*.yaml"))) >= 10
    assert _failures("-d", str(rendered), "--framework", "kubernetes") == []


def test_the_skip_list_gives_a_reason_for_every_skip() -> None:
    lines = (REPO_ROOT / ".checkov.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("- CKV"):
            assert lines[index - 1].strip().startswith("#"), f"{line.strip()} has no reason above it"


def test_a_privileged_pod_is_caught(tmp_path: Path) -> None:
    """The scan is live: an object no skip covers (a privileged container) fails it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "llm-serving"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}]},
    }
    (tmp_path / "bad.yaml").write_text(dump_yaml([pod]))
    assert any(failure.startswith("CKV_K8S_16 ") for failure in _failures("-d", str(tmp_path)))
