"""The benchmark assets: ``smoke_benchmark`` (blocking SLO checks: a config that misses an SLO is never promoted)
and ``live_benchmark`` (the deployed config, nightly, compared with the benchmark of its promotion).

No ``from __future__ import annotations`` here: Dagster reads the config and resource annotations at runtime.
"""

import base64
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from llm_platform.benchmark.parse import parse_result, results_frame
from llm_platform.benchmark.plan import BenchmarkPlan, plan_for
from llm_platform.benchmark.report import plot_png, summary_markdown
from llm_platform.benchmark.slo import SloResult, evaluate_slos, regressions
from llm_platform.catalog import Catalog, ModelSpec
from llm_platform.conventions import (
    DEPLOYMENT_ASSET,
    LIVE_BENCHMARK_ASSET,
    PLAN_ASSET,
    SMOKE_BENCHMARK_ASSET,
    TRAFFIC_PROFILE_ASSET,
)
from llm_platform.defs.failures import platform_errors_as_failure, refuse_environment_references
from llm_platform.defs.metadata import table_metadata
from llm_platform.defs.resources import TargetResource
from llm_platform.defs.storage import latest_value
from llm_platform.defs.values import BenchmarkOutcome, DeploymentRecord, ServingChoice
from llm_platform.defs.weights import LIVE_BENCHMARK_GROUP, lifecycle_asset_options
from llm_platform.perfmodel import predicted_levels
from llm_platform.planning.plan import ServingPlan, predicted_vs_measured
from llm_platform.targets.base import LevelResults
from llm_platform.workload import TrafficProfile, replay_lengths

SLO_CHECKS = {
    "ttft_p95_ms": "p95 time to first token at every concurrency level is within slo.ttft_p95_ms",
    "itl_p95_ms": "p95 inter-token latency at every concurrency level is within slo.itl_p95_ms",
    "min_output_tokens_per_s": "the best output throughput reaches slo.min_output_tokens_per_s",
    "max_error_rate": "failed requests stay within slo.max_error_rate",
}
ADAPTERS_SLO_CHECK = "slo_adapters"
"""Each LoRA adapter of the model, addressed by its served name, meets the same SLOs (at the plan's top level)."""
PEAK_RATE_SLO_CHECK = "slo_peak_rate"
"""The candidate under the replayed traffic's per-server peak rate (open loop) meets the SLOs: a warning, not a
gate (a config that misses them at the peak may still be better than the one serving)."""
BENCHMARK_POOL = "gpu-benchmark"
TABLE_COLUMNS = [
    "concurrency", "completed", "failed", "request_throughput", "output_throughput", "achieved_concurrency",
    "p50_ttft_ms", "p95_ttft_ms", "p95_tpot_ms", "p95_itl_ms", "p95_e2el_ms",
]  # fmt: skip


class BenchmarkConfig(dg.Config):
    """Run configuration of ``smoke_benchmark``: the plan's size, for this run only (unset: the catalog's
    ``benchmark`` section)."""

    prompts_per_level: int | None = Field(default=None, ge=1, description="Requests per concurrency level.")
    input_len: int | None = Field(
        default=None, ge=1, description="Prompt tokens; default benchmark.input_len, else max_model_len / 4, <= 1024."
    )
    output_len: int | None = Field(default=None, ge=1, description="Generated tokens per request (EOS ignored).")
    concurrency_levels: list[int] | None = Field(
        default=None, description="Default benchmark.concurrency_levels, else 1, 8 and max_num_seqs."
    )
    num_warmups: int | None = Field(default=None, ge=0, description="Warm-up requests before each level.")
    replay_traffic_profile: bool = Field(
        default=True,
        description="Where the model has a traffic_profile measured from its live traffic, send requests whose "
        "prompt and output lengths are drawn from it (seeded) instead of the random dataset's fixed lengths. False: "
        "the synthetic plan.",
    )
    reuse_deployed: bool = Field(
        default=True,
        description="When the candidate's engine config (and weights) is exactly the one serving - a promotion that "
        "only changes scaling bounds - judge its promotion benchmark against the SLOs instead of benchmarking "
        "again (no GPU used). False: always benchmark.",
    )


