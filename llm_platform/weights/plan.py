"""Pure decisions of a weights download: which repository files to fetch, and which snapshots to keep."""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llm_platform.catalog import DEFAULT_ALLOW_PATTERNS

#: Pickle-based weight formats: never downloaded when the repository has safetensors (they are slower to load and
#: can execute code), and only downloaded by the default patterns when it has nothing else.
PICKLE_WEIGHT_PATTERNS: tuple[str, ...] = ("*.bin", "*.pt", "*.pth", "*.ckpt")
MANIFEST_FORMAT = 1
#: What an adapter's snapshot must have: its config and safetensors weights (a pickled adapter is never loaded).
ADAPTER_REQUIRED_FILES: tuple[str, ...] = ("adapter_config.json", "*.safetensors")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repository revision, as the hub's tree listing describes it."""

    path: str
    size: int
    #: sha256 of the content, for files stored with LFS/Xet (the hub's ``lfs.sha256``).
    sha256: str | None
    #: Git blob id (sha1 of ``blob <size>\\0<content>``), for every file.
    blob_id: str | None


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def unsafe_path(path: str) -> bool:
    """Whether a path from a hub's file listing could land outside the snapshot directory (or is no file name at
    all): absolute, a ``..`` or empty component, a backslash or a NUL. The listing is input from outside."""
    parts = path.split("/")
    return (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in parts)
        or (len(parts[0]) >= 2 and parts[0][1] == ":")
    )


def select_files(listing: Sequence[RemoteFile], allow_patterns: Sequence[str]) -> list[RemoteFile]:
    """The files to download: those matching ``allow_patterns``, without pickled weights when safetensors exist.

    With the default patterns, a repository that has no safetensors at all falls back to its pickled weights
    (``*.bin``/``*.pt``), since it has nothing else vLLM could load.
    """
    patterns = list(allow_patterns)
    has_safetensors = any(item.path.endswith(".safetensors") for item in listing)
    if tuple(allow_patterns) == DEFAULT_ALLOW_PATTERNS and not has_safetensors:
        patterns += PICKLE_WEIGHT_PATTERNS
    selected = [item for item in listing if _matches(item.path, patterns)]
    if has_safetensors:
        selected = [item for item in selected if not _matches(item.path, PICKLE_WEIGHT_PATTERNS)]
    return sorted(selected, key=lambda item: item.path)


class ManifestFile(BaseModel):
    """One verified file of a snapshot."""

    model_config = ConfigDict(frozen=True)

    path: str
    size: int
    sha256: str


class SnapshotManifest(BaseModel):
    """What a completed download put into ``<store>/<model>/<sha>/``; written last, it marks the snapshot usable."""

    model_config = ConfigDict(frozen=True)

    format: int = MANIFEST_FORMAT
    model: str
    repo: str
    requested_revision: str
    sha: str
    files: tuple[ManifestFile, ...]
    total_bytes: int
    #: Bytes fetched from the hub by the run that completed the snapshot (0 when it only verified).
    downloaded_bytes: int
    duration_s: float
    completed_at: datetime
    #: The longest context the model supports according to its ``config.json`` (vLLM's reading), None when the
    #: snapshot has no readable one: what every later change of ``max_model_len`` is checked against.
    max_position_tokens: int | None = None
    #: The architecture fields of that ``config.json`` (:func:`architecture_of`): what the serving plan estimates the
    #: model from where the weights themselves are out of reach (on Kubernetes they are on the PVC, not in the run).
    architecture: dict[str, Any] | None = None
    #: An adapter's ``adapter_config.json`` (filtered like :attr:`architecture`): what its checks read where the
    #: files are out of reach. None for base weights.
    adapter_config: dict[str, Any] | None = None
    #: The LoRA adapters served on these weights, served name → the adapter's snapshot: set by the lifecycle (the
    #: ``adapter_weights`` asset) on the base's manifest, never by a download.
    adapters: dict[str, SnapshotManifest] = {}

    def with_adapters(self, adapters: Mapping[str, SnapshotManifest]) -> SnapshotManifest:
        """These weights with ``adapters`` served on them."""
        return self.model_copy(update={"adapters": dict(adapters)})

    @property
    def adapter_commits(self) -> dict[str, str]:
        """Served name → commit of each adapter served on these weights (part of what a config is)."""
        return {name: adapter.sha for name, adapter in sorted(self.adapters.items())}

    @property
    def served_version(self) -> str:
        """The weights' commit and each adapter's, as one short hash (what the served weights are)."""
        identity = json.dumps({"weights": self.sha, "adapters": self.adapter_commits}, sort_keys=True)
        return hashlib.sha256(identity.encode()).hexdigest()[:16]

    @property
    def lora_rank(self) -> int | None:
        """An adapter's rank from its ``adapter_config.json``; None when it states none."""
        rank = (self.adapter_config or {}).get("r")
        return rank if isinstance(rank, int) and not isinstance(rank, bool) else None

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def throughput_bytes_per_s(self) -> float:
        return self.downloaded_bytes / self.duration_s if self.duration_s > 0 else 0.0


