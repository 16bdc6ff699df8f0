"""Fixtures of the wiring tier: Dagster instances for runs that execute in the test's own process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An in-memory instance: Dagster's SQL event and run storage on an in-memory SQLite, without the per-run
    database files, compute-log files and their cleanup of a directory instance (half a wiring test's time). The
    queries the platform makes of it (latest materializations, records after a storage id) are the same SQL."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def instance_on_disk(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A directory instance, for what needs an instance reference to reload (a schedule's or sensor's context)."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        yield instance
