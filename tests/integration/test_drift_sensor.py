"""The tuning-drift sensor through Dagster's ``build_sensor_context`` against a protocol-level Prometheus, for
precise control of what each tick reads (the labelled scenarios against a real Prometheus are in
``test_drift_scenarios.py``); and the new-revision sensor against a protocol-level hub."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.definitions import build_definitions
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.sensors import build_drift_sensor
from llm_platform.defs.values import BenchmarkOutcome, DeploymentRecord, ServingChoice
from llm_platform.prometheus import QUERIES_PER_SNAPSHOT, Lookback, recorded_snapshot_query
from llm_platform.targets.base import Deployment
from llm_platform.tuning.policy import TuningLimits
from llm_platform.weights.plan import SnapshotManifest
from tests.deployments import record_deployment
from tests.fakeprom import FakePrometheus

pytestmark = pytest.mark.integration

CALM = {
    "coverage": 1.0,
    "age_s": 10.0,
    "kv_cache_usage": 0.4,
    "preemptions_per_s": 0.0,
    "waiting": 0.0,
    "replicas": 1.0,
    "requests": 5000.0,
    "prompt_tokens_p999": 3000.0,
    "generation_tokens_p999": 800.0,
}
SATURATED = {**CALM, "kv_cache_usage": 0.99, "preemptions_per_s": 0.4}


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
            "platform": {"gpu_quota": 8},
            "models": [
                {"name": "hot", "source": {"repo": "a/hot"}, "serving": serving},
                {"name": "calm", "source": {"repo": "a/calm"}, "serving": serving},
                {"name": "busy", "source": {"repo": "a/busy"}, "serving": serving,
                 "autoscaling": {"min_replicas": 1, "max_replicas": 2}},
            ],
        }
    )  # fmt: skip


def _skipped(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None and result.skip_reason.skip_message is not None
    return result.skip_reason.skip_message


def _tick(
    catalog: Catalog, instance: dg.DagsterInstance, url: str, cursor: str | None, at: float | None = None
) -> dg.SensorResult:
    sensor = build_drift_sensor(catalog, clock=(lambda: at) if at is not None else time.time)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"prometheus": PrometheusResource(url=url)}
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _serving(catalog: Catalog, name: str, **changes: object) -> dict[str, object]:
    return {**catalog.model(name).serving.model_dump(mode="json"), **changes}


def test_no_deployment_no_queries(catalog: Catalog, prometheus: FakePrometheus) -> None:
    with dg.instance_for_test() as instance:
        result = _tick(catalog, instance, prometheus.url, None)
    assert _skipped(result) == "no model is deployed yet"
    assert prometheus.queries == []


def test_a_sustained_saturation_requests_a_promotion_at_once_then_cools_down(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    prometheus.models = {"hot": SATURATED, "calm": CALM}
    prometheus.recording, prometheus.evaluated_at = True, time.time()
    with dg.instance_for_test() as instance:
        # "hot" runs with an earlier override (max_num_seqs 48): the new request must keep it.
        record_deployment(instance, "hot", _serving(catalog, "hot", max_num_seqs=48))
        record_deployment(instance, "calm", _serving(catalog, "calm"))
        first = _tick(catalog, instance, prometheus.url, None)

        (request,) = first.run_requests or []
        assert request.partition_key == "hot"
        assert request.tags["llm-platform/rule"] == "kv_saturation"
        config = request.run_config["ops"]["serving_config"]["config"]
        assert config["overrides"] == {"max_num_seqs": "48", "gpu_memory_utilization": "0.92"}
        # The snapshot has the whole lookback only (no shorter tier windows): judged as mild, over 30 minutes.
        assert config["reason"] == (
            "kv_saturation: KV cache saturated (99%, 0.40 preemptions/s) for 75% of the last 30 min (mild)"
        )
        assert len(prometheus.queries) == QUERIES_PER_SNAPSHOT  # every model, one request: the recorded snapshot

        cursor = first.cursor
        later = _tick(catalog, instance, prometheus.url, cursor)  # still saturated: the cooldown holds it back
        assert not later.run_requests
        assert "hot: KV cache saturated" in _skipped(later) and "not yet: cooldown" in _skipped(later)
        assert "calm: no_change (the config fits the traffic) [coverage=1" in _skipped(later)
        assert json.loads(later.cursor or "{}")["changes"]["hot"]


def test_without_the_recording_rules_the_tick_evaluates_the_raw_series_and_decides_alike(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    prometheus.models = {"hot": SATURATED, "calm": CALM}
    with dg.instance_for_test() as instance:
        record_deployment(instance, "hot", _serving(catalog, "hot"))
        (request,) = _tick(catalog, instance, prometheus.url, None).run_requests or []
    assert request.partition_key == "hot" and request.tags["llm-platform/rule"] == "kv_saturation"
    recorded, raw = prometheus.queries
    assert recorded.startswith("llm_platform:drift_snapshot{") and "quantile_over_time" in raw


def test_behind_a_query_frontend_the_recorded_snapshot_is_read_through_the_query_api(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    """Where ``/federate`` is not served (Thanos Query, Mimir), the same recorded series through ``/api/v1/query``:
    the same decision, from one query."""
    prometheus.models = {"hot": SATURATED, "calm": CALM}
    prometheus.recording, prometheus.evaluated_at, prometheus.federation = True, time.time(), False
    with dg.instance_for_test() as instance:
        record_deployment(instance, "hot", _serving(catalog, "hot"))
        record_deployment(instance, "calm", _serving(catalog, "calm"))
        (request,) = _tick(catalog, instance, prometheus.url, None).run_requests or []
    assert request.partition_key == "hot" and request.tags["llm-platform/rule"] == "kv_saturation"
    assert prometheus.queries == [recorded_snapshot_query(Lookback.of(TuningLimits(), catalog.platform.namespace))]


@pytest.mark.parametrize("federation", [True, False], ids=["federation", "query API"])
def test_a_recorded_snapshot_is_as_old_as_its_evaluation(
    catalog: Catalog, prometheus: FakePrometheus, federation: bool
) -> None:
    """The rules ran 320 s before the tick on samples 10 s old: the newest sample is 330 s old, past the freshness
    floor, so the sensor waits instead of acting on a stale recording (each route dates the samples its way)."""
    now = time.time()
    prometheus.models = {"hot": SATURATED}
    prometheus.recording, prometheus.evaluated_at, prometheus.federation = True, now - 320, federation
    with dg.instance_for_test() as instance:
        record_deployment(instance, "hot", _serving(catalog, "hot"))
        result = _tick(catalog, instance, prometheus.url, None, at=now)
    assert not result.run_requests
    assert "hot: skip (the newest sample is 330 s old)" in _skipped(result), _skipped(result)


def test_a_young_config_missing_series_and_an_unreachable_prometheus_are_skips(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    prometheus.models = {"hot": SATURATED}
    with dg.instance_for_test() as instance:
        record_deployment(instance, "hot", _serving(catalog, "hot"), age_s=300)
        record_deployment(instance, "calm", _serving(catalog, "calm"))
        result = _tick(catalog, instance, prometheus.url, None)
        assert not result.run_requests
        assert "hot: skip (the config was deployed 5 min ago; waiting for 30 min of its own data)" in _skipped(result)
        assert "calm: skip (data for only 0% of the last 30 min)" in _skipped(result)
        down = _tick(catalog, instance, "http://127.0.0.1:9", None)
    assert _skipped(down).startswith("metrics unavailable: Prometheus at http://127.0.0.1:9 is ")


def test_queue_at_the_ceiling_with_a_full_cache_raises_max_replicas_within_the_quota(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    full = {**SATURATED, "replicas": 2.0, "waiting": 40.0}
    prometheus.models = {"busy": full}
    with dg.instance_for_test() as instance:
        record_deployment(instance, "busy", _serving(catalog, "busy"))
        result = _tick(catalog, instance, prometheus.url, None)
    (request,) = result.run_requests or []
    assert request.tags["llm-platform/rule"] == "capacity"
    # 8 GPUs, the two other models keep one each, one surge replica: 8 - 2 - 1 = 5.
    assert request.run_config["ops"]["serving_config"]["config"]["overrides"] == {"autoscaling.max_replicas": "5"}


def test_a_proposal_past_the_models_position_limit_is_a_skip_with_the_reason(
    catalog: Catalog, prometheus: FakePrometheus
) -> None:
    crowded = {**CALM, "prompt_tokens_p999": 3900.0}  # >= 90 % of 4096: the rule would double it to 8192
    prometheus.models = {"hot": crowded}
    model = catalog.model("hot")
    weights = SnapshotManifest(
        model="hot", repo="a/hot", requested_revision="main", sha="a" * 40, files=(), total_bytes=0,
        downloaded_bytes=0, duration_s=0, completed_at=datetime.now(UTC), max_position_tokens=4096,
    )  # fmt: skip
    outcome = BenchmarkOutcome(pd.DataFrame(), "x", True, BenchmarkPlan(concurrency_levels=(1,)))
    record = DeploymentRecord(ServingChoice(model, weights), Deployment("http://x", "http://x", "r"), outcome)
    with dg.instance_for_test() as instance:
        record_deployment(instance, "hot", _serving(catalog, "hot"), stored=record)
        result = _tick(catalog, instance, prometheus.url, None)
    assert not result.run_requests
    assert "hot: p99.9 prompt length 3900 tokens crowds max_model_len 4096" in _skipped(result)
    assert (
        "proposal refused: tuning_drift_sensor: model 'hot': serving.max_model_len: 8192 exceeds the model's position "
        "limit of 4096 tokens; set it to 4096 or less"
    ) in _skipped(result)


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


def test_the_revision_sensor_asks_the_hub_the_catalog_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """One settings tree: the code location's revision sensor asks ``platform.hf_endpoint`` (as the download Job
    does), and ``$HF_ENDPOINT`` overrides it for both or for neither."""
    from llm_platform.defs.resources import resources_from_env
    from llm_platform.defs.sensors import REVISION_SENSOR_NAME
    from tests.fakehub import FakeHub, FakeRepo

    catalog_hub, env_hub = FakeHub().start(), FakeHub().start()
    try:
        for hub in (catalog_hub, env_hub):
            hub.repos["acme/tracked"] = FakeRepo({"config.json": f'{{"hub": "{hub.endpoint}"}}'.encode()})
        catalog = parse_catalog(
            {
                "platform": {"hf_endpoint": catalog_hub.endpoint},
                "models": [{"name": "tracked", "source": {"repo": "acme/tracked", "track_revision": True}}],
            }
        )
        for override, asked in ((None, catalog_hub), (env_hub.endpoint, env_hub)):
            if override is None:
                monkeypatch.delenv("HF_ENDPOINT", raising=False)
            else:
                monkeypatch.setenv("HF_ENDPOINT", override)
            resources = resources_from_env(catalog.platform, "local")
            sensor = build_definitions(catalog).get_sensor_def(REVISION_SENSOR_NAME)
            with dg.instance_for_test() as instance:
                result = sensor(dg.build_sensor_context(instance=instance, resources={"weights": resources["weights"]}))
            assert isinstance(result, dg.SensorResult)
            (request,) = result.run_requests or []
            assert request.run_key == f"tracked:{asked.repos['acme/tracked'].sha}"  # the commit of that hub
    finally:
        catalog_hub.stop()
        env_hub.stop()


def test_tracking_needs_a_branch() -> None:
    from llm_platform.errors import CatalogError

    with pytest.raises(CatalogError, match="track_revision needs a repository and a branch or tag"):
        parse_catalog({"models": [{"name": "m", "source": {"repo": "a/b", "revision": "0" * 40,
                                                               "track_revision": True}}]})  # fmt: skip
