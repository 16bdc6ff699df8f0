"""The auto-tuner on real vLLM on CPU, through Dagster: trials start real servers and bisect the load, a config
vLLM refuses is recorded and excluded, the winner is adopted past the margin and serving_config applies it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.tuning import TUNED_ASSET
from tests.conftest import ServedTiny, tiny_catalog

pytestmark = pytest.mark.integration


def test_auto_tune_adopts_a_better_config_and_serving_config_applies_it(
    served_tiny: ServedTiny, tmp_path: Path
) -> None:
    # The current config batches 2 sequences: a closed loop of 8 requests waits on it, so 8 does better.
    catalog = tiny_catalog(serving={"max_model_len": 2048, "max_num_seqs": 2, "startup_timeout_s": 300})
    assets = lifecycle_assets(catalog)
    resources = served_tiny.resources()
    search = {
        "max_num_seqs": [2, 8],
        "max_num_batched_tokens": [4, 2048],  # 4 < max_num_seqs 8: vLLM refuses to start that candidate
        "load_low": 1,
        "load_high": 8,
        "input_len": 32,
        "output_len": 16,
        "margin_pct": 10.0,
    }
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        dg.materialize(assets, selection=["model_weights"], partition_key="tiny-llama", resources=resources,
                       instance=instance)  # fmt: skip
        tuned = dg.materialize(
            assets,
            selection=[TUNED_ASSET],
            partition_key="tiny-llama",
            resources=resources,
            instance=instance,
            run_config={"ops": {TUNED_ASSET: {"config": search}}},
        )
        (event,) = tuned.asset_materializations_for_node(TUNED_ASSET)
        metadata: dict[str, Any] = {key: getattr(value, "value", value) for key, value in event.metadata.items()}
        table = event.metadata["trial_table"]
        assert isinstance(table, dg.TableMetadataValue)
        rows = [record.data for record in table.records]
        # current config, then (2, 2048) where the search starts, (8, 2048), and (8, 4) which fails.
        assert [row["trial"] for row in rows] == ["current", "t1", "t2", "t3"]
        failed = [row for row in rows if row["status"] == "failed"]
        assert len(failed) == 1 and failed[0]["max_num_batched_tokens"] == 4 and failed[0]["error"]
        assert metadata["failed_trials"] == 1 and metadata["trials"] == 3 and metadata["grid_size"] == 4
        assert metadata["adopted"] is True
        assert metadata["overrides"] == {"max_num_batched_tokens": "2048", "max_num_seqs": "8"}
        assert metadata["best_goodput_tok_s"] >= 1.1 * metadata["current_goodput_tok_s"] > 0
        assert str(metadata["pareto"]).startswith("![goodput vs p95 TTFT](data:image/png;base64,")
        assert (Path(str(metadata["artifacts"])) / "trials.csv").is_file()

        config = dg.materialize(
            assets, selection=["serving_config"], partition_key="tiny-llama", resources=resources, instance=instance
        )
        (config_event,) = config.asset_materializations_for_node("serving_config")
        assert config_event.metadata["tuned_overrides"].value == metadata["overrides"]
        serving = config_event.metadata["serving"]
        assert isinstance(serving, dg.JsonMetadataValue) and isinstance(serving.value, dict)
        assert serving.value["max_num_seqs"] == 8
        assert config_event.metadata["reason"].value == "auto_tune"
    # Trial servers are stopped; the session's promoted server still serves.
    target = served_tiny.local_target.target()
    assert [server.fingerprint for server in target.servers("tiny-llama")] == [served_tiny.fingerprint]
