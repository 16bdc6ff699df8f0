"""A real Prometheus (the Debian package) scraping the session's real vLLM server through the local target's
file_sd file, read back through the platform's client: one snapshot, a fixed number of queries, every model."""

from __future__ import annotations

import json
import math
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from llm_platform.canary import TrackFigures
from llm_platform.conventions import STABLE_TRACK
from llm_platform.engine.vllm import VLLM_METRICS
from llm_platform.errors import PlatformError
from llm_platform.processes import free_port
from llm_platform.prometheus import (
    FIELD_LABEL,
    QUERIES_PER_SNAPSHOT,
    RECORDED_SNAPSHOT,
    RECORDING_GROUP,
    Lookback,
    PrometheusClient,
    PrometheusError,
    recorded_snapshot_selector,
    selector,
    snapshot_queries,
    track_queries,
)
from llm_platform.tuning.policy import TuningLimits
from tests.conftest import ServedTiny, running_prometheus, tiny_catalog
from tests.deployments import record_deployment

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prometheus(served_tiny: ServedTiny, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus of this module's own (a fresh TSDB: no other module's series in its windows)."""
    home = tmp_path_factory.mktemp("prometheus-home")
    with running_prometheus(Path(served_tiny.local_target.file_sd_dir), home) as url:
        yield url


def _complete(endpoint: str, api_key: str, prompt_words: int, max_tokens: int = 12, seed: int = 0) -> None:
    # Distinct words per seed, so that prefix caching cannot make the requests cheap.
    prompt = " ".join(f"w{seed}x{index}" for index in range(prompt_words))
    body = json.dumps({"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    request = urllib.request.Request(f"{endpoint}/v1/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def test_one_snapshot_reads_every_serving_metric_of_the_model(prometheus: str, served_tiny: ServedTiny) -> None:
    client = PrometheusClient(prometheus)
    lookback = Lookback(seconds=60, step_s=5)
    deadline = time.monotonic() + 90
    snapshot = None
    while time.monotonic() < deadline:
        # Traffic between scrapes: rate() needs counters that grow from one sample to the next.
        for words in (10, 40, 80):
            _complete(served_tiny.endpoint, served_tiny.api_key, words)
        before = client.queries_sent
        every = client.snapshot(lookback)
        # Whatever the number of models: one request, plus one for the raw series as no rules record a 60 s
        # lookback (the shipped ones record the sensor's 30 min).
        assert client.recorded is False and client.queries_sent - before == QUERIES_PER_SNAPSHOT + 1
        snapshot = every.get("tiny-llama")
        # Counters need two scrapes before rate() has a value: wait until every measurement has one.
        if snapshot is not None and snapshot.missing() == [] and not math.isnan(snapshot.prompt_tokens_p999):
            break
        time.sleep(2)
    assert snapshot is not None, "Prometheus never returned the model's series"
    assert 0 < snapshot.coverage <= 1 and 0 <= snapshot.age_s < 30
    assert 0 <= snapshot.kv_cache_usage <= 1
    assert snapshot.replicas == 1  # no kube-state-metrics here: the engines that report
    assert snapshot.waiting >= 0 and snapshot.preemptions_per_s >= 0 and snapshot.requests > 0
    # Histogram quantiles are bucket bounds: the prompts above were at most a few hundred tokens.
    assert 0 < snapshot.prompt_tokens_p999 <= 1024
    assert 0 < snapshot.generation_tokens_p999 <= 20
    assert snapshot.missing() == []
    assert math.isnan(snapshot.oom_kills) and math.isnan(snapshot.rollout)  # kube-state-metrics is not scraped


def test_one_query_reads_the_canary_judges_figures_per_track(prometheus: str, served_tiny: ServedTiny) -> None:
    """The judge's figures from vLLM's own histograms and counters: the session's server has no track label, so
    it is the stable version; the query is one request whatever the tracks."""
    client = PrometheusClient(prometheus)
    deadline = time.monotonic() + 90
    tracks: dict[str, TrackFigures] = {}
    while time.monotonic() < deadline:
        for seed in range(4):
            _complete(served_tiny.endpoint, served_tiny.api_key, 20, max_tokens=8, seed=100 + seed)
        before = client.queries_sent
        tracks = client.track_figures("tiny-llama", 60, VLLM_METRICS)
        assert client.queries_sent - before == 1
        stable = tracks.get(STABLE_TRACK)
        if stable is not None and stable.requests >= 1 and not math.isnan(stable.itl_p95_ms):
            break
        time.sleep(2)
    assert set(tracks) == {STABLE_TRACK}
    stable = tracks[STABLE_TRACK]
    assert stable.requests >= 1
    # Bucket bounds of a tiny model on two cores: well under a minute, above zero.
    assert 0 < stable.ttft_p95_ms < 60_000 and 0 < stable.itl_p95_ms < 60_000
    assert stable.error_ratio == 0  # no failure series yet: zero, not "no data"
    assert stable.output_tokens_per_s > 0
    assert stable.in_flight >= 0  # vLLM's running and waiting gauges, read (not NaN): nothing unfinished here
    # Another model's figures are not this one's.
    assert client.track_figures("not-served", 60, VLLM_METRICS) == {}
    assert 'model_name="tiny-llama"' in track_queries("tiny-llama", 60, VLLM_METRICS)["requests"]


def test_renamed_metrics_are_matched_under_both_names() -> None:
    renamed = selector("vllm:kv_cache_usage_perc", metrics=VLLM_METRICS)
    assert renamed == '{__name__=~"vllm:kv_cache_usage_perc|vllm:gpu_cache_usage_perc"}'
    kept = selector("vllm:num_requests_waiting", 'model_name="m"', VLLM_METRICS)
    assert kept == 'vllm:num_requests_waiting{model_name="m"}'
    # Without an engine's list of names the metric is taken as it is named.
    assert selector("vllm:kv_cache_usage_perc") == "vllm:kv_cache_usage_perc"


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
    assert set(rules) == {"VllmQueueGrowingAtMaxReplicas", "VllmKvCacheSaturated", "VllmErrorRate", "VllmTargetDown",
                          RECORDED_SNAPSHOT}  # fmt: skip
    recorded = [rule for group in groups if group["name"] == RECORDING_GROUP for rule in group["rules"]]
    assert len(recorded) == len(snapshot_queries(Lookback())) and all(r["health"] != "err" for r in recorded)
    client = PrometheusClient(prometheus)
    for expr in dashboard_queries():
        client.query(expr.replace("$__rate_interval", "1m"))  # raises PrometheusError if Prometheus refuses it


@pytest.mark.slow
def test_a_saturated_kv_cache_on_real_vllm_makes_the_sensor_request_a_promotion(
    prometheus: str, served_tiny: ServedTiny
) -> None:
    """A second server of the tiny model with a deliberately small KV cache (64 blocks, 8,192 tokens on CPU),
    listed in the same file_sd file, under 16 concurrent requests of ~800 distinct tokens each, kept up for longer
    than the lookback: Prometheus sees the cache full and vLLM preempting for most of it, and the drift sensor, run
    through Dagster against that Prometheus while the load lasts (a 20 s lookback instead of 30 min), requests a
    promote run with the kv_saturation change."""
    from concurrent.futures import ThreadPoolExecutor

    import dagster as dg

    from llm_platform.defs.resources import PrometheusResource
    from llm_platform.defs.sensors import build_drift_sensor

    catalog = tiny_catalog(
        serving={"max_model_len": 2048, "startup_timeout_s": 300, "extra_args": ["--num-gpu-blocks-override", "64"]}
    )
    model = catalog.model("tiny-llama")
    target = served_tiny.local_target.target()
    server = target.ensure_server(model, served_tiny.weights_path, log=lambda _: None)
    # vLLM preempts only when the cache is exhausted; a 5 s scrape samples the usage between peaks (the engine
    # logs ~98 %), and the median over a 20 s lookback of a few scrapes is lower still, so the saturation threshold
    # of this check is lowered to what such a short lookback sees (preemptions prove the cache was full).
    limits = TuningLimits(lookback_s=20, sustained_fraction=0.5, min_coverage=0.5, kv_saturated=0.6)
    sensor = build_drift_sensor(catalog, limits=limits)
    requests: list[dg.RunRequest] = []
    last_reason = ""
    try:
        with dg.instance_for_test() as instance, ThreadPoolExecutor(16) as pool:
            record_deployment(instance, "tiny-llama", model.serving.model_dump(mode="json"))
            for seed in range(160):
                pool.submit(_complete, server.base_url, served_tiny.api_key, 150, 300, seed)
            deadline = time.monotonic() + 120
            while not requests and time.monotonic() < deadline:
                time.sleep(3)
                resources = {"prometheus": PrometheusResource(url=prometheus)}
                with dg.build_sensor_context(instance=instance, resources=resources) as context:
                    result = sensor(context)
                assert isinstance(result, dg.SensorResult)
                requests = list(result.run_requests or [])
                last_reason = str(result.skip_reason)
            pool.shutdown(cancel_futures=True)  # the requests not yet sent are not needed any more
        assert requests, last_reason
        (request,) = requests
        assert (request.partition_key, request.tags["llm-platform/rule"]) == ("tiny-llama", "kv_saturation")
        assert request.run_config["ops"]["serving_config"]["config"]["overrides"] == {"gpu_memory_utilization": "0.92"}
    finally:
        target.stop_server("tiny-llama", server.fingerprint)


def test_the_recorded_snapshot_reads_alike_through_federation_and_the_query_api(
    prometheus: str, served_tiny: ServedTiny
) -> None:
    """The shipped recording rules (the sensor's 30-min lookback) on the real Prometheus: ``/federate`` answers the
    newest evaluation's series, each dated by it, as the query API answers them at that time; the sensor's snapshot
    reads them in one request."""
    client = PrometheusClient(prometheus)
    lookback = Lookback.of(TuningLimits(), tiny_catalog().platform.namespace)
    recorded = recorded_snapshot_selector(lookback)
    # The rule group's first evaluation comes within its interval (60 s) of Prometheus' start: last in the module,
    # this test finds it done.
    deadline = time.monotonic() + 90
    samples = client.newest_samples(recorded)
    while not samples and time.monotonic() < deadline:
        time.sleep(2)
        samples = client.newest_samples(recorded)
    assert samples, f"Prometheus never evaluated {RECORDING_GROUP}"
    (evaluated_at,) = {sample.time_s for sample in samples}  # one evaluation of one group

    def by_series(series: Iterable[tuple[dict[str, str], float]]) -> dict[tuple[str, str], str]:
        return {(labels.get("model_name", ""), labels[FIELD_LABEL]): repr(value) for labels, value in series}

    federated = by_series((sample.labels, sample.value) for sample in samples)
    assert federated == by_series(client.query(recorded, at=evaluated_at))
    assert ("tiny-llama", "kv_cache_usage") in federated
    before = client.queries_sent
    assert "tiny-llama" in client.snapshot(lookback)
    assert client.recorded is True and client.queries_sent - before == QUERIES_PER_SNAPSHOT
