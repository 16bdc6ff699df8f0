"""Jobs over the lifecycle assets, and the nightly live-benchmark schedule of every model.

No ``from __future__ import annotations`` here: Dagster reads the schedule function's annotations at runtime.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from llm_platform import conventions
from llm_platform.catalog import Catalog
from llm_platform.conventions import DEPLOYMENT_ASSET, LIVE_BENCHMARK_ASSET, SMOKE_BENCHMARK_ASSET, WEIGHTS_ASSET
from llm_platform.defs.partitions import latest_materialization

LIFECYCLE_JOB = "lifecycle"
PROMOTE_JOB = "promote"
BENCHMARK_LIVE_JOB = "benchmark_live"
LIFECYCLE_ASSETS = list(conventions.LIFECYCLE_ASSETS)
PROMOTE_ASSETS = list(conventions.PROMOTE_ASSETS)

#: Every job's executor: Dagster's multiprocess executor, a process per step as by default, whose step processes
#: fork from a server that imported the code location once (``forkserver``: Dagster preloads the job's module) instead
#: of each spawning an interpreter that imports Dagster, the platform and the catalog again. Fixed here, not in run
#: config: a run cannot choose how its steps execute.
STEP_EXECUTOR = dg.multiprocess_executor.configured({"start_method": {"forkserver": {}}}, name="multiprocess")


def lifecycle_jobs() -> list[UnresolvedAssetJobDefinition]:
    return [
        dg.define_asset_job(
            LIFECYCLE_JOB,
            selection=LIFECYCLE_ASSETS,
            description="Weights (a new revision is downloaded and verified) → serving config → smoke benchmark "
            "with blocking SLO checks → promotion. What `llm-platform promote --revision` submits.",
        ),
        dg.define_asset_job(
            PROMOTE_JOB,
            selection=PROMOTE_ASSETS,
            description="Serving config (with this run's overrides) → smoke benchmark → promotion, on the weights "
            "already materialized. What `llm-platform promote` and the drift sensor submit.",
        ),
        dg.define_asset_job(
            BENCHMARK_LIVE_JOB,
            selection=[LIVE_BENCHMARK_ASSET],
            description="Benchmark the deployed config where it serves and compare it with its promotion.",
        ),
    ]


def schedule_name(model: str) -> str:
    return f"{BENCHMARK_LIVE_JOB}_{model.replace('-', '_')}"


def live_benchmark_schedules(catalog: Catalog) -> list[dg.ScheduleDefinition]:
    """One schedule per model (cron and time zone from the catalog's platform section); none when disabled."""
    cron = catalog.platform.live_benchmark_cron
    if cron is None:
        return []
    return [_schedule_for(model.name, cron, catalog.platform.live_benchmark_timezone) for model in catalog.models]


def _schedule_for(model: str, cron: str, timezone: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=schedule_name(model),
        cron_schedule=cron,
        execution_timezone=timezone,
        job_name=BENCHMARK_LIVE_JOB,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Nightly live benchmark of '{model}' (skipped while it has never been deployed).",
    )
    def live_benchmark_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        if latest_materialization(context.instance, DEPLOYMENT_ASSET, model) is None:
            return dg.SkipReason(f"model '{model}' has never been deployed; nothing to benchmark")
        return dg.RunRequest(
            partition_key=model,
            run_key=f"{model}:{context.scheduled_execution_time.isoformat()}",
            tags={"llm-platform/trigger": "schedule"},
        )

    return live_benchmark_schedule


def promotion_request(
    *,
    revision: str | None = None,
    overrides: Mapping[str, str] | None = None,
    reason: str = "",
    benchmark: Mapping[str, object] | None = None,
    diagnose_crash: bool = False,
) -> tuple[str, dict[str, Any]]:
    """The job and run config of a promotion: ``lifecycle`` when a weights revision is given (it must be downloaded
    first), else ``promote`` on the weights already materialized. ``diagnose_crash``: ``serving_config`` reads the
    crashed pods' termination messages first (the drift sensor's crash-loop proposals)."""
    serving: dict[str, Any] = {"overrides": dict(overrides or {}), "reason": reason}
    if diagnose_crash:
        serving["diagnose_crash"] = True
    ops: dict[str, Any] = {"serving_config": {"config": serving}}
    if revision is not None:
        ops[WEIGHTS_ASSET] = {"config": {"revision": revision}}
    if benchmark:
        ops[SMOKE_BENCHMARK_ASSET] = {"config": dict(benchmark)}
    return (LIFECYCLE_JOB if revision is not None else PROMOTE_JOB), {"ops": ops}
