"""The sensors. ``tuning_drift_sensor`` watches every deployed model in Prometheus and requests a ``promote`` run
with new engine arguments or scaling bounds when the policy (``tuning/policy.py``) recommends them;
``new_revision_sensor`` runs the lifecycle for new hub commits of the models that opt in;
``abandoned_canary_sensor`` rolls back canaries whose runs died.

One drift tick: the deployed models, their config and when it was deployed from the instance (the latest
``vllm_deployment`` of each, kept between ticks and brought up to date with the materializations newer than the
cursor's high-water mark: ``defs/deployed.py``), one Prometheus request for all of them (every measurement over the
same fixed lookback, sustained levels as quantiles over time, events as increases), the policy's decision, the
proposal validated like the catalog (position limit, GPU quota), then the cooldown and the daily cap from the
cursor. A recommendation becomes a RunRequest for the ``promote`` job with all the changes of the deployed config
plus the new ones (run_key: model + rule + tick time); otherwise the SkipReason lists every model's observed values
and why nothing changes. The cursor holds the times of the changes requested and the deployments' high-water mark.

No ``from __future__ import annotations`` here: Dagster reads the sensor function's annotations at runtime.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from llm_platform.catalog import Catalog, ModelPatch, ModelSpec, QuotaBudget, patch_between
from llm_platform.conventions import DEPLOYMENT_ASSET, WEIGHTS_ASSET
from llm_platform.defs.canary import CANARY_ROLLBACK_JOB
from llm_platform.defs.deployed import DeployedIndex
from llm_platform.defs.jobs import LIFECYCLE_JOB, PROMOTE_JOB, promotion_request
from llm_platform.defs.partitions import latest_materialization_records, runs_in_progress
from llm_platform.defs.resources import PrometheusResource, WeightsResource
from llm_platform.defs.storage import VALUE_METADATA_KEY
from llm_platform.defs.values import DeploymentRecord, decode_value
from llm_platform.engine import engine_for
from llm_platform.errors import PlatformError
from llm_platform.prometheus import Lookback
from llm_platform.tuning.policy import Snapshot, TuningLimits, decide, gate

SENSOR_NAME = "tuning_drift_sensor"
REVISION_SENSOR_NAME = "new_revision_sensor"
CANARY_SENSOR_NAME = "abandoned_canary_sensor"


@dataclass
class DriftState:
    """The sensor's cursor: the times of the changes it requested, per model (for the cooldown and the daily cap),
    and the newest deployment it has read (the high-water mark of ``defs/deployed.py``'s index)."""

    changes: dict[str, list[float]] = field(default_factory=dict)
    deployments_seen: int | None = None

    @classmethod
    def load(cls, cursor: str | None) -> "DriftState":
        try:
            data = json.loads(cursor) if cursor else {}
            seen = data.get("deployments_seen")
            return cls(
                changes={str(k): [float(t) for t in v] for k, v in dict(data.get("changes", {})).items()},
                deployments_seen=int(seen) if seen is not None else None,
            )
        except (ValueError, AttributeError, TypeError):
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _json_metadata(materialization: dg.AssetMaterialization, key: str) -> dict[str, Any]:
    value = materialization.metadata.get(key)
    return value.value if isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, dict) else {}


def _deployed_model(model: ModelSpec, materialization: dg.AssetMaterialization) -> ModelSpec:
    """The model as it is deployed: its serving and autoscaling sections from the deployment's metadata."""
    serving, autoscaling = _json_metadata(materialization, "serving"), _json_metadata(materialization, "autoscaling")
    if serving == model.serving.model_dump(mode="json") and autoscaling in (
        {},
        model.autoscaling.model_dump(mode="json"),
    ):
        return model  # the usual case in a large fleet: deployed as catalogued, nothing to validate again
    recorded = {**serving, **{f"autoscaling.{key}": value for key, value in autoscaling.items()}}
    return ModelPatch.parse(model, recorded, origin="deployed config").apply(model)


def _position_limit(materialization: dg.AssetMaterialization) -> int | None:
    """The deployed weights' position limit, from the deployment record stored with the materialization."""
    stored = materialization.metadata.get(VALUE_METADATA_KEY)
    if not isinstance(stored, dg.JsonMetadataValue):
        return None
    try:
        record = decode_value(stored.value, DEPLOYMENT_ASSET)
    except PlatformError:
        return None
    return record.choice.weights.max_position_tokens if isinstance(record, DeploymentRecord) else None


@dataclass(frozen=True)
class TickPhases:
    """Where one drift tick's time went (``bench/sensor_scale.py`` prints it)."""

    instance_s: float
    """Reading what is deployed from the Dagster instance."""
    prometheus_s: float
    """The one Prometheus request and reading its answer."""
    policy_s: float
    """The policy's decisions, the proposals' validation and the run requests."""
    deployments_read: int
    """Deployment materializations read from the instance this tick (all of them on a cold start)."""