class LiveBenchmarkConfig(dg.Config):
    """Run configuration of ``live_benchmark``: none. It measures exactly the plan of the promotion's benchmark, and
    a declared empty config makes Dagster refuse a sizing instead of ignoring it."""


def plan_from_config(model: ModelSpec, config: BenchmarkConfig) -> BenchmarkPlan:
    return plan_for(
        model, prompts_per_level=config.prompts_per_level, input_len=config.input_len, output_len=config.output_len,
        concurrency_levels=config.concurrency_levels, num_warmups=config.num_warmups,
    )  # fmt: skip


def with_traffic_profile(
    instance: dg.DagsterInstance, model: ModelSpec, plan: BenchmarkPlan, count: int | None = None
) -> BenchmarkPlan:
    """``plan`` replaying the model's latest measured traffic profile, when there is one (a profile that fell back
    to the catalog has nothing to replay): ``count`` requests (default: the plan's per level) whose lengths are
    drawn from it with the plan's seed."""
    profile = latest_value(instance, TRAFFIC_PROFILE_ASSET, model.name)
    if not isinstance(profile, TrafficProfile) or profile.source != "prometheus":
        return plan
    requests = replay_lengths(
        profile, count or plan.prompts_per_level, seed=plan.seed, max_model_len=model.serving.max_model_len
    )
    peak = profile.rate_peak_per_engine_rps
    return dataclasses.replace(
        plan, requests=requests, workload=profile.described, peak_rate_rps=peak if peak > 0 else 0.0
    )


def slo_check_name(slo: str) -> str:
    return f"slo_{slo}"


def frame_table(frame: pd.DataFrame) -> dg.TableMetadataValue:
    columns = [dg.TableColumn(name, "float") for name in TABLE_COLUMNS]
    records = [
        dg.TableRecord({name: round(float(row[name]), 3) for name in TABLE_COLUMNS}) for _, row in frame.iterrows()
    ]
    return dg.TableMetadataValue(records=records, schema=dg.TableSchema(columns=columns))


def check_results(results: list[SloResult]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=slo_check_name(result.name),
            passed=result.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "measured": dg.MetadataValue.float(float(result.measured)),
                "threshold": dg.MetadataValue.float(float(result.threshold)),
                "what": dg.MetadataValue.text(result.description),
            },
        )
        for result in results
    ]


def results_table(results: LevelResults) -> pd.DataFrame:
    """The benchmark table from the raw result of each level, whichever target measured it."""
    return results_frame([parse_result(result, level) for level, result in sorted(results.items())])


def _report_metadata(
    model: str, frame: pd.DataFrame, slos: list[SloResult], work_dir: Path
) -> dict[str, dg.MetadataValue]:
    """Table, summary and plot in the UI; CSV and PNG kept beside the raw JSON in the artefact directory."""
    frame.to_csv(work_dir / "results.csv", index=False)
    png = plot_png(model, frame)
    (work_dir / "results.png").write_bytes(png)
    image = base64.b64encode(png).decode()
    return {
        "results": frame_table(frame),
        "summary": dg.MetadataValue.md(summary_markdown(model, frame, slos)),
        "plot": dg.MetadataValue.md(f"![throughput and p95 TTFT vs concurrency](data:image/png;base64,{image})"),
        "artifacts": dg.MetadataValue.path(str(work_dir)),
    }


def _prediction_metadata(
    context: dg.AssetExecutionContext, model: ModelSpec, frame: pd.DataFrame, plan: BenchmarkPlan
) -> dict[str, dg.MetadataValue]:
    """The serving plan's estimate beside the measurement at each level, so users learn how far to trust it."""
    serving_plan = latest_value(context.instance, PLAN_ASSET, model.name)
    if not isinstance(serving_plan, ServingPlan):
        return {}
    predicted = predicted_levels(model, serving_plan, plan.concurrency_levels, plan.input_len, plan.output_len)
    if predicted is None:
        return {}
    comparison = predicted_vs_measured(predicted, frame)
    return {
        "predicted_vs_measured": table_metadata(comparison),
        "measured_over_predicted_output_tok_s": dg.MetadataValue.float(
            float(comparison["ratio_output_throughput"].median())
        ),
    }


