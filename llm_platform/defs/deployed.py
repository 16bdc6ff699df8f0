"""What the drift sensor knows of every model's latest deployment, read incrementally.

A tick needs, per deployed model, the config it runs (the deployment's metadata, read against the catalog), when
it was deployed, and the stored record (for the weights' position limit, only when a change is proposed). Reading
and deserializing 5,000 materializations at every tick cost a second; they rarely change. So the sensor keeps them
in its code server's memory, keyed by the event's storage id, and reads only the materializations newer than the
newest one it has seen: the high-water mark travels in the sensor's cursor, the values themselves are rebuilt from
the instance whenever this process has not seen that mark (a cold start, another process's tick) and at least
every :attr:`DeployedIndex.refresh_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from llm_platform.catalog import ModelSpec
from llm_platform.conventions import DEPLOYMENT_ASSET
from llm_platform.defs.partitions import RECORDS_PAGE, latest_materialization_records
from llm_platform.errors import PlatformError

#: A deployment's metadata read against the catalog: the model as it is deployed (raises on unreadable metadata).
DeployedModel = Callable[[ModelSpec, dg.AssetMaterialization], ModelSpec]


@dataclass(frozen=True)
class Deployed:
    """One model's latest deployment."""

    model: ModelSpec
    """The catalog model with the serving and autoscaling sections it was deployed with."""
    record: dg.EventLogRecord
    """The materialization's event record (its timestamp is the deployment time)."""


@dataclass
class _Snapshot:
    mark: int
    built_at: float
    deployed: dict[str, Deployed] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeployedRead:
    """A tick's view of the fleet's deployments."""

    deployed: Mapping[str, Deployed]
    unreadable: Mapping[str, str]
    """Models whose deployed config could not be read, and why."""
    mark: int | None
    """The newest deployment storage id seen (the cursor's high-water mark); None: nothing deployed yet."""
    records_read: int
    """Materializations read from the instance for this tick."""


class DeployedIndex:
    """The latest deployment of each catalog model, brought up to date by reading only newer materializations."""

    def __init__(
        self,
        models: Mapping[str, ModelSpec],
        deployed_model: DeployedModel,
        *,
        refresh_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models = models
        self.deployed_model = deployed_model
        self.refresh_s = refresh_s
        """Rebuild from the instance at least this often, whatever the mark says (a wiped event, a bug)."""
        self._clock = clock
        self._snapshots: dict[str, _Snapshot] = {}

    def read(self, instance: dg.DagsterInstance, mark: int | None) -> DeployedRead:
        """The deployments as of now; ``mark``: the high-water mark the last tick left in the cursor."""
        key = str(instance.root_directory)
        snapshot = self._snapshots.get(key)
        fresh = snapshot is not None and self._clock() - snapshot.built_at < self.refresh_s
        if snapshot is None or mark is None or snapshot.mark != mark or not fresh:
            snapshot, read = self._rebuild(instance), None
        else:
            read = self._catch_up(instance, snapshot)
        self._snapshots[key] = snapshot
        records_read = len(snapshot.deployed) + len(snapshot.unreadable) if read is None else read
        return DeployedRead(
            dict(snapshot.deployed), dict(snapshot.unreadable), snapshot.mark if snapshot.mark else None, records_read
        )

    def _rebuild(self, instance: dg.DagsterInstance) -> _Snapshot:
        snapshot = _Snapshot(mark=0, built_at=self._clock())
        records = latest_materialization_records(instance, DEPLOYMENT_ASSET, list(self.models))
        for record in records.values():
            self._ingest(snapshot, record)
        return snapshot

    def _catch_up(self, instance: dg.DagsterInstance, snapshot: _Snapshot) -> int:
        """Read the materializations after the mark, oldest first (a page at a time); the newest per model wins."""
        records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(DEPLOYMENT_ASSET), after_storage_id=snapshot.mark)
        cursor, read = None, 0
        while True:
            result = instance.fetch_materializations(records_filter, limit=RECORDS_PAGE, cursor=cursor, ascending=True)
            for record in result.records:
                self._ingest(snapshot, record)
            read += len(result.records)
            if not result.has_more:
                return read
            cursor = result.cursor

    def _ingest(self, snapshot: _Snapshot, record: dg.EventLogRecord) -> None:
        snapshot.mark = max(snapshot.mark, record.storage_id)
        name, materialization = record.partition_key, record.asset_materialization
        if name is None or name not in self.models or materialization is None:
            return
        current = snapshot.deployed.get(name)
        if current is not None and current.record.storage_id > record.storage_id:
            return
        try:
            snapshot.deployed[name] = Deployed(self.deployed_model(self.models[name], materialization), record)
            snapshot.unreadable.pop(name, None)
        except PlatformError as error:
            snapshot.deployed.pop(name, None)
            snapshot.unreadable[name] = str(error)
