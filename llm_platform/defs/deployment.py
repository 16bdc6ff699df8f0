"""The ``vllm_deployment`` asset: promotes the benchmarked config to the model's endpoint.

No ``from __future__ import annotations`` here: Dagster reads the resource annotations at runtime.
"""

import dagster as dg

from llm_platform.catalog import Catalog
from llm_platform.conventions import DEPLOYMENT_ASSET
from llm_platform.defs.canary import abandoned_judge, promote_as_canary
from llm_platform.defs.failures import platform_errors_as_failure, refuse_environment_references
from llm_platform.defs.resources import PrometheusResource, TargetResource
from llm_platform.defs.values import BenchmarkOutcome, DeploymentRecord, ServingChoice
from llm_platform.defs.weights import lifecycle_asset_options


def _detail(value: str | int | list[str]) -> dg.MetadataValue:
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    if isinstance(value, list):
        return dg.MetadataValue.json(value)
    return dg.MetadataValue.text(value)


def build_deployment_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """Promotion on the target: blue/green between vLLM processes behind the model's local endpoint, or
    server-side apply, rollout wait and automatic rollback in the catalog's namespace; with ``rollout.strategy:
    canary``, first a canary beside what serves, stepped and judged on live traffic. A canary left behind by a run
    that died is rolled back before this promotion proceeds."""

    @dg.asset(
        name=DEPLOYMENT_ASSET,
        kinds={"vllm"},
        **lifecycle_asset_options(catalog, partitions),
        dagster_type=dg.Any,
        description=(
            "The model served at its endpoint with the benchmarked serving_config. Runs only when every blocking "
            "SLO check of smoke_benchmark passed, and refuses a config that is not the one benchmarked. Locally the "
            "switch is blue/green; on Kubernetes a rolling update that is rolled back automatically when the new "
            "pods do not become ready."
        ),
    )
    def vllm_deployment(
        context: dg.AssetExecutionContext,
        serving_config: ServingChoice,
        smoke_benchmark: BenchmarkOutcome,
        target: TargetResource,
        prometheus: PrometheusResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        refuse_environment_references(context)
        model = serving_config.model
        sha = serving_config.weights.sha
        if smoke_benchmark.config_fingerprint != serving_config.fingerprint or not smoke_benchmark.slo_passed:
            # Materializing this asset alone must not promote a config that was never benchmarked, or failed.
            raise dg.Failure(
                description=f"model '{model.name}': the last smoke_benchmark "
                + (
                    f"measured config {smoke_benchmark.config_fingerprint}, not serving_config "
                    f"{serving_config.fingerprint}"
                    if smoke_benchmark.config_fingerprint != serving_config.fingerprint
                    else "missed its SLOs"
                )
                + "; run the promote job (serving_config → smoke_benchmark → vllm_deployment)",
                allow_retries=False,
            )
        log = context.log.info
        canary_metadata: dict[str, dg.MetadataValue] = {}
        with platform_errors_as_failure():
            serving_target = target.serving_target(catalog.platform)
            cleaned = serving_target.roll_back_abandoned_canary(
                model, abandoned=abandoned_judge(context.instance, model.rollout), log=log
            )
            if cleaned:
                context.log.warning(f"model '{model.name}': {cleaned}")
            canary = (
                serving_target.start_canary(model, serving_config.weights, owner=context.run.run_id, log=log)
                if model.rollout.strategy == "canary"
                else None
            )
            if canary is None:
                deployment = serving_target.promote(model, serving_config.weights, log)
        if canary is not None:
            deployment, canary_metadata = promote_as_canary(canary, model, prometheus.client(), log)
        record = DeploymentRecord(serving_config, deployment, smoke_benchmark)
        return dg.MaterializeResult(
            value=record,
            metadata={
                "endpoint": dg.MetadataValue.url(deployment.endpoint),
                "revision": dg.MetadataValue.text(deployment.revision),
                "config_fingerprint": dg.MetadataValue.text(serving_config.fingerprint),
                "weights_sha": dg.MetadataValue.text(sha),
                # What serves now, read by the tuning-drift sensor as the config it tunes from.
                "serving": dg.MetadataValue.json(model.serving.model_dump(mode="json")),
                "autoscaling": dg.MetadataValue.json(model.autoscaling.model_dump(mode="json")),
                **{key: _detail(value) for key, value in deployment.details.items()},
                **canary_metadata,
            },
        )

    return vllm_deployment