#: Sub-objects of ``config.json`` an architecture needs (RoPE, quantization, the text part of a multimodal model).
_ARCHITECTURE_SECTIONS = frozenset({"rope_scaling", "rope_parameters", "quantization_config", "text_config"})
MAX_ARCHITECTURE_BYTES = 32_768


def architecture_of(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The architecture fields of a Hugging Face ``config.json``, which comes from the hub and is input from outside:
    scalars and lists of scalars, and the sub-objects an architecture needs, each filtered the same way; None when
    the result would exceed :data:`MAX_ARCHITECTURE_BYTES`."""

    def scalar(value: object) -> bool:
        return value is None or (isinstance(value, (bool, int, float, str)) and len(str(value)) <= 256)

    def keep(section: Mapping[str, Any], depth: int) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for key, value in section.items():
            if not isinstance(key, str) or len(key) > 128:
                continue
            if scalar(value) or (isinstance(value, list) and len(value) <= 64 and all(scalar(v) for v in value)):
                kept[key] = value
            elif depth == 0 and key in _ARCHITECTURE_SECTIONS and isinstance(value, Mapping):
                kept[key] = keep(value, depth + 1)
        return kept

    architecture = keep(config, 0)
    return architecture if len(json.dumps(architecture)) <= MAX_ARCHITECTURE_BYTES else None


@dataclass(frozen=True)
class DownloadResult:
    """A materialized snapshot: its manifest, where it lies, and whether it was only verified."""

    manifest: SnapshotManifest
    directory: Path
    #: True when a complete snapshot of that commit was already there and only verified.
    reused: bool
    pruned: tuple[str, ...] = field(default_factory=tuple)


#: Prefix of the last line the download entrypoint prints: ``<marker> <manifest json>``.
MANIFEST_MARKER = "LLM_PLATFORM_MANIFEST"
#: Printed (``<marker> <sha>``) when the snapshot was already complete and only verified.
REUSED_MARKER = "LLM_PLATFORM_REUSED"


def reused_in_log(log: str) -> bool:
    """Whether the download entrypoint's output says it found the snapshot complete and fetched nothing."""
    return any(line.startswith(REUSED_MARKER + " ") for line in log.splitlines())


def manifest_from_log(log: str) -> SnapshotManifest | None:
    """The manifest from the download entrypoint's output (the Job's pod log); None if it printed none."""
    for line in reversed(log.splitlines()):
        if line.startswith(MANIFEST_MARKER + " "):
            return SnapshotManifest.model_validate_json(line.split(" ", 1)[1])
    return None


def snapshots_to_prune(
    complete: Sequence[SnapshotManifest], keep: int, protected: Iterable[str] = ()
) -> list[SnapshotManifest]:
    """Older complete snapshots beyond the newest ``keep`` (0 keeps all), never a ``protected`` sha."""
    if keep <= 0:
        return []
    protected_shas = set(protected)
    newest_first = sorted(complete, key=lambda manifest: manifest.completed_at, reverse=True)
    return [manifest for manifest in newest_first[keep:] if manifest.sha not in protected_shas]
