"""One Dagster partition per catalog model: materializing a partition runs that model's lifecycle."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.storage.tags import PARTITION_NAME_TAG

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


#: Records read per instance query: far below Dagster's limit of 10,000 event records per fetch.
RECORDS_PAGE = 1000


def latest_materialization_records(
    instance: dg.DagsterInstance, asset: str, models: list[str]
) -> dict[str, dg.EventLogRecord]:
    """The newest materialization record of ``asset`` for each of ``models`` that has one, in a bounded number of
    queries whatever the fleet's size or history: the newest storage id per partition in one query, then the
    records by id, a page at a time."""
    key = dg.AssetKey(asset)
    latest_ids = instance.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(models)
    )
    ids = sorted(latest_ids.values())
    records: dict[str, dg.EventLogRecord] = {}
    for start in range(0, len(ids), RECORDS_PAGE):
        page = ids[start : start + RECORDS_PAGE]
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, storage_ids=page), limit=len(page)
        )
        for record in result.records:
            if record.partition_key is not None:
                records[record.partition_key] = record
    return records


def runs_in_progress(instance: dg.DagsterInstance, model: str) -> bool:
    """Whether a run of ``model`` (its partition) is queued or running."""
    filters = dg.RunsFilter(statuses=list(IN_PROGRESS_RUN_STATUSES), tags={PARTITION_NAME_TAG: model})
    return bool(instance.get_run_records(filters=filters, limit=1))
