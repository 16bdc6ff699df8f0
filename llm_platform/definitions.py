"""The code location ``workspace.yaml`` loads: the catalog, validated, turned into Dagster definitions.

A bad catalog stops the load with the catalog's own one-line-per-problem message, which the Dagster UI and
``dagster definitions validate`` show as the code location's error (without our frames: the message says it all).
"""

from __future__ import annotations

import dagster as dg

from llm_platform.catalog import Catalog
from llm_platform.catalog_files import load_catalog
from llm_platform.defs.canary import build_canary_rollback_job
from llm_platform.defs.jobs import PROMOTE_JOB, STEP_EXECUTOR, lifecycle_jobs, live_benchmark_schedules
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.partitions import model_partitions
from llm_platform.defs.resources import resources_from_env, target_kind_from_env
from llm_platform.defs.sensors import build_canary_sensor, build_drift_sensor, build_revision_sensor
from llm_platform.defs.tuning import auto_tune_job, retune_job
from llm_platform.defs.workload import build_shape_sensor
from llm_platform.errors import PlatformError


def build_definitions(catalog: Catalog, target_kind: str = "local") -> dg.Definitions:
    """All definitions for ``catalog``, deploying to ``target_kind`` (``local`` or ``kubernetes``)."""
    jobs, retune = lifecycle_jobs(), retune_job()
    promote = next(job for job in jobs if job.name == PROMOTE_JOB)
    return dg.Definitions(
        assets=lifecycle_assets(catalog),
        jobs=[*jobs, auto_tune_job(), retune, build_canary_rollback_job(catalog, model_partitions(catalog))],
        schedules=live_benchmark_schedules(catalog),
        sensors=[
            build_drift_sensor(catalog),
            build_revision_sensor(catalog),
            build_canary_sensor(catalog),
            build_shape_sensor(catalog, [retune, promote]),
        ],
        resources=resources_from_env(catalog.platform, target_kind),
        executor=STEP_EXECUTOR,
        metadata={
            "models": dg.MetadataValue.text(", ".join(model.name for model in catalog.models)),
            "target": dg.MetadataValue.text(target_kind),
        },
    )


def _load() -> dg.Definitions:
    try:
        return build_definitions(load_catalog(), target_kind_from_env())
    except PlatformError as error:
        raise error.with_traceback(None) from None


defs = _load()
