"""The ``tuned_serving_config`` asset and the ``auto_tune`` job: the engine arguments with the most goodput under the
model's SLO, found by the coordinate search of ``tuning/search.py``, adopted only when they beat the current config.

An adopted result feeds ``serving_config``: its overrides apply on top of the catalog (and under a run's own
overrides) in every later ``lifecycle`` or ``promote`` run, which benchmarks and promotes them as usual.

No ``from __future__ import annotations`` here: Dagster reads the config and resource annotations at runtime.
"""

import base64
import json
import math
import statistics
from collections.abc import Sequence
from typing import Literal

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import Field

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.benchmark.trials import as_overrides
from llm_platform.catalog import Catalog, ModelSpec, apply_serving_overrides
from llm_platform.conventions import PLAN_ASSET, TRAFFIC_PROFILE_ASSET, TUNED_ASSET
from llm_platform.defs.benchmark import BENCHMARK_POOL, with_traffic_profile
from llm_platform.defs.failures import platform_errors_as_failure, refuse_environment_references
from llm_platform.defs.metadata import table_metadata
from llm_platform.defs.partitions import latest_materialization
from llm_platform.defs.resources import TargetResource
from llm_platform.defs.storage import latest_value
from llm_platform.defs.weights import AUTO_TUNE_GROUP, lifecycle_asset_options
from llm_platform.planning.plan import ServingPlan
from llm_platform.targets.base import TrialSettings
from llm_platform.tuning.report import pareto_png, trials_frame
from llm_platform.tuning.search import SearchSpace, clamp_seqs, noise_aware_search
from llm_platform.weights.plan import SnapshotManifest

AUTO_TUNE_JOB = "auto_tune"
RETUNE_JOB = "retune_on_traffic"
MIN_PROMPTS_PER_PROBE = 16


class AutoTuneConfig(dg.Config):
    """Run configuration of ``tuned_serving_config``: the search space, the load range and the adoption margin."""

    max_num_seqs: list[int] = Field(default=[4, 8, 16, 32, 64], description="Candidate max_num_seqs, ascending.")
    max_num_batched_tokens: list[int] = Field(
        default=[256, 512, 1024, 2048, 4096], description="Candidate max_num_batched_tokens, ascending."
    )
    gpu_memory_utilization: list[float] = Field(default=[], description="Optional candidates; empty: held fixed.")
    max_model_len: list[int] = Field(default=[], description="Optional candidates; empty: held fixed.")
    load_low: int = Field(default=1, description="Lowest concurrency the bisection tries.")
    load_high: int = Field(default=32, description="Highest concurrency the bisection (on kubernetes: the doubling "
                           "ladder) tries.")  # fmt: skip
    input_len: int = Field(default=128, description="Prompt tokens per benchmark request, where the model has no "
                           "measured traffic_profile (else each request's lengths are drawn from it).")  # fmt: skip
    output_len: int = Field(default=32, description="Generated tokens per request (EOS ignored), where the model has "
                            "no measured traffic_profile.")  # fmt: skip
    prompts_per_load: int = Field(default=4, description="Requests per probe per unit of concurrency (at least 16 "
                                  "per probe: p95s of fewer requests are mostly noise).")  # fmt: skip
    margin_pct: float = Field(default=10.0, description="Adopt the winner only if the lower end of the interval on "
                              "its gain over the current config clears this much (%).")  # fmt: skip
    repeats: int = Field(default=3, ge=2, description="Measurements of the current config, the starting config and "
                         "each finalist (their spread is the noise the search treats as ties).")  # fmt: skip
    trials: Literal["target", "simulated"] = Field(
        default="target",
        description="Where trials run: 'target' serves each candidate (a GPU on kubernetes); 'simulated' asks the "
        "simulated vLLM scheduler driven by AIConfigurator's step times for platform.gpu_type (needs a serving_plan "
        "with a performance model; no GPU used).",
    )
    noise_pct: float = Field(default=10.0, ge=0, description="Simulated trials only: measurement noise (%).")
    seed: int = Field(default=0, description="The seed of the lengths drawn from the traffic profile (the same "
                      "seed, the same requests) and of the simulated trials' noise.")  # fmt: skip


