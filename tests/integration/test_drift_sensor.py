"""The tuning-drift sensor through Dagster's ``build_sensor_context``, against a protocol-level Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import pytest

from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.sensors import build_drift_sensor
from llm_platform.prometheus import QUERIES_PER_SNAPSHOT
from tests.fakeprom import FakePrometheus

pytestmark = pytest.mark.integration

SATURATED = {
    "kv_cache_usage_max": 0.99,
    "preemptions_per_s": 0.4,
    "waiting_avg": 0.0,
    "replicas": 1,
    "prompt_tokens_p999": 3000,
    "generation_tokens_p999": 800,
}
CALM = {**SATURATED, "kv_cache_usage_max": 0.4, "preemptions_per_s": 0.0}


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus().start()
    yield server
    server.stop()


@pytest.fixture
def catalog() -> Catalog:
    serving = {"max_model_len": 4096, "max_num_seqs": 64}
    return parse_catalog(
        {
            "models": [
                {"name": "hot", "source": {"repo": "a/hot"}, "serving": serving},
                {"name": "calm", "source": {"repo": "a/calm"}, "serving": serving},
            ]
        }
    )


def _deploy(instance: dg.DagsterInstance, model: str, serving: dict[str, object]) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "vllm_deployment", partition=model, metadata={"serving": dg.MetadataValue.json(serving)}
        )
    )


def _skipped(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None and result.skip_reason.skip_message is not None
    return result.skip_reason.skip_message


def _tick(catalog: Catalog, instance: dg.DagsterInstance, url: str, cursor: str | None) -> dg.SensorResult:
    sensor = build_drift_sensor(catalog)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"prometheus": PrometheusResource(url=url)}
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_no_deployment_no_queries(catalog: Catalog, prometheus: FakePrometheus) -> None:
    with dg.instance_for_test() as instance:
        result = _tick(catalog, instance, prometheus.url, None)
    assert _skipped(result) == "no model is deployed yet"
    assert prometheus.queries == []


def test_sustained_saturation_requests_a_promotion_once_then_cools_down(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    prometheus.models = {"hot": SATURATED, "calm": CALM}
    with dg.instance_for_test() as instance:
        # "hot" runs with an earlier override (max_num_seqs 48): the new request must keep it.
        _deploy(instance, "hot", {**catalog.model("hot").serving.model_dump(mode="json"), "max_num_seqs": 48})
        _deploy(instance, "calm", catalog.model("calm").serving.model_dump(mode="json"))
        cursor = None
        reasons = []
        for _ in range(2):
            result = _tick(catalog, instance, prometheus.url, cursor)
            assert not result.run_requests
            reasons.append(_skipped(result))
            cursor = result.cursor
        assert "hot: skip (2 of 3 windows collected)" in reasons[-1]
        third = _tick(catalog, instance, prometheus.url, cursor)

        (request,) = third.run_requests or []
        assert request.partition_key == "hot"
        assert request.tags["llm-platform/rule"] == "kv_saturation"
        config = request.run_config["ops"]["serving_config"]["config"]
        assert config["overrides"] == {"max_num_seqs": "48", "gpu_memory_utilization": "0.92"}
        assert config["reason"].startswith("kv_saturation: KV cache saturated (99%) with 0.40 preemptions/s")
        assert request.run_key is not None and request.run_key.startswith("hot:kv_saturation:")
        assert len(prometheus.queries) == 3 * QUERIES_PER_SNAPSHOT  # two models, a fixed number per tick

        cursor = third.cursor
        for _ in range(3):  # still saturated: the cooldown holds the next change back
            later = _tick(catalog, instance, prometheus.url, cursor)
            cursor = later.cursor
        assert not later.run_requests
        assert "not yet: cooldown" in _skipped(later)
        assert "calm: no_change (the config fits the traffic) [kv_cache_usage_max=0.4" in _skipped(later)
        assert json.loads(cursor or "{}")["changes"]["hot"]


def test_missing_series_and_unreachable_prometheus_are_skipped_with_the_reason(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    prometheus.models = {"hot": {**SATURATED, "prompt_tokens_p999": float("nan")}}
    with dg.instance_for_test() as instance:
        _deploy(instance, "hot", catalog.model("hot").serving.model_dump(mode="json"))
        cursor = None
        for _ in range(3):
            result = _tick(catalog, instance, prometheus.url, cursor)
            cursor = result.cursor
        assert not result.run_requests
        assert "hot: skip (no data for prompt_tokens_p999)" in _skipped(result)
        down = _tick(catalog, instance, "http://127.0.0.1:9", cursor)
    assert _skipped(down).startswith("metrics unavailable: Prometheus at http://127.0.0.1:9 is ")
