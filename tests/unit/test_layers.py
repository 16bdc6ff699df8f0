"""Architecture: the import-linter contracts in pyproject.toml hold, and the pure core they name loads none of
their forbidden third-party packages at runtime either (import-linter sees our own imports only)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from typing import Any

from tests.conftest import REPO_ROOT


def _contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _pure_core() -> dict[str, Any]:
    (core,) = [contract for contract in _contracts() if contract["type"] == "forbidden"]
    return core


def test_import_linter_contracts_hold() -> None:
    lint_imports = REPO_ROOT / ".venv" / "bin" / "lint-imports"
    command = [str(lint_imports)] if lint_imports.exists() else [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout


def test_the_targets_and_the_adapters_are_declared_independent() -> None:
    (layers,) = [contract for contract in _contracts() if contract["type"] == "layers"]
    independent = [set(layer.split(" | ")) for layer in layers["layers"] if " | " in layer]
    assert {
        "llm_platform.targets.local",
        "llm_platform.targets.kubernetes",
        "llm_platform.targets.simulated",
    } in independent
    adapters = next(layer for layer in independent if "llm_platform.targets.local_servers" in layer)
    assert {
        "llm_platform.targets.kubernetes_cluster",
        "llm_platform.prometheus",
        "llm_platform.benchmark.runner",
    } <= adapters


def test_importing_the_core_loads_no_forbidden_package_even_transitively() -> None:
    """What third-party imports drag in: the contract's forbidden packages outside the standard library (pandas
    and pydantic themselves load ``subprocess`` and ``urllib``; our own use of those is import-linter's to see)."""
    core = _pure_core()
    forbidden = [name for name in core["forbidden_modules"] if name not in sys.stdlib_module_names]
    assert {"dagster", "kubernetes", "huggingface_hub", "requests", "matplotlib"} <= set(forbidden)
    probe = (
        "import sys\n"
        f"for module in {core['source_modules']!r}: __import__(module)\n"
        f"print(sorted(m for m in {forbidden!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
