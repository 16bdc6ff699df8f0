"""Architecture: the pure core imports no Dagster and no I/O library; layers only import downwards."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

PURE_CORE = [
    "llm_platform.catalog",
    "llm_platform.engine",
    "llm_platform.store_layout",
    "llm_platform.manifests.render",
    "llm_platform.rollout",
    "llm_platform.tuning.policy",
]
FORBIDDEN_AT_RUNTIME = [
    "dagster",
    "dagster_k8s",
    "kubernetes",
    "huggingface_hub",
    "requests",
    "httpx",
    "urllib3",
    "aiohttp",
    "pandas",
    "subprocess",
]


def test_import_linter_contracts_hold() -> None:
    lint_imports = REPO_ROOT / ".venv" / "bin" / "lint-imports"
    command = [str(lint_imports)] if lint_imports.exists() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_importing_the_core_loads_no_forbidden_module_even_transitively() -> None:
    """import-linter sees our own imports; this catches what third-party imports drag in."""
    probe = (
        "import sys\n"
        f"for module in {PURE_CORE!r}: __import__(module)\n"
        f"print(sorted(m for m in {FORBIDDEN_AT_RUNTIME!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
