"""One Dagster partition per catalog model: materializing a partition runs that model's lifecycle."""

from __future__ import annotations

import dagster as dg

from llm_platform.catalog import Catalog


def model_partitions(catalog: Catalog) -> dg.StaticPartitionsDefinition:
    """Static partitions keyed by model name (catalog names are DNS labels, valid partition keys)."""
    return dg.StaticPartitionsDefinition(catalog.model_names)


def latest_materialization(instance: dg.DagsterInstance, asset: str, model: str) -> dg.AssetMaterialization | None:
    """The newest materialization of ``asset`` for one model's partition, or None if it was never materialized."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[model]), limit=1
    ).records
    return records[0].asset_materialization if records else None
