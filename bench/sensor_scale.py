"""One tuning-drift sensor tick over N models' series in a real Prometheus (the fleet of a large platform team).

Setup: a generated history (the 30-minute lookback plus a margin, 30 s steps) of every vLLM and kube-state-metrics
series the sensor reads, for N models, backfilled into a fresh Prometheus with promtool; N models deployed two hours
ago in a temporary Dagster instance; the shipped recording rules loaded, the ticks run after their first evaluation.
Our figure: the sensor tick (``build_sensor_context`` → the deployments newer than the cursor, one Prometheus request
reading the recorded snapshot, the policy for every model), its number of PromQL requests, its time and its phases;
beside it what the rules cost Prometheus per evaluation and what the same snapshot costs queried over the raw
samples (a tick where the rules are not loaded). The reference, on the same Prometheus in the same run: the same
measurements queried model by model (one query per measurement with a ``model_name`` matcher), which is what a
per-model sensor would do; measured on ``--reference-sample`` models and scaled to N (it grows linearly). Goals: a
number of requests independent of N and <= 2 s for 5,000 models.

    .venv/bin/python bench/sensor_scale.py [--models 5000] [--repeat 5] [--reference-sample 100]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg
from shortmode import parse_options

from llm_platform.catalog import parse_catalog
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.sensors import TickPhases, build_drift_sensor
from llm_platform.dev.promtrace import Behaviour, backfill, openmetrics
from llm_platform.processes import free_port
from llm_platform.prometheus import (
    RECORDING_GROUP,
    RECORDING_INTERVAL_S,
    Lookback,
    PrometheusClient,
    snapshot_queries,
    snapshot_query,
)
from llm_platform.services import LocalServices
from llm_platform.tuning.policy import TuningLimits
from tests.deployments import record_deployment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-sample", type=int, default=100)
    args = parse_options(parser, {"models": 50, "repeat": 2, "reference_sample": 5})
    rng = random.Random(0)
    names = [f"model-{index:04d}" for index in range(args.models)]
    behaviours = {
        name: Behaviour(
            kv_cache_usage=rng.uniform(0.2, 1.0),
            preemptions_per_s=rng.choice([0.0, 0.0, 0.3]),
            waiting=rng.uniform(0, 20),
            replicas=rng.randint(1, 5),
            prompt_tokens=rng.choice([200, 900, 3000]),
            generation_tokens=rng.choice([50, 300]),
            oom_kills_per_hour=rng.choice([0.0, 0.0, 0.0, 12.0]),
        )
        for name in names
    }
    catalog = parse_catalog(
        {
            "platform": {"gpu_quota": 10 * len(names)},
            "models": [{"name": n, "source": {"repo": f"org/{n}"}} for n in names],
        },
        origin="generated",
    )
    now = time.time()
    with tempfile.TemporaryDirectory() as work:
        home = Path(work)
        started = time.perf_counter()
        backfill(openmetrics(behaviours, now - 2100, now - 5, step_s=30), home / "prometheus" / "data")
        print(f"backfilled {args.models} models in {time.perf_counter() - started:.1f} s")
        services = LocalServices(home)
        prometheus = services.start_prometheus(home / "file_sd", port=free_port())
        try:
            # The local Prometheus loads the shipped recording rules: the ticks read their first evaluation.
            started = time.perf_counter()
            evaluation_s = first_evaluation(prometheus.url)
            print(f"recording rules evaluated after {time.perf_counter() - started:.1f} s")
            ours = []
            with dg.instance_for_test() as instance:
                for name in names:
                    record_deployment(instance, name, catalog.model(name).serving.model_dump(mode="json"))
                phases: list[TickPhases] = []
                sensor = build_drift_sensor(catalog, on_tick=phases.append)
                cursor = None
                for _ in range(args.repeat):
                    resource = PrometheusResource(url=prometheus.url)
                    context = dg.build_sensor_context(
                        instance=instance, cursor=cursor, resources={"prometheus": resource}
                    )
                    started = time.perf_counter()
                    result = sensor(context)
                    ours.append(time.perf_counter() - started)
                    assert isinstance(result, dg.SensorResult)
                    cursor = result.cursor
            client = PrometheusClient(prometheus.url)
            lookback = Lookback.of(TuningLimits(), catalog.platform.namespace)
            decided = client.snapshot(lookback)
            queries, recorded = client.queries_sent, client.recorded
            federated: list[float] = []
            queried: list[float] = []
            frontend = PrometheusClient(prometheus.url, federation=False)
            for _ in range(args.repeat):  # the recorded snapshot through /federate and through the query API
                for reader, times in ((client, federated), (frontend, queried)):
                    started = time.perf_counter()
                    reader.snapshot(lookback)
                    times.append(time.perf_counter() - started)
            raw = []
            for _ in range(max(1, args.repeat // 2)):  # what a tick costs where the rules are not loaded
                started = time.perf_counter()
                client.query(snapshot_query(lookback))
                raw.append(time.perf_counter() - started)
            evaluation_s = group_evaluation_s(prometheus.url) or evaluation_s
            sample = names[: args.reference_sample]
            reference, reference_queries = [], 0
            for _ in range(max(1, args.repeat // 2)):
                naive = PrometheusClient(prometheus.url)
                started = time.perf_counter()
                for name in sample:
                    for promql in snapshot_queries(lookback, f'model_name="{name}"').values():
                        naive.query(promql)
                reference.append((time.perf_counter() - started) * len(names) / len(sample))
                reference_queries = naive.queries_sent * len(names) // len(sample)
        finally:
            services.stop("prometheus")
    # The first tick reads every deployment (a cold start); the next ones only what is newer than the cursor's mark.
    warm = ours[1:] or ours
    tick, ref = statistics.median(warm), statistics.median(reference)

    def phase(name: str) -> float:
        values = [getattr(p, name) for p in (phases[1:] or phases)]
        return float(statistics.median(values))

    print(f"snapshot: {len(decided)} of {len(names)} models measured, from the recording rules: {recorded}")
    print(f"sensor tick: median {tick:.3f} s over {len(ours)} ticks, {queries} queries")
    print(f"Prometheus: one evaluation of the recording rules {evaluation_s:.3f} s (every {RECORDING_INTERVAL_S} s); "
          f"the same snapshot queried over the raw samples {statistics.median(raw):.3f} s")  # fmt: skip
    federation_s, query_api_s = statistics.median(federated), statistics.median(queried)
    print(f"the recorded snapshot read through /federate {federation_s:.3f} s, through the query API "
          f"{query_api_s:.3f} s (a query frontend without federation; every tick before 2026-12-07)")  # fmt: skip
    print(f"per-model reference: median {ref:.3f} s, {reference_queries} queries (measured on {len(sample)} models, "
          f"scaled to {len(names)})")  # fmt: skip
    print(f"cold tick (every deployment read): {ours[0]:.3f} s = instance {phases[0].instance_s:.3f} + Prometheus "
          f"{phases[0].prometheus_s:.3f} + policy {phases[0].policy_s:.3f}")  # fmt: skip
    print(f"models={args.models} queries={queries} tick_s={tick:.3f} instance_s={phase('instance_s'):.3f} "
          f"prometheus_s={phase('prometheus_s'):.3f} policy_s={phase('policy_s'):.3f} cold_tick_s={ours[0]:.3f} "
          f"rules_eval_s={evaluation_s:.3f} raw_snapshot_s={statistics.median(raw):.3f} "
          f"federation_snapshot_s={federation_s:.3f} query_api_snapshot_s={query_api_s:.3f} "
          f"reference_queries={reference_queries} reference_s={ref:.3f} ratio={ref / tick:.1f}")  # fmt: skip


def group_evaluation_s(url: str) -> float | None:
    """How long Prometheus' last evaluation of the drift snapshot's rule group took (None: not evaluated yet)."""
    with urllib.request.urlopen(f"{url}/api/v1/rules?type=record", timeout=30) as response:
        groups = json.loads(response.read())["data"]["groups"]
    for group in groups:
        if group["name"] == RECORDING_GROUP and not group["lastEvaluation"].startswith("0001-"):
            if any(rule["health"] != "ok" for rule in group["rules"]):
                raise SystemExit(f"recording rules unhealthy: {[rule.get('lastError') for rule in group['rules']]}")
            return float(group["evaluationTime"])
    return None


def first_evaluation(url: str, timeout_s: float = 300) -> float:
    """Wait for the rules' first evaluation (within one interval of Prometheus' start, plus its own duration)."""
    deadline = time.monotonic() + timeout_s
    while (seconds := group_evaluation_s(url)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"Prometheus did not evaluate {RECORDING_GROUP} within {timeout_s:.0f} s")
        time.sleep(1)
    return seconds


if __name__ == "__main__":
    main()
