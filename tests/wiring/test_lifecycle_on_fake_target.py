"""The Dagster wiring on the in-process fake target: what the assets, checks, jobs, schedules and sensors decide,
in seconds. Real vLLM, Prometheus, PostgreSQL and the Kubernetes API emulator are in ``tests/integration``."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.benchmark.plan import BenchmarkPlan, plan_for
from llm_platform.catalog import Catalog, Serving, parse_catalog
from llm_platform.conventions import DEPLOYMENT_ASSET, LIVE_BENCHMARK_ASSET, TRAFFIC_PROFILE_ASSET, TUNED_ASSET
from llm_platform.defs.jobs import LIFECYCLE_ASSETS, PROMOTE_ASSETS, promotion_request, schedule_name
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.resources import PrometheusResource, WeightsResource
from llm_platform.defs.sensors import build_drift_sensor
from llm_platform.defs.storage import VALUE_METADATA_KEY, InstanceValueIOManager, latest_value
from llm_platform.defs.values import DeploymentRecord, StoredValueError, decode_value, encode_value
from llm_platform.tuning.policy import Crash
from llm_platform.workload import MeasuredTraffic, TrafficProfile, build_profile, replay_lengths
from tests.conftest import NO_PROMETHEUS, deployed_serving
from tests.fakeprom import FakePrometheus
from tests.faketarget import CLUSTERS, FakeCluster, FakeTargetResource, default_performance

MODEL = "tiny"
SMALL = {"prompts_per_level": 8, "concurrency_levels": [1, 4], "num_warmups": 0}
_names = itertools.count()


def _catalog(**sections: Any) -> Catalog:
    model: dict[str, Any] = {
        "name": MODEL,
        "source": {"repo": "acme/tiny"},
        "serving": {"max_model_len": 2048, "max_num_seqs": 32},
        "slo": {"ttft_p95_ms": 2000, "itl_p95_ms": 100, "min_output_tokens_per_s": 10, "max_error_rate": 0},
    }
    model.update(sections)
    return parse_catalog({"models": [model]})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, FakeCluster]]:
    name = f"cluster-{next(_names)}"
    CLUSTERS[name] = FakeCluster()
    yield name, CLUSTERS[name]
    del CLUSTERS[name]


class Platform:
    """One catalog on the fake target, with an instance shared by its runs."""

    def __init__(self, catalog: Catalog, cluster: str, instance: dg.DagsterInstance, artifacts: Path) -> None:
        self.catalog = catalog
        self.instance = instance
        self.resources = {
            "io_manager": InstanceValueIOManager(),
            "target": FakeTargetResource(cluster=cluster, artifacts_root=str(artifacts)),
            "weights": WeightsResource(),
            "prometheus": PrometheusResource(url=NO_PROMETHEUS),
        }

    def run(
        self, selection: list[str], ops: dict[str, Any] | None = None, catalog: Catalog | None = None
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            lifecycle_assets(catalog or self.catalog),
            selection=selection,
            partition_key=MODEL,
            resources=self.resources,
            run_config={"ops": ops or {}},
            instance=self.instance,
            raise_on_error=False,
        )

    def lifecycle(self, **ops: Any) -> dg.ExecuteInProcessResult:
        return self.run(LIFECYCLE_ASSETS, {"smoke_benchmark": {"config": SMALL}, **ops})

    def deployed_serving(self) -> dict[str, Any]:
        return deployed_serving(self.instance, MODEL)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    (event,) = [event for event in result.all_events if event.is_step_failure]
    data = event.step_failure_data
    assert data is not None and data.user_failure_data is not None
    return str(data.user_failure_data.description)


def _platform(catalog: Catalog, cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp: Path) -> Platform:
    return Platform(catalog, cluster[0], instance, tmp / "artifacts")


def test_lifecycle_promotes_a_config_that_meets_its_slos(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    platform = _platform(_catalog(), cluster, instance, tmp_path)
    result = platform.lifecycle()

    assert result.success
    assert all(check.passed for check in result.get_asset_check_evaluations())
    fingerprint, serving = cluster[1].deployed[MODEL]
    assert serving.max_num_seqs == 32
    (event,) = result.asset_materializations_for_node("vllm_deployment")
    assert event.metadata["endpoint"].value == "http://tiny.fake"
    assert fingerprint in str(event.metadata["revision"].value)
    # The large artefacts went to the target's artefact location, named in the metadata.
    (bench,) = result.asset_materializations_for_node("smoke_benchmark")
    assert (Path(str(bench.metadata["artifacts"].value)) / "results.csv").is_file()


def test_the_slo_gate_refuses_a_candidate_and_releases_it(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    strict = _catalog(slo={"ttft_p95_ms": 1, "itl_p95_ms": 100, "min_output_tokens_per_s": 10, "max_error_rate": 0})
    result = _platform(strict, cluster, instance, tmp_path).lifecycle()

    assert not result.success
    checks = {check.check_name: check.passed for check in result.get_asset_check_evaluations()}
    assert checks["slo_ttft_p95_ms"] is False and checks["slo_itl_p95_ms"] is True
    assert not result.asset_materializations_for_node("vllm_deployment")
    assert MODEL not in cluster[1].deployed
    assert cluster[1].candidates[MODEL] == set()  # released
    assert any(call.startswith("release tiny") for call in cluster[1].calls)


def test_a_failed_promotion_fails_the_run_with_the_targets_reason(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    platform = _platform(_catalog(), cluster, instance, tmp_path)
    assert platform.lifecycle().success
    before = cluster[1].deployed[MODEL]
    cluster[1].failing_promotions.add(MODEL)

    result = platform.run(PROMOTE_ASSETS, promotion_request(overrides={"max_num_seqs": "16"})[1]["ops"])

    assert not result.success
    assert _failure(result).startswith("model 'tiny': promotion of ")
    assert f"rolled back to {before[0]}" in _failure(result)
    assert cluster[1].deployed[MODEL] == before


def test_promote_reads_the_weights_of_an_earlier_run_and_applies_overrides(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    platform = _platform(_catalog(), cluster, instance, tmp_path)
    assert platform.lifecycle().success
    ops = promotion_request(overrides={"max_num_seqs": "8"}, benchmark=SMALL)[1]["ops"]

    result = platform.run(PROMOTE_ASSETS, ops)

    assert result.success
    assert platform.deployed_serving()["max_num_seqs"] == 8
    assert [call for call in cluster[1].calls if call.startswith("weights")] == ["weights tiny@main"]


def test_an_invalid_override_fails_with_the_catalogs_line_and_benchmarks_nothing(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    platform = _platform(_catalog(), cluster, instance, tmp_path)
    assert platform.run(["model_weights"]).success
    ops = promotion_request(overrides={"gpu_memory_utilization": "1.5"})[1]["ops"]

    result = platform.run(PROMOTE_ASSETS, ops)

    assert not result.success
    assert "model 'tiny': serving.gpu_memory_utilization: must be > 0 and <= 1 (got 1.5)" in _failure(result)
    assert not [call for call in cluster[1].calls if call.startswith("benchmark")]


def test_promote_without_weights_says_to_run_the_lifecycle(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    result = _platform(_catalog(), cluster, instance, tmp_path).run(PROMOTE_ASSETS)
    assert not result.success
    assert _failure(result) == (
        "model 'tiny': model_weights has never been materialized; run the lifecycle job for this model first"
    )


@pytest.mark.parametrize(("margin", "adopted"), [(10.0, True), (1000.0, False)])
def test_the_tuner_adopts_a_winner_only_past_its_margin(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path, margin: float, adopted: bool
) -> None:
    # Two sequences at a time against a closed loop of up to 8: more slots serve more.
    catalog = _catalog(serving={"max_model_len": 2048, "max_num_seqs": 2})
    platform = _platform(catalog, cluster, instance, tmp_path)
    assert platform.run(["model_weights"]).success
    search = {"max_num_seqs": [2, 8], "max_num_batched_tokens": [], "load_high": 8, "margin_pct": margin}

    tuned = platform.run([TUNED_ASSET], {TUNED_ASSET: {"config": search}})

    assert tuned.success
    (event,) = tuned.asset_materializations_for_node(TUNED_ASSET)
    assert event.metadata["adopted"].value is adopted
    assert float(event.metadata["gain_pct"].value) > 100  # type: ignore[arg-type]
    config = platform.run(["adapter_weights", "serving_config"])
    (config_event,) = config.asset_materializations_for_node("serving_config")
    serving = config_event.metadata["serving"].value
    assert isinstance(serving, dict) and serving["max_num_seqs"] == (8 if adopted else 2)


def test_a_refused_trial_is_recorded_and_never_wins(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    cluster[1].refused = lambda serving: "out of memory" if serving.max_num_seqs == 8 else None
    platform = _platform(_catalog(serving={"max_model_len": 2048, "max_num_seqs": 2}), cluster, instance, tmp_path)
    assert platform.run(["model_weights"]).success
    search = {"max_num_seqs": [2, 8], "max_num_batched_tokens": [], "load_high": 8}

    tuned = platform.run([TUNED_ASSET], {TUNED_ASSET: {"config": search}})

    (event,) = tuned.asset_materializations_for_node(TUNED_ASSET)
    assert event.metadata["failed_trials"].value == 1 and event.metadata["adopted"].value is False


def _drift_requests(
    catalog: Catalog, instance: dg.DagsterInstance, models: dict[str, dict[str, float]]
) -> list[dg.RunRequest]:
    """One drift-sensor tick an hour after the deployments (past the lookback), over a protocol-level Prometheus."""
    prometheus = FakePrometheus().start()
    try:
        prometheus.models = models
        sensor = build_drift_sensor(catalog, clock=lambda: time.time() + 3600)
        context = dg.build_sensor_context(
            instance=instance, resources={"prometheus": PrometheusResource(url=prometheus.url)}
        )
        result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        return list(result.run_requests or [])
    finally:
        prometheus.stop()


STEADY = {"coverage": 1.0, "age_s": 5.0, "kv_cache_usage": 0.5, "preemptions_per_s": 0.0, "waiting": 0.0,
          "replicas": 1.0, "requests": 5000.0, "prompt_tokens_p999": 1500.0,
          "generation_tokens_p999": 400.0}  # fmt: skip


def test_drift_becomes_a_promote_run_that_promotes_the_proposal(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    catalog = _catalog()
    platform = _platform(catalog, cluster, instance, tmp_path)
    assert platform.lifecycle().success
    (request,) = _drift_requests(
        catalog, instance, {MODEL: {**STEADY, "kv_cache_usage": 0.99, "preemptions_per_s": 0.4}}
    )

    promoted = platform.run(PROMOTE_ASSETS, {**request.run_config["ops"], "smoke_benchmark": {"config": SMALL}})

    assert promoted.success
    assert platform.deployed_serving()["gpu_memory_utilization"] == 0.92


def test_a_capacity_change_rescales_without_restarting_or_benchmarking(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    catalog = parse_catalog(
        {
            "platform": {"gpu_quota": 6},
            "models": [
                {"name": MODEL, "source": {"repo": "acme/tiny"}, "serving": {"max_model_len": 2048, "max_num_seqs": 32},
                 "slo": {"ttft_p95_ms": 2000, "itl_p95_ms": 100, "min_output_tokens_per_s": 10, "max_error_rate": 0},
                 "autoscaling": {"min_replicas": 1, "max_replicas": 2}},
                {"name": "neighbour", "source": {"repo": "acme/other"}, "autoscaling": {"min_replicas": 1}},
            ],
        }
    )  # fmt: skip
    platform = _platform(catalog, cluster, instance, tmp_path)
    assert platform.lifecycle().success
    fingerprint, _ = cluster[1].deployed[MODEL]
    full = {**STEADY, "kv_cache_usage": 0.99, "preemptions_per_s": 0.3, "replicas": 2.0, "waiting": 30.0}
    (request,) = _drift_requests(catalog, instance, {MODEL: full})
    # 6 GPUs, the neighbour keeps 1, one surge replica: 6 - 1 - 1 = 4.
    assert request.run_config["ops"]["serving_config"]["config"]["overrides"] == {"autoscaling.max_replicas": "4"}
    benchmarks_before = [call for call in cluster[1].calls if call.startswith("benchmark")]

    rescaled = platform.run(PROMOTE_ASSETS, request.run_config["ops"])

    assert rescaled.success
    (bench,) = rescaled.asset_materializations_for_node("smoke_benchmark")
    assert bench.metadata["reused_promotion_benchmark"].value is True
    assert [call for call in cluster[1].calls if call.startswith("benchmark")] == benchmarks_before
    assert cluster[1].deployed[MODEL][0] == fingerprint  # same engine: nothing restarted
    (deployment,) = rescaled.asset_materializations_for_node("vllm_deployment")
    autoscaling = deployment.metadata["autoscaling"].value
    assert isinstance(autoscaling, dict) and autoscaling["max_replicas"] == 4


def _record_profile(instance: dg.DagsterInstance, profile: TrafficProfile) -> None:
    """A traffic_profile materialization of the model, as the asset records it (its value in the metadata)."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            TRAFFIC_PROFILE_ASSET, partition=MODEL,
            metadata={VALUE_METADATA_KEY: dg.MetadataValue.json(encode_value(profile))},
        )
    )  # fmt: skip


