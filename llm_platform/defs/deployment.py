"""The ``vllm_deployment`` asset: promotes the benchmarked config to the model's endpoint.

No ``from __future__ import annotations`` here: Dagster reads the resource annotations at runtime.
"""

import dagster as dg

from llm_platform.catalog import Catalog, ModelSpec
from llm_platform.defs.failures import platform_errors_as_failure
from llm_platform.defs.resources import KubernetesTargetResource, LocalTargetResource, WeightsResource
from llm_platform.defs.values import BenchmarkOutcome, DeploymentRecord, ServingChoice
from llm_platform.defs.weights import lifecycle_asset_options
from llm_platform.engine import DEFAULT_PORT
from llm_platform.manifests.render import resource_name, serving_invocation


def _service_url(catalog: Catalog, model: ModelSpec) -> str:
    return f"http://{resource_name(model)}.{catalog.platform.namespace}.svc.cluster.local:{DEFAULT_PORT}"


def kubernetes_endpoint(catalog: Catalog, model: ModelSpec) -> str:
    """The model's URL: its Ingress host when exposed, else the in-cluster Service address."""
    if model.exposure.host is not None:
        scheme = "https" if model.exposure.tls_secret else "http"
        return f"{scheme}://{model.exposure.host}"
    return _service_url(catalog, model)


def build_deployment_asset(
    catalog: Catalog, partitions: dg.PartitionsDefinition, target_kind: str = "local"
) -> dg.AssetsDefinition:
    """``target_kind`` ``local``: blue/green between vLLM processes behind the model's local endpoint;
    ``kubernetes``: server-side apply, rollout wait and automatic rollback in the catalog's namespace."""

    @dg.asset(
        name="vllm_deployment",
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
        weights: WeightsResource,
        local_target: LocalTargetResource,
        kubernetes: KubernetesTargetResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
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
        if target_kind == "kubernetes":
            with platform_errors_as_failure():
                promotion = kubernetes.target(catalog.platform).promote(model, sha, log=context.log.info)
            revision = promotion.revision
            previous = promotion.previous.label() if promotion.previous else "none"
            endpoint = kubernetes_endpoint(catalog, model)
            record = DeploymentRecord(serving_config, _service_url(catalog, model), smoke_benchmark, revision.label())
            metadata: dict[str, dg.MetadataValue] = {
                "target": dg.MetadataValue.text(f"kubernetes ({catalog.platform.namespace})"),
                "revision": dg.MetadataValue.text(revision.label()),
                "previous_revision": dg.MetadataValue.text(previous),
                "image": dg.MetadataValue.text(revision.image),
                "server_fingerprint": dg.MetadataValue.text(revision.engine_fingerprint),
                "engine_args": dg.MetadataValue.json(list(serving_invocation(catalog.platform, model, sha).args)),
                "applied": dg.MetadataValue.json(list(promotion.applied)),
                "rollout": dg.MetadataValue.text(promotion.detail),
            }
        else:
            weights_path = weights.snapshot_path(serving_config.weights)
            target = local_target.target()
            with platform_errors_as_failure():
                status = target.promote(model, weights_path, log=context.log.info)
            assert status.active is not None and status.endpoint is not None
            endpoint = status.endpoint
            label = f"local server {status.active.fingerprint} weights {sha[:12]}"
            record = DeploymentRecord(serving_config, endpoint, smoke_benchmark, label)
            metadata = {
                "target": dg.MetadataValue.text("local"),
                "revision": dg.MetadataValue.text(label),
                "server_fingerprint": dg.MetadataValue.text(status.active.fingerprint),
                "server_pid": dg.MetadataValue.int(status.active.pid),
                "engine_args": dg.MetadataValue.json(list(target.invocation(model, weights_path).args)),
                "server_log": dg.MetadataValue.path(status.active.log_path),
            }
        return dg.MaterializeResult(
            value=record,
            metadata={
                "endpoint": dg.MetadataValue.url(endpoint),
                "config_fingerprint": dg.MetadataValue.text(serving_config.fingerprint),
                "weights_sha": dg.MetadataValue.text(sha),
                # What serves now, read by the tuning-drift sensor as the config it tunes from.
                "serving": dg.MetadataValue.json(model.serving.model_dump(mode="json")),
                **metadata,
            },
        )

    return vllm_deployment
