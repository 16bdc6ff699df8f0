"""A local Hugging Face hub for the embedded default and the tests: olah serving git repositories from disk.

``publish_model`` commits a directory into a git repository laid out the way olah's local mirrors expect
(``<mirrors>/models/<org>/<name>``), storing large files as Git LFS pointers with their objects under
``.git/lfs/objects`` (what ``git lfs`` would do, without needing it). ``LocalHub`` runs olah (from its own
virtualenv: it needs a newer fastapi than vLLM allows) in offline mode on a free loopback port, so that
``HF_ENDPOINT`` can point huggingface_hub at it and downloads take the same path as from huggingface.co.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from llm_platform.errors import PlatformError
from llm_platform.processes import free_port, http_answers, spawn, stop_group, wait_until_healthy

#: Files at least this large, and all weight files, are stored as LFS objects (as the hub does).
LFS_THRESHOLD_BYTES = 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "llm-platform",
    "GIT_AUTHOR_EMAIL": "llm-platform@localhost",
    "GIT_COMMITTER_NAME": "llm-platform",
    "GIT_COMMITTER_EMAIL": "llm-platform@localhost",
}


class LocalHubError(PlatformError):
    """The local hub could not be set up or started."""


def mirror_repo_path(mirrors_root: Path, repo_id: str) -> Path:
    org, _, name = repo_id.rpartition("/")
    return mirrors_root / "models" / org / name


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **_GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LocalHubError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
    return result.stdout.strip()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _store_lfs_object(repo: Path, source: Path) -> bytes:
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    sha256 = digest.hexdigest()
    target = repo / ".git" / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copyfile(source, target)
    return _lfs_pointer(sha256, source.stat().st_size)


def publish_model(
    mirrors_root: Path, repo_id: str, source_dir: Path, *, message: str = "publish", tag: str | None = None
) -> str:
    """Commit every file of ``source_dir`` as the new head of ``main`` in the local hub; returns the commit sha."""
    repo = mirror_repo_path(mirrors_root, repo_id)
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "--quiet", "--initial-branch=main")
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for source in sorted(source_dir.rglob("*")):
        if not source.is_file():
            continue
        target = repo / source.relative_to(source_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix in LFS_SUFFIXES or source.stat().st_size >= LFS_THRESHOLD_BYTES:
            target.write_bytes(_store_lfs_object(repo, source))
        else:
            shutil.copyfile(source, target)
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "--allow-empty", "-m", message)
    if tag is not None:
        _git(repo, "tag", "--force", tag)
    return _git(repo, "rev-parse", "HEAD")


def default_olah_command() -> Path:
    """``$LLM_PLATFORM_OLAH``, else ``.venv-olah/bin/olah-cli`` beside the project's own virtualenv."""
    configured = os.environ.get("LLM_PLATFORM_OLAH")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / ".venv-olah" / "bin" / "olah-cli"


class LocalHub:
    """olah serving the git repositories under ``mirrors_root``, offline, on a loopback port."""

    def __init__(
        self, mirrors_root: Path, *, port: int | None = None, olah: Path | None = None, log_path: Path | None = None
    ) -> None:
        self.mirrors_root = mirrors_root
        self.port = port or free_port()
        self.olah = olah or default_olah_command()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> LocalHub:
        if not self.olah.exists():
            raise LocalHubError(f"olah is not installed at {self.olah}; run `make run` or set LLM_PLATFORM_OLAH")
        self.mirrors_root.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="olah-"))
        config = self._workdir / "olah.toml"
        config.write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.port}\n"
            f'repos-path = "{self._workdir / "cache"}"\n'
            f'mirrors-path = ["{self.mirrors_root}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "[accessibility]\n"
            "offline = true\n"
        )
        log_path = self.log_path or self._workdir / "olah.log"
        self._process = spawn([str(self.olah), "-c", str(config)], log_path, cwd=self._workdir)
        try:
            wait_until_healthy(
                self._process, lambda: http_answers(f"{self.endpoint}/api/models/none/none"), what="olah",
                log_path=log_path, timeout_s=timeout_s, error=LocalHubError, interval_s=0.2,
            )  # fmt: skip
        except LocalHubError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_group(self._process.pid, child=self._process, grace_s=10)
        self._process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