def build_drift_sensor(
    catalog: Catalog,
    *,
    limits: TuningLimits | None = None,
    interval_s: int = 120,
    clock: Callable[[], float] = time.time,
    timer: Callable[[], float] = time.perf_counter,
    on_tick: Callable[[TickPhases], None] | None = None,
) -> dg.SensorDefinition:
    """``interval_s``: two minutes, so that a severe condition (5.6 min of evidence at the defaults) is acted on
    within 10 min of its onset, one recording-rule evaluation and one tick included; a tick costs about 1.5 s at
    5,000 models. ``clock``: the tick's time (injectable, so that tests can place a tick after a deployment's
    lookback); ``timer`` and ``on_tick``: each tick's phases, for the benchmark."""
    limits = limits or TuningLimits()
    lookback = Lookback.of(limits, catalog.platform.namespace)
    models = {model.name: model for model in catalog.models}
    budget = QuotaBudget.of(catalog.platform, catalog.models)  # the fleet's minimums, summed once
    index = DeployedIndex(models, _deployed_model)  # lives as long as the code server's process

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=PROMOTE_JOB,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Watches every deployed model's vLLM metrics in Prometheus and, when the engine arguments no "
        "longer fit the traffic (OOM kills, crash loops, KV saturation, queue at the replica ceiling, a context far "
        "above or crowded by the requests; the worse a condition, the less time it must hold), requests a promote "
        "run with the recommended overrides.",
    )
    def tuning_drift_sensor(context: dg.SensorEvaluationContext, prometheus: PrometheusResource) -> dg.SensorResult:
        state = DriftState.load(context.cursor)
        started = timer()
        read = index.read(context.instance, state.deployments_seen)
        state.deployments_seen = read.mark
        for name, problem in sorted(read.unreadable.items()):
            context.log.warning(f"model '{name}': deployed config unreadable: {problem}")
        if not read.deployed:
            return dg.SensorResult(skip_reason="no model is deployed yet", cursor=state.dump())
        now = clock()
        measured = timer()
        try:
            snapshot = prometheus.client().snapshot(lookback, at=now)
        except PlatformError as error:
            return dg.SensorResult(skip_reason=f"metrics unavailable: {error}", cursor=state.dump())
        decided = timer()
        requests, notes = [], []
        for name, deployed in sorted(read.deployed.items()):
            current, record = deployed.model, deployed.record
            decision = decide(
                current,
                snapshot.get(current.identity.served_name) or Snapshot.no_data(now),
                now,
                config_age_s=now - record.timestamp,
                max_replicas_allowed=budget.max_replicas(current),
                limits=limits,
            )
            observed = ", ".join(f"{k}={v:g}" for k, v in decision.observed.items())
            if decision.kind not in ("recommend", "diagnose"):
                notes.append(f"{name}: {decision.kind} ({decision.reason}){' [' + observed + ']' if observed else ''}")
                continue
            wait = gate(state.changes.get(name, []), now)
            if wait:
                notes.append(f"{name}: {decision.reason}; not yet: {wait}")
                continue
            # The deployed config's own changes plus the proposal, validated like the catalog (with the weights'
            # position limit and the GPU quota) before any run is requested: an invalid proposal is a skip.
            base = models[name]
            try:
                assert record.asset_materialization is not None
                limit = _position_limit(record.asset_materialization)
                proposal = patch_between(base, current).merged(
                    ModelPatch.parse(current, decision.overrides, origin=SENSOR_NAME, position_limit=limit)
                )
                proposal.apply(base, origin=SENSOR_NAME, position_limit=limit, fleet=budget)
            except PlatformError as error:
                notes.append(f"{name}: {decision.reason}; proposal refused: {error}")
                continue
            _, run_config = promotion_request(
                overrides=proposal.as_overrides(),
                reason=f"{decision.rule}: {decision.reason}",
                diagnose_crash=decision.kind == "diagnose",
            )
            requests.append(
                dg.RunRequest(
                    partition_key=name,
                    run_key=f"{name}:{decision.rule}:{int(now)}",
                    run_config=run_config,
                    tags={"llm-platform/trigger": SENSOR_NAME, "llm-platform/rule": decision.rule},
                )
            )
            state.changes[name] = [when for when in state.changes.get(name, []) if now - when < 86400] + [now]
        if on_tick is not None:
            on_tick(TickPhases(measured - started, decided - measured, timer() - decided, read.records_read))
        return dg.SensorResult(
            run_requests=requests, skip_reason=None if requests else "; ".join(notes), cursor=state.dump()
        )

    return tuning_drift_sensor


def _materialized_shas(instance: dg.DagsterInstance, models: list[str]) -> dict[str, str]:
    """The weights commit each model's latest model_weights materialization recorded (read in pages)."""
    shas = {}
    for name, record in latest_materialization_records(instance, WEIGHTS_ASSET, models).items():
        value = record.asset_materialization.metadata.get("revision_sha") if record.asset_materialization else None
        if isinstance(value, dg.TextMetadataValue):
            shas[name] = str(value.value)
    return shas


