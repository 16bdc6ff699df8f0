"""Recording a model as deployed some time ago, as a ``vllm_deployment`` run would have (for the sensors' tests)."""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

from llm_platform.defs.storage import VALUE_METADATA_KEY
from llm_platform.defs.values import encode_value


def record_deployment(
    instance: dg.DagsterInstance,
    model: str,
    serving: dict[str, Any],
    *,
    age_s: float = 7200.0,
    autoscaling: dict[str, Any] | None = None,
    stored: object | None = None,
) -> None:
    """A ``vllm_deployment`` materialization of ``model`` dated ``age_s`` ago, with the metadata the sensor reads
    (``serving``, ``autoscaling`` and, when given, the stored deployment record)."""
    metadata: dict[str, dg.MetadataValue] = {"serving": dg.MetadataValue.json(serving)}
    if autoscaling is not None:
        metadata["autoscaling"] = dg.MetadataValue.json(autoscaling)
    if stored is not None:
        metadata[VALUE_METADATA_KEY] = dg.MetadataValue.json(encode_value(stored))
    record_materialization(instance, "vllm_deployment", model, metadata, age_s=age_s)


def record_materialization(
    instance: dg.DagsterInstance, asset: str, model: str, metadata: dict[str, dg.MetadataValue], *, age_s: float
) -> None:
    """A materialization of ``asset`` for ``model`` dated ``age_s`` ago, outside any run."""
    materialization = dg.AssetMaterialization(asset, partition=model, metadata=metadata)
    event = DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=RUNLESS_JOB_NAME,
        event_specific_data=StepMaterializationData(materialization),
    )
    instance.report_dagster_event(event, run_id=RUNLESS_RUN_ID, timestamp=time.time() - age_s)
