"""The ``vllm_deployment`` asset: promotes the benchmarked config to the model's endpoint.

No ``from __future__ import annotations`` here: Dagster reads the resource annotations at runtime.
"""

import dagster as dg

from llm_platform.catalog import Catalog
from llm_platform.defs.failures import platform_errors_as_failure
from llm_platform.defs.resources import LocalTargetResource, WeightsResource
from llm_platform.defs.weights import LIFECYCLE_GROUP, catalog_owners
from llm_platform.weights.plan import SnapshotManifest


def build_deployment_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="vllm_deployment",
        kinds={"vllm"},
        partitions_def=partitions,
        group_name=LIFECYCLE_GROUP,
        owners=catalog_owners(catalog),
        deps=["smoke_benchmark"],
        description=(
            "The model served at its endpoint with the benchmarked config. Runs only when every blocking SLO check "
            "of smoke_benchmark passed; the switch is blue/green (the new server is healthy before traffic moves)."
        ),
    )
    def vllm_deployment(
        context: dg.AssetExecutionContext,
        model_weights: SnapshotManifest,
        weights: WeightsResource,
        local_target: LocalTargetResource,
    ) -> dg.MaterializeResult[None]:
        model = catalog.model(context.partition_key)
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
