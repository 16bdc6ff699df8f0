"""Download one revision of a Hugging Face model into the model store, verified, with a manifest written last.

Files are fetched in parallel through huggingface_hub (see ``HubClient.download_file``) and each is hashed by the
same worker as soon as it lands, so verification overlaps the other downloads instead of following them. A run
killed mid-way leaves complete files and at most one partial file per worker; the next run keeps the complete ones
(after verifying them) and resumes the partial ones with Range requests.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from llm_platform.catalog import Adapter, ModelSpec, is_commit_sha, position_limit
from llm_platform.errors import ChecksumMismatchError, InsufficientDiskError, WeightsError
from llm_platform.store_layout import adapter_store_key
from llm_platform.weights.hub import HubClient
from llm_platform.weights.plan import (
    ADAPTER_REQUIRED_FILES,
    DownloadResult,
    ManifestFile,
    RemoteFile,
    SnapshotManifest,
    architecture_of,
    select_files,
    snapshots_to_prune,
    unsafe_path,
)
from llm_platform.weights.progress import ProgressEvent, ProgressSink, human_bytes
from llm_platform.weights.store import (
    HUB_METADATA_DIR,
    ModelStore,
    bytes_on_disk,
    file_digests,
    partial_path,
    remove_orphaned_partials,
    verification_problem,
    write_manifest,
)

DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class DownloadRequest:
    """What to download: the catalog's source of one model (or the Job's command-line arguments)."""

    model: str
    repo: str
    revision: str
    allow_patterns: tuple[str, ...]
    required: tuple[str, ...] = ()
    """Patterns each of which some selected file must match, checked before a byte is fetched."""

    @classmethod
    def for_model(cls, model: ModelSpec, revision: str) -> DownloadRequest:
        """The request for a catalog model (one with a hub repository: a local ``source.path`` has nothing to
        download)."""
        if model.source.repo is None:
            raise WeightsError(f"model '{model.name}' has a local source ({model.source.path}); nothing to download")
        return cls(model.name, model.source.repo, revision, model.source.allow_patterns)

    @classmethod
    def for_adapter(cls, model: ModelSpec, adapter: Adapter) -> DownloadRequest:
        """The request for one of a model's LoRA adapters: into the store beside the base's snapshots, its config
        and safetensors weights required."""
        if adapter.source.repo is None:
            raise WeightsError(
                f"model '{model.name}': adapter '{adapter.name}' has a local source ({adapter.source.path}); "
                "nothing to download"
            )
        key = adapter_store_key(model.name, adapter.name)
        return cls(key, adapter.source.repo, adapter.source.revision, adapter.source.allow_patterns,
                   ADAPTER_REQUIRED_FILES)  # fmt: skip


def _verify_existing(manifest: SnapshotManifest, directory: Path, workers: int) -> tuple[list[ManifestFile], list[str]]:
    """Split a manifest's files into those still intact on disk and problem lines for the others."""

    def check(item: ManifestFile) -> str | None:
        return verification_problem(directory / item.path, RemoteFile(item.path, item.size, item.sha256, None))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(zip(manifest.files, pool.map(check, manifest.files), strict=True))
    intact = [item for item, problem in results if problem is None]
    return intact, [f"{item.path}: {problem}" for item, problem in results if problem is not None]


def _remove_download_state(directory: Path, path: str) -> None:
    """Forget a file completely: the file, its partial download and huggingface_hub's metadata for it."""
    (directory / path).unlink(missing_ok=True)
    partial_path(directory, path).unlink(missing_ok=True)
    (directory / HUB_METADATA_DIR / "huggingface" / "download" / f"{path}.metadata").unlink(missing_ok=True)


class _ProgressMonitor:
    """Reports bytes on disk (complete + partial files) every ``interval_s`` from a background thread."""

    def __init__(
        self,
        sink: ProgressSink | None,
        model: str,
        directory: Path,
        files: list[RemoteFile],
        clock: Callable[[], float],
        interval_s: float,
    ) -> None:
        self._sink, self._model, self._directory, self._files = sink, model, directory, files
        self._clock, self._interval_s = clock, interval_s
        self._start = clock()
        self._wall_start = time.time()
        self._done_files = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="weights-progress", daemon=True)

    def __enter__(self) -> _ProgressMonitor:
        if self._sink is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def file_done(self) -> None:
        self._done_files += 1

    def report(self, final: bool = False) -> None:
        if self._sink is None:
            return
        total = sum(item.size for item in self._files)
        done = total if final else min(bytes_on_disk(self._directory, self._files, self._wall_start - 1), total)
        event = ProgressEvent(self._model, done, total, self._done_files, len(self._files), self._clock() - self._start)
        self._sink(event, final)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.report()


def _read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _config_facts(directory: Path) -> dict[str, Any]:
    """The position limit and the architecture from the snapshot's ``config.json``, an adapter's
    ``adapter_config.json`` (None each when there is none to read), as manifest fields."""
    config = _read_json_object(directory / "config.json")
    adapter_config = _read_json_object(directory / "adapter_config.json")
    return {
        "max_position_tokens": None if config is None else position_limit(config),
        "architecture": None if config is None else architecture_of(config),
        "adapter_config": None if adapter_config is None else architecture_of(adapter_config),
    }


