"""Weights download against a protocol-level hub: failures olah cannot produce, and a kill mid-download."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from llm_platform.catalog import DEFAULT_ALLOW_PATTERNS
from llm_platform.errors import (
    ChecksumMismatchError,
    HubAccessError,
    HubNotFoundError,
    HubUnavailableError,
    InsufficientDiskError,
    WeightsError,
)
from llm_platform.store_layout import SNAPSHOT_MANIFEST
from llm_platform.weights.download import DownloadRequest, download_snapshot
from llm_platform.weights.hub import HubClient
from llm_platform.weights.plan import DownloadResult
from llm_platform.weights.progress import LogProgress
from llm_platform.weights.store import ModelStore, partial_path
from tests.conftest import REPO_ROOT
from tests.fakehub import FakeHub, FakeRepo

pytestmark = pytest.mark.integration
TOKEN = "hf_" + "s3cr3t" * 6


def _files() -> dict[str, bytes]:
    return {
        "config.json": b'{"max_position_embeddings": 4096}',
        "model-00001-of-00002.safetensors": os.urandom(600_000),
        "model-00002-of-00002.safetensors": os.urandom(400_000),
        "tokenizer.json": b'{"version": "1.0"}' + b" " * 3000,
        "pytorch_model.bin": os.urandom(5000),
        "README.md": b"# tiny",
    }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub().start()
    server.repos["acme/tiny"] = FakeRepo(_files())
    yield server
    server.stop()


def _download(
    hub: FakeHub,
    store: Path,
    *,
    token: str | None = None,
    revision: str = "main",
    repo: str = "acme/tiny",
    **kwargs: Any,
) -> DownloadResult:
    sleeps: list[float] = kwargs.pop("sleeps", [])
    client = HubClient(hub.endpoint, token, sleep=sleeps.append, max_attempts=kwargs.pop("max_attempts", 4))
    request = DownloadRequest("tiny", repo, revision, DEFAULT_ALLOW_PATTERNS)
    return download_snapshot(request, ModelStore(store, **kwargs.pop("store_kwargs", {})), client, **kwargs)


def test_downloads_verified_files_and_writes_the_manifest_last(hub: FakeHub, tmp_path: Path) -> None:
    lines: list[str] = []
    result = _download(hub, tmp_path, progress=LogProgress(lines.append, interval_s=0))
    repo = hub.repos["acme/tiny"]
    assert result.manifest.sha == repo.sha and not result.reused
    assert result.directory == tmp_path / "tiny" / repo.sha
    paths = [item.path for item in result.manifest.files]
    # safetensors present: no pickled weights; README is not in the default patterns.
    assert paths == [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer.json",
    ]
    for item in result.manifest.files:
        assert (result.directory / item.path).read_bytes() == repo.files[item.path]
    assert result.manifest.total_bytes == sum(len(repo.files[p]) for p in paths)
    assert not (result.directory / ".cache").exists()
    on_disk = json.loads((result.directory / SNAPSHOT_MANIFEST).read_text())
    assert on_disk["sha"] == repo.sha and len(on_disk["files"]) == 4
    assert lines[-1].startswith("model 'tiny': 1.0 MB / 1.0 MB (100%), 4/4 files")
    # What later runs check and plan against, read from the config.json that came down.
    assert result.manifest.max_position_tokens == 4096
    assert result.manifest.architecture == {"max_position_embeddings": 4096}


def test_second_run_verifies_and_downloads_nothing(hub: FakeHub, tmp_path: Path) -> None:
    _download(hub, tmp_path)
    served = sum(hub.served.values())
    again = _download(hub, tmp_path)
    assert again.reused
    assert sum(hub.served.values()) == served
    # A pinned commit that is already complete needs no hub at all.
    hub.faults.statuses = [503] * 50
    pinned = _download(hub, tmp_path, revision=hub.repos["acme/tiny"].sha)
    assert pinned.reused and len(hub.faults.statuses) == 50


def test_damaged_snapshot_is_repaired_by_refetching_only_the_bad_file(hub: FakeHub, tmp_path: Path) -> None:
    first = _download(hub, tmp_path)
    victim = first.directory / "model-00002-of-00002.safetensors"
    victim.write_bytes(b"\0" * victim.stat().st_size)
    hub.served.clear()
    repaired = _download(hub, tmp_path)
    assert not repaired.reused
    assert dict(hub.served) == {"model-00002-of-00002.safetensors": 400_000}
    assert victim.read_bytes() == hub.repos["acme/tiny"].files["model-00002-of-00002.safetensors"]


def test_transient_5xx_is_retried_with_backoff(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults.statuses = [500, 503]
    sleeps: list[float] = []
    result = _download(hub, tmp_path, sleeps=sleeps)
    assert result.manifest.file_count == 4
    assert sleeps == [1.0, 2.0]


def test_hub_down_fails_after_the_retries_with_one_line(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults.statuses = [502] * 10
    sleeps: list[float] = []
    with pytest.raises(HubUnavailableError) as caught:
        _download(hub, tmp_path, sleeps=sleeps, max_attempts=3)
    assert sleeps == [1.0, 2.0]
    message = str(caught.value)
    assert message.startswith(f"model 'tiny': the hub at {hub.endpoint} kept failing for 'acme/tiny' after 3 attempts")
    assert "\n" not in message
    assert not (tmp_path / "tiny").exists()


def test_unreachable_hub(tmp_path: Path) -> None:
    client = HubClient("http://127.0.0.1:9", None, sleep=lambda _: None, max_attempts=2)
    request = DownloadRequest("tiny", "acme/tiny", "main", DEFAULT_ALLOW_PATTERNS)
    with pytest.raises(HubUnavailableError, match="kept failing for 'acme/tiny' after 2 attempts"):
        download_snapshot(request, ModelStore(tmp_path), client)


def test_repository_not_found(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubNotFoundError) as caught:
        _download(hub, tmp_path, repo="acme/missing")
    assert str(caught.value) == (
        "model 'tiny': repository 'acme/missing' not found, or private and no token (set HF_TOKEN) cannot see it; "
        "check source.repo, or set HF_TOKEN to a token with access"
    )


def test_revision_not_found(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubNotFoundError, match=r"revision 'v9' not found in 'acme/tiny'; check source.revision"):
        _download(hub, tmp_path, revision="v9")


def test_gated_without_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.repos["acme/tiny"].gated = True
    with pytest.raises(HubAccessError, match=r"'acme/tiny' is a gated repository and no token \(set HF_TOKEN\) has"):
        _download(hub, tmp_path)


def test_gated_with_wrong_token_never_leaks_it(hub: FakeHub, tmp_path: Path) -> None:
    hub.repos["acme/tiny"].gated = True
    hub.faults.required_token = "hf_the_right_one_0123456789"
    with pytest.raises(HubAccessError) as caught:
        _download(hub, tmp_path, token=TOKEN)
    assert "the token in HF_TOKEN has no access" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value.__context__)
    assert hub.tokens_seen == {TOKEN}  # it was sent, as a header only


def test_gated_with_the_right_token(hub: FakeHub, tmp_path: Path) -> None:
    hub.repos["acme/tiny"].gated = True
    hub.faults.required_token = TOKEN
    result = _download(hub, tmp_path, token=TOKEN)
    manifest_text = (result.directory / SNAPSHOT_MANIFEST).read_text()
    assert TOKEN not in manifest_text
    assert TOKEN not in result.manifest.model_dump_json()


def test_the_token_is_sent_to_the_hub_only_not_to_the_cdn_it_redirects_to(hub: FakeHub, tmp_path: Path) -> None:
    """huggingface.co answers LFS files with a 302 to a signed CDN URL: the bearer token must stay with the hub."""
    cdn = FakeHub().start()  # another origin (its own port), serving the same public bytes
    try:
        cdn.repos["acme/tiny"] = FakeRepo(dict(hub.repos["acme/tiny"].files))  # public there: signed URLs
        hub.repos["acme/tiny"].gated = True
        hub.faults.required_token = TOKEN
        hub.faults.lfs_redirect_to = cdn.endpoint
        result = _download(hub, tmp_path, token=TOKEN)
        weights = [path for path in hub.repos["acme/tiny"].files if path.endswith(".safetensors")]
        assert weights and all((result.directory / path).is_file() for path in weights)
        assert {path for method, path, _ in cdn.requests if method == "GET"} >= {
            f"/acme/tiny/resolve/{hub.repos['acme/tiny'].sha}/{path}" for path in weights
        }
        assert hub.tokens_seen == {TOKEN}
        assert cdn.tokens_seen == set(), "the hub token was sent to the CDN host"
    finally:
        cdn.stop()


def test_corrupted_bytes_fail_remove_the_file_and_write_no_manifest(hub: FakeHub, tmp_path: Path) -> None:
    hub.faults.corrupt = {"model-00001-of-00002.safetensors"}
    with pytest.raises(ChecksumMismatchError) as caught:
        _download(hub, tmp_path, workers=1)
    sha = hub.repos["acme/tiny"].sha
    assert str(caught.value).startswith(
        "model 'tiny': 'model-00001-of-00002.safetensors' does not match the hub's checksum (sha256 "
    )
    directory = tmp_path / "tiny" / sha
    assert not (directory / "model-00001-of-00002.safetensors").exists()
    assert not (directory / SNAPSHOT_MANIFEST).exists()
    assert ModelStore(tmp_path).latest("tiny") is None
    hub.faults.corrupt.clear()
    assert _download(hub, tmp_path).manifest.sha == sha


def test_connection_cut_mid_body_is_resumed(hub: FakeHub, tmp_path: Path) -> None:
    # huggingface_hub resumes from the last 10 MiB chunk it wrote, so the file must span several chunks.
    name = "model-00001-of-00002.safetensors"
    hub.repos["acme/tiny"] = FakeRepo({**_files(), name: os.urandom(24_000_000)})
    hub.faults.cut_once = {name}
    result = _download(hub, tmp_path)
    assert (result.directory / name).read_bytes() == hub.repos["acme/tiny"].files[name]
    ranged = [r for m, p, r in hub.requests if m == "GET" and p.endswith(name) and r]
    assert len(ranged) == 1 and int(ranged[0].removeprefix("bytes=").rstrip("-")) > 0
    assert hub.served[name] < 24_000_000 * 1.5


@pytest.mark.parametrize("ignore_range", [False, True], ids=["range", "server-ignores-range"])
def test_partial_file_left_by_a_killed_run_is_resumed_and_verified(
    hub: FakeHub, tmp_path: Path, ignore_range: bool
) -> None:
    name = "model-00001-of-00002.safetensors"
    repo = hub.repos["acme/tiny"]
    partial = partial_path(tmp_path / "tiny" / repo.sha, name)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(repo.files[name][:250_000])
    hub.faults.ignore_range = ignore_range
    result = _download(hub, tmp_path)
    assert (result.directory / name).read_bytes() == repo.files[name]
    assert hub.served[name] == (600_000 if ignore_range else 350_000)
    assert not partial.exists()


def test_not_enough_disk_names_needed_and_free_bytes(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(InsufficientDiskError) as caught:
        _download(hub, tmp_path, store_kwargs={"disk_usage": lambda _: SimpleNamespace(free=1000)})
    needed = sum(
        len(content)
        for path, content in hub.repos["acme/tiny"].files.items()
        if path[-4:] != ".bin" and path != "README.md"
    )
    assert str(caught.value) == (
        f"model 'tiny': the download needs 1.0 MB ({needed} bytes) more in {tmp_path} but only 1.0 kB (1000 bytes) "
        "are free; free space there or choose a larger model store"
    )
    assert sum(hub.served.values()) == 0


def test_no_matching_file(hub: FakeHub, tmp_path: Path) -> None:
    client = HubClient(hub.endpoint, None)
    request = DownloadRequest("tiny", "acme/tiny", "main", ("*.gguf",))
    with pytest.raises(WeightsError, match=r"no file of 'acme/tiny' at \w+ matches source.allow_patterns"):
        download_snapshot(request, ModelStore(tmp_path), client)


def test_retention_keeps_the_newest_and_protected(hub: FakeHub, tmp_path: Path) -> None:
    shas: list[str] = []
    for generation in range(3):
        hub.repos["acme/tiny"] = FakeRepo({**_files(), "config.json": f'{{"generation": {generation}}}'.encode()})
        shas.append(_download(hub, tmp_path, keep_revisions=1, protected=[shas[0]] if shas else []).manifest.sha)
    kept = sorted(m.sha for m in ModelStore(tmp_path).complete_snapshots("tiny"))
    assert kept == sorted([shas[0], shas[2]])
    assert not (tmp_path / "tiny" / shas[1]).exists()


def test_kill_mid_download_then_resume_fetches_only_unfinished_files(hub: FakeHub, tmp_path: Path) -> None:
    big = "model-00001-of-00002.safetensors"
    size = 24_000_000
    hub.repos["acme/tiny"] = FakeRepo({**_files(), big: os.urandom(size)})
    hub.faults.bytes_per_s = 8_000_000
    command = [
        sys.executable,
        "-m",
        "llm_platform.weights",
        "--model",
        "tiny",
        "--repo",
        "acme/tiny",
        "--dest",
        str(tmp_path),
        "--endpoint",
        hub.endpoint,
        "--workers",
        "2",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while hub.served[big] < size // 2:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    hub.settled_bytes()  # let the server notice the dead connection before counting afresh
    directory = tmp_path / "tiny" / hub.repos["acme/tiny"].sha
    complete_before = {p.name for p in directory.iterdir() if p.is_file()}
    assert complete_before == {"config.json", "model-00002-of-00002.safetensors", "tokenizer.json"}
    assert not (directory / SNAPSHOT_MANIFEST).exists()
    partial = partial_path(directory, big).stat().st_size
    assert 0 < partial < size

    hub.faults.bytes_per_s = 0
    hub.served.clear()
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    # Only the unfinished file came over the wire again, and only the part the killed run had not written.
    assert dict(hub.served) == {big: size - partial}
    assert [r for m, p, r in hub.requests if m == "GET" and p.endswith(big)][-1] == f"bytes={partial}-"
    assert not (directory / ".cache").exists()
    manifest_line = result.stdout.strip().splitlines()[-1]
    assert manifest_line.startswith("LLM_PLATFORM_MANIFEST ")
    assert json.loads(manifest_line.split(" ", 1)[1])["sha"] == hub.repos["acme/tiny"].sha


@pytest.mark.parametrize("path", ["../../escape.json", "/etc/cron.d/evil.json", "sub/../../up.json", "a\\..\\b.json"])
def test_a_malicious_mirror_cannot_write_outside_the_snapshot(hub: FakeHub, tmp_path: Path, path: str) -> None:
    """A hub (or mirror) whose file listing names a path outside the snapshot directory: refused before any byte
    is written, with one line naming the model, and nothing lands outside the store."""
    hub.repos["acme/evil"] = FakeRepo({"config.json": b"{}", path: b'{"owned": true}'})
    store = tmp_path / "store"
    with pytest.raises(WeightsError) as refused:
        _download(hub, store, repo="acme/evil")
    assert str(refused.value).startswith("model 'tiny': the hub's listing of 'acme/evil' at ")
    assert "refusing to download from it" in str(refused.value)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written


def test_the_local_target_never_prunes_the_commit_its_servers_read(hub: FakeHub, tmp_path: Path) -> None:
    """The production path (``LocalTarget.materialize_weights``, what ``model_weights`` calls) protects
    the commit a running server reads, with keep_revisions=1."""
    from llm_platform.catalog import parse_catalog
    from llm_platform.targets.local import LocalTarget
    from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings
    from llm_platform.targets.local_state import ServerRecord

    store = ModelStore(tmp_path / "store")
    serving: list[ServerRecord] = []

    class Servers(LocalServers):
        def servers(self, model: str) -> list[ServerRecord]:  # the processes stand in: what runs is the point here
            return list(serving)

    servers = Servers(LocalTargetSettings(state_dir=tmp_path / "state", file_sd_dir=tmp_path / "sd"))
    target = LocalTarget(servers, store, HubClient(hub.endpoint, None), tmp_path / "artifacts", keep_revisions=1)
    model = parse_catalog({"models": [{"name": "tiny", "source": {"repo": "acme/tiny"}}]}).model("tiny")
    shas = []
    for generation in range(3):
        hub.repos["acme/tiny"] = FakeRepo({**_files(), "config.json": f'{{"generation": {generation}}}'.encode()})
        manifest = target.materialize_weights(model, "main").manifest
        shas.append(manifest.sha)
        if generation == 0:  # the first commit is promoted and keeps serving
            serving.append(ServerRecord("tiny", "f", 1, 1, "127.0.0.1", "log", target.weights_path(manifest), "now"))
    assert sorted(m.sha for m in store.complete_snapshots("tiny")) == sorted([shas[0], shas[2]])
