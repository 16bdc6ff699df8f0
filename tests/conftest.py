"""Shared fixtures: the repository paths and the example catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_platform.catalog import Catalog, load_catalog

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CATALOG = REPO_ROOT / "catalog" / "models.yaml"


@pytest.fixture(scope="session")
def example_catalog() -> Catalog:
    return load_catalog(EXAMPLE_CATALOG)