def tuned_overrides(instance: dg.DagsterInstance, model: str) -> dict[str, str]:
    """The serving overrides of the model's latest adopted tuning (empty when none was adopted)."""
    materialization = latest_materialization(instance, TUNED_ASSET, model)
    if materialization is None:
        return {}
    adopted = materialization.metadata.get("adopted")
    overrides = materialization.metadata.get("overrides")
    if not (isinstance(adopted, dg.BoolMetadataValue) and adopted.value):
        return {}
    if not isinstance(overrides, dg.JsonMetadataValue) or not isinstance(overrides.value, dict):
        return {}
    return {str(key): str(value) for key, value in overrides.value.items()}


def _space(config: AutoTuneConfig) -> SearchSpace:
    axes: dict[str, Sequence[float]] = {
        "max_num_seqs": config.max_num_seqs,
        "max_num_batched_tokens": config.max_num_batched_tokens,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "max_model_len": config.max_model_len,
    }
    try:
        return SearchSpace({knob: tuple(float(v) for v in values) for knob, values in axes.items() if values})
    except ValueError as error:
        raise dg.Failure(description=f"auto_tune run config: {error}", allow_retries=False) from None


def build_tuned_serving_config_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=TUNED_ASSET,
        kinds={"vllm", "pandas"},
        **lifecycle_asset_options(catalog, partitions, group=AUTO_TUNE_GROUP),
        pool=BENCHMARK_POOL,
        deps=[TRAFFIC_PROFILE_ASSET],  # the retune job measures the traffic first (traffic_shape_sensor)
        description=(
            "Engine arguments with the most goodput (output tokens/s at the highest load that meets the SLO) from "
            "a noise-aware coordinate search over max_num_seqs x max_num_batched_tokens, starting at the serving "
            "plan's best: each trial serves the candidate on the target (or on the simulated GPU server) and finds "
            "its highest SLO-meeting load; repeated measurements give the noise, finalists are measured again. "
            "Adopted, and then applied by serving_config, only when the interval on its gain clears the margin. "
            "Metadata: the trial table, the gain's interval and a Pareto plot."
        ),
    )
    def tuned_serving_config(
        context: dg.AssetExecutionContext,
        config: AutoTuneConfig,
        model_weights: SnapshotManifest,
        target: TargetResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        refuse_environment_references(context)
        name = context.partition_key
        space = _space(config)
        previous = tuned_overrides(context.instance, name)
        with platform_errors_as_failure():
            current: ModelSpec = apply_serving_overrides(
                catalog.model(name), previous, origin="adopted tuning", position_limit=model_weights.max_position_tokens
            )
        serving_target = target.serving_target(catalog.platform)
        work_dir = serving_target.artifact_dir(name, "autotune", context.run.run_id)
        plan = BenchmarkPlan(
            input_len=config.input_len,
            output_len=config.output_len,
            prompts_per_level=MIN_PROMPTS_PER_PROBE,
            num_warmups=1,
            seed=config.seed,
        )
        # The measured traffic, as many draws as the highest load sends: no level repeats a prompt (a repeat would
        # hit the prefix cache).
        plan = with_traffic_profile(
            context.instance,
            current,
            plan,
            count=max(MIN_PROMPTS_PER_PROBE, config.prompts_per_load * config.load_high),
        )
        context.log.info(f"model '{name}': trials send {plan.described}")
        settings = TrialSettings(plan, config.load_low, config.load_high, config.prompts_per_load)
        serving_plan = latest_value(context.instance, PLAN_ASSET, name)
        backend = target.trial_backend(
            catalog.platform, config.trials, serving_plan=serving_plan, noise=config.noise_pct / 100, seed=config.seed
        )
        with platform_errors_as_failure():
            trials = backend.trial_runner(
                current, model_weights, settings, run_key=context.run.run_id, work_dir=work_dir, log=context.log.info
            )
        serving = current.serving.model_dump()
        current_candidate = {knob: float(serving[knob]) for knob in space.axes if serving.get(knob) is not None}
        # The planner's best config is where the search starts (when it planned this TP size); else the current one.
        best_planned = serving_plan.best if isinstance(serving_plan, ServingPlan) else None
        if best_planned is not None and best_planned.tensor_parallel_size == current.serving.tensor_parallel_size:
            start = space.nearest(best_planned.overrides)
        else:
            start = space.nearest({knob: serving.get(knob) for knob in space.axes})
        outcome = noise_aware_search(
            space, trials, start, current=current_candidate, equivalent=clamp_seqs(config.load_high),
            repeats=config.repeats, margin=config.margin_pct / 100,
        )  # fmt: skip
        result, best, adopted = outcome.result, outcome.winner, outcome.adopted
        baseline_goodput = statistics.median(outcome.baseline)
        overrides = as_overrides(best.candidate) if adopted and best is not None else previous
        # Every measurement in order, the current config's repeats included (labelled so).
        labels = [
            "current" if trial.candidate == current_candidate else f"t{index}"
            for index, trial in enumerate(result.trials, start=1)
        ]
        every = result.trials
        frame = trials_frame(every, labels)
        frame.to_csv(work_dir / "trials.csv", index=False)
        png = pareto_png(name, every, labels)
        (work_dir / "pareto.png").write_bytes(png)
        gain = outcome.gain * 100
        low, high = (value * 100 for value in outcome.gain_interval)
        # The current config measured again after the winner (only when the winner looked adoptable): a load that
        # moved between trials moves it too, and is not adopted as a gain.
        remeasured = (
            f"; measured again after the search, the current config moved {outcome.current_moved * 100:+.1f}% and "
            f"the winner beats it by {outcome.gain_after * 100:+.1f}%"
            + ("" if adopted else " (the machine's load changed during the search: run auto_tune again)")
            if outcome.confirmation else ""
        )  # fmt: skip
        verdict = (
            f"adopted {overrides} ({gain:+.1f}% goodput, interval {low:+.1f}% to {high:+.1f}%{remeasured})" if adopted
            else f"kept the current config (best {gain:+.1f}%, interval {low:+.1f}% to {high:+.1f}%, margin "
            f"{config.margin_pct:g}%{remeasured})"
        )  # fmt: skip
        context.log.info(f"model '{name}': {len(result.trials)} trials; {verdict}")
        return dg.MaterializeResult(
            value=overrides,
            metadata={
                "adopted": dg.MetadataValue.bool(adopted),
                "overrides": dg.MetadataValue.json(overrides),
                "current_goodput_tok_s": dg.MetadataValue.float(float(baseline_goodput)),
                "best_goodput_tok_s": dg.MetadataValue.float(float(best.goodput if best else 0.0)),
                "gain_pct": dg.MetadataValue.float(float(gain)),
                # Null ends: no finalist, or a current config with no goodput.
                "gain_interval_pct": dg.MetadataValue.json([_percent(value) for value in outcome.gain_interval]),
                "noise_spread_pct": dg.MetadataValue.float(float(outcome.spread * 100)),
                "current_goodputs": dg.MetadataValue.json([round(v, 3) for v in outcome.baseline]),
                "current_goodputs_after": dg.MetadataValue.json([round(v, 3) for v in outcome.confirmation]),
                # NaN when the current config was measured once (nothing looked adoptable).
                "current_moved_pct": dg.MetadataValue.float(outcome.current_moved * 100),
                "gain_after_pct": dg.MetadataValue.float(outcome.gain_after * 100),
                "winner_goodputs": dg.MetadataValue.json([round(v, 3) for v in outcome.winner_goodputs]),
                "start": dg.MetadataValue.json(dict(start)),
                "trial_backend": dg.MetadataValue.text(config.trials),
                "workload": dg.MetadataValue.text(plan.described),
                "trials": dg.MetadataValue.int(len(result.trials)),
                "grid_size": dg.MetadataValue.int(len(space.grid())),
                "failed_trials": dg.MetadataValue.int(sum(not trial.ok for trial in result.trials)),
                "trial_table": table_metadata(frame),
                "pareto": dg.MetadataValue.md(
                    f"![goodput vs p95 TTFT](data:image/png;base64,{base64.b64encode(png).decode()})"
                ),
                "search_space": dg.MetadataValue.json(json.loads(json.dumps(dict(space.axes)))),
                "artifacts": dg.MetadataValue.path(str(work_dir)),
            },
        )

    return tuned_serving_config


def _percent(fraction: float) -> float | None:
    """A fraction as a rounded percentage for JSON metadata, which has no NaN or infinity: null then."""
    return round(fraction * 100, 2) if math.isfinite(fraction) else None


def auto_tune_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        AUTO_TUNE_JOB,
        selection=[TUNED_ASSET],
        description="Search the engine arguments for the most goodput under the model's SLO; an adopted result "
        "becomes serving_config's override for the next lifecycle or promote run.",
    )


def retune_job() -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        RETUNE_JOB,
        selection=[TRAFFIC_PROFILE_ASSET, TUNED_ASSET],
        description="Measure the model's traffic profile, then search the engine arguments again: what "
        "traffic_shape_sensor requests when the live request lengths moved away from the profile the deployed config "
        "was benchmarked on. An adopted result is promoted by the sensor's next tick through the rollout strategy.",
    )