def download_snapshot(
    request: DownloadRequest,
    store: ModelStore,
    hub: HubClient,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressSink | None = None,
    progress_interval_s: float = 1.0,
    keep_revisions: int = 0,
    protected: Iterable[str] = (),
    clock: Callable[[], float] = time.monotonic,
) -> DownloadResult:
    """Make ``<store>/<model>/<sha>/`` a complete, verified snapshot of ``request`` and return its manifest.

    ``keep_revisions`` > 0 removes older complete snapshots of the model beyond that many (never the ``protected``
    shas, e.g. the one currently deployed); 0 keeps every snapshot.
    """
    start = clock()
    model = request.model
    if is_commit_sha(request.revision) and store.manifest(model, request.revision) is not None:
        sha = request.revision  # a pinned commit already here: no need to ask the hub anything
    else:
        sha = hub.resolve_revision(model, request.repo, request.revision)
    directory = store.snapshot_dir(model, sha)

    existing = store.manifest(model, sha)
    intact: list[ManifestFile] = []
    if existing is not None:
        intact, problems = _verify_existing(existing, directory, workers)
        if not problems:
            pruned = _prune(store, model, keep_revisions, {sha, *protected})
            if existing.architecture is None and existing.adapter_config is None:  # written before the fields
                existing = existing.model_copy(update=_config_facts(directory))
            return DownloadResult(existing, directory, reused=True, pruned=pruned)
        # Damaged since it was completed: forget the manifest and the bad files; fetch only those again.
        store.remove_snapshot_manifest(model, sha)
        for problem in problems:
            _remove_download_state(directory, problem.split(": ", 1)[0])

    listing = hub.list_files(model, request.repo, sha)
    unsafe = sorted(item.path for item in listing if unsafe_path(item.path))
    if unsafe:  # refused before any byte is written
        shown = ", ".join(repr(path[:80]) for path in unsafe[:3])
        raise WeightsError(
            f"model '{model}': the hub's listing of '{request.repo}' at {sha[:12]} has paths outside the snapshot "
            f"({shown}); refusing to download from it: check the hub or mirror at source.repo"
        )
    files = select_files(listing, request.allow_patterns)
    missing = [pattern for pattern in request.required if not any(fnmatch(f.path, pattern) for f in files)]
    has = f"the repository has {sorted(item.path for item in listing)[:8]}"
    if not files:
        raise WeightsError(
            f"model '{model}': no file of '{request.repo}' at {sha[:12]} matches source.allow_patterns "
            f"{list(request.allow_patterns)}; {has}"
        )
    if missing:
        raise WeightsError(
            f"model '{model}': '{request.repo}' at {sha[:12]} has no {' and no '.join(missing)} matching "
            f"source.allow_patterns {list(request.allow_patterns)}, and cannot be served without; {has}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    remove_orphaned_partials(directory)
    total = sum(item.size for item in files)
    present_at_start = bytes_on_disk(directory, files)
    needed, free = total - present_at_start, store.free_bytes()
    if needed > free:
        raise InsufficientDiskError(
            f"model '{model}': the download needs {human_bytes(needed)} ({needed} bytes) more in {store.root} but "
            f"only {human_bytes(free)} ({free} bytes) are free; free space there or choose a larger model store"
        )

    intact_paths = {item.path for item in intact}
    to_fetch = [item for item in files if item.path not in intact_paths]
    with _ProgressMonitor(progress, model, directory, files, clock, progress_interval_s) as monitor:
        verified = intact + _download_and_verify(request, sha, directory, to_fetch, hub, workers, monitor)
        monitor.report(final=True)

    shutil.rmtree(directory / HUB_METADATA_DIR, ignore_errors=True)
    manifest = SnapshotManifest(
        model=model,
        repo=request.repo,
        requested_revision=request.revision,
        sha=sha,
        files=tuple(sorted(verified, key=lambda item: item.path)),
        total_bytes=total,
        downloaded_bytes=max(total - present_at_start, 0),
        duration_s=round(clock() - start, 3),
        completed_at=datetime.now(UTC),
        **_config_facts(directory),
    )
    write_manifest(directory, manifest)
    pruned = _prune(store, model, keep_revisions, {sha, *protected})
    return DownloadResult(manifest, directory, reused=False, pruned=pruned)


def _download_and_verify(
    request: DownloadRequest,
    sha: str,
    directory: Path,
    files: Sequence[RemoteFile],
    hub: HubClient,
    workers: int,
    monitor: _ProgressMonitor,
) -> list[ManifestFile]:
    def fetch(item: RemoteFile) -> ManifestFile:
        downloaded = hub.download_file(request.model, request.repo, sha, item.path, directory)
        path = downloaded.path
        if downloaded.sha256 is not None and item.sha256 is not None:
            digests: tuple[str, str | None] = (downloaded.sha256, None)  # hashed while it streamed in
        else:
            digests = file_digests(path, with_blob_id=item.sha256 is None)
        problem = verification_problem(path, item, digests)
        if problem is not None:
            _remove_download_state(directory, item.path)
            raise ChecksumMismatchError(
                f"model '{request.model}': '{item.path}' does not match the hub's checksum ({problem}); the file "
                "was removed, run the download again to fetch it anew"
            )
        monitor.file_done()
        return ManifestFile(path=item.path, size=item.size, sha256=digests[0])

    # Largest first: the long transfers start at once and the small ones fill the gaps.
    ordered = sorted(files, key=lambda item: item.size, reverse=True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="weights")
    futures: list[Future[ManifestFile]] = [pool.submit(fetch, item) for item in ordered]
    try:
        return [future.result() for future in as_completed(futures)]
    finally:
        # On the first failure, start nothing new; files in flight finish or stay partial for the next run.
        pool.shutdown(wait=True, cancel_futures=True)


def _prune(store: ModelStore, model: str, keep: int, protected: set[str]) -> tuple[str, ...]:
    doomed = snapshots_to_prune(store.complete_snapshots(model), keep, protected)
    for manifest in doomed:
        store.remove_snapshot(model, manifest.sha)
    return tuple(manifest.sha for manifest in doomed)
