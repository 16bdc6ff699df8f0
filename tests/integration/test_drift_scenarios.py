"""The drift sensor against labelled histories in a real Prometheus: every scenario of ``tests/drift_scenarios.py``
(an hour of vLLM and kube-state-metrics series per model, backfilled with promtool) in one Prometheus, one sensor
tick through Dagster over all of them, and the expected decision for each: the right knob for drift, no redeploy
for steady, noisy, missing, stale or young data. The scenario table in docs/lifecycle.md is this test's output."""

from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from llm_platform.catalog import max_replicas_within_quota, parse_catalog
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.sensors import build_drift_sensor
from llm_platform.dev.promtrace import backfill, openmetrics
from llm_platform.processes import free_port
from llm_platform.prometheus import Lookback, PrometheusClient
from llm_platform.services import LocalServices
from llm_platform.tuning.policy import Snapshot, TuningLimits, decide
from tests.conftest import REPO_ROOT
from tests.deployments import record_deployment
from tests.drift_scenarios import HOUR, SCENARIOS, catalog_data, readme_table

pytestmark = pytest.mark.integration

README_MARKERS = ("<!-- drift-scenarios:begin -->\n", "<!-- drift-scenarios:end -->")


def test_every_labelled_scenario_gets_its_decision(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.fail("prometheus/promtool are not installed (make test installs the Debian package)")
    catalog = parse_catalog(catalog_data(), origin="scenarios")
    now = time.time()
    backfill(
        openmetrics({s.name: s.behaviour for s in SCENARIOS}, now - HOUR, now - 5, step_s=15),
        tmp_path / "prometheus" / "data",
    )
    services = LocalServices(tmp_path)
    record = services.start_prometheus(tmp_path / "file_sd", port=free_port())
    try:
        with dg.instance_for_test() as instance:
            for scenario in SCENARIOS:
                serving = catalog.model(scenario.name).serving.model_dump(mode="json")
                record_deployment(instance, scenario.name, serving, age_s=scenario.deployed_age_s)
            sensor = build_drift_sensor(catalog, clock=lambda: now)
            resources = {"prometheus": PrometheusResource(url=record.url)}
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                result = sensor(context)
        # The reasons, from the same snapshot and the same policy (the sensor reports them only when it skips).
        limits = TuningLimits()
        snapshot = PrometheusClient(record.url).snapshot(
            Lookback(int(limits.lookback_s), quantile=limits.quantile, namespace=catalog.platform.namespace), at=now
        )
    finally:
        services.stop("prometheus")
    assert isinstance(result, dg.SensorResult)
    requested = {str(request.partition_key): request for request in result.run_requests or []}
    decisions: dict[str, tuple[str, str]] = {}
    for scenario in SCENARIOS:
        model = catalog.model(scenario.name)
        decision = decide(
            model, snapshot.get(scenario.name) or Snapshot.no_data(now), now, config_age_s=scenario.deployed_age_s,
            max_replicas_allowed=max_replicas_within_quota(catalog.platform, catalog.models, model),
        )  # fmt: skip
        decisions[scenario.name] = (decision.kind, decision.reason)
    wrong = []
    for scenario in SCENARIOS:
        request = requested.get(scenario.name)
        # The run-config form of each value is a YAML scalar ('"48Gi"' for a string): compare the values it reads as.
        overrides = request.run_config["ops"]["serving_config"]["config"]["overrides"] if request else {}
        got = (request.tags["llm-platform/rule"] if request else None,
               {key: str(yaml.safe_load(value)) for key, value in overrides.items()})  # fmt: skip
        if got != (scenario.expected_rule, scenario.expected_change):
            wrong.append(f"{scenario.name}: expected {scenario.expected_rule} {scenario.expected_change}, got {got} "
                         f"({decisions[scenario.name]}; {snapshot.get(scenario.name)})")  # fmt: skip
    assert not wrong, "\n".join(wrong)
    assert math.isnan(snapshot["steady"].oom_kills) and snapshot["oom-twice"].oom_kills == pytest.approx(2, abs=0.2)
    # A crash loop's run reads the termination messages first; an OOM kill is not a crash restart, nor the reverse.
    assert requested["crash-loop"].run_config["ops"]["serving_config"]["config"]["diagnose_crash"] is True
    assert "diagnose_crash" not in requested["oom-twice"].run_config["ops"]["serving_config"]["config"]
    assert snapshot["oom-twice"].crash_restarts == 0 and snapshot["crash-loop"].oom_kills == 0
    # A condition left alone says how far it is from acting.
    assert decisions["mild-saturation-short"][1].endswith(
        "at this severity (mild) it must hold 22.5 of the last 30 min"
    ), decisions["mild-saturation-short"]
    assert "capacity is judged first, memory waits" in decisions["queue-building-full-cache"][1]

    # docs/lifecycle.md shows this very table.
    readme = (REPO_ROOT / "docs" / "lifecycle.md").read_text()
    begin, end = README_MARKERS
    shown = re.search(re.escape(begin) + "(.*?)" + re.escape(end), readme, re.S)
    expected = readme_table()
    assert shown is not None and shown.group(1) == expected, f"docs/lifecycle.md's table is out of date:\n{expected}"
