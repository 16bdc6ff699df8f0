"""The main job on the embedded default: the whole lifecycle of the demo model, on this machine, through Dagster.

Builds the offline demo model and publishes it on the local hub, brings up the local services (olah, Prometheus,
``dagster dev``; reused when already running), submits the ``lifecycle`` job for the demo model through Dagster's
GraphQL API exactly as ``llm-platform promote`` does, follows the run, and summarizes it from the Dagster instance:
the weights revision, the benchmark table, the SLO verdicts, the endpoint and the UI's run URL. The model keeps
serving afterwards; ``llm-platform local stop`` stops it and the services.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

from llm_platform.catalog import Catalog
from llm_platform.conventions import DEPLOYMENT_ASSET, PLAN_ASSET, SMOKE_BENCHMARK_ASSET, WEIGHTS_ASSET
from llm_platform.dagster_api import DagsterApi, run_url
from llm_platform.defs.jobs import promotion_request
from llm_platform.defs.partitions import latest_materialization
from llm_platform.devhub import publish_model
from llm_platform.errors import PlatformError
from llm_platform.services import LocalServices, ServiceRecord

DEMO_MODEL = "tiny-llama"
REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("hub", "prometheus", "dagster")


@dataclass(frozen=True)
class DemoResult:
    run_id: str
    run_url: str
    success: bool
    revision: str | None
    frame: pd.DataFrame | None
    checks: dict[str, bool]
    endpoint: str | None
    failure: str | None
    services: dict[str, str] = field(default_factory=dict)
    plan: str | None = None


def bring_up(catalog_path: Path, home: Path, log: Callable[[str], None] = print) -> dict[str, ServiceRecord]:
    """The hub, Prometheus and Dagster for ``home``: the running ones if all three run, else all three anew."""
    services = LocalServices(home)
    running = {record.name: record for record in services.running()}
    if set(SERVICES) <= set(running):
        log("local services already running: " + ", ".join(f"{n} {running[n].url}" for n in SERVICES))
        return running
    for name in running:
        services.stop(name)
    hub = services.start_hub(home / "local-hub")
    log(f"local hub (olah) at {hub.url}")
    prometheus = services.start_prometheus(home / "prometheus" / "file_sd")
    log(f"Prometheus at {prometheus.url}")
    env = {
        "HF_ENDPOINT": hub.url,
        "LLM_PLATFORM_CATALOG": str(catalog_path.resolve()),
        "LLM_PLATFORM_PROMETHEUS_URL": prometheus.url,
    }
    dagster = services.start_dagster(REPO_ROOT / "workspace.yaml", Path(sys.executable).parent / "dagster", env)
    log(f"Dagster (dagster dev: webserver + daemon) at {dagster.url}")
    return {"hub": hub, "prometheus": prometheus, "dagster": dagster}


def _latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict[str, dg.MetadataValue]:
    materialization = latest_materialization(instance, asset, partition)
    return dict(materialization.metadata) if materialization is not None else {}


def _table(value: dg.MetadataValue | None) -> pd.DataFrame | None:
    if not isinstance(value, dg.TableMetadataValue):
        return None
    return pd.DataFrame([record.data for record in value.records])


def run_demo(
    catalog: Catalog,
    catalog_path: Path,
    *,
    model_name: str = DEMO_MODEL,
    home: Path,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Publish the demo model, bring up the services and run its lifecycle through Dagster's API."""
    from llm_platform.dev.tiny_model import make_tiny_model  # the `local` extra

    model = catalog.model(model_name)
    if model.source.repo is None:
        raise PlatformError(f"model '{model_name}': the demo publishes a Hugging Face repository; it has a path")
    source = home / "demo-model" / model_name
    if not (source / "config.json").is_file():
        log(f"building the offline demo model in {source}")
        make_tiny_model(source)
    sha = publish_model(home / "local-hub", model.source.repo, source, message="demo model")
    log(f"published {model.source.repo}@{sha[:12]} on the local hub")
    services = bring_up(catalog_path, home, log)
    api = DagsterApi(services["dagster"].url)
    job, run_config = promotion_request(revision=model.source.revision, reason="llm-platform demo")
    run_id = api.submit(job, model_name, run_config, tags={"llm-platform/trigger": "demo"})
    log(f"submitted the {job} run of '{model_name}': {run_url(api.base_url, run_id)}")
    outcome = api.follow(run_id, log=log)
    with dg.DagsterInstance.get() as instance:
        weights = _latest_metadata(instance, WEIGHTS_ASSET, model_name)
        bench = _latest_metadata(instance, SMOKE_BENCHMARK_ASSET, model_name)
        deployment = _latest_metadata(instance, DEPLOYMENT_ASSET, model_name)
        plan = _latest_metadata(instance, PLAN_ASSET, model_name).get("verdict")
    endpoint = deployment.get("endpoint")
    return DemoResult(
        run_id=run_id,
        run_url=run_url(api.base_url, run_id),
        success=outcome.succeeded,
        revision=str(weights["revision_sha"].value) if "revision_sha" in weights else None,
        frame=_table(bench.get("results")),
        checks=outcome.checks,
        endpoint=str(endpoint.value) if endpoint is not None and outcome.succeeded else None,
        failure=outcome.failures[0] if outcome.failures else None,
        services={name: record.url for name, record in services.items()},
        plan=str(plan.value) if plan is not None else None,
    )
