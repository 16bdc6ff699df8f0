"""The tuning-drift sensor through Dagster's ``build_sensor_context``: against a protocol-level Prometheus for
precise control of each tick, and against a real Prometheus holding a backfilled half hour of vLLM series."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.sensors import build_drift_sensor
from llm_platform.dev.promtrace import Behaviour, backfill, openmetrics
from llm_platform.processes import free_port
from llm_platform.prometheus import QUERIES_PER_SNAPSHOT, PrometheusClient
from llm_platform.services import LocalServices
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
                {"name": "oom", "source": {"repo": "a/oom"}, "serving": serving},
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


def test_a_scripted_half_hour_in_a_real_prometheus_drives_the_sensor(catalog: Catalog, tmp_path: Path) -> None:
    """30 minutes of vLLM-named series backfilled into a real Prometheus (promtool): 'hot' saturates its KV cache
    with preemptions and sees short requests, 'oom' is OOM-killed every 5 minutes (kube-state-metrics' series),
    'calm' fits; the real client reads them in one query and the sensor acts on both."""
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.skip("prometheus/promtool are not installed (make test installs the Debian package)")
    now = time.time()
    scenario = {
        "hot": Behaviour(kv_cache_usage=0.99, preemptions_per_s=0.5, prompt_tokens=3000, generation_tokens=500),
        "calm": Behaviour(kv_cache_usage=0.4, prompt_tokens=3000, generation_tokens=500, oom_kills_per_hour=0),
        "oom": Behaviour(kv_cache_usage=0.5, prompt_tokens=3000, generation_tokens=500, oom_kills_per_hour=12),
    }
    services = LocalServices(tmp_path)
    backfill(openmetrics(scenario, now - 1800, now - 5), tmp_path / "prometheus" / "data")
    record = services.start_prometheus(tmp_path / "file_sd", port=free_port())
    try:
        client = PrometheusClient(record.url)
        snapshot = client.snapshot(window="5m")
        assert client.queries_sent == QUERIES_PER_SNAPSHOT == 1
        hot = snapshot["hot"]
        assert (hot.kv_cache_usage_max, hot.replicas, hot.waiting_avg) == (0.99, 1, 0)
        assert hot.preemptions_per_s == pytest.approx(0.5, rel=0.05)
        assert hot.prompt_tokens_p999 == pytest.approx(3072, rel=0.01)  # the bucket holding 3000
        assert snapshot["calm"].missing() == [] and snapshot["calm"].kv_cache_usage_max == 0.4
        # kube-state-metrics: one OOM kill in the window, none for 'calm', no series at all for 'hot'.
        assert snapshot["oom"].oom_restarts == pytest.approx(1, rel=0.05)
        assert snapshot["calm"].oom_restarts == 0 and math.isnan(hot.oom_restarts)
        with dg.instance_for_test() as instance:
            for name in scenario:
                _deploy(instance, name, catalog.model(name).serving.model_dump(mode="json"))
            cursor = None
            for _ in range(3):
                result = _tick(catalog, instance, record.url, cursor)
                cursor = result.cursor
    finally:
        services.stop("prometheus")
    requests = {str(request.partition_key): request for request in result.run_requests or []}
    assert sorted(requests) == ["hot", "oom"]
    assert requests["hot"].run_config["ops"]["serving_config"]["config"]["overrides"] == {
        "gpu_memory_utilization": "0.92"
    }
    assert requests["oom"].tags["llm-platform/rule"] == "oom_restarts"
    assert requests["oom"].run_config["ops"]["serving_config"]["config"]["overrides"] == {
        "gpu_memory_utilization": "0.85"
    }


def test_new_revision_sensor_runs_the_lifecycle_once_per_new_commit() -> None:
    from llm_platform.defs.resources import WeightsResource
    from llm_platform.defs.sensors import build_revision_sensor
    from tests.fakehub import FakeHub, FakeRepo

    hub = FakeHub().start()
    try:
        hub.repos["acme/tracked"] = FakeRepo({"config.json": b"{}"})
        catalog = parse_catalog(
            {
                "models": [
                    {"name": "tracked", "source": {"repo": "acme/tracked", "track_revision": True}},
                    {"name": "pinned", "source": {"repo": "acme/pinned"}},
                ]
            }
        )
        sensor = build_revision_sensor(catalog)
        resources = {"weights": WeightsResource(hf_endpoint=hub.endpoint)}
        with dg.instance_for_test() as instance:
            first = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert isinstance(first, dg.SensorResult)
            (request,) = first.run_requests or []
            sha = hub.repos["acme/tracked"].sha
            assert (request.partition_key, request.run_key) == ("tracked", f"tracked:{sha}")
            assert request.run_config["ops"]["model_weights"] == {"config": {"revision": sha}}
            instance.report_runless_asset_event(
                dg.AssetMaterialization("model_weights", partition="tracked", metadata={"revision_sha": sha})
            )
            again = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert isinstance(again, dg.SensorResult) and not again.run_requests
            assert _skipped(again) == f"tracked: main is still {sha[:12]}"
            hub.repos["acme/tracked"] = FakeRepo({"config.json": b'{"v": 2}'})  # the branch moves
            moved = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert isinstance(moved, dg.SensorResult)
            (request,) = moved.run_requests or []
            assert request.run_key == f"tracked:{hub.repos['acme/tracked'].sha}"
            hub.faults.statuses = [503] * 20
            down = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert isinstance(down, dg.SensorResult)
            assert "tracked: model 'tracked'" in _skipped(down)
    finally:
        hub.stop()


def test_tracking_needs_a_branch() -> None:
    from llm_platform.errors import CatalogError

    with pytest.raises(CatalogError, match="track_revision needs a repository and a branch or tag"):
        parse_catalog({"models": [{"name": "m", "source": {"repo": "a/b", "revision": "0" * 40,
                                                               "track_revision": True}}]})  # fmt: skip