def _benchmark_adapters(
    context: dg.AssetExecutionContext,
    measure: Callable[[BenchmarkPlan, Path], LevelResults],
    choice: ServingChoice,
    plan: BenchmarkPlan,
    work_dir: Path,
) -> dict[str, pd.DataFrame]:
    """Each adapter ``choice`` serves, addressed by its name at the plan's highest concurrency on the same server
    (the same workload), measured by ``measure`` (the candidate's server, or where the deployment serves): served
    name → its results."""
    frames: dict[str, pd.DataFrame] = {}
    for name in sorted(choice.weights.adapters):
        adapter_plan = dataclasses.replace(plan, served_name=name, concurrency_levels=(max(plan.concurrency_levels),))
        context.log.info(
            f"model '{choice.model.name}': adapter '{name}' at concurrency {adapter_plan.concurrency_levels[0]}"
        )
        frames[name] = results_table(measure(adapter_plan, work_dir / name))
    return frames


def _peak_rate_check(plan: BenchmarkPlan, peak: pd.DataFrame | str, model: ModelSpec) -> dg.AssetCheckResult:
    """The peak-rate run judged by the model's SLOs (a warning); ``peak`` is its results, or why there was none
    (the check passes, saying so)."""
    if isinstance(peak, str):
        return dg.AssetCheckResult(
            check_name=PEAK_RATE_SLO_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN,
            metadata={"note": dg.MetadataValue.text(f"no peak-rate run: {peak}")},
        )  # fmt: skip
    results = evaluate_slos(peak, model.slo)
    return dg.AssetCheckResult(
        check_name=PEAK_RATE_SLO_CHECK,
        passed=all(result.passed for result in results),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "request_rate": dg.MetadataValue.float(plan.peak_rate_rps),
            "results": frame_table(peak),
            **{result.name: dg.MetadataValue.float(round(float(result.measured), 3)) for result in results},
            "failed": dg.MetadataValue.text(", ".join(r.name for r in results if not r.passed) or "none"),
        },
    )


def _adapters_check(adapters: dict[str, str], judged: dict[str, list[SloResult]], reused: bool) -> dg.AssetCheckResult:
    """One row per adapter and SLO: measured, threshold, verdict."""
    rows = [
        dg.TableRecord({"served_name": name, "slo": result.name, "measured": round(float(result.measured), 3),
                        "threshold": float(result.threshold), "passed": result.passed})
        for name, slos in judged.items() for result in slos
    ]  # fmt: skip
    columns = [("served_name", "string"), ("slo", "string"), ("measured", "float"), ("threshold", "float"),
               ("passed", "bool")]  # fmt: skip
    note = (
        "no adapters" if not adapters
        else "the promotion benchmark of the engine config that serves, judged by today's SLOs" if reused
        else f"{len(judged)} adapter(s) measured"
    )  # fmt: skip
    return dg.AssetCheckResult(
        check_name=ADAPTERS_SLO_CHECK,
        passed=all(result.passed for slos in judged.values() for result in slos),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "note": dg.MetadataValue.text(note),
            "adapters": dg.TableMetadataValue(
                records=rows, schema=dg.TableSchema(columns=[dg.TableColumn(n, kind) for n, kind in columns])
            ),
        },
    )


