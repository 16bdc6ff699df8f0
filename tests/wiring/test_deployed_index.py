"""The drift sensor's view of the deployments: a cold start reads every model's latest deployment, a warm tick reads
only what is newer than the cursor's mark, and a mark this process has not seen (or an old view) rebuilds."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from llm_platform.catalog import parse_catalog
from llm_platform.defs.deployed import DeployedIndex
from llm_platform.defs.sensors import _deployed_model
from tests.deployments import record_deployment

CATALOG = parse_catalog({"models": [{"name": n, "source": {"repo": f"acme/{n}"}} for n in ("a", "b", "c")]})
MODELS = {model.name: model for model in CATALOG.models}


def _serving(**changes: object) -> dict[str, object]:
    return {**MODELS["a"].serving.model_dump(mode="json"), **changes}


def test_warm_ticks_read_only_newer_deployments_and_cold_ones_rebuild(tmp_path: Path) -> None:
    now = [0.0]
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for name in ("a", "b"):
            record_deployment(instance, name, _serving())
        index = DeployedIndex(MODELS, _deployed_model, refresh_s=600, clock=lambda: now[0])
        cold = index.read(instance, None)
        assert set(cold.deployed) == {"a", "b"} and cold.records_read == 2 and cold.mark is not None

        warm = index.read(instance, cold.mark)
        assert warm.records_read == 0 and warm.deployed.keys() == cold.deployed.keys() and warm.mark == cold.mark

        record_deployment(instance, "b", _serving(max_num_seqs=64))
        record_deployment(instance, "c", _serving(), age_s=60)
        newer = index.read(instance, warm.mark)
        assert newer.records_read == 2 and newer.mark is not None and newer.mark > cold.mark
        assert newer.deployed["b"].model.serving.max_num_seqs == 64 and "c" in newer.deployed
        assert newer.deployed["a"] == cold.deployed["a"]

        # A mark this process has not seen (another code server's tick), or a view older than refresh_s: rebuilt.
        assert DeployedIndex(MODELS, _deployed_model).read(instance, newer.mark).records_read == 3
        now[0] = 601.0
        rebuilt = index.read(instance, newer.mark)
        assert rebuilt.records_read == 3 and rebuilt.deployed["b"].model.serving.max_num_seqs == 64
