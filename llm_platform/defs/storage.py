"""Where the lifecycle assets' values live between steps and runs: with their materializations, in the instance.

On Kubernetes every run is a fresh pod (K8sRunLauncher) whose disk is gone when it ends; what outlives it is the
instance (PostgreSQL). Dagster's default IO manager pickles values onto the run's local disk, so a ``promote`` run
could not read the weights manifest of the ``lifecycle`` run before it. This IO manager records each value as JSON
metadata of the materialization that produced it, and a later step reads the newest materialization of the
upstream asset's partition back from the instance: the value exists exactly when its materialization does, needs
no shared volume or object store, and is visible in the UI. The values are small (a manifest, a config, a table of
a few rows); large artefacts go under the target's ``artifacts_root`` instead.
"""

from __future__ import annotations

import dagster as dg

from llm_platform.defs.values import StoredValueError, decode_value, encode_value

VALUE_METADATA_KEY = "stored_value"
"""The metadata entry holding the JSON form of an asset's value."""


class InstanceValueIOManager(dg.ConfigurableIOManager):
    """Stores each asset value as JSON metadata of its materialization; loads the newest one of the partition."""

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        context.add_output_metadata({VALUE_METADATA_KEY: dg.MetadataValue.json(encode_value(obj))})

    def load_input(self, context: dg.InputContext) -> object:
        asset = context.asset_key.to_user_string()
        partition = context.asset_partition_key if context.has_asset_partitions else None
        origin = f"model '{partition}': {asset}" if partition else asset
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=context.asset_key, asset_partitions=[partition] if partition is not None else None
            ),
            limit=1,
        ).records
        materialization = records[0].asset_materialization if records else None
        if materialization is None:
            raise dg.Failure(
                description=f"{origin} has never been materialized; run the lifecycle job for this model first",
                allow_retries=False,
            )
        stored = materialization.metadata.get(VALUE_METADATA_KEY)
        try:
            if not isinstance(stored, dg.JsonMetadataValue):
                raise StoredValueError(f"{origin}: its latest materialization records no value; re-materialize it")
            return decode_value(stored.value, origin)
        except StoredValueError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None


def latest_value(instance: dg.DagsterInstance, asset: str, partition: str) -> object | None:
    """The value recorded with the newest materialization of ``asset`` for ``partition`` (None: none readable)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return stored_value(records[0].asset_materialization if records else None, asset, partition)


def stored_value(materialization: dg.AssetMaterialization | None, asset: str, partition: str) -> object | None:
    """The value recorded with ``materialization`` (None: none, or unreadable)."""
    stored = materialization.metadata.get(VALUE_METADATA_KEY) if materialization is not None else None
    if not isinstance(stored, dg.JsonMetadataValue):
        return None
    try:
        return decode_value(stored.value, f"model '{partition}': {asset}")
    except StoredValueError:
        return None
