"""The ``model_weights`` asset: one partition per catalog model, the first step users materialize.

No ``from __future__ import annotations`` here: Dagster reads the config and resource annotations at runtime.
"""

from typing import TypedDict

import dagster as dg
from pydantic import Field

from llm_platform.catalog import Catalog, adapter_config_problems
from llm_platform.conventions import ADAPTERS_ASSET, LIVE_BENCHMARK_ASSET, WEIGHTS_ASSET
from llm_platform.defs.failures import platform_errors_as_failure, refuse_environment_references
from llm_platform.defs.resources import TargetResource
from llm_platform.errors import WeightsError
from llm_platform.weights.plan import DownloadResult, SnapshotManifest

LIFECYCLE_GROUP = "model_lifecycle"
"""What "Materialize all" in the UI runs: weights → config → smoke benchmark → deployment, nothing more."""
AUTO_TUNE_GROUP = "auto_tune"
"""The engine-argument search: many GPU benchmarks, so only ever run on purpose (the ``auto_tune`` job)."""
LIVE_BENCHMARK_GROUP = LIVE_BENCHMARK_ASSET
"""The nightly benchmark of what serves (the ``benchmark_live`` job and its schedules)."""


class WeightsConfig(dg.Config):
    """Run configuration of ``model_weights``."""

    revision: str | None = Field(
        default=None, description="Branch, tag or commit to download instead of the catalog's source.revision."
    )


def weights_metadata(result: DownloadResult, store_path: str) -> dict[str, dg.MetadataValue]:
    """What the UI shows for a materialization: the commit, sizes, throughput, where, and every file."""
    manifest: SnapshotManifest = result.manifest
    files = dg.TableMetadataValue(
        records=[dg.TableRecord({"path": f.path, "bytes": f.size, "sha256": f.sha256}) for f in manifest.files],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("path", "string"),
                dg.TableColumn("bytes", "int"),
                dg.TableColumn("sha256", "string"),
            ]
        ),
    )
    return {
        "revision_sha": dg.MetadataValue.text(manifest.sha),
        "requested_revision": dg.MetadataValue.text(manifest.requested_revision),
        "repo": dg.MetadataValue.text(manifest.repo),
        "total_bytes": dg.MetadataValue.int(manifest.total_bytes),
        "file_count": dg.MetadataValue.int(manifest.file_count),
        "downloaded_bytes": dg.MetadataValue.int(0 if result.reused else manifest.downloaded_bytes),
        "throughput_mb_per_s": dg.MetadataValue.float(
            0.0 if result.reused else round(manifest.throughput_bytes_per_s / 1e6, 1)
        ),
        "reused_existing_snapshot": dg.MetadataValue.bool(result.reused),
        "store_path": dg.MetadataValue.path(str(result.directory)),
        "store_root": dg.MetadataValue.path(store_path),
        "pruned_revisions": dg.MetadataValue.text(", ".join(result.pruned) or "none"),
        "files": files,
    }


def catalog_owners(catalog: Catalog) -> list[str]:
    """Owners of the lifecycle assets: everyone the catalog names for any model (assets are shared by models)."""
    return sorted({owner for model in catalog.models for owner in model.owners})


class LifecycleAssetOptions(TypedDict):
    partitions_def: dg.PartitionsDefinition
    group_name: str
    owners: list[str]


def lifecycle_asset_options(
    catalog: Catalog, partitions: dg.PartitionsDefinition, group: str = LIFECYCLE_GROUP
) -> LifecycleAssetOptions:
    """What every lifecycle asset shares: the model partitions, a group and the catalog's owners."""
    return {"partitions_def": partitions, "group_name": group, "owners": catalog_owners(catalog)}


