"""LoRA adapters for real: a tiny adapter of the demo model published on the local hub, downloaded beside the base's
weights by ``adapter_weights``, and served by real vLLM on CPU under its own name behind the gate."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_platform.defs.jobs import LIFECYCLE_ASSETS
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.resources import LocalTargetResource
from llm_platform.dev.tiny_model import make_tiny_adapter
from llm_platform.devhub import LocalHub, publish_model
from llm_platform.engine.vllm import VLLM_METRICS
from tests.conftest import TINY_REPO, ServedTiny, lifecycle_resources, tiny_catalog

pytestmark = pytest.mark.integration

SMALL_PLAN = {"prompts_per_level": 8, "input_len": 32, "output_len": 8, "concurrency_levels": [2], "num_warmups": 0}
PIRATE = {"name": "tiny-llama-pirate", "source": {"repo": "llm-platform/tiny-llama-pirate"}}
POET = {"name": "tiny-llama-poet", "source": {"repo": "llm-platform/tiny-llama-poet"}}


def _call(endpoint: str, key: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{endpoint}{path}", data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=120) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _text(endpoint: str, key: str, model: str) -> str:
    body = {"model": model, "prompt": "The ship sailed", "max_tokens": 24, "temperature": 0, "seed": 7}
    return str(_call(endpoint, key, "/v1/completions", body)["choices"][0]["text"])


def _served_counts(metrics_url: str) -> dict[str, float]:
    """The gate's answered requests per served name, from the server's metrics listener (vLLM's series too)."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=30) as response:
        families = {family.name: family for family in text_string_to_metric_families(response.read().decode())}
    assert VLLM_METRICS.requests_running in families  # the engine's metrics, then the gate's
    return {
        sample.labels["served_name"]: sample.value
        for sample in families["llm_platform_gate_requests"].samples
        if sample.name.endswith("_total") and sample.labels["code"] == "200"
    }


def _adapter_rows(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    (materialization,) = result.asset_materializations_for_node("adapter_weights")
    table = materialization.metadata["adapters"]
    assert isinstance(table, dg.TableMetadataValue)
    return {str(record.data["adapter"]): dict(record.data) for record in table.records}


@pytest.mark.slow(seconds=85)
def test_an_adapter_is_downloaded_beside_its_base_and_served_under_its_own_name(
    served_tiny: ServedTiny, local_hub: LocalHub, tmp_path: Path
) -> None:
    for adapter, seed in ((PIRATE, 1), (POET, 2)):
        repo = adapter["source"]["repo"]  # type: ignore[index]
        publish_model(local_hub.mirrors_root, repo, make_tiny_adapter(tmp_path / repo, TINY_REPO, seed=seed))
    target = LocalTargetResource(
        weights=served_tiny.weights,  # the session's model store: the base's weights are there already
        state_dir=str(tmp_path / "target"), file_sd_dir=str(tmp_path / "file_sd"),
        artifacts_root=str(tmp_path / "artifacts"), api_key_file=str(tmp_path / "api-key"),
    )  # fmt: skip
    resources = lifecycle_resources(target, served_tiny.weights)
    catalog = tiny_catalog(adapters=[PIRATE])
    try:
        with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
            result = dg.materialize(
                lifecycle_assets(catalog), selection=LIFECYCLE_ASSETS, partition_key="tiny-llama",
                resources=resources, run_config={"ops": {"smoke_benchmark": {"config": SMALL_PLAN}}},
                instance=instance, raise_on_error=False,
            )  # fmt: skip
            assert result.success
            (weights,) = result.asset_materializations_for_node("model_weights")
            assert weights.metadata["reused_existing_snapshot"].value is True  # the base: verified, not fetched
            (pirate,) = _adapter_rows(result).values()
            assert pirate["rank"] == 8 and pirate["downloaded_bytes"] > 0
            assert Path(pirate["path"]).parent.parent == Path(served_tiny.weights_path).parent / "adapters"
            (plan,) = result.asset_materializations_for_node("serving_plan")
            assert "does not model the overhead of the model's 1 LoRA adapter" in str(plan.metadata["lora_caveat"])
            (adapters_check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "slo_adapters"]
            judged = adapters_check.metadata["adapters"]
            assert adapters_check.passed and isinstance(judged, dg.TableMetadataValue)
            assert {record.data["served_name"] for record in judged.records} == {"tiny-llama-pirate"}
            measured = {str(record.data["slo"]): float(str(record.data["measured"])) for record in judged.records}
            assert measured["ttft_p95_ms"] > 0 and measured["min_output_tokens_per_s"] > 0
            choice = result.output_for_node("serving_config")
            assert set(choice.weights.adapter_commits) == {"tiny-llama-pirate"}
            (deployment,) = result.asset_materializations_for_node("vllm_deployment")
            args = deployment.metadata["engine_args"].value
            assert isinstance(args, list)
            assert "--enable-lora" in args and f"tiny-llama-pirate={pirate['path']}" in args

            endpoint, key = str(deployment.metadata["endpoint"].value), Path(target.api_key_file).read_text().strip()
            listed = {entry["id"] for entry in _call(endpoint, key, "/v1/models")["data"]}
            assert listed == {"tiny-llama", "tiny-llama-pirate"}
            serving = target.target().active("tiny-llama")
            assert serving is not None
            before = _served_counts(serving.metrics_url)
            assert _text(endpoint, key, "tiny-llama-pirate") != _text(endpoint, key, "tiny-llama")
            # vLLM labels its series with the engine's name only; the gate counts each served name, on one scrape.
            after = _served_counts(serving.metrics_url)
            assert {name: after[name] - before.get(name, 0) for name in after} == {
                "tiny-llama": 1,
                "tiny-llama-pirate": 1,
            }
            with pytest.raises(urllib.error.HTTPError) as refused:  # runtime adapter loading stays unreachable
                _call(endpoint, key, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"})
            assert refused.value.code == 404

            # The live benchmark measures the adapter by its name where it serves, beside its promotion's figures
            # (whether it passes depends on this machine's noise: only what was measured is asserted).
            live = dg.materialize(
                lifecycle_assets(catalog), selection=["live_benchmark"], partition_key="tiny-llama",
                resources=resources, instance=instance,
            )  # fmt: skip
            (no_regression,) = live.get_asset_check_evaluations()
            table = no_regression.metadata["served_names"]
            assert isinstance(table, dg.TableMetadataValue)
            live_rows = {str(row.data["served_name"]): row.data for row in table.records}
            assert set(live_rows) == {"tiny-llama", "tiny-llama-pirate"}
            assert float(str(live_rows["tiny-llama-pirate"]["output_throughput_at_promotion"])) > 0

            # A second adapter: only it is fetched; the first and the base are verified where they are.
            more = dg.materialize(
                lifecycle_assets(tiny_catalog(adapters=[PIRATE, POET])), selection=["adapter_weights"],
                partition_key="tiny-llama", resources=resources, instance=instance,
            )  # fmt: skip
            rows = _adapter_rows(more)
            assert (
                rows["tiny-llama-pirate"]["downloaded_bytes"] == 0 and rows["tiny-llama-poet"]["downloaded_bytes"] > 0
            )
    finally:
        target.target().stop("tiny-llama")
