"""The ``traffic_profile`` asset: what a model really served, from Prometheus, for the benchmarks, plans and tuning
that should be judged on it.

No ``from __future__ import annotations`` here: Dagster reads the config annotations at runtime.
"""

import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from pydantic import Field

from llm_platform.catalog import Catalog, ModelSpec
from llm_platform.conventions import DEPLOYMENT_ASSET, TRAFFIC_PROFILE_ASSET, TUNED_ASSET
from llm_platform.defs.failures import refuse_environment_references
from llm_platform.defs.jobs import PROMOTE_JOB, promotion_request
from llm_platform.defs.metadata import table_metadata
from llm_platform.defs.partitions import latest_materialization_records, runs_in_progress
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.storage import stored_value
from llm_platform.defs.tuning import RETUNE_JOB
from llm_platform.defs.weights import lifecycle_asset_options
from llm_platform.engine import engine_for
from llm_platform.errors import PlatformError
from llm_platform.tuning.policy import gate
from llm_platform.workload import ShapeLimits, TrafficProfile, build_profile, shape_moved, window_problem
from llm_platform.workload_report import figures_frame, profile_png, served_frame

TRAFFIC_GROUP = "traffic"


class ProfileConfig(dg.Config):
    """Run configuration of ``traffic_profile``."""

    window_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="How far back to read the model's traffic (at most what "
        "Prometheus retains; a longer window is refused in one line)."
    )  # fmt: skip


def read_profile(model: ModelSpec, prometheus: PrometheusResource, window_s: int) -> TrafficProfile:
    """The model's profile over the last ``window_s`` seconds; the catalog's traffic section, with the reason as a
    note, when Prometheus cannot say (unreachable, too little traffic). A window longer than Prometheus retains is
    the caller's mistake: a ``Failure`` with one line."""
    client = prometheus.client()
    try:
        retention = client.retention_s()
    except PlatformError as error:
        return TrafficProfile.from_catalog(model, window_s, 0, f"metrics unavailable: {error}")
    problem = window_problem(window_s, retention)
    if problem is not None:
        raise dg.Failure(description=f"model '{model.name}': {problem}", allow_retries=False)
    try:
        measured = client.measured_traffic(model.name, window_s, engine_for(model.serving).metrics)
    except PlatformError as error:
        return TrafficProfile.from_catalog(model, window_s, 0, f"metrics unavailable: {error}")
    return build_profile(model, window_s, measured)


