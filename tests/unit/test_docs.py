"""The manual matches the repository: every file path and Python module the README and docs/ name exists, and every
docs page is linked from the README (what the drift-scenario and catalog-reference tests do for their tables)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
#: A repository path in backticks: `llm_platform/gate.py`, `tests/fakehub.py`, `k8s/base/`, `targets/base.py` (a
#: path inside the package may leave out ``llm_platform/``). Image names (`vllm/vllm-openai`) have no suffix.
PATH = re.compile(r"`([a-z_][\w-]*/(?:[\w.-]+/)*(?:[\w.-]+\.(?:py|ya?ml|md|json|toml))?)`")
#: Where the platform writes (``llm-platform render``'s default output): named, not committed.
OUTPUTS = ("build/",)
#: A module of ours in backticks: `llm_platform.engine.vllm`.
MODULE = re.compile(r"`(llm_platform(?:\.\w+)+)`")


def _exists(path: str) -> bool:
    return any((root / path.rstrip("/")).exists() for root in (REPO_ROOT, REPO_ROOT / "llm_platform"))


def _module_exists(module: str) -> bool:
    parts = module.split(".")
    # A trailing attribute (a class, a function) is allowed: the longest prefix that is a module must exist.
    for end in range(len(parts), 0, -1):
        base = Path(REPO_ROOT, *parts[:end])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return end >= len(parts) - 1
    return False


def test_every_path_and_module_named_in_the_manual_exists() -> None:
    missing = [
        f"{page.relative_to(REPO_ROOT)}: {name}"
        for page in PAGES
        for name in PATH.findall(page.read_text())
        if not name.startswith(OUTPUTS) and not _exists(name)
    ] + [
        f"{page.relative_to(REPO_ROOT)}: {name}"
        for page in PAGES
        for name in MODULE.findall(page.read_text())
        if not _module_exists(name)
    ]
    assert len(PAGES) > 3
    assert not missing, "the manual names what is not there:\n" + "\n".join(missing)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    unlinked = [page.name for page in PAGES[1:] if f"](docs/{page.name})" not in readme]
    assert not unlinked, f"README.md links none of {unlinked}"
