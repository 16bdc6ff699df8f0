"""k8s/observability: the PodMonitor and PrometheusRule validate against the Prometheus Operator's CRD schemas, the
alert rules pass ``promtool check rules``, the PodMonitor selects the rendered vLLM pods, and the Grafana dashboard
has the panels operators need."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_platform.catalog_files import load_catalog
from llm_platform.conventions import CANARY_TRACK, TRACK_LABEL, TRACK_METRIC_LABEL, ServedModel
from llm_platform.manifests.pods import model_labels
from llm_platform.manifests.serving import render_canary, render_deployment
from llm_platform.manifests.validation import validate_objects
from llm_platform.prometheus import Lookback, drift_recording_group
from llm_platform.tuning.policy import TuningLimits
from tests.conftest import EXAMPLE_CATALOG, REPO_ROOT

OBSERVABILITY = REPO_ROOT / "k8s" / "observability"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((OBSERVABILITY / name).read_text())
    return document


def test_monitoring_objects_match_the_operator_schemas() -> None:
    validate_objects([_load("podmonitor.yaml"), _load("prometheusrule.yaml")])


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (the Debian prometheus package has it; make test installs it)")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": _load("prometheusrule.yaml")["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    groups = _load("prometheusrule.yaml")["spec"]["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert alerts == {"VllmQueueGrowingAtMaxReplicas", "VllmKvCacheSaturated", "VllmErrorRate", "VllmTargetDown"}


def test_the_shipped_recording_rules_are_the_drift_sensors_snapshot() -> None:
    """The rules record exactly what the sensor would query for its default lookback in the example catalog's
    namespace, so a tick that reads them decides as it would on the raw series."""
    namespace = load_catalog(EXAMPLE_CATALOG).platform.namespace
    expected = drift_recording_group(Lookback.of(TuningLimits(), namespace))
    groups = _load("prometheusrule.yaml")["spec"]["groups"]
    (shipped,) = [group for group in groups if group["name"] == expected["name"]]
    for rule in shipped["rules"]:
        rule["expr"] = rule["expr"].strip()
    assert shipped == expected, "regenerate the group in prometheusrule.yaml:\n" + yaml.safe_dump(expected)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector's verdict (matchLabels and the In/NotIn expressions the shipped objects use)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        inside = labels.get(expression["key"]) in expression["values"]
        if inside != (expression["operator"] == "In"):
            return False
    return True


def test_pod_monitor_selects_the_rendered_vllm_pods_of_both_tracks_and_no_job_pod() -> None:
    catalog = load_catalog(EXAMPLE_CATALOG)
    monitor = _load("podmonitor.yaml")
    selector = monitor["spec"]["selector"]
    for model in catalog.models:
        canary = render_canary(catalog.platform, model, "0" * 40)[1]["spec"]["template"]["metadata"]["labels"]
        assert _selects(selector, canary) and canary[TRACK_LABEL] == CANARY_TRACK
        job = model_labels(model, "benchmark")
        assert not _selects(selector, job)
        template = render_deployment(catalog.platform, model, "0" * 40)["spec"]["template"]
        assert _selects(selector, template["metadata"]["labels"])
        (gate,) = template["spec"]["initContainers"]
        ports = {port["name"]: port["containerPort"] for port in gate["ports"]}
        assert ports[monitor["spec"]["podMetricsEndpoints"][0]["port"]] == 8001  # the gate's metrics listener
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "8001"
    assert monitor["metadata"]["namespace"] == catalog.platform.namespace


def test_pod_monitor_labels_each_series_with_its_rollout_track() -> None:
    """The canary judge's per-track query groups by the track label: the PodMonitor must set it from the pod label
    the track's pods carry (Prometheus' kubernetes_sd writes a pod label's name with ``_`` for each other char)."""
    relabelings = _load("podmonitor.yaml")["spec"]["podMetricsEndpoints"][0]["relabelings"]
    pod_label = "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", TRACK_LABEL)
    assert {"sourceLabels": [pod_label], "targetLabel": TRACK_METRIC_LABEL} in relabelings
    canary = ServedModel("m").track(CANARY_TRACK)
    assert canary.labels()[TRACK_LABEL] == CANARY_TRACK


def dashboard_queries() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_covers_the_serving_metrics() -> None:
    text = " ".join(dashboard_queries())
    for metric in (
        "vllm:generation_tokens_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prefix_cache_queries_total",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "kube_horizontalpodautoscaler_spec_max_replicas",
    ):
        assert metric in text, metric
