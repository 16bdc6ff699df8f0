"""Shared fixtures: the repository paths and the example catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_platform.catalog import Catalog, load_catalog
from llm_platform.devhub import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CATALOG = REPO_ROOT / "catalog" / "models.yaml"


@pytest.fixture(scope="session")
def example_catalog() -> Catalog:
    return load_catalog(EXAMPLE_CATALOG)


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One olah process for the session, serving git repositories published under its mirrors directory."""
    root = tmp_path_factory.mktemp("local-hub")
    with LocalHub(root / "mirrors", log_path=root / "olah.log") as hub:
        yield hub
