"""The ``model_weights`` asset, materialized through Dagster against a hub, with the token kept out of everything."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.defs.partitions import model_partitions
from llm_platform.defs.resources import LocalTargetResource, WeightsResource
from llm_platform.defs.weights import build_weights_asset
from llm_platform.weights.plan import SnapshotManifest
from tests.conftest import lifecycle_resources
from tests.fakehub import FakeHub, FakeRepo

pytestmark = pytest.mark.integration
TOKEN = "hf_" + "AbCdEf0123" * 4


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub().start()
    server.repos["acme/gated"] = FakeRepo(
        {"config.json": b'{"max_position_embeddings": 4096}', "model.safetensors": os.urandom(300_000)}, gated=True
    )
    server.faults.required_token = TOKEN
    yield server
    server.stop()


@pytest.fixture
def catalog() -> Catalog:
    return parse_catalog(
        {
            "models": [
                {"name": "gated", "source": {"repo": "acme/gated"}, "owners": ["team:ml-platform"]},
                {"name": "missing", "source": {"repo": "acme/missing"}},
            ]
        }
    )


def _materialize(
    catalog: Catalog, partition: str, resource: WeightsResource, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    asset = build_weights_asset(catalog, model_partitions(catalog))
    return dg.materialize(
        [asset],
        partition_key=partition,
        resources=lifecycle_resources(LocalTargetResource(weights=resource), resource),
        instance=instance,
        raise_on_error=False,
    )


def _everything_dagster_wrote(home: Path, instance: dg.DagsterInstance) -> str:
    """Every event of every run (as stored) and every file under DAGSTER_HOME (logs, sqlite, compute logs)."""
    texts = [dg.serialize_value(entry) for run in instance.get_runs() for entry in instance.all_logs(run.run_id)]
    for path in home.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
    return "\n".join(texts)


def test_materializes_weights_with_metadata_and_never_records_the_token(
    hub: FakeHub, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    resource = WeightsResource(
        store_path=str(tmp_path / "store"), hf_endpoint=hub.endpoint, hf_token=dg.EnvVar("HF_TOKEN")
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = _materialize(catalog, "gated", resource, instance)
        assert result.success
        manifest = result.output_for_node("model_weights")
        assert isinstance(manifest, SnapshotManifest)
        sha = hub.repos["acme/gated"].sha
        assert manifest.sha == sha
        (materialization,) = result.asset_materializations_for_node("model_weights")
        metadata = materialization.metadata
        assert metadata["revision_sha"].value == sha
        assert metadata["file_count"].value == 2
        assert metadata["total_bytes"].value == 300_000 + 33
        assert metadata["store_path"].value == str(tmp_path / "store" / "gated" / sha)
        files = metadata["files"]
        assert isinstance(files, dg.TableMetadataValue)
        assert [row.data["path"] for row in files.records] == ["config.json", "model.safetensors"]
        assert materialization.tags is not None and materialization.tags["dagster/data_version"] == sha

        # Materialized again: same commit, verified, nothing downloaded.
        served = sum(hub.served.values())
        again = _materialize(catalog, "gated", resource, instance)
        (second,) = again.asset_materializations_for_node("model_weights")
        assert second.metadata["reused_existing_snapshot"].value is True
        assert sum(hub.served.values()) == served

        assert hub.tokens_seen == {TOKEN}
        assert TOKEN not in _everything_dagster_wrote(home, instance)


def test_hub_errors_fail_the_run_with_one_readable_line(hub: FakeHub, catalog: Catalog, tmp_path: Path) -> None:
    resource = WeightsResource(store_path=str(tmp_path / "store"), hf_endpoint=hub.endpoint, hf_token=TOKEN)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = _materialize(catalog, "missing", resource, instance)
        assert not result.success
        (failure,) = [event for event in result.all_events if event.is_step_failure]
        error = failure.step_failure_data.error
        assert error is not None
        assert "model 'missing': repository 'acme/missing' not found" in error.message
        assert TOKEN not in _everything_dagster_wrote(tmp_path / "home", instance)
        assert not (tmp_path / "store" / "missing").exists()
