"""The model store on disk: ``<root>/<model>/<sha>/`` snapshot directories and their completion manifests.

A snapshot counts as present only when its manifest exists, and the manifest is written last, atomically (temp
file, fsync, rename, fsync of the directory): a directory without one is an interrupted download, never served.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from llm_platform.store_layout import SNAPSHOT_MANIFEST, snapshot_path
from llm_platform.weights.plan import RemoteFile, SnapshotManifest

#: Download state inside a snapshot directory: huggingface_hub's ``local_dir`` metadata and our partial files.
#: Removed when the snapshot completes.
HUB_METADATA_DIR = ".cache"
PARTIAL_DIR = f"{HUB_METADATA_DIR}/llm-platform/partial"
_CHUNK = 8 * 1024 * 1024


class DiskUsage(Protocol):
    """What ``shutil.disk_usage`` returns (injectable, so that a full disk can be tested)."""

    @property
    def free(self) -> int: ...


class ModelStore:
    """A model store rooted at a local directory (or the mount point of the RWX PVC inside a pod)."""

    def __init__(self, root: Path | str, disk_usage: Callable[[Path], DiskUsage] = shutil.disk_usage) -> None:
        self.root = Path(root)
        self._disk_usage = disk_usage

    def snapshot_dir(self, model: str, sha: str) -> Path:
        return Path(snapshot_path(str(self.root), model, sha))

    def manifest(self, model: str, sha: str) -> SnapshotManifest | None:
        """The completion manifest of a snapshot, or None if the snapshot is absent or incomplete."""
        return read_manifest(self.snapshot_dir(model, sha))

    def complete_snapshots(self, model: str) -> list[SnapshotManifest]:
        """Every complete snapshot of ``model``, oldest first."""
        model_dir = self.root / model
        manifests = [read_manifest(child) for child in model_dir.iterdir()] if model_dir.is_dir() else []
        return sorted((m for m in manifests if m is not None), key=lambda manifest: manifest.completed_at)

    def latest(self, model: str) -> SnapshotManifest | None:
        """The most recently completed snapshot of ``model``."""
        snapshots = self.complete_snapshots(model)
        return snapshots[-1] if snapshots else None

    def remove_snapshot_manifest(self, model: str, sha: str) -> None:
        """Mark a snapshot incomplete again (its files stay, for the next download to verify and reuse)."""
        (self.snapshot_dir(model, sha) / SNAPSHOT_MANIFEST).unlink(missing_ok=True)

    def remove_snapshot(self, model: str, sha: str) -> None:
        """Delete a snapshot: manifest first, so that a half-deleted directory is never taken for complete."""
        directory = self.snapshot_dir(model, sha)
        (directory / SNAPSHOT_MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(directory, ignore_errors=True)

    def free_bytes(self) -> int:
        """Free space where snapshots are written (the nearest existing parent of the root)."""
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        return self._disk_usage(probe).free


def read_manifest(directory: Path) -> SnapshotManifest | None:
    try:
        return SnapshotManifest.model_validate_json((directory / SNAPSHOT_MANIFEST).read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def write_manifest(directory: Path, manifest: SnapshotManifest) -> None:
    """Write the manifest atomically and durably; from this moment the snapshot is complete."""
    final = directory / SNAPSHOT_MANIFEST
    temporary = directory / f".{SNAPSHOT_MANIFEST}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(manifest.model_dump_json(indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(final)
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def file_digests(path: Path, with_blob_id: bool = True) -> tuple[str, str | None]:
    """(sha256, git blob sha1 or None) of a file in one pass; hashlib releases the GIL, so threads hash in
    parallel. The blob id (needed only for files the hub lists without an LFS sha256) is skipped on request."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False) if with_blob_id else None
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest() if blob is not None else None


def verification_problem(path: Path, expected: RemoteFile, digests: tuple[str, str | None] | None = None) -> str | None:
    """Why ``path`` is not the file the hub lists (size, LFS sha256 or git blob id), or None if it is."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != expected.size:
        return f"size {size} instead of {expected.size}"
    sha256, blob_id = digests or file_digests(path, with_blob_id=expected.sha256 is None)
    if expected.sha256 is not None and sha256 != expected.sha256:
        return f"sha256 {sha256[:12]}… instead of {expected.sha256[:12]}…"
    if expected.sha256 is None and expected.blob_id is not None and blob_id != expected.blob_id:
        return f"git blob {(blob_id or '?')[:12]}… instead of {expected.blob_id[:12]}…"
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # renamed or removed by a download thread meanwhile
        return 0


def partial_path(directory: Path, path: str) -> Path:
    """Where the partial download of ``path`` accumulates until it is complete (it survives a killed process)."""
    return directory / PARTIAL_DIR / f"{path}.part"


def bytes_on_disk(directory: Path, files: list[RemoteFile], partial_since: float | None = None) -> int:
    """Bytes of ``files`` in ``directory``: complete files and our resumable partial files, plus (with
    ``partial_since``) huggingface_hub's temporary files written since then (older ones belong to a dead process
    and cannot be resumed)."""
    total = 0
    for item in files:
        complete = _size(directory / item.path)
        total += min(complete or _size(partial_path(directory, item.path)), item.size)
    if partial_since is None:
        return total
    return total + sum(_size(path) for path in _partial_files(directory) if _mtime(path) >= partial_since)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _partial_files(directory: Path) -> list[Path]:
    """huggingface_hub's temporary files (of Xet downloads through ``hf_hub_download``)."""
    partial_dir = directory / HUB_METADATA_DIR / "huggingface" / "download"
    return list(partial_dir.rglob("*.incomplete")) if partial_dir.is_dir() else []


def remove_orphaned_partials(directory: Path, idle_s: float = 60.0, now: float | None = None) -> int:
    """Delete partial downloads nobody has written to for ``idle_s`` (left by a killed run; huggingface_hub >= 2
    cannot resume another process's partial file). Returns the bytes freed."""
    cutoff = (now if now is not None else time.time()) - idle_s
    freed = 0
    for path in _partial_files(directory):
        if _mtime(path) < cutoff:
            freed += _size(path)
            path.unlink(missing_ok=True)
    return freed
