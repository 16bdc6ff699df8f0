"""Canary promotions through ``vllm_deployment`` on the fake target, judged on a protocol-level Prometheus's
per-track figures: the steps and their weights, the per-step metadata, an abort leaving what served, and a canary
left behind by a dead run rolled back before the next promotion. The clock is the fake cluster's (no test sleeps)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.defs.jobs import LIFECYCLE_ASSETS, PROMOTE_ASSETS
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.resources import PrometheusResource, WeightsResource
from llm_platform.defs.storage import InstanceValueIOManager
from tests.fakeprom import FakePrometheus
from tests.faketarget import CLUSTERS, FakeCanary, FakeCluster, FakeTargetResource

MODEL = "tiny"
SMALL = {"prompts_per_level": 8, "concurrency_levels": [1, 4], "num_warmups": 0}
ROLLOUT = {"strategy": "canary", "steps": [10, 50, 100], "step_seconds": 60, "min_requests": 20,
           "max_wait_seconds": 120}  # fmt: skip
GOOD: dict[str, float] = {"requests": 40, "ttft_p95_ms": 300, "itl_p95_ms": 20, "error_ratio": 0,
                          "output_tokens_per_s": 90}  # fmt: skip
_names = itertools.count()


def _catalog() -> Catalog:
    return parse_catalog({"models": [{
        "name": MODEL, "source": {"repo": "acme/tiny"}, "serving": {"max_model_len": 2048, "max_num_seqs": 32},
        "slo": {"ttft_p95_ms": 2000, "itl_p95_ms": 100, "min_output_tokens_per_s": 10, "max_error_rate": 0.01},
        "exposure": {"host": "tiny.example.com", "tls_secret": "tiny-tls"}, "rollout": ROLLOUT,
    }]})  # fmt: skip


class Rig:
    """The fake cluster, the fake Prometheus and an instance; the model already serves its catalog config."""

    def __init__(self, cluster: FakeCluster, name: str, prometheus: FakePrometheus, instance: dg.DagsterInstance,
                 tmp: Path) -> None:  # fmt: skip
        self.cluster, self.prometheus, self.instance = cluster, prometheus, instance
        self.resources = {
            "io_manager": InstanceValueIOManager(),
            "target": FakeTargetResource(cluster=name, artifacts_root=str(tmp / "artifacts")),
            "weights": WeightsResource(),
            "prometheus": PrometheusResource(url=prometheus.url),
        }
        first = self.run(LIFECYCLE_ASSETS, {"smoke_benchmark": {"config": SMALL}})
        assert first.success
        self.first_run = first.run_id  # nothing served before: promoted directly, no canary to compare
        assert "canary" not in " ".join(cluster.calls)

    def run(self, selection: list[str], ops: dict[str, Any]) -> dg.ExecuteInProcessResult:
        return dg.materialize(lifecycle_assets(_catalog()), selection=selection, partition_key=MODEL,
                              resources=self.resources, run_config={"ops": ops}, instance=self.instance,
                              raise_on_error=False)  # fmt: skip

    def promote(self, max_num_seqs: int) -> dg.ExecuteInProcessResult:
        config = {"overrides": {"max_num_seqs": str(max_num_seqs)}, "reason": "test"}
        return self.run(PROMOTE_ASSETS, {"serving_config": {"config": config}, "smoke_benchmark": {"config": SMALL}})


@pytest.fixture
def rig(tmp_path: Path, instance: dg.DagsterInstance) -> Iterator[Rig]:
    name = f"canary-{next(_names)}"
    CLUSTERS[name] = FakeCluster()
    prometheus = FakePrometheus().start()
    try:
        yield Rig(CLUSTERS[name], name, prometheus, instance, tmp_path)
    finally:
        prometheus.stop()
        del CLUSTERS[name]


class Failed:
    """The step failure of a run: its one line and its metadata (the rollout's table)."""

    def __init__(self, result: dg.ExecuteInProcessResult) -> None:
        (event,) = [event for event in result.all_events if event.is_step_failure]
        data = event.step_failure_data.user_failure_data
        assert data is not None, event.step_failure_data.error
        self.description = str(data.description)
        self.metadata = data.metadata

    def verdicts(self) -> list[object]:
        table = self.metadata["canary_steps"]
        assert isinstance(table, dg.TableMetadataValue)
        return [record.data["verdict"] for record in table.records]


def test_a_good_canary_takes_every_step_and_then_serves(rig: Rig) -> None:
    rig.prometheus.tracks = {"stable": GOOD, "canary": GOOD}
    before = rig.cluster.clock[0]
    result = rig.promote(max_num_seqs=16)
    assert result.success
    assert rig.cluster.canary_weights[MODEL] == [10, 50, 100]
    assert rig.cluster.deployed[MODEL][1].max_num_seqs == 16 and rig.cluster.canaries == {}
    assert rig.cluster.clock[0] - before == 3 * 60  # each step waited its step_seconds, on the fake clock
    (event,) = result.asset_materializations_for_node("vllm_deployment")
    table = event.metadata["canary_steps"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [(r.data["weight_pct"], r.data["verdict"]) for r in table.records] == [(10, "pass"), (50, "pass"),
                                                                                (100, "pass")]  # fmt: skip
    first = table.records[0].data
    assert first["canary_p95_ttft_ms"] == 300 and "stable 40 requests" in str(first["reason"])
    assert event.metadata["canary_outcome"].value == "promoted"
    # The judge asked Prometheus for the step's own window, by track.
    assert any("[60s]" in query and '"track"' in query for query in rig.prometheus.queries)


def test_a_slower_canary_is_aborted_with_the_judges_figures_and_the_stable_config_stays(rig: Rig) -> None:
    served_before = rig.cluster.deployed[MODEL]
    rig.prometheus.tracks = {"stable": GOOD, "canary": {**GOOD, "ttft_p95_ms": 900}}
    result = rig.promote(max_num_seqs=1)
    assert not result.success
    failure = Failed(result)
    assert failure.description.startswith(
        f"model '{MODEL}': canary aborted at step 10 % after 60 s: canary p95 TTFT 900 ms is 200 % above stable's "
        "300 ms (margin 20 %) (canary 40 requests, p95 TTFT 900 ms"
    )
    assert "stable 40 requests, p95 TTFT 300 ms" in failure.description
    assert failure.description.endswith("; the stable version serves as before")
    assert failure.verdicts() == ["abort"]
    assert rig.cluster.canary_weights[MODEL] == [10, 0]  # withdrawn at once
    assert rig.cluster.deployed[MODEL] == served_before and rig.cluster.canaries == {}
    assert rig.cluster.calls[-1] == f"abort {MODEL}"


def test_too_little_traffic_holds_then_aborts_at_the_deadline(rig: Rig) -> None:
    rig.prometheus.tracks = {"stable": GOOD, "canary": {**GOOD, "requests": 3}}
    failure = Failed(rig.promote(max_num_seqs=16))
    assert "canary aborted at step 10 % after 180 s: too little traffic to judge (3 requests" in failure.description
    assert failure.verdicts() == ["hold", "hold", "abort"]  # re-judged every step_seconds until step + max_wait


def test_a_canary_left_by_a_dead_run_is_rolled_back_before_the_next_promotion(rig: Rig) -> None:
    rig.prometheus.tracks = {"stable": GOOD, "canary": GOOD}
    target = rig.resources["target"].serving_target(_catalog().platform)  # type: ignore[attr-defined]
    model = (
        _catalog()
        .model(MODEL)
        .model_copy(update={"serving": _catalog().model(MODEL).serving.model_copy(update={"max_num_seqs": 8})})
    )
    manifest = target.materialize_weights(model, "main").manifest
    left = target.start_canary(model, manifest, owner="run-that-died")
    assert isinstance(left, FakeCanary)
    left.set_weight(10)
    # A live owner: the next promotion refuses to start a second rollout of the model.
    refused = rig.promote(max_num_seqs=16)
    assert "a canary rollout (fake canary at 10 %, run run-that-died) is in progress" in Failed(refused).description
    rig.cluster.clock[0] += 2 * 60 + 61  # the owner has been silent for two steps and a minute: it died
    result = rig.promote(max_num_seqs=16)
    assert result.success
    assert rig.cluster.canary_weights[MODEL] == [10, 0, 10, 50, 100]  # rolled back, then the new rollout
    logs = [record.user_message for record in rig.instance.all_logs(result.run_id)]
    assert any("rolled back the canary fake canary (at 10 %) left by run run-that-died" in str(line) for line in logs)


def test_a_canary_no_run_drives_is_rolled_back_by_a_run_the_sensor_requests(rig: Rig) -> None:
    from dagster._core.storage.tags import PARTITION_NAME_TAG

    from llm_platform.defs.canary import build_canary_rollback_job
    from llm_platform.defs.partitions import model_partitions
    from llm_platform.defs.sensors import build_canary_sensor

    catalog = _catalog()
    target = rig.resources["target"].serving_target(catalog.platform)  # type: ignore[attr-defined]
    model = catalog.model(MODEL)
    faster = model.model_copy(update={"serving": model.serving.model_copy(update={"max_num_seqs": 8})})
    # Its driver: a run that has finished (as run monitoring marks one whose pod was evicted).
    left = target.start_canary(faster, target.materialize_weights(faster, "main").manifest, owner=rig.first_run)
    assert isinstance(left, FakeCanary)
    left.set_weight(25)
    sensor = build_canary_sensor(catalog)

    def tick() -> dg.SensorResult:
        resources = {"prometheus": rig.resources["prometheus"]}
        result = sensor(dg.build_sensor_context(instance=rig.instance, resources=resources))
        assert isinstance(result, dg.SensorResult)
        return result

    assert "no canary" in str(tick().skip_reason)  # Prometheus scrapes no canary: nothing to do
    rig.prometheus.canary_models = {MODEL}
    running = dg.DagsterRun(job_name="promote", run_id="r" * 36, status=dg.DagsterRunStatus.STARTED,
                            tags={PARTITION_NAME_TAG: MODEL})  # fmt: skip
    rig.instance.add_run(running)
    assert "driven by a run in progress" in str(tick().skip_reason)
    rig.instance.delete_run(running.run_id)
    (request,) = tick().run_requests or []
    assert request.partition_key == MODEL
    job = build_canary_rollback_job(catalog, model_partitions(catalog))
    result = job.execute_in_process(partition_key=MODEL, instance=rig.instance,
                                    resources={"target": rig.resources["target"]})  # fmt: skip
    assert result.success
    assert rig.cluster.canaries == {} and rig.cluster.canary_weights[MODEL] == [25, 0]
    logs = [str(record.user_message) for record in rig.instance.all_logs(result.run_id)]
    assert any(f"left by run {rig.first_run}" in line for line in logs)