def build_benchmark_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The candidate benchmarked on the target (a vLLM-on-CPU server here and ``vllm bench serve`` against it, or
    the GPU benchmark Job serving and benchmarking in one pod), judged by the blocking SLO checks."""

    @dg.asset(
        name=SMOKE_BENCHMARK_ASSET,
        kinds={"vllm", "pandas"},
        **lifecycle_asset_options(catalog, partitions),
        pool=BENCHMARK_POOL,
        # Read when there is one: the promote job does not plan again, nor measure the traffic.
        deps=[PLAN_ASSET, TRAFFIC_PROFILE_ASSET],
        # The value is a BenchmarkOutcome; stated here because a parametrized return annotation is not accepted
        # together with check specs.
        dagster_type=dg.Any,
        check_specs=[
            *(
                dg.AssetCheckSpec(slo_check_name(name), asset=SMOKE_BENCHMARK_ASSET, blocking=True, description=text)
                for name, text in SLO_CHECKS.items()
            ),
            dg.AssetCheckSpec(
                PEAK_RATE_SLO_CHECK,
                asset=SMOKE_BENCHMARK_ASSET,
                description="replaying a measured traffic profile: the same requests arriving at the profile's "
                "per-server peak rate (open loop) meet the SLOs; a warning (passes without a measured profile)",
            ),
            dg.AssetCheckSpec(
                ADAPTERS_SLO_CHECK,
                asset=SMOKE_BENCHMARK_ASSET,
                blocking=True,
                description="each LoRA adapter, addressed by its served name at the plan's highest concurrency, "
                "meets the same SLOs (passes for a model without adapters)",
            ),
        ],
        description=(
            "vLLM's own benchmark (vllm bench serve: the random dataset, or a replay of the model's measured "
            "traffic_profile) of the candidate serving_config at a few "
            "concurrency levels: one row per level with throughput and TTFT/TPOT/ITL/E2E percentiles. Blocking "
            "checks compare it with the catalog's SLOs; a failed check stops the promotion."
        ),
    )
    def smoke_benchmark(
        context: dg.AssetExecutionContext,
        config: BenchmarkConfig,
        serving_config: ServingChoice,
        target: TargetResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]  # Dagster rejects a parametrized one with checks
        refuse_environment_references(context)
        model, weights = serving_config.model, serving_config.weights
        plan = plan_from_config(model, config)
        serving_target = target.serving_target(catalog.platform)
        if config.replay_traffic_profile:
            plan = with_traffic_profile(context.instance, model, plan)
        work_dir = serving_target.artifact_dir(model.name, "benchmarks", context.run.run_id)
        deployed = latest_value(context.instance, DEPLOYMENT_ASSET, model.name) if config.reuse_deployed else None
        reused = isinstance(deployed, DeploymentRecord) and deployed.choice.fingerprint == serving_config.fingerprint
        with platform_errors_as_failure():
            if isinstance(deployed, DeploymentRecord) and reused:
                # The engine that serves is exactly this one (a change of scaling bounds only): its promotion
                # benchmark stands, judged against today's SLOs; no server is started and no GPU used.
                context.log.info(
                    f"model '{model.name}': engine config {serving_config.fingerprint} serves already; judging its "
                    "promotion benchmark (set reuse_deployed: false to measure again)"
                )
                frame, plan = deployed.baseline.frame, deployed.baseline.plan
            else:
                context.log.info(f"model '{model.name}': benchmark workload: {plan.described}")
                frame = results_table(
                    serving_target.benchmark_candidate(
                        model, weights, plan, run_key=context.run.run_id, work_dir=work_dir, log=context.log.info
                    )
                )
            results = evaluate_slos(frame, model.slo)
            if isinstance(deployed, DeploymentRecord) and reused:
                adapter_frames = dict(deployed.baseline.adapter_frames)
            else:

                def on_candidate(adapter_plan: BenchmarkPlan, adapter_dir: Path) -> LevelResults:
                    return serving_target.benchmark_candidate(
                        model, weights, adapter_plan, run_key=context.run.run_id, work_dir=adapter_dir,
                        log=context.log.info,
                    )  # fmt: skip

                adapter_frames = _benchmark_adapters(context, on_candidate, serving_config, plan, work_dir)
            adapters = {name: evaluate_slos(adapter_frame, model.slo) for name, adapter_frame in adapter_frames.items()}
            passed = all(result.passed for result in results) and all(
                result.passed for slos in adapters.values() for result in slos
            )
            peak: pd.DataFrame | str = (
                "no measured traffic profile replayed" if plan.peak_rate_rps <= 0
                else "the promotion benchmark of the config that serves was reused" if reused
                else "the candidate missed its SLOs at the levels already" if not passed
                else ""
            )  # fmt: skip
            if not peak:
                peak_plan = plan.at_peak_rate()
                context.log.info(
                    f"model '{model.name}': at the profile's per-server peak of {peak_plan.request_rate} requests/s"
                )
                peak = results_table(
                    serving_target.benchmark_candidate(
                        model, weights, peak_plan, run_key=context.run.run_id, work_dir=work_dir / "peak-rate",
                        log=context.log.info,
                    )
                )  # fmt: skip
            if not passed:  # a rejected candidate must not hold resources
                serving_target.release_candidate(model, weights, log=context.log.info)
        metadata = _report_metadata(model.name, frame, results, work_dir)
        if not reused:
            metadata.update(_prediction_metadata(context, model, frame, plan))
        return dg.MaterializeResult(
            value=BenchmarkOutcome(frame, serving_config.fingerprint, passed, plan, adapter_frames),
            check_results=[
                *check_results(results),
                _peak_rate_check(plan, peak, model),
                _adapters_check(weights.adapter_commits, adapters, reused),
            ],
            metadata={
                **metadata,
                "config_fingerprint": dg.MetadataValue.text(serving_config.fingerprint),
                "target": dg.MetadataValue.text(serving_target.kind),
                "weights_sha": dg.MetadataValue.text(weights.sha),
                "reused_promotion_benchmark": dg.MetadataValue.bool(reused),
                "plan": dg.MetadataValue.json(
                    json.loads(json.dumps({k: v for k, v in plan.__dict__.items() if k != "requests"}))
                ),
                "workload": dg.MetadataValue.text(
                    "the promotion benchmark of the engine config that serves (not measured again)"
                    if reused
                    else plan.described
                ),
            },
        )

    return smoke_benchmark


NO_REGRESSION_CHECK = "no_regression"


def _served_names_table(
    model: str, frame: pd.DataFrame, adapter_frames: dict[str, pd.DataFrame], baseline: BenchmarkOutcome
) -> dg.TableMetadataValue:
    """One row per served name (the model's, each adapter's) at the highest level measured for it: live output
    throughput and p95 TTFT beside the promotion's at that level (NaN where the promotion did not measure it)."""

    def at_level(table: pd.DataFrame | None, level: int, column: str) -> float:
        rows = table[table["concurrency"] == level] if table is not None and not table.empty else pd.DataFrame()
        return round(float(rows[column].iloc[0]), 3) if not rows.empty else float("nan")

    measured: dict[str, tuple[pd.DataFrame, pd.DataFrame | None]] = {model: (frame, baseline.frame)}
    measured.update({name: (live, baseline.adapter_frames.get(name)) for name, live in adapter_frames.items()})
    records = []
    for name, (live, promoted) in measured.items():
        if live.empty:
            continue
        level = int(live["concurrency"].max())
        records.append(dg.TableRecord({
            "served_name": name, "concurrency": level,
            **{f"{column}{suffix}": at_level(table, level, column)
               for column in ("output_throughput", "p95_ttft_ms")
               for suffix, table in (("", live), ("_at_promotion", promoted))},
        }))  # fmt: skip
    columns = [("served_name", "string"), ("concurrency", "int")] + [
        (f"{column}{suffix}", "float")
        for column in ("output_throughput", "p95_ttft_ms")
        for suffix in ("", "_at_promotion")
    ]
    return dg.TableMetadataValue(
        records=records, schema=dg.TableSchema(columns=[dg.TableColumn(n, kind) for n, kind in columns])
    )


