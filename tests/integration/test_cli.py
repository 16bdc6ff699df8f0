"""The ``llm-platform`` command as a user runs it: exit codes, messages on stderr, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_CATALOG, REPO_ROOT

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_platform.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )


def test_validate_the_example_catalog() -> None:
    result = _cli("validate", "--catalog", str(EXAMPLE_CATALOG))
    assert result.returncode == 0, result.stderr
    assert "4 models valid" in result.stdout
    assert "valid for Kubernetes 1.30 and 1.33" in result.stdout


def test_bad_catalog_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "llama", "source": {"repo": "a/b"}, "serving": {"gpu_memory_utilization": 1.5}},
                    {"name": "qwen", "source": {"repo": "a/c"}, "autoscaling": {"min_replicas": 4, "max_replicas": 2}},
                ]
            }
        )
    )
    result = _cli("validate", "--catalog", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {bad}: model 'llama': serving.gpu_memory_utilization: must be > 0 and <= 1 (got 1.5)",
        f"error: {bad}: model 'qwen': autoscaling.max_replicas: must be >= autoscaling.min_replicas (2 < 4)",
    ]


def test_catalog_from_the_environment_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    result = _cli("validate", env={"LLM_PLATFORM_CATALOG": str(missing)})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {missing}: catalog file not found; pass --catalog PATH or set LLM_PLATFORM_CATALOG"
    )


def test_render_to_stdout_and_to_files(tmp_path: Path) -> None:
    result = _cli("render", "tiny-llama", "--catalog", str(EXAMPLE_CATALOG))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        "PersistentVolumeClaim",
        "NetworkPolicy",  # the download Jobs' egress (platform.yaml)
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "NetworkPolicy",
        "Job",
    ]
    out = tmp_path / "manifests"
    result = _cli("render", "qwen2-5-7b-instruct", "--catalog", str(EXAMPLE_CATALOG), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == [
        "platform.yaml",
        "qwen2-5-7b-instruct.weights-job.yaml",
        "qwen2-5-7b-instruct.yaml",
    ]
    assert "Ingress" in [doc["kind"] for doc in yaml.safe_load_all((out / "qwen2-5-7b-instruct.yaml").read_text())]


def test_unknown_model_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = _cli("render", "tiny-llama", "no-such-model", "--catalog", str(EXAMPLE_CATALOG), "--out", str(out))
    assert result.returncode == 2
    assert "error: model 'no-such-model' is not in the catalog (known models: " in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_usage_errors_exit_2() -> None:
    result = _cli("render", "--no-such-flag")
    assert result.returncode == 2
    assert "usage: llm-platform" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["promote", "nope"], "error: model 'nope' is not in the catalog (known models: "),
        (
            ["promote", "tiny-llama", "--set", "max_num_seq=8"],
            "error: --set: model 'tiny-llama': serving.max_num_seq: unknown field; did you mean 'max_num_seqs'?",
        ),
        (["promote", "tiny-llama", "--set", "max_num_seqs"], "error: --set 'max_num_seqs': expected FIELD=VALUE"),
        (
            ["promote", "tiny-llama", "--set", "gpu_memory_utilization=2"],
            "error: --set: model 'tiny-llama': serving.gpu_memory_utilization: must be > 0 and <= 1 (got 2.0)",
        ),
        (["promote", "tiny-llama", "--benchmark-concurrency", "1,x"], "error: --benchmark-concurrency '1,x'"),
    ],
)
def test_promote_refuses_bad_input_before_submitting(args: list[str], expected: str) -> None:
    # Nothing listens on the URL: a request would fail differently (exit 1), so exit 2 proves nothing was sent.
    result = _cli(*args, "--catalog", str(EXAMPLE_CATALOG), "--dagster-url", "http://127.0.0.1:9")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(expected)
    assert "Traceback" not in result.stderr


def test_promote_without_a_dagster_says_where_it_looked() -> None:
    result = _cli("promote", "tiny-llama", "--catalog", str(EXAMPLE_CATALOG), "--dagster-url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Dagster at http://127.0.0.1:9 did not accept the request")
    assert "make run" in result.stderr and "Traceback" not in result.stderr