def test_the_smoke_benchmark_replays_the_measured_traffic_profile(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """No profile, or one that fell back to the catalog: the random dataset. A measured one: each request's lengths
    drawn from it with the plan's seed, and the metadata names it."""
    catalog = _catalog()
    platform = _platform(catalog, cluster, instance, tmp_path)
    assert platform.lifecycle().success
    assert not cluster[1].benchmark_plans[-1].requests
    model = catalog.model(MODEL)
    _record_profile(instance, TrafficProfile.from_catalog(model, 3600, 12, "too few requests"))
    assert platform.run(PROMOTE_ASSETS, {"smoke_benchmark": {"config": {**SMALL, "reuse_deployed": False}}}).success
    assert not cluster[1].benchmark_plans[-1].requests
    measured = build_profile(model, 3600, MeasuredTraffic({100.0: 300.0, 1000.0: 900.0, math.inf: 1000.0},
                                                          {50.0: 800.0, 400.0: 1000.0, math.inf: 1000.0},
                                                          1.0, 3.0, 2.0, 0.0, math.nan, math.nan, {},
                                                          rate_peak_per_engine_rps=1.5))  # fmt: skip
    _record_profile(instance, measured)

    run = platform.run(PROMOTE_ASSETS, {"smoke_benchmark": {"config": {**SMALL, "reuse_deployed": False}}})

    assert run.success
    # After the levels, one run of the same requests arriving at the profile's per-server peak, open loop.
    plan, peak = cluster[1].benchmark_plans[-2:]
    assert peak.request_rate == "1.500" and peak.requests == plan.requests and plan.request_rate == "inf"
    assert peak.concurrency_levels == (max(plan.concurrency_levels),)
    (peak_check,) = [c for c in run.get_asset_check_evaluations() if c.check_name == "slo_peak_rate"]
    assert peak_check.passed and peak_check.metadata["request_rate"].value == 1.5
    assert len(plan.requests) == SMALL["prompts_per_level"]
    assert plan.requests == replay_lengths(measured, len(plan.requests), seed=plan.seed, max_model_len=2048)
    (bench,) = run.asset_materializations_for_node("smoke_benchmark")
    assert str(bench.metadata["workload"].value).startswith(
        "replay of 8 requests drawn from the prometheus profile of 'tiny' over 1 h: 1000 requests"
    )
    # The live benchmark sends exactly the promotion's requests again (a newer profile must not make a regression).
    _record_profile(instance, TrafficProfile.from_catalog(model, 3600, 12, "quiet since"))
    live = platform.run([LIVE_BENCHMARK_ASSET])
    assert live.success and cluster[1].benchmark_plans[-1].requests == plan.requests
    (live_event,) = live.asset_materializations_for_node(LIVE_BENCHMARK_ASSET)
    assert live_event.metadata["workload"].value == bench.metadata["workload"].value
    synthetic_plan = {**SMALL, "reuse_deployed": False, "replay_traffic_profile": False}
    synthetic = platform.run(PROMOTE_ASSETS, {"smoke_benchmark": {"config": synthetic_plan}})
    assert synthetic.success and not cluster[1].benchmark_plans[-1].requests
    assert cluster[1].benchmark_plans[-1].request_rate == "inf"  # no peak-rate run without a replayed profile
    (no_peak,) = [c for c in synthetic.get_asset_check_evaluations() if c.check_name == "slo_peak_rate"]
    assert no_peak.passed and "no peak-rate run" in str(no_peak.metadata["note"].value)


CUDA_OOM = Crash("vllm-tiny-7d9f-x2", "Error", 1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate")
BAD_ARGUMENT = Crash("vllm-tiny-7d9f-x2", "Error", 2, "vllm: error: unrecognized arguments: --foo")


@pytest.mark.parametrize("crash", [CUDA_OOM, BAD_ARGUMENT], ids=["cuda-oom", "other"])
def test_a_crash_loop_is_diagnosed_by_the_run_from_the_termination_messages(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path, crash: Crash
) -> None:
    """kube-state-metrics says only "Error": the sensor asks for a diagnosis, and the run (which may read pods)
    lowers GPU memory for a CUDA out-of-memory, or fails before any benchmark for any other crash."""
    catalog = _catalog()
    platform = _platform(catalog, cluster, instance, tmp_path)
    assert platform.lifecycle().success
    before = cluster[1].deployed[MODEL]
    (request,) = _drift_requests(catalog, instance, {MODEL: {**STEADY, "oom_kills": 0.0, "crash_restarts": 3.0}})
    assert request.tags["llm-platform/rule"] == "crash_loop"
    cluster[1].crashed[MODEL] = [crash]
    benchmarks_before = [call for call in cluster[1].calls if call.startswith("benchmark")]

    run = platform.run(PROMOTE_ASSETS, {**request.run_config["ops"], "smoke_benchmark": {"config": SMALL}})

    if crash is CUDA_OOM:
        assert run.success
        assert cluster[1].deployed[MODEL][1].gpu_memory_utilization == pytest.approx(0.85)
        return
    assert not run.success
    failure = next(event for event in run.all_events if event.is_step_failure)
    assert failure.step_key == "serving_config"
    description = str(failure.step_failure_data.user_failure_data.description)  # type: ignore[union-attr]
    assert description == (
        f"model '{MODEL}': no redeploy: pod vllm-tiny-7d9f-x2 crash-loops (Error, exit code 2: vllm: error: "
        "unrecognized arguments: --foo): not a memory shortage; fix the cause the message names"
    )
    assert cluster[1].deployed[MODEL] == before
    assert [call for call in cluster[1].calls if call.startswith("benchmark")] == benchmarks_before


def test_the_live_schedule_skips_until_deployed_then_catches_a_regression(
    cluster: tuple[str, FakeCluster], instance_on_disk: dg.DagsterInstance, tmp_path: Path
) -> None:
    from llm_platform.definitions import build_definitions

    instance = instance_on_disk

    catalog = _catalog()
    platform = _platform(catalog, cluster, instance, tmp_path)
    repository = build_definitions(catalog).get_repository_def()
    schedule = repository.get_schedule_def(schedule_name(MODEL))

    def tick() -> dg.ScheduleExecutionData:
        with dg.build_schedule_context(
            instance, scheduled_execution_time=datetime.now(UTC), repository_def=repository
        ) as context:
            return schedule.evaluate_tick(context)

    assert tick().skip_message == "model 'tiny' has never been deployed; nothing to benchmark"
    assert platform.lifecycle().success
    assert tick().run_requests
    steady = platform.run(["live_benchmark"])
    assert [check.passed for check in steady.get_asset_check_evaluations()] == [True]

    def slower(serving: Serving, concurrency: int, plan: BenchmarkPlan) -> dict[str, float]:
        perf = default_performance(serving, concurrency, plan)
        return {**perf, "output_throughput": perf["output_throughput"] / 2}

    cluster[1].performance = slower
    regressed = platform.run(["live_benchmark"])
    (check,) = regressed.get_asset_check_evaluations()
    assert not check.passed
    assert "output_throughput at concurrency 4: 285.7 vs 571.4 at promotion (-50.0%)" in str(
        check.metadata["regressions"].value
    )


def test_the_live_benchmark_runs_exactly_the_plan_of_the_promotion_benchmark(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Like with like: the nightly benchmark measures the lengths, requests per level, levels and warm-ups the
    promotion was measured with (here none of them the defaults), never the defaults at the promotion's levels;
    and it takes no sizing of its own."""
    platform = _platform(_catalog(), cluster, instance, tmp_path)
    measured = cluster[1].benchmark_plans
    smoke = {"prompts_per_level": 5, "input_len": 100, "output_len": 7, "concurrency_levels": [2, 3], "num_warmups": 1}
    assert platform.run(LIFECYCLE_ASSETS, {"smoke_benchmark": {"config": smoke}}).success
    promoted = measured[-1]
    assert (promoted.input_len, promoted.output_len, promoted.prompts_per_level, promoted.num_warmups) == (100, 7, 5, 1)
    measured.clear()
    live = platform.run(["live_benchmark"])
    assert live.success and measured == [promoted]
    assert [check.passed for check in live.get_asset_check_evaluations()] == [True]
    with pytest.raises(dg.DagsterInvalidConfigError):  # nothing to size: a sizing is refused, never ignored
        platform.run(["live_benchmark"], {"live_benchmark": {"config": {"prompts_per_level": 64}}})

    # A record from before plans were kept (its levels and replayed requests only) reads back as what the live
    # benchmark measured then: the model's default plan at those levels.
    record = latest_value(instance, DEPLOYMENT_ASSET, MODEL)
    assert isinstance(record, DeploymentRecord) and record.baseline.plan == promoted
    stored = encode_value(record)
    plan = stored["value"]["baseline"].pop("plan")
    stored["value"]["baseline"].update(concurrency_levels=plan["concurrency_levels"], requests=[], workload="")
    legacy = decode_value(stored, "a record of an earlier version")
    assert isinstance(legacy, DeploymentRecord)
    assert legacy.baseline.plan == dataclasses.replace(plan_for(record.choice.model), concurrency_levels=(2, 3))
    # A recorded plan is read as input: client arguments (which the live benchmark would pass on) are refused.
    hostile = encode_value(record)
    hostile["value"]["baseline"]["plan"]["extra_args"] = ["--result-dir", "/etc"]
    with pytest.raises(StoredValueError, match="client arguments"):
        decode_value(hostile, "a tampered record")


SQL_ADAPTER = {"name": "tiny-sql", "source": {"repo": "acme/tiny-sql-lora"}}


def test_adding_or_removing_an_adapter_is_a_promotion_of_the_base_that_fetches_only_the_adapter(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    platform = _platform(_catalog(), cluster, instance, tmp_path)
    assert platform.lifecycle().success
    plain = cluster[1].deployed[MODEL][0]
    cluster[1].calls.clear()
    ops = promotion_request(benchmark=SMALL)[1]["ops"]

    added = platform.run(PROMOTE_ASSETS, ops, catalog=_catalog(adapters=[SQL_ADAPTER]))

    assert added.success
    with_sql = cluster[1].deployed[MODEL][0]
    assert with_sql != plain  # the adapter's commit is part of the config: benchmarked, then promoted
    assert [call.split()[0] for call in cluster[1].calls] == ["adapter", "benchmark", "benchmark", "promote"]
    assert cluster[1].calls[0] == "adapter tiny/tiny-sql@main"  # the adapter alone: nothing of the base
    (check,) = [c for c in added.get_asset_check_evaluations() if c.check_name == "slo_adapters"]
    assert check.passed and check.metadata["note"] == dg.MetadataValue.text("1 adapter(s) measured")

    # The live benchmark measures the adapter by its name where it serves, against its own promotion benchmark.
    def live() -> dg.AssetCheckEvaluation:
        cluster[1].calls.clear()
        run = platform.run(["live_benchmark"], catalog=_catalog(adapters=[SQL_ADAPTER]))
        assert cluster[1].calls == ["live tiny", "live tiny"]
        (evaluation,) = run.get_asset_check_evaluations()
        return evaluation

    steady = live()
    table = steady.metadata["served_names"]
    assert steady.passed and isinstance(table, dg.TableMetadataValue)
    rows = {str(row.data["served_name"]): row.data for row in table.records}
    assert set(rows) == {"tiny", "tiny-sql"}
    assert rows["tiny-sql"]["output_throughput"] == rows["tiny-sql"]["output_throughput_at_promotion"]
    assert float(str(rows["tiny-sql"]["output_throughput"])) > 0

    def slower_adapter(serving: Serving, concurrency: int, plan: BenchmarkPlan) -> dict[str, float]:
        perf = default_performance(serving, concurrency, plan)
        return {**perf, "output_throughput": perf["output_throughput"] / 2} if plan.served_name else perf

    cluster[1].performance = slower_adapter
    regressed = live()
    assert not regressed.passed
    found = str(regressed.metadata["regressions"].value)
    assert found.startswith("adapter 'tiny-sql': output_throughput at concurrency") and found.count(";") == 0
    cluster[1].performance = default_performance

    removed = platform.run(PROMOTE_ASSETS, ops)  # the catalog without it: the base alone again
    assert removed.success and cluster[1].deployed[MODEL][0] == plain
