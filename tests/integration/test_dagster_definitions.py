"""The Dagster code location loads the catalog; a bad catalog fails the load with the catalog's own message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_CATALOG, REPO_ROOT

pytestmark = pytest.mark.integration


def _validate(catalog: Path, dagster_home: Path) -> subprocess.CompletedProcess[str]:
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "LLM_PLATFORM_CATALOG": str(catalog), "DAGSTER_HOME": str(dagster_home)}
    return subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_code_location_loads_with_one_partition_per_model(tmp_path: Path) -> None:
    result = _validate(EXAMPLE_CATALOG, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location llm_platform" in result.stdout + result.stderr


def test_partitions_are_the_catalog_model_names() -> None:
    from llm_platform.catalog import load_catalog
    from llm_platform.definitions import build_definitions

    catalog = load_catalog(EXAMPLE_CATALOG)
    definitions = build_definitions(catalog)
    assert definitions.metadata["models"].value == ", ".join(catalog.model_names)


def test_bad_catalog_fails_the_load_with_readable_lines(tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text(yaml.safe_dump({"models": [{"name": "Llama", "source": {"repo": "a/b"}}]}))
    result = _validate(bad, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{bad}: model 'Llama': name: 'Llama' is not a DNS-1123 label" in output