def build_traffic_profile_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=TRAFFIC_PROFILE_ASSET,
        kinds={"prometheus", "pandas"},
        dagster_type=dg.Any,
        # A group of its own: "Materialize all" of the lifecycle reads no traffic it does not use yet.
        **lifecycle_asset_options(catalog, partitions, group=TRAFFIC_GROUP),
        description=(
            "What the model really served over a window (default 24 h), from vLLM's metrics in Prometheus: prompt "
            "and generation length distributions (quantiles and the histogram benchmarks draw from), the median and "
            "peak 5-minute request rate, running and waiting requests, prefix-cache hit ratio, finish reasons. With "
            "too little traffic the catalog's traffic section stands in, and the metadata says so."
        ),
    )
    def traffic_profile(
        context: dg.AssetExecutionContext, config: ProfileConfig, prometheus: PrometheusResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        refuse_environment_references(context)
        model = catalog.model(context.partition_key)
        profile = read_profile(model, prometheus, round(config.window_hours * 3600))
        for note in profile.notes:
            context.log.warning(f"model '{model.name}': {note}")
        context.log.info(profile.described)
        png = base64.b64encode(profile_png(profile)).decode()
        return dg.MaterializeResult(
            value=profile,
            metadata={
                "profile": dg.MetadataValue.text(profile.described),
                "source": dg.MetadataValue.text(profile.source),
                "requests": dg.MetadataValue.float(profile.requests),
                "figures": table_metadata(figures_frame(profile)),
                "notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in profile.notes) or "none"),
                "lengths_plot": dg.MetadataValue.md(f"![request lengths](data:image/png;base64,{png})"),
                # Per served name (base and adapters), from the gate: vLLM labels its metrics per engine.
                **({"served_names": table_metadata(served_frame(profile))} if profile.served else {}),
            },
        )

    return traffic_profile


SHAPE_SENSOR_NAME = "traffic_shape_sensor"


@dataclass
class ShapeState:
    """The shape sensor's cursor: when each model's retunes were requested (cooldown and daily cap), and the
    retunes whose outcome is still to be promoted (model → request time)."""

    retunes: dict[str, list[float]] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, cursor: str | None) -> "ShapeState":
        try:
            data = json.loads(cursor) if cursor else {}
            return cls(
                retunes={str(k): [float(t) for t in v] for k, v in dict(data.get("retunes", {})).items()},
                pending={str(k): float(v) for k, v in dict(data.get("pending", {})).items()},
            )
        except (ValueError, AttributeError, TypeError):
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def build_shape_sensor(
    catalog: Catalog,
    jobs: Sequence[UnresolvedAssetJobDefinition],
    *,
    limits: ShapeLimits | None = None,
    interval_s: int = 1800,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """``traffic_shape_sensor``: a ``retune_on_traffic`` run (profile, then auto-tune) for a deployed model whose
    live request lengths moved away from its latest measured profile (the one its benchmarks replayed) in both
    halves of the window, and a ``promote`` run once that retune adopted a new config (the model's rollout strategy
    judges it, a canary included). ``jobs``: the retune and promote jobs the definitions hold."""
    limits = limits or ShapeLimits()
    engines = {engine.name: engine.metrics for engine in (engine_for(model.serving) for model in catalog.models)}

    @dg.sensor(
        name=SHAPE_SENSOR_NAME,
        jobs=list(jobs),
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Compares every deployed model's live request lengths (two halves of the last "
        f"{limits.window_s / 3600:g} h) with the traffic profile its config was benchmarked on and, when both halves "
        "moved beyond chance and a minimum distance, requests a retune_on_traffic run; promotes an adopted result.",
    )
    def traffic_shape_sensor(context: dg.SensorEvaluationContext, prometheus: PrometheusResource) -> dg.SensorResult:
        state = ShapeState.load(context.cursor)
        now = clock()
        names = catalog.model_names
        deployments = latest_materialization_records(context.instance, DEPLOYMENT_ASSET, names)
        requests, notes = _promote_adopted(context.instance, state, names, now, give_up_s=2 * interval_s), []
        requests_for = {request.partition_key for request in requests}
        baselines = latest_materialization_records(context.instance, TRAFFIC_PROFILE_ASSET, names)
        client = prometheus.client()
        try:
            live = {name: shapes for metrics in engines.values()
                    for name, shapes in client.live_shapes(limits.window_s, metrics, at=now).items()}  # fmt: skip
        except PlatformError as error:
            return dg.SensorResult(run_requests=requests, skip_reason=f"metrics unavailable: {error}",
                                   cursor=state.dump())  # fmt: skip
        for name in names:
            deployment = deployments.get(name)
            if deployment is None:
                notes.append(f"{name}: not deployed")
                continue
            if name in requests_for or name in state.pending:
                notes.append(f"{name}: a retune or its promotion is in progress")
                continue
            if now - deployment.timestamp < limits.window_s:
                notes.append(f"{name}: deployed {now - deployment.timestamp:.0f} s ago, younger than the window")
                continue
            record = baselines.get(name)
            baseline = stored_value(record.asset_materialization if record else None, TRAFFIC_PROFILE_ASSET, name)
            if not isinstance(baseline, TrafficProfile):
                notes.append(f"{name}: no traffic profile measured yet (materialize traffic_profile)")
                continue
            halves = live.get(name)
            if halves is None:
                notes.append(f"{name}: no request lengths in Prometheus")
                continue
            verdict = shape_moved(baseline, halves, limits)
            if not verdict.moved:
                notes.append(f"{name}: {verdict.reason}")
                continue
            wait = gate(state.retunes.get(name, []), now, limits.cooldown_s, limits.max_per_day)
            if wait or runs_in_progress(context.instance, name):  # the instance is asked only for a moved shape
                notes.append(f"{name}: {verdict.reason}; not yet: {wait or 'a run of the model is in progress'}")
                continue
            context.log.info(f"model '{name}': {verdict.reason}: retuning on the new shape")
            requests.append(dg.RunRequest(
                job_name=RETUNE_JOB, partition_key=name, run_key=f"{name}:retune:{int(now)}",
                tags={"llm-platform/trigger": SHAPE_SENSOR_NAME},
            ))  # fmt: skip
            state.retunes[name] = [when for when in state.retunes.get(name, []) if now - when < 86400] + [now]
            state.pending[name] = now
        return dg.SensorResult(
            run_requests=requests, skip_reason=None if requests else "; ".join(notes), cursor=state.dump()
        )

    return traffic_shape_sensor


def _promote_adopted(
    instance: dg.DagsterInstance, state: ShapeState, names: list[str], now: float, give_up_s: float
) -> list[dg.RunRequest]:
    """A ``promote`` run for each pending retune that has finished with an adopted config (serving_config applies
    the adopted overrides); a retune that kept the config is no longer pending, nor one that left no result
    ``give_up_s`` after it was requested while no run of the model is in progress (it failed)."""
    if not state.pending:
        return []
    tuned = latest_materialization_records(instance, TUNED_ASSET, [n for n in names if n in state.pending])
    requests = []
    for name, requested in sorted(state.pending.items()):
        record = tuned.get(name)
        if record is None or record.timestamp < requested or record.asset_materialization is None:
            if now - requested > give_up_s and not runs_in_progress(instance, name):
                del state.pending[name]
            continue
        del state.pending[name]
        adopted = record.asset_materialization.metadata.get("adopted")
        if isinstance(adopted, dg.BoolMetadataValue) and adopted.value:
            _, run_config = promotion_request(reason=f"{SHAPE_SENSOR_NAME}: adopted retune on the new traffic shape")
            requests.append(dg.RunRequest(
                job_name=PROMOTE_JOB, partition_key=name, run_key=f"{name}:promote-retune:{int(record.timestamp)}",
                run_config=run_config, tags={"llm-platform/trigger": SHAPE_SENSOR_NAME},
            ))  # fmt: skip
    return requests
