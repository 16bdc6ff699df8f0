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

from llm_platform.errors import PlatformError
from llm_platform.processes import free_port
from llm_platform.prometheus import QUERIES_PER_SNAPSHOT, PrometheusClient, PrometheusError, selector
from llm_platform.services import LocalServices
from tests.conftest import ServedTiny, tiny_catalog

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


def _complete(endpoint: str, prompt_words: int, max_tokens: int = 12, seed: int = 0) -> None:
    # Distinct words per seed, so that prefix caching cannot make the requests cheap.
    prompt = " ".join(f"w{seed}x{index}" for index in range(prompt_words))
    body = json.dumps({"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}).encode()
    request = urllib.request.Request(
        f"{endpoint}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def test_one_snapshot_reads_every_serving_metric_of_the_model(prometheus: str, served_tiny: ServedTiny) -> None:
    client = PrometheusClient(prometheus)
    deadline = time.monotonic() + 90
    window = None
    while time.monotonic() < deadline:
        # Traffic between scrapes: rate() needs counters that grow from one sample to the next.
        for words in (10, 40, 80):
            _complete(served_tiny.endpoint, words)
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


def test_a_saturated_kv_cache_on_real_vllm_makes_the_sensor_request_a_promotion(
    prometheus: str, served_tiny: ServedTiny
) -> None:
    """A second server of the tiny model with a deliberately small KV cache (64 blocks, 8,192 tokens on CPU),
    listed in the same file_sd file, under 16 concurrent requests of ~800 distinct tokens each: Prometheus sees the
    cache full and vLLM preempting, and the drift sensor (one window; its hysteresis is tested elsewhere), run
    through Dagster against that Prometheus, requests a promote run with the kv_saturation change."""
    from concurrent.futures import ThreadPoolExecutor

    import dagster as dg

    from llm_platform.defs.resources import PrometheusResource
    from llm_platform.defs.sensors import build_drift_sensor
    from llm_platform.tuning.policy import TuningLimits

    catalog = tiny_catalog(
        serving={"max_model_len": 2048, "startup_timeout_s": 300, "extra_args": ["--num-gpu-blocks-override", "64"]}
    )
    model = catalog.model("tiny-llama")
    target = served_tiny.local_target.target()
    server = target.ensure_server(model, served_tiny.weights_path, log=lambda _: None)
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda seed: _complete(server.base_url, 150, max_tokens=300, seed=seed), range(48)))
        client = PrometheusClient(prometheus)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            window = client.snapshot(window="2m").get("tiny-llama")
            if window is not None and window.preemptions_per_s > 0:
                break
            time.sleep(2)
        assert window is not None
        # vLLM preempts only when the cache is exhausted; a 5 s scrape samples the usage between peaks (the
        # engine logs ~98 %), so the saturation threshold of this check is lowered to what a scrape sees.
        assert window.preemptions_per_s > 0, window
        assert window.kv_cache_usage_max >= 0.85, window

        sensor = build_drift_sensor(catalog, limits=TuningLimits(sustained_windows=1, kv_saturated=0.85), window="2m")
        with dg.instance_for_test() as instance:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    "vllm_deployment",
                    partition="tiny-llama",
                    metadata={"serving": dg.MetadataValue.json(model.serving.model_dump(mode="json"))},
                )
            )
            context = dg.build_sensor_context(
                instance=instance, resources={"prometheus": PrometheusResource(url=prometheus)}
            )
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.run_requests or []
        assert (request.partition_key, request.tags["llm-platform/rule"]) == ("tiny-llama", "kv_saturation")
        assert request.run_config["ops"]["serving_config"]["config"]["overrides"] == {"gpu_memory_utilization": "0.92"}
    finally:
        target.stop_server("tiny-llama", server.fingerprint)