def build_weights_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """Downloaded by the target: in-process into the local model store, or by the download Job onto the RWX PVC
    (the same entrypoint), whose manifest comes back through the pod log."""

    @dg.asset(
        name=WEIGHTS_ASSET,
        kinds={"huggingface", "python"},
        **lifecycle_asset_options(catalog, partitions),
        description=(
            "The model's weights in the model store: the catalog revision resolved to a commit, every file "
            "verified against the hub's checksums, and a manifest written last. Re-materializing the same commit "
            "verifies and downloads nothing."
        ),
    )
    def model_weights(
        context: dg.AssetExecutionContext, config: WeightsConfig, target: TargetResource
    ) -> dg.MaterializeResult[SnapshotManifest]:
        refuse_environment_references(context)
        model = catalog.model(context.partition_key)
        revision = config.revision or model.source.revision
        serving_target = target.serving_target(catalog.platform)
        store_root = serving_target.weights_location()
        context.log.info(f"model '{model.name}': downloading {model.source.repo}@{revision} to {store_root}")
        with platform_errors_as_failure():
            result = serving_target.materialize_weights(model, revision, log=context.log.info)
        if result.reused:
            context.log.info(f"model '{model.name}': {result.manifest.sha} already complete; verified, nothing fetched")
        return dg.MaterializeResult(
            metadata=weights_metadata(result, store_root),
            data_version=dg.DataVersion(result.manifest.sha),
            value=result.manifest,
        )

    return model_weights


def build_adapter_weights_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The model's LoRA adapters, a lineage child of its weights: same partition (an adapter is served only with
    its base, by the base's servers, and changes with a promotion of it), one snapshot per adapter beside the
    base's."""

    @dg.asset(
        name=ADAPTERS_ASSET,
        kinds={"huggingface", "python"},
        **lifecycle_asset_options(catalog, partitions),
        description=(
            "The model's LoRA adapters (catalog adapters:) beside its weights, each pinned to a commit, verified "
            "like the weights (adapter_config.json and safetensors only) and checked against the base: its "
            "commit, its model and the engine's ranks. The value is the weights as served, base and adapters; a "
            "model without adapters passes its weights through. Only an adapter not yet in the store is fetched."
        ),
    )
    def adapter_weights(
        context: dg.AssetExecutionContext, model_weights: SnapshotManifest, target: TargetResource
    ) -> dg.MaterializeResult[SnapshotManifest]:
        model = catalog.model(context.partition_key)
        serving_target = target.serving_target(catalog.platform)
        adapters: dict[str, SnapshotManifest] = {}
        records = []
        with platform_errors_as_failure():
            for adapter in model.adapters:
                if adapter.base_revision is not None and adapter.base_revision != model_weights.sha:
                    raise WeightsError(
                        f"model '{model.name}': adapter '{adapter.name}' was trained on base commit "
                        f"{adapter.base_revision[:12]}, but the weights are {model_weights.sha[:12]}: pin the "
                        "model's source.revision to that commit, or set base_revision to the adapter's new base"
                    )
                result = serving_target.materialize_adapter(model, adapter, log=context.log.info)
                problems = adapter_config_problems(model, adapter, result.manifest.adapter_config or {})
                if problems:
                    raise WeightsError("; ".join(problems))
                adapters[adapter.name] = result.manifest
                records.append(dg.TableRecord({
                    "adapter": adapter.name, "repo": result.manifest.repo, "revision_sha": result.manifest.sha,
                    "rank": result.manifest.lora_rank or 0,
                    "bytes": result.manifest.total_bytes,
                    "downloaded_bytes": 0 if result.reused else result.manifest.downloaded_bytes,
                    "path": str(result.directory),
                }))  # fmt: skip
        served = model_weights.with_adapters(adapters)
        if not adapters:
            context.log.info(f"model '{model.name}': no adapters; the weights {model_weights.sha[:12]} as they are")
        columns = [("adapter", "string"), ("repo", "string"), ("revision_sha", "string"), ("rank", "int"),
                   ("bytes", "int"), ("downloaded_bytes", "int"), ("path", "string")]  # fmt: skip
        return dg.MaterializeResult(
            value=served,
            data_version=dg.DataVersion(served.served_version),
            metadata={
                "base_revision_sha": dg.MetadataValue.text(model_weights.sha),
                "adapter_count": dg.MetadataValue.int(len(adapters)),
                "adapters": dg.TableMetadataValue(
                    records=records,
                    schema=dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in columns]),
                ),
            },
        )

    return adapter_weights
