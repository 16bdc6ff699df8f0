"""What the lifecycle assets hand each other, and how each value is written to and read from JSON.

The values are recorded with their materialization in Dagster's instance (see ``defs/storage.py``): a later run —
on Kubernetes a fresh pod — reads them back from there, never from a file another run wrote. Every value type has
an explicit JSON form (no pickle: the instance is shared, and what is read back is validated like input).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from llm_platform.benchmark.parse import results_frame
from llm_platform.benchmark.plan import BenchmarkPlan, plan_for
from llm_platform.catalog import ModelSpec, config_fingerprint
from llm_platform.conventions import PLAN_ASSET, TRAFFIC_PROFILE_ASSET
from llm_platform.errors import PlatformError
from llm_platform.planning.plan import Estimate, ServingPlan
from llm_platform.targets.base import Deployment
from llm_platform.weights.plan import SnapshotManifest
from llm_platform.workload import TrafficProfile


@dataclass(frozen=True)
class ServingChoice:
    """``serving_config``: the model with its effective serving section, on one weights commit."""

    model: ModelSpec
    weights: SnapshotManifest

    @property
    def fingerprint(self) -> str:
        return config_fingerprint(self.model.serving, self.weights.sha, self.weights.adapter_commits)


@dataclass(frozen=True)
class BenchmarkOutcome:
    """``smoke_benchmark``: the results table and the verdict, tied to the config they were measured on."""

    frame: pd.DataFrame
    config_fingerprint: str
    slo_passed: bool
    plan: BenchmarkPlan
    """What was measured: lengths (or the requests replayed from a traffic profile), requests per level, levels,
    warm-ups, seed. The live benchmark runs exactly this again, so that it compares like with like."""
    adapter_frames: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    """Each LoRA adapter's results by its served name (the plan's top level), which the live benchmark compares
    each adapter with."""


@dataclass(frozen=True)
class DeploymentRecord:
    """``vllm_deployment``: what serves now, and the benchmark of its promotion (the live benchmark's baseline)."""

    choice: ServingChoice
    deployment: Deployment
    baseline: BenchmarkOutcome


class StoredValueError(PlatformError):
    """A value recorded in the instance cannot be read back (written by another version, or tampered with)."""


def _frame_to_json(frame: pd.DataFrame) -> list[dict[str, float | None]]:
    """Rows of a results table; NaN (a value vLLM did not report) as null, since JSON has no NaN."""
    return [
        {str(k): None if isinstance(v, float) and math.isnan(v) else float(v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _frame_from_json(rows: list[dict[str, float | None]]) -> pd.DataFrame:
    return results_frame([{k: math.nan if v is None else float(v) for k, v in row.items()} for row in rows])


def _choice_to_json(choice: ServingChoice) -> dict[str, Any]:
    return {"model": choice.model.model_dump(mode="json"), "weights": choice.weights.model_dump(mode="json")}


def _choice_from_json(data: Mapping[str, Any]) -> ServingChoice:
    return ServingChoice(ModelSpec.model_validate(data["model"]), SnapshotManifest.model_validate(data["weights"]))


def _outcome_to_json(outcome: BenchmarkOutcome) -> dict[str, Any]:
    return {
        "frame": _frame_to_json(outcome.frame),
        "config_fingerprint": outcome.config_fingerprint,
        "slo_passed": outcome.slo_passed,
        "plan": asdict(outcome.plan),
        "adapter_frames": {name: _frame_to_json(frame) for name, frame in outcome.adapter_frames.items()},
    }


def _benchmark_plan_from_json(data: Mapping[str, Any]) -> BenchmarkPlan:
    """A recorded plan, read as input: no client arguments of its own (nothing records any, and the live benchmark
    would pass them on), a request rate that is a number."""
    if data["extra_args"]:
        raise ValueError("the recorded benchmark plan carries client arguments, which no promotion records")
    float(data["request_rate"])  # "inf" or a rate; anything else is not a plan this platform wrote
    return BenchmarkPlan(
        input_len=int(data["input_len"]), output_len=int(data["output_len"]),
        prompts_per_level=int(data["prompts_per_level"]),
        concurrency_levels=tuple(int(level) for level in data["concurrency_levels"]), seed=int(data["seed"]),
        num_warmups=int(data["num_warmups"]), request_rate=str(data["request_rate"]),
        requests=tuple((int(prompt), int(output)) for prompt, output in data["requests"]),
        workload=str(data["workload"]), served_name=str(data["served_name"]),
        peak_rate_rps=float(data["peak_rate_rps"]),
        arrivals_s=tuple(float(arrival) for arrival in data.get("arrivals_s", ())),  # none before 2026-12-08
    )  # fmt: skip


def _recorded_plan(data: Mapping[str, Any], model: ModelSpec | None) -> BenchmarkPlan:
    """The plan an outcome recorded; for one recorded before plans were (levels and replayed requests only), what
    the live benchmark ran then: the model's default plan at those levels."""
    if "plan" in data:
        return _benchmark_plan_from_json(data["plan"])
    requests = tuple((int(prompt), int(output)) for prompt, output in data.get("requests") or ())
    default = plan_for(model) if model is not None else BenchmarkPlan()
    return replace(
        default, concurrency_levels=tuple(int(level) for level in data["concurrency_levels"]), requests=requests,
        workload=str(data.get("workload") or ""), prompts_per_level=len(requests) or default.prompts_per_level,
    )  # fmt: skip


def _outcome_from_json(data: Mapping[str, Any], model: ModelSpec | None = None) -> BenchmarkOutcome:
    return BenchmarkOutcome(
        frame=_frame_from_json(data["frame"]),
        config_fingerprint=str(data["config_fingerprint"]),
        slo_passed=bool(data["slo_passed"]),
        plan=_recorded_plan(data, model),
        adapter_frames={str(name): _frame_from_json(rows) for name, rows in (data.get("adapter_frames") or {}).items()},
    )


def _record_to_json(record: DeploymentRecord) -> dict[str, Any]:
    return {
        "choice": _choice_to_json(record.choice),
        "deployment": asdict(record.deployment),
        "baseline": _outcome_to_json(record.baseline),
    }


def _record_from_json(data: Mapping[str, Any]) -> DeploymentRecord:
    deployment, choice = data["deployment"], _choice_from_json(data["choice"])
    return DeploymentRecord(
        choice=choice,
        deployment=Deployment(
            endpoint=str(deployment["endpoint"]),
            benchmark_url=str(deployment["benchmark_url"]),
            revision=str(deployment["revision"]),
            details=dict(deployment["details"]),
        ),
        baseline=_outcome_from_json(data["baseline"], choice.model),
    )


def _plan_to_json(plan: ServingPlan) -> dict[str, Any]:
    """NaN (no estimate) as null, since JSON has no NaN."""

    def clean(value: object) -> object:
        return None if isinstance(value, float) and math.isnan(value) else value

    def estimate(e: Estimate) -> dict[str, object]:
        return {key: clean(value) for key, value in asdict(e).items()}

    return {
        "model": plan.model, "gpu_type": plan.gpu_type, "note": plan.note, "model_ref": plan.model_ref,
        "estimates": [estimate(e) for e in plan.estimates],
        "nearest": estimate(plan.nearest) if plan.nearest else None,
    }  # fmt: skip


def _plan_from_json(data: Mapping[str, Any]) -> ServingPlan:
    def number(value: object) -> float:
        return math.nan if value is None else float(value)  # type: ignore[arg-type]

    def estimate(row: Mapping[str, Any]) -> Estimate:
        return Estimate(
            int(row["tensor_parallel_size"]), int(row["max_num_seqs"]), int(row["max_num_batched_tokens"]),
            float(row["gpu_memory_utilization"]), int(row["max_model_len"]), bool(row["fits"]),
            int(row["kv_cache_tokens"]), int(row["concurrency"]), number(row["output_tokens_per_s"]),
            number(row["ttft_ms"]), number(row["tpot_ms"]), str(row["note"]),
        )  # fmt: skip

    return ServingPlan(
        model=str(data["model"]), gpu_type=str(data["gpu_type"]), note=str(data["note"]),
        model_ref=str(data["model_ref"]), estimates=tuple(estimate(row) for row in data["estimates"]),
        nearest=estimate(data["nearest"]) if data["nearest"] else None,
    )  # fmt: skip


def _overrides_from_json(data: Mapping[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in data.items()}


#: kind → (type, to JSON, from JSON). The kind is stored beside the value, so a reader never guesses.
_CODECS: dict[str, tuple[type, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "snapshot_manifest": (
        SnapshotManifest,
        lambda manifest: manifest.model_dump(mode="json"),
        SnapshotManifest.model_validate,
    ),
    "serving_choice": (ServingChoice, _choice_to_json, _choice_from_json),
    "benchmark_outcome": (BenchmarkOutcome, _outcome_to_json, _outcome_from_json),
    "deployment_record": (DeploymentRecord, _record_to_json, _record_from_json),
    "results_frame": (pd.DataFrame, _frame_to_json, _frame_from_json),
    "overrides": (dict, dict, _overrides_from_json),
    PLAN_ASSET: (ServingPlan, _plan_to_json, _plan_from_json),
    TRAFFIC_PROFILE_ASSET: (TrafficProfile, TrafficProfile.as_json, TrafficProfile.from_json),
}


def encode_value(value: object) -> dict[str, Any]:
    """``{"kind": …, "value": …}``: the JSON form of one asset value."""
    for kind, (value_type, to_json, _) in _CODECS.items():
        if isinstance(value, value_type):
            return {"kind": kind, "value": to_json(value)}
    raise TypeError(f"no JSON form for a {type(value).__name__}; add one to llm_platform/defs/values.py")


def decode_value(payload: object, origin: str) -> object:
    """The value of :func:`encode_value`'s output; ``origin`` names it in the error when it cannot be read."""
    if not isinstance(payload, Mapping) or payload.get("kind") not in _CODECS:
        raise StoredValueError(f"{origin}: the recorded value has no known kind; re-materialize it")
    _, _, from_json = _CODECS[str(payload["kind"])]
    try:
        return from_json(payload["value"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # pydantic's ValidationError is a ValueError
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StoredValueError(f"{origin}: the recorded value cannot be read ({first}); re-materialize it") from None
