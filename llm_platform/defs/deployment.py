"""The ``vllm_deployment`` asset: promotes the benchmarked config to the model's endpoint.

No ``from __future__ import annotations`` here: Dagster reads the resource annotations at runtime.
"""

import dagster as dg

from llm_platform.catalog import Catalog, ModelSpec
from llm_platform.defs.failures import platform_errors_as_failure
from llm_platform.defs.resources import KubernetesTargetResource, LocalTargetResource, WeightsResource
from llm_platform.defs.weights import LIFECYCLE_GROUP, catalog_owners
from llm_platform.engine import DEFAULT_PORT
from llm_platform.manifests.render import resource_name, serving_invocation
from llm_platform.weights.plan import SnapshotManifest


def kubernetes_endpoint(catalog: Catalog, model: ModelSpec) -> str:
    """The model's URL: its Ingress host when exposed, else the in-cluster Service address."""
    if model.exposure.host is not None:
        scheme = "https" if model.exposure.tls_secret else "http"
        return f"{scheme}://{model.exposure.host}"
    return f"http://{resource_name(model)}.{catalog.platform.namespace}.svc.cluster.local:{DEFAULT_PORT}"


def build_deployment_asset(
    catalog: Catalog, partitions: dg.PartitionsDefinition, target_kind: str = "local"
) -> dg.AssetsDefinition:
    """``target_kind`` ``local``: blue/green between vLLM processes behind the model's local endpoint;
    ``kubernetes``: server-side apply, rollout wait and automatic rollback in the catalog's namespace."""

    @dg.asset(
        name="vllm_deployment",
        kinds={"vllm"},
        partitions_def=partitions,
        group_name=LIFECYCLE_GROUP,
        owners=catalog_owners(catalog),
        deps=["smoke_benchmark"],
        description=(
            "The model served at its endpoint with the benchmarked config. Runs only when every blocking SLO check "
            "of smoke_benchmark passed. Locally the switch is blue/green; on Kubernetes a rolling update that is "
            "rolled back automatically when the new pods do not become ready."
        ),
    )
    def vllm_deployment(
        context: dg.AssetExecutionContext,
        model_weights: SnapshotManifest,
        weights: WeightsResource,
        local_target: LocalTargetResource,
        kubernetes: KubernetesTargetResource,
    ) -> dg.MaterializeResult[None]:
        model = catalog.model(context.partition_key)
        if target_kind == "kubernetes":
            with platform_errors_as_failure():
                promotion = kubernetes.target(catalog.platform).promote(model, model_weights.sha, log=context.log.info)
            revision = promotion.revision
            previous = promotion.previous.label() if promotion.previous else "none"
            return dg.MaterializeResult(
                metadata={
                    "endpoint": dg.MetadataValue.url(kubernetes_endpoint(catalog, model)),
                    "target": dg.MetadataValue.text(f"kubernetes ({catalog.platform.namespace})"),
                    "revision": dg.MetadataValue.text(revision.label()),
                    "previous_revision": dg.MetadataValue.text(previous),
                    "image": dg.MetadataValue.text(revision.image),
                    "server_fingerprint": dg.MetadataValue.text(revision.engine_fingerprint),
                    "weights_sha": dg.MetadataValue.text(revision.weights_sha),
                    "engine_args": dg.MetadataValue.json(
                        list(serving_invocation(catalog.platform, model, revision.weights_sha).args)
                    ),
                    "applied": dg.MetadataValue.json(list(promotion.applied)),
                    "rollout": dg.MetadataValue.text(promotion.detail),
                },
            )
        weights_path = weights.snapshot_path(model_weights)
        target = local_target.target()
        with platform_errors_as_failure():
            status = target.promote(model, weights_path, log=context.log.info)
        assert status.active is not None and status.endpoint is not None
        invocation = target.invocation(model, weights_path)
        return dg.MaterializeResult(
            metadata={
                "endpoint": dg.MetadataValue.url(status.endpoint),
                "target": dg.MetadataValue.text("local"),
                "server_fingerprint": dg.MetadataValue.text(status.active.fingerprint),
                "server_pid": dg.MetadataValue.int(status.active.pid),
                "weights_sha": dg.MetadataValue.text(model_weights.sha),
                "engine_args": dg.MetadataValue.json(list(invocation.args)),
                "server_log": dg.MetadataValue.path(status.active.log_path),
            },
        )

    return vllm_deployment
