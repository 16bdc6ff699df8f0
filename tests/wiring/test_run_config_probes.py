"""Run config cannot reconfigure the platform: runs of the code location's own definitions (sealed resources)
that try to change each resource setting are refused before a step runs, and runs whose config reads the
environment (``{env: NAME}``) fail before anything is done, without echoing the value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.catalog import Catalog
from llm_platform.definitions import build_definitions
from llm_platform.defs.jobs import LIFECYCLE_JOB, PROMOTE_JOB
from llm_platform.defs.resources import LocalTargetResource, PrometheusResource, WeightsResource
from llm_platform.defs.tuning import AUTO_TUNE_JOB
from tests.conftest import tiny_catalog

SECRET = "s3cr3t-value-that-must-not-leak"


@pytest.fixture
def catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Catalog:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("LLM_PLATFORM_PROMETHEUS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PROBE_SECRET", SECRET)
    return tiny_catalog()


def _probe_values(resource: type[dg.ConfigurableResource]) -> Iterator[tuple[str, Any]]:  # type: ignore[type-arg]
    """A value of the right type for every config field of ``resource`` (each would matter if accepted)."""
    for name, field in resource.model_fields.items():
        annotation = str(field.annotation)
        value: Any = "/dev/null" if "str" in annotation else 0 if "int" in annotation or "float" in annotation else {}
        yield name, value


PROBES = [
    ("target", name, value) for name, value in _probe_values(LocalTargetResource) if name != "weights"
] + [("weights", name, value) for name, value in _probe_values(WeightsResource)] + [
    ("prometheus", name, value) for name, value in _probe_values(PrometheusResource)
] + [("io_manager", "base_dir", "/tmp")]  # fmt: skip


def test_no_resource_setting_is_run_configurable(catalog: Catalog, instance: dg.DagsterInstance) -> None:
    defs = build_definitions(catalog)
    jobs = [defs.resolve_job_def(job) for job in (LIFECYCLE_JOB, PROMOTE_JOB, AUTO_TUNE_JOB)]
    assert len(PROBES) >= 15
    for resource, field, value in PROBES:
        for job in jobs:
            run_config = {"resources": {resource: {"config": {field: value}}}}
            with pytest.raises(dg.DagsterInvalidConfigError, match=f'unexpected config entry "{field}"'):
                job.execute_in_process(run_config=run_config, partition_key="tiny-llama", instance=instance)
    assert instance.get_runs() == []  # refused at submission: no run was even created


@pytest.mark.parametrize(
    "ops",
    [
        {"model_weights": {"config": {"revision": {"env": "PROBE_SECRET"}}}},
        {"serving_config": {"config": {"overrides": {"dtype": {"env": "PROBE_SECRET"}}}}},
        {"serving_config": {"config": {"reason": {"env": "PROBE_SECRET"}}}},
        {"smoke_benchmark": {"config": {"prompts_per_level": {"env": "PROBE_SECRET"}}}},
    ],
)
def test_run_config_cannot_read_the_environment(
    catalog: Catalog, instance: dg.DagsterInstance, ops: dict[str, Any]
) -> None:
    defs = build_definitions(catalog)
    try:
        result = defs.resolve_job_def(LIFECYCLE_JOB).execute_in_process(
            run_config={"ops": ops}, partition_key="tiny-llama", instance=instance, raise_on_error=False
        )
    except dg.DagsterInvalidConfigError as error:  # an integer field: Dagster's own type check refuses it
        assert SECRET not in str(error)
        return
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_key == "model_weights"  # the first step stops the run, before any download
    message = failure.step_failure_data.error.message  # type: ignore[union-attr]
    assert "environment references ({env: …}) are not accepted" in message
    stored = "\n".join(str(record) for record in instance.all_logs(result.run_id))
    assert SECRET not in stored
