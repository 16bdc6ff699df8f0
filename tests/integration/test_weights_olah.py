"""Happy paths of the weights download against a real hub protocol server: olah serving local git repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_platform.catalog import DEFAULT_ALLOW_PATTERNS
from llm_platform.devhub import LocalHub, publish_model
from llm_platform.store_layout import SNAPSHOT_MANIFEST
from llm_platform.weights.download import DownloadRequest, download_snapshot
from llm_platform.weights.hub import HubClient
from llm_platform.weights.store import ModelStore
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def _model_dir(path: Path, generation: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048, "generation": generation}))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {}}}))
    (path / "tokenizer_config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(os.urandom(2_000_000))
    (path / "training_args.bin").write_bytes(os.urandom(1000))
    return path


def test_branch_is_resolved_downloaded_and_verified(local_hub: LocalHub, tmp_path: Path) -> None:
    sha = publish_model(local_hub.mirrors_root, "acme/olah-one", _model_dir(tmp_path / "src", 1), tag="v1")
    store = ModelStore(tmp_path / "store")
    client = HubClient(local_hub.endpoint)
    result = download_snapshot(DownloadRequest("one", "acme/olah-one", "main", DEFAULT_ALLOW_PATTERNS), store, client)
    assert result.manifest.sha == sha
    assert [item.path for item in result.manifest.files] == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert (result.directory / "model.safetensors").read_bytes() == (
        tmp_path / "src" / "model.safetensors"
    ).read_bytes()
    assert json.loads((result.directory / SNAPSHOT_MANIFEST).read_text())["requested_revision"] == "main"
    # A tag resolves to the same commit, which is already complete: verified, not downloaded again.
    again = download_snapshot(DownloadRequest("one", "acme/olah-one", "v1", DEFAULT_ALLOW_PATTERNS), store, client)
    assert again.reused and again.manifest.sha == sha


def test_new_commit_on_the_branch_becomes_a_new_snapshot(local_hub: LocalHub, tmp_path: Path) -> None:
    first = publish_model(local_hub.mirrors_root, "acme/olah-two", _model_dir(tmp_path / "a", 1))
    store = ModelStore(tmp_path / "store")
    client = HubClient(local_hub.endpoint)
    request = DownloadRequest("two", "acme/olah-two", "main", DEFAULT_ALLOW_PATTERNS)
    assert download_snapshot(request, store, client).manifest.sha == first
    second = publish_model(local_hub.mirrors_root, "acme/olah-two", _model_dir(tmp_path / "b", 2))
    assert second != first
    result = download_snapshot(request, store, client)
    assert result.manifest.sha == second and not result.reused
    # Older snapshots are kept by default.
    assert [m.sha for m in store.complete_snapshots("two")] == [first, second]
    assert store.latest("two") is not None and store.latest("two").sha == second  # type: ignore[union-attr]


def test_job_entrypoint_against_the_local_hub(local_hub: LocalHub, tmp_path: Path) -> None:
    sha = publish_model(local_hub.mirrors_root, "acme/olah-three", _model_dir(tmp_path / "src", 3))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_platform.weights",
            "--model",
            "three",
            "--repo",
            "acme/olah-three",
            "--revision",
            "main",
            "--dest",
            str(tmp_path / "pvc"),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "HF_ENDPOINT": local_hub.endpoint},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("model 'three': ") and "(100%), 4/4 files" in line for line in lines)
    manifest = json.loads(lines[-1].removeprefix("LLM_PLATFORM_MANIFEST "))
    assert manifest["sha"] == sha and manifest["model"] == "three"
    assert (tmp_path / "pvc" / "three" / sha / SNAPSHOT_MANIFEST).is_file()


def test_job_entrypoint_bad_repository_exits_2_with_one_line(local_hub: LocalHub, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_platform.weights",
            "--model",
            "ghost",
            "--repo",
            "acme/no-such-repo",
            "--dest",
            str(tmp_path),
            "--endpoint",
            local_hub.endpoint,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: model 'ghost': repository 'acme/no-such-repo' not found, or private and no token (set HF_TOKEN) "
        "cannot see it; check source.repo, or set HF_TOKEN to a token with access"
    ]
    assert not any(tmp_path.iterdir())