def build_live_benchmark_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The deployed config measured at its endpoint with the plan of its promotion (``benchmark_live`` job)."""

    @dg.asset(
        name=LIVE_BENCHMARK_ASSET,
        kinds={"vllm", "pandas"},
        **lifecycle_asset_options(catalog, partitions, group=LIVE_BENCHMARK_GROUP),
        pool=BENCHMARK_POOL,
        dagster_type=dg.Any,
        check_specs=[
            dg.AssetCheckSpec(
                NO_REGRESSION_CHECK,
                asset=LIVE_BENCHMARK_ASSET,
                description="output throughput and p95 TTFT at each level (and each LoRA adapter's, by its served "
                "name, at the top level) are within slo.max_regression_pct of the benchmark taken when the config was "
                "promoted",
            )
        ],
        description=(
            "The deployed model benchmarked where it serves (the local endpoint, or the Service from a client "
            "Job), with exactly the plan of its promotion's smoke benchmark (lengths or replayed requests, requests "
            "per level, levels, warm-ups, seed), and compared with it; each LoRA adapter by its served name at the "
            "top level."
        ),
    )
    def live_benchmark(
        context: dg.AssetExecutionContext,
        config: LiveBenchmarkConfig,
        vllm_deployment: DeploymentRecord,
        target: TargetResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        refuse_environment_references(context)
        choice = vllm_deployment.choice
        model = choice.model
        baseline = vllm_deployment.baseline
        # Like with like: exactly the plan of the promotion's benchmark (its lengths or replayed requests, requests
        # per level, levels, warm-ups and seed), so a difference is the server's, never the workload's.
        plan = baseline.plan
        context.log.info(f"model '{model.name}': live benchmark workload: {plan.described}")
        serving_target = target.serving_target(catalog.platform)
        work_dir = serving_target.artifact_dir(model.name, "live-benchmarks", context.run.run_id)
        with platform_errors_as_failure():
            frame = results_table(
                serving_target.benchmark_deployed(
                    vllm_deployment.deployment, model, choice.weights, plan, run_key=context.run.run_id,
                    work_dir=work_dir, log=context.log.info,
                )
            )  # fmt: skip

            def where_it_serves(adapter_plan: BenchmarkPlan, adapter_dir: Path) -> LevelResults:
                return serving_target.benchmark_deployed(
                    vllm_deployment.deployment, model, choice.weights, adapter_plan, run_key=context.run.run_id,
                    work_dir=adapter_dir, log=context.log.info,
                )  # fmt: skip

            adapter_frames = _benchmark_adapters(context, where_it_serves, choice, plan, work_dir)
        allowance = model.slo.max_regression_pct
        found = [regression.describe() for regression in regressions(baseline.frame, frame, allowance)]
        for name, adapter_frame in adapter_frames.items():
            # An adapter promoted before adapters were measured has no baseline: measured, compared from the next.
            adapter_baseline = baseline.adapter_frames.get(name)
            if adapter_baseline is not None:
                found += [f"adapter '{name}': {r.describe()}" for r in regressions(adapter_baseline, adapter_frame,
                                                                                    allowance)]  # fmt: skip
        for regression in found:
            context.log.warning(f"model '{model.name}': regression: {regression}")
        check = dg.AssetCheckResult(
            check_name=NO_REGRESSION_CHECK,
            passed=not found,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "max_regression_pct": dg.MetadataValue.float(allowance),
                "regressions": dg.MetadataValue.text("; ".join(found) or "none"),
                "served_names": _served_names_table(model.name, frame, adapter_frames, baseline),
            },
        )
        return dg.MaterializeResult(
            value=frame,
            check_results=[check],
            metadata={
                **_report_metadata(model.name, frame, evaluate_slos(frame, model.slo), work_dir),
                "config_fingerprint": dg.MetadataValue.text(choice.fingerprint),
                "deployed_revision": dg.MetadataValue.text(vllm_deployment.deployment.revision),
                "endpoint": dg.MetadataValue.url(vllm_deployment.deployment.endpoint),
                "workload": dg.MetadataValue.text(plan.described),
            },
        )

    return live_benchmark
