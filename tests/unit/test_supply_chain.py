"""The image starts from a base pinned by digest and installs exactly what requirements.lock pins, with hashes; the
lock agrees with pyproject.toml."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO_ROOT


def _locked() -> dict[str, Version]:
    text = (REPO_ROOT / "requirements.lock").read_text()
    return {
        canonicalize_name(name): Version(version)
        for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", text, re.M)
    }


def test_every_runtime_dependency_is_locked_at_a_version_pyproject_allows() -> None:
    locked = _locked()
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for line in dependencies:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements.lock; run make lock"
        assert locked[name] in requirement.specifier, f"{name} {locked[name]} does not satisfy {requirement}"


def test_every_locked_package_has_hashes_and_the_image_requires_them() -> None:
    text = (REPO_ROOT / "requirements.lock").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))  # pip-compile's header
    entries = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", body.strip())
    assert len(entries) >= 50
    assert all("--hash=sha256:" in entry for entry in entries)
    assert "vllm" not in _locked()  # the image runs the code location and the download Job, not vLLM
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile


def test_every_base_image_is_pinned_by_digest() -> None:
    """A tag moves; a digest names exactly the bytes the image was reviewed and scanned with."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert bases, "the Dockerfile has no FROM line"
    for base in bases:
        assert re.fullmatch(r"[a-z0-9./_-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), f"{base} is not pinned by digest"