def build_revision_sensor(catalog: Catalog, *, interval_s: int = 600) -> dg.SensorDefinition:
    """``new_revision_sensor``: for models with ``source.track_revision``, a ``lifecycle`` run pinned to the new
    commit, with the deployed config's changes, when their branch moves on the hub (run_key: model + commit, so each
    commit runs once)."""
    tracked = [model for model in catalog.models if model.source.track_revision]

    @dg.sensor(
        name=REVISION_SENSOR_NAME,
        job_name=LIFECYCLE_JOB,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Follows the hub branch of every model with source.track_revision and runs the lifecycle "
        "(download, benchmark with the SLO gate, promotion) for each new commit.",
    )
    def new_revision_sensor(context: dg.SensorEvaluationContext, weights: WeightsResource) -> dg.SensorResult:
        if not tracked:
            return dg.SensorResult(skip_reason="no model sets source.track_revision")
        hub = weights.hub()
        names = [model.name for model in tracked]
        materialized = _materialized_shas(context.instance, names)
        deployments = latest_materialization_records(context.instance, DEPLOYMENT_ASSET, names)
        requests, notes = [], []
        for model in tracked:
            assert model.source.repo is not None  # the catalog requires a repository for tracking
            try:
                sha = hub.resolve_revision(model.name, model.source.repo, model.source.revision)
            except PlatformError as error:
                notes.append(f"{model.name}: {error}")
                continue
            if sha == materialized.get(model.name):
                notes.append(f"{model.name}: {model.source.revision} is still {sha[:12]}")
                continue
            # The new weights keep the config that serves (its tuning, the drift sensor's changes); the SLO gate
            # decides again whether it is promoted.
            deployed = deployments.get(model.name)
            kept = ModelPatch()
            if deployed is not None and deployed.asset_materialization is not None:
                try:
                    kept = patch_between(model, _deployed_model(model, deployed.asset_materialization))
                except PlatformError as error:
                    context.log.warning(
                        f"model '{model.name}': deployed config unreadable, using the catalog's: {error}"
                    )
            _, run_config = promotion_request(
                revision=sha,
                overrides=kept.as_overrides(),
                reason=f"{model.source.repo}@{model.source.revision} moved to {sha[:12]}",
            )
            requests.append(
                dg.RunRequest(
                    partition_key=model.name,
                    run_key=f"{model.name}:{sha}",
                    run_config=run_config,
                    tags={"llm-platform/trigger": REVISION_SENSOR_NAME, "llm-platform/revision": sha},
                )
            )
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "; ".join(notes))

    return new_revision_sensor


def build_canary_sensor(catalog: Catalog, *, interval_s: int = 60) -> dg.SensorDefinition:
    """``abandoned_canary_sensor``: a model whose canary Prometheus still scrapes while no run of the model is in
    progress has lost its driver (its pod evicted, its process killed): a ``roll_back_canary`` run withdraws it,
    within one interval. The sensor reads Prometheus and the instance only (the code server has no Kubernetes
    rights); the run that rolls back holds them."""
    canaries = [model for model in catalog.models if model.rollout.strategy == "canary"]

    @dg.sensor(
        name=CANARY_SENSOR_NAME,
        job_name=CANARY_ROLLBACK_JOB,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a roll_back_canary run for a model whose canary serves while no run of the model "
        "is in progress (the promotion that drove it died).",
    )
    def abandoned_canary_sensor(context: dg.SensorEvaluationContext, prometheus: PrometheusResource) -> dg.SensorResult:
        if not canaries:
            return dg.SensorResult(skip_reason="no model has rollout.strategy: canary")
        client = prometheus.client()
        try:
            engines = {engine.name: engine.metrics for engine in (engine_for(model.serving) for model in canaries)}
            serving = set().union(*(client.canary_models(metrics) for metrics in engines.values()))
        except PlatformError as error:
            return dg.SensorResult(skip_reason=f"Prometheus: {error}")
        requests, notes = [], []
        for model in canaries:
            if model.name not in serving:
                notes.append(f"{model.name}: no canary")
                continue
            if runs_in_progress(context.instance, model.name):
                notes.append(f"{model.name}: a canary, driven by a run in progress")
                continue
            context.log.warning(f"model '{model.name}': a canary serves and no run drives it: rolling it back")
            requests.append(dg.RunRequest(partition_key=model.name, run_key=f"{model.name}:{int(time.time())}",
                                          tags={"llm-platform/trigger": CANARY_SENSOR_NAME}))  # fmt: skip
        return dg.SensorResult(run_requests=requests, skip_reason=None if requests else "; ".join(notes))

    return abandoned_canary_sensor
