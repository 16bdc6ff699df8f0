"""The sensors. ``tuning_drift_sensor`` watches every deployed model in Prometheus and requests a ``promote`` run
with new engine arguments when the policy (``tuning/policy.py``) recommends them; ``new_revision_sensor`` runs the
lifecycle for new hub commits of the models that opt in.

One sensor tick: the deployed models and their serving config from the instance (the ``serving`` metadata of their
latest ``vllm_deployment``), one Prometheus snapshot for all of them (one PromQL request), the last windows
of each model from the cursor (hysteresis), the policy's decision, then the cooldown and the daily cap from the
cursor. A recommendation becomes a RunRequest for the ``promote`` job with all the overrides of the deployed
config plus the new ones (run_key: model + rule + window, so a re-evaluated tick never runs twice); otherwise the
SkipReason lists every model's observed values and why nothing changes.

No ``from __future__ import annotations`` here: Dagster reads the sensor function's annotations at runtime.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

from llm_platform.catalog import Catalog, ModelPatch, ModelSpec, patch_between
from llm_platform.defs.jobs import LIFECYCLE_JOB, PROMOTE_JOB, promotion_request
from llm_platform.defs.partitions import latest_materialization
from llm_platform.defs.resources import PrometheusResource, WeightsResource
from llm_platform.defs.storage import VALUE_METADATA_KEY
from llm_platform.defs.values import DeploymentRecord, decode_value
from llm_platform.errors import PlatformError
from llm_platform.tuning.policy import TuningLimits, Window, decide, gate

SENSOR_NAME = "tuning_drift_sensor"
REVISION_SENSOR_NAME = "new_revision_sensor"


@dataclass
class DriftState:
    """The sensor's cursor: recent windows and the times of the changes it requested, per model."""

    windows: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    changes: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def load(cls, cursor: str | None) -> "DriftState":
        try:
            data = json.loads(cursor) if cursor else {}
            return cls(windows=dict(data.get("windows", {})), changes=dict(data.get("changes", {})))
        except (ValueError, AttributeError):
            return cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _latest_deployments(instance: dg.DagsterInstance, names: list[str]) -> dict[str, dg.AssetMaterialization]:
    """The latest vllm_deployment materialization of each model, in one query for the usual case (newest first,
    enough records for a few redeployments per model), then one per model not found in it."""
    key = dg.AssetKey("vllm_deployment")
    latest: dict[str, dg.AssetMaterialization] = {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=names), limit=max(100, 5 * len(names))
    ).records
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None and materialization.partition not in latest:
            latest[str(materialization.partition)] = materialization
    for name in set(names) - set(latest):
        materialization = latest_materialization(instance, "vllm_deployment", name)
        if materialization is not None:
            latest[name] = materialization
    return latest


def _json_metadata(materialization: dg.AssetMaterialization, key: str) -> dict[str, Any]:
    value = materialization.metadata.get(key)
    return value.value if isinstance(value, dg.JsonMetadataValue) and isinstance(value.value, dict) else {}


def _deployed_model(model: ModelSpec, materialization: dg.AssetMaterialization) -> ModelSpec:
    """The model as it is deployed: its serving and autoscaling sections from the deployment's metadata."""
    recorded = {
        **_json_metadata(materialization, "serving"),
        **{f"autoscaling.{key}": value for key, value in _json_metadata(materialization, "autoscaling").items()},
    }
    return ModelPatch.parse(model, recorded, origin="deployed config").apply(model)


def _position_limit(materialization: dg.AssetMaterialization) -> int | None:
    """The deployed weights' position limit, from the deployment record stored with the materialization."""
    stored = materialization.metadata.get(VALUE_METADATA_KEY)
    if not isinstance(stored, dg.JsonMetadataValue):
        return None
    try:
        record = decode_value(stored.value, "vllm_deployment")
    except PlatformError:
        return None
    return record.choice.weights.max_position_tokens if isinstance(record, DeploymentRecord) else None


