"""A real Prometheus (the Debian package) scraping the session's real vLLM server through the local target's
file_sd file, read back through the platform's client: one snapshot, a fixed number of queries, every model."""

from __future__ import annotations

import json
import math
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_platform.devhub import free_port
from llm_platform.errors import PlatformError
from llm_platform.prometheus import QUERIES_PER_SNAPSHOT, PrometheusClient, PrometheusError, selector
from llm_platform.services import LocalServices
from tests.conftest import ServedTiny

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(served_tiny: ServedTiny, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (make test installs the Debian package)")
    services = LocalServices(tmp_path_factory.mktemp("prometheus-home"))
    record = services.start_prometheus(Path(served_tiny.local_target.file_sd_dir), port=free_port())
    try:
        yield record.url
    finally:
        services.stop("prometheus")


def _complete(endpoint: str, prompt_words: int) -> None:
    body = json.dumps({"model": "tiny-llama", "prompt": "hello " * prompt_words, "max_tokens": 12}).encode()
    request = urllib.request.Request(
        f"{endpoint}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def test_one_snapshot_reads_every_serving_metric_of_the_model(prometheus: str, served_tiny: ServedTiny) -> None:
    for words in (10, 40, 80):
        _complete(served_tiny.endpoint, words)
    client = PrometheusClient(prometheus)
    deadline = time.monotonic() + 90
    window = None
    while time.monotonic() < deadline:
        before = client.queries_sent
        snapshot = client.snapshot(window="2m")
        assert client.queries_sent - before == QUERIES_PER_SNAPSHOT  # whatever the number of models
        window = snapshot.get("tiny-llama")
        if window is not None and not math.isnan(window.prompt_tokens_p999):
            break
        time.sleep(2)
    assert window is not None, "Prometheus never returned the model's series"
    assert 0 <= window.kv_cache_usage_max <= 1
    assert window.replicas == 1
    assert window.waiting_avg >= 0 and window.preemptions_per_s >= 0
    # Histogram quantiles are bucket bounds: the prompts above were at most a few hundred tokens.
    assert 0 < window.prompt_tokens_p999 <= 1024
    assert 0 < window.generation_tokens_p999 <= 20
    assert window.missing() == []


def test_renamed_metrics_are_matched_under_both_names() -> None:
    assert selector("vllm:kv_cache_usage_perc") == '{__name__=~"vllm:kv_cache_usage_perc|vllm:gpu_cache_usage_perc"}'
    assert selector("vllm:num_requests_waiting", 'model_name="m"') == 'vllm:num_requests_waiting{model_name="m"}'


def test_a_refused_query_says_why(prometheus: str) -> None:
    with pytest.raises(PrometheusError, match=r"Prometheus refused the query 'sum by \(\(': .*parse error"):
        PrometheusClient(prometheus).query("sum by ((")


def test_unreachable_prometheus_is_retried_then_named() -> None:
    sleeps: list[float] = []
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", sleep=sleeps.append, timeout_s=2)
    with pytest.raises(PlatformError, match=r"is unreachable \(ConnectionError\) after 4 attempts; check "):
        client.snapshot()
    assert sleeps == [0.5, 1.0, 2.0]


def test_the_shipped_alerts_load_and_the_dashboard_queries_run(prometheus: str) -> None:
    from tests.unit.test_observability import dashboard_queries

    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
        groups = json.loads(response.read())["data"]["groups"]
    rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert set(rules) == {"VllmQueueGrowingAtMaxReplicas", "VllmKvCacheSaturated", "VllmErrorRate", "VllmTargetDown"}
    client = PrometheusClient(prometheus)
    for expr in dashboard_queries():
        client.query(expr.replace("$__rate_interval", "1m"))  # raises PrometheusError if Prometheus refuses it
