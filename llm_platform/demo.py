"""The main job on the embedded default: the whole lifecycle of the demo model, on this machine, through Dagster.

Builds the offline demo model, publishes it on the local hub (olah), and materializes ``model_weights`` →
``smoke_benchmark`` (blocking SLO checks) → ``vllm_deployment`` for it against the Dagster instance in
``$DAGSTER_HOME`` (so the run is in the UI), then prints what happened and leaves the model serving.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from llm_platform.catalog import Catalog
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.resources import (
    KubernetesTargetResource,
    LocalTargetResource,
    WeightsResource,
    local_target_from_env,
)
from llm_platform.devhub import LocalHub, publish_model
from llm_platform.errors import PlatformError

DEMO_MODEL = "tiny-llama"


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    success: bool
    revision: str | None
    frame: pd.DataFrame | None
    checks: dict[str, bool]
    endpoint: str | None
    failure: str | None


def _failure(result: dg.ExecuteInProcessResult) -> str | None:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            return event.step_failure_data.error.message.strip()
    return None


def run_demo(
    catalog: Catalog,
    *,
    model_name: str = DEMO_MODEL,
    work_dir: Path,
    instance: dg.DagsterInstance,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Publish the demo model on a local hub and run its lifecycle; the local target keeps serving it after."""
    from llm_platform.dev.tiny_model import make_tiny_model  # the `local` extra

    model = catalog.model(model_name)
    if model.source.repo is None:
        raise PlatformError(f"model '{model_name}': the demo publishes a Hugging Face repository; it has a path")
    source = work_dir / "demo-model" / model_name
    if not (source / "config.json").is_file():
        log(f"building the offline demo model in {source}")
        make_tiny_model(source)
    mirrors = work_dir / "local-hub"
    sha = publish_model(mirrors, model.source.repo, source, message="demo model")
    log(f"published {model.source.repo}@{sha[:12]} on the local hub")
    assets = lifecycle_assets(catalog)
    local_target: LocalTargetResource = local_target_from_env()
    with LocalHub(mirrors, log_path=work_dir / "local-hub.log") as hub:
        log(f"local hub (olah) at {hub.endpoint}; materializing the lifecycle of '{model_name}' through Dagster")
        result = dg.materialize(
            assets,
            partition_key=model_name,
            resources={
                "weights": WeightsResource(hf_endpoint=hub.endpoint),
                "local_target": local_target,
                "kubernetes": KubernetesTargetResource(),
            },
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
            raise_on_error=False,
            tags={"llm-platform/promotion": model_name},
        )
    frame = result.output_for_node("smoke_benchmark") if _materialized(result, "smoke_benchmark") else None
    weights = result.asset_materializations_for_node("model_weights")
    deployment = result.asset_materializations_for_node("vllm_deployment")
    return DemoResult(
        run_id=result.run_id,
        success=result.success and bool(deployment),
        revision=str(weights[0].metadata["revision_sha"].value) if weights else None,
        frame=frame,
        checks={c.check_name: c.passed for c in result.get_asset_check_evaluations()},
        endpoint=str(deployment[0].metadata["endpoint"].value) if deployment else None,
        failure=_failure(result),
    )


def _materialized(result: dg.ExecuteInProcessResult, node: str) -> bool:
    return bool(result.asset_materializations_for_node(node))