def build_drift_sensor(
    catalog: Catalog, *, limits: TuningLimits | None = None, interval_s: int = 300, window: str = "5m"
) -> dg.SensorDefinition:
    limits = limits or TuningLimits()

    @dg.sensor(
        name=SENSOR_NAME,
        job_name=PROMOTE_JOB,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Watches every deployed model's vLLM metrics in Prometheus and, when the engine arguments no "
        "longer fit the traffic (OOM kills, KV saturation, queue at the replica ceiling, a context far above or "
        "crowded by the requests), "
        "requests a promote run with the recommended overrides.",
    )
    def tuning_drift_sensor(context: dg.SensorEvaluationContext, prometheus: PrometheusResource) -> dg.SensorResult:
        state = DriftState.load(context.cursor)
        deployed, materializations = {}, _latest_deployments(context.instance, catalog.model_names)
        for name, materialization in materializations.items():
            try:
                deployed[name] = _deployed_model(catalog.model(name), materialization)
            except PlatformError as error:
                context.log.warning(f"model '{name}': deployed config unreadable: {error}")
        if not deployed:
            return dg.SensorResult(skip_reason="no model is deployed yet", cursor=state.dump())
        now = time.time()
        try:
            snapshot = prometheus.client().snapshot(window=window, at=now)
        except PlatformError as error:
            return dg.SensorResult(skip_reason=f"metrics unavailable: {error}", cursor=state.dump())
        requests, notes = [], []
        for name, current in deployed.items():
            latest = snapshot.get(name) or Window.no_data(now)
            history = [*state.windows.get(name, []), asdict(latest)][-limits.sustained_windows :]
            state.windows[name] = history
            decision = decide(current, [Window(**w) for w in history], now, limits)
            observed = ", ".join(f"{k}={v:g}" for k, v in decision.observed.items())
            if decision.kind != "recommend":
                notes.append(f"{name}: {decision.kind} ({decision.reason}){' [' + observed + ']' if observed else ''}")
                continue
            wait = gate(state.changes.get(name, []), now)
            if wait:
                notes.append(f"{name}: {decision.reason}; not yet: {wait}")
                continue
            # The deployed config's own changes plus the proposal, validated like the catalog (with the weights'
            # position limit) before any run is requested: an invalid proposal is a skip with its reason.
            base = catalog.model(name)
            try:
                limit = _position_limit(materializations[name])
                proposal = patch_between(base, current).merged(
                    ModelPatch.parse(current, decision.overrides, origin=SENSOR_NAME, position_limit=limit)
                )
                proposal.apply(base, origin=SENSOR_NAME, position_limit=limit)
            except PlatformError as error:
                notes.append(f"{name}: {decision.reason}; proposal refused: {error}")
                continue
            _, run_config = promotion_request(
                overrides=proposal.as_overrides(), reason=f"{decision.rule}: {decision.reason}"
            )
            requests.append(
                dg.RunRequest(
                    partition_key=name,
                    run_key=f"{name}:{decision.rule}:{int(latest.sample_time)}",
                    run_config=run_config,
                    tags={"llm-platform/trigger": SENSOR_NAME, "llm-platform/rule": decision.rule},
                )
            )
            state.changes[name] = [*state.changes.get(name, []), now]
            state.windows[name] = []  # a new config starts a new observation
        return dg.SensorResult(
            run_requests=requests, skip_reason=None if requests else "; ".join(notes), cursor=state.dump()
        )

    return tuning_drift_sensor


def _materialized_sha(instance: dg.DagsterInstance, model: str) -> str | None:
    materialization = latest_materialization(instance, "model_weights", model)
    value = materialization.metadata.get("revision_sha") if materialization is not None else None
    return str(value.value) if isinstance(value, dg.TextMetadataValue) else None


def build_revision_sensor(catalog: Catalog, *, interval_s: int = 600) -> dg.SensorDefinition:
    """``new_revision_sensor``: for models with ``source.track_revision``, a ``lifecycle`` run pinned to the new
    commit when their branch moves on the hub (run_key: model + commit, so each commit runs once)."""
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
        requests, notes = [], []
        for model in tracked:
            assert model.source.repo is not None  # the catalog requires a repository for tracking
            try:
                sha = hub.resolve_revision(model.name, model.source.repo, model.source.revision)
            except PlatformError as error:
                notes.append(f"{model.name}: {error}")
                continue
            current = _materialized_sha(context.instance, model.name)
            if sha == current:
                notes.append(f"{model.name}: {model.source.revision} is still {sha[:12]}")
                continue
            _, run_config = promotion_request(
                revision=sha, reason=f"{model.source.repo}@{model.source.revision} moved to {sha[:12]}"
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
