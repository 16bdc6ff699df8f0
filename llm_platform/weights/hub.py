"""Adapter to the Hugging Face hub (``huggingface_hub``): resolve revisions, list files, download one file.

Every hub failure becomes one of the project's errors with a one-line message that names the model and says
what to do. Transient failures (connection errors, timeouts, 429 and 5xx) are retried with exponential backoff;
the sleeper is injected so that tests run the retries instantly. The token is passed explicitly (never read from
a token file) and scrubbed from every message.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # public, lazily exported
from tqdm import tqdm

from llm_platform.errors import HubAccessError, HubNotFoundError, HubUnavailableError, WeightsError
from llm_platform.weights.plan import RemoteFile, architecture_of
from llm_platform.weights.store import partial_path

T = TypeVar("T")

#: The file a serving plan reads the architecture from, and the most bytes accepted for it (configs are a few KB).
CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1 << 20
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class _NoBar(tqdm):  # type: ignore[type-arg]
    """A disabled tqdm: huggingface_hub's per-file bars would interleave with the snapshot's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


class _HashingWriter:
    """The file object ``http_get`` writes to: hashes the bytes as they pass, so verification needs no second read.

    Supports what ``http_get`` calls: ``write``, ``tell``, and ``seek`` + ``truncate`` when a server ignores a Range
    request (the prefix is then hashed again from disk).
    """

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self._handle = handle
        self._path = path
        self._sha256 = _prefix_sha256(path, handle.tell())

    def write(self, data: bytes) -> int:
        self._sha256.update(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._handle.seek(offset, whence)
        self._handle.flush()
        self._sha256 = _prefix_sha256(self._path, position)
        return position

    def truncate(self, size: int | None = None) -> int:
        return self._handle.truncate(size)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


def _prefix_sha256(path: Path, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while length > 0 and (chunk := handle.read(min(length, 8 * 1024 * 1024))):
            digest.update(chunk)
            length -= len(chunk)
    return digest


@dataclass(frozen=True)
class DownloadedFile:
    path: Path
    #: sha256 computed while the bytes streamed in; None when the file came another way (already complete, Xet).
    sha256: str | None


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced, for messages that echo server responses."""
    return text.replace(secret, "***") if secret else text


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class HubClient:
    """The calls a weights download makes to one hub endpoint, with retries and the project's errors."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self._token = token or None
        self._api = HfApi(endpoint=self.endpoint, token=self._token or False)
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep

    def resolve_revision(self, model: str, repo: str, revision: str) -> str:
        """The commit sha that ``revision`` (branch, tag or sha) points to now."""
        info = self._call(model, repo, revision, lambda: self._api.model_info(repo, revision=revision))
        if not info.sha:
            raise HubNotFoundError(f"model '{model}': the hub returned no commit for '{repo}' at '{revision}'")
        return info.sha

    def list_files(self, model: str, repo: str, sha: str) -> list[RemoteFile]:
        """Every file of the repository at commit ``sha``, with sizes and checksums."""

        def listing() -> list[RemoteFile]:
            entries = self._api.list_repo_tree(repo, revision=sha, recursive=True)
            return [
                RemoteFile(
                    path=entry.path,
                    size=entry.size,
                    sha256=entry.lfs.sha256 if entry.lfs else None,
                    blob_id=entry.blob_id,
                )
                for entry in entries
                if isinstance(entry, RepoFile)
            ]

        return self._call(model, repo, sha, listing)

    def download_file(self, model: str, repo: str, sha: str, path: str, local_dir: Path) -> DownloadedFile:
        """Download one file to ``local_dir/path``, resuming what an earlier (even killed) attempt left.

        Xet-backed files go through ``hf_hub_download`` (hf_xet fetches and caches content-defined chunks, so an
        interrupted file costs little again). Plain HTTP files are appended to a partial file of our own with
        huggingface_hub's ``http_get`` and a Range request, then renamed into place: since huggingface_hub 2
        gives every process a fresh temporary file, its own resume does not survive a killed process.
        """
        target = local_dir / path

        def download() -> DownloadedFile:
            url = hf_hub_url(repo, path, revision=sha, endpoint=self.endpoint)
            metadata = get_hf_file_metadata(url, token=self._token or False)
            if metadata.xet_file_data is not None:
                return DownloadedFile(
                    Path(
                        hf_hub_download(
                            repo,
                            path,
                            revision=sha,
                            local_dir=local_dir,
                            endpoint=self.endpoint,
                            token=self._token or False,
                            # Progress is reported for the whole snapshot, not with one bar per file.
                            tqdm_class=_NoBar,
                        )
                    ),
                    sha256=None,
                )
            if target.is_file() and target.stat().st_size == metadata.size:
                return DownloadedFile(target, None)  # completed by an earlier run; the caller verifies it
            partial = partial_path(local_dir, path)
            partial.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("ab") as handle:
                writer = _HashingWriter(handle, partial)
                if metadata.size is None or handle.tell() < metadata.size:
                    http_get(
                        metadata.location,
                        writer,  # type: ignore[arg-type]  # the subset of BinaryIO that http_get uses
                        resume_size=handle.tell(),
                        headers=build_hf_headers(token=self._token_for(metadata.location)),
                        expected_size=metadata.size,
                        displayed_filename=path,
                        tqdm_class=_NoBar,
                    )
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.replace(target)
            return DownloadedFile(target, writer.hexdigest())

        return self._call(model, repo, sha, download, what=f"file '{path}'")

    def read_config(
        self, model: str, repo: str, revision: str, max_bytes: int = MAX_CONFIG_BYTES
    ) -> tuple[str, dict[str, Any]]:
        """The commit ``revision`` points to and the architecture of its ``config.json`` (:func:`architecture_of`),
        fetched alone (what a serving plan needs before any weights are downloaded). The file comes from outside:
        its size is checked in the listing before a byte is fetched, and it must be a JSON object."""
        sha = self.resolve_revision(model, repo, revision)
        where = f"model '{model}': config.json of '{repo}' at {sha[:12]}"
        listed = next((f for f in self.list_files(model, repo, sha) if f.path == CONFIG_FILE), None)
        if listed is None:
            raise HubNotFoundError(f"{where}: not in the repository (a plan needs the model's config.json)")
        if listed.size is None or listed.size > max_bytes:
            raise WeightsError(f"{where}: {listed.size} bytes, more than the {max_bytes} a config may have")
        with tempfile.TemporaryDirectory(prefix="llm-platform-config-") as scratch:
            path = self.download_file(model, repo, sha, CONFIG_FILE, Path(scratch)).path
            text = path.read_bytes()[: max_bytes + 1]
        try:
            config = json.loads(text) if len(text) <= max_bytes else None
        except ValueError:
            config = None
        architecture = architecture_of(config) if isinstance(config, dict) else None
        if architecture is None:
            raise WeightsError(f"{where}: not a JSON object of at most {max_bytes} bytes with an architecture")
        return sha, architecture

    def _token_for(self, url: str) -> str | bool:
        """The token for a request to ``url``: only to the hub's own origin. huggingface.co redirects LFS files to
        signed CDN URLs, which must never receive the bearer token (as huggingface_hub's own download does)."""
        return (self._token or False) if _origin(url) == _origin(self.endpoint) else False

    # ------------------------------------------------------------------------------------------------------------

    def _call(self, model: str, repo: str, revision: str, call: Callable[[], T], what: str = "") -> T:
        delay = self._backoff_s
        for attempt in range(1, self._max_attempts + 1):
            try:
                return call()
            except Exception as error:
                translated = self._translate(error, model, repo, revision, what)
                if translated is not None:
                    raise translated from None
                if attempt == self._max_attempts:
                    reason = redact(_first_line(error), self._token)
                    raise HubUnavailableError(
                        f"model '{model}': the hub at {self.endpoint} kept failing for {what or repr(repo)} after "
                        f"{attempt} attempts ({reason}); try again later, or check HF_ENDPOINT and the network"
                    ) from None
                self._sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
        raise AssertionError("unreachable")

    def _translate(self, error: Exception, model: str, repo: str, revision: str, what: str) -> WeightsError | None:
        """The project's error for a permanent failure; None for a transient one (retry)."""
        token_hint = "the token in HF_TOKEN" if self._token else "no token (set HF_TOKEN)"
        if isinstance(error, GatedRepoError):
            return HubAccessError(
                f"model '{model}': '{repo}' is a gated repository and {token_hint} has no access to it; request "
                "access on the model's page, then use a token of an account that has it"
            )
        if isinstance(error, RevisionNotFoundError):
            return HubNotFoundError(
                f"model '{model}': revision '{revision}' not found in '{repo}'; check source.revision (a branch, "
                "tag or 40-hex commit of that repository)"
            )
        if isinstance(error, RepositoryNotFoundError):
            return HubNotFoundError(
                f"model '{model}': repository '{repo}' not found, or private and {token_hint} cannot see it; check "
                "source.repo, or set HF_TOKEN to a token with access"
            )
        if isinstance(error, HfHubHTTPError) and error.response is not None:
            status = error.response.status_code
            if status in (401, 403):
                return HubAccessError(
                    f"model '{model}': the hub refused {what or repr(repo)} with HTTP {status} using {token_hint}; "
                    "check that the token is valid and has read access"
                )
            if status in _TRANSIENT_STATUS:
                return None
            return HubUnavailableError(
                f"model '{model}': the hub answered HTTP {status} for {what or repr(repo)}: "
                f"{redact(_first_line(error), self._token)}"
            )
        if isinstance(error, (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError, TimeoutError)):
            return None
        if isinstance(error, OSError) and "Consistency check failed" in str(error):
            return None  # a truncated body; the next attempt resumes it
        if isinstance(error, OSError):
            # Local failures while writing (disk full, permissions) are not the hub's: report them as they are.
            return WeightsError(f"model '{model}': writing {what or 'the download'} failed: {_first_line(error)}")
        return WeightsError(
            f"model '{model}': unexpected error from the hub client for {what or repr(repo)}: "
            f"{type(error).__name__}: {redact(_first_line(error), self._token)}"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
