"""Scripted vLLM metric histories for a real Prometheus: OpenMetrics text backfilled with ``promtool tsdb
create-blocks-from openmetrics``, so a 30-minute window of a chosen scenario needs no 30-minute wait.

Each model's behaviour is constant over the trace (what the scenario says: KV usage, preemptions/s, waiting
requests, replicas, request lengths, requests/s, OOM kills); the series carry vLLM's own names and labels, and
kube-state-metrics' for the pods' restarts (only for models that set ``oom_kills_per_hour``: the others behave as
on a cluster that does not scrape it).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from llm_platform.engine import request_length_buckets


@dataclass(frozen=True)
class Behaviour:
    kv_cache_usage: float = 0.5
    preemptions_per_s: float = 0.0
    waiting: float = 0.0
    replicas: int = 1
    prompt_tokens: int = 1000
    generation_tokens: int = 200
    requests_per_s: float = 2.0
    max_model_len: int = 4096
    """Sets the request-length buckets, as the platform's engine arguments do."""
    oom_kills_per_hour: float | None = None
    """OOM-killed restarts of the first replica's vLLM container (None: no kube-state-metrics series)."""


def _series(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def openmetrics(models: Mapping[str, Behaviour], start: float, end: float, step_s: float = 15.0) -> str:
    """The OpenMetrics text of every model's series from ``start`` to ``end`` (seconds since the epoch)."""
    times = [start + step_s * i for i in range(int((end - start) // step_s) + 1)]
    families: list[tuple[str, str, list[tuple[str, list[str]]]]] = []

    def family(name: str, kind: str, series: list[tuple[str, list[str]]]) -> None:
        families.append((name, kind, series))

    def gauge(metric: str, value: float, labels: Mapping[str, str]) -> tuple[str, list[str]]:
        return _series(metric, labels), [f"{value:g} {t:.3f}" for t in times]

    def counter(metric: str, per_s: float, labels: Mapping[str, str]) -> tuple[str, list[str]]:
        return _series(metric, labels), [f"{per_s * (t - start):g} {t:.3f}" for t in times]

    def histogram(
        metric: str, value: int, rate: float, labels: Mapping[str, str], buckets: list[int]
    ) -> list[tuple[str, list[str]]]:
        rows = []
        for bound in (*buckets, "+Inf"):
            per_s = rate if bound == "+Inf" or value <= bound else 0.0  # type: ignore[operator]
            rows.append(counter(f"{metric}_bucket", per_s, {**labels, "le": str(bound)}))
        rows.append(counter(f"{metric}_count", rate, labels))
        rows.append(counter(f"{metric}_sum", rate * value, labels))
        return rows

    names = sorted(models)
    base = {name: {"model_name": name, "engine": "0"} for name in names}
    family("vllm:kv_cache_usage_perc", "gauge",
           [gauge("vllm:kv_cache_usage_perc", models[n].kv_cache_usage, base[n]) for n in names])  # fmt: skip
    family("vllm:num_preemptions", "counter",
           [counter("vllm:num_preemptions_total", models[n].preemptions_per_s, base[n]) for n in names])  # fmt: skip
    family("vllm:num_requests_waiting", "gauge",
           [gauge("vllm:num_requests_waiting", models[n].waiting, base[n]) for n in names])  # fmt: skip
    family("vllm:num_requests_running", "gauge", [
        gauge("vllm:num_requests_running", 1, {**base[n], "pod": f"{n}-{replica}"})
        for n in names for replica in range(models[n].replicas)
    ])  # fmt: skip
    for metric, attribute in (
        ("vllm:request_prompt_tokens", "prompt_tokens"),
        ("vllm:request_generation_tokens", "generation_tokens"),
    ):
        rows = []
        for n in names:
            buckets = request_length_buckets(models[n].max_model_len)
            rows += histogram(metric, getattr(models[n], attribute), models[n].requests_per_s, base[n], buckets)
        family(metric, "histogram", rows)
    watched = [n for n in names if models[n].oom_kills_per_hour is not None]
    pods = {n: {"namespace": "llm-serving", "pod": f"{n}-0"} for n in watched}
    family("kube_pod_container_status_restarts", "counter", [
        counter("kube_pod_container_status_restarts_total", (models[n].oom_kills_per_hour or 0) / 3600,
                {**pods[n], "container": "vllm"})
        for n in watched
    ])  # fmt: skip
    family("kube_pod_container_status_last_terminated_reason", "gauge", [
        gauge("kube_pod_container_status_last_terminated_reason", 1,
              {**pods[n], "container": "vllm", "reason": "OOMKilled"})
        for n in watched if models[n].oom_kills_per_hour
    ])  # fmt: skip
    family("kube_pod_labels", "gauge",
           [gauge("kube_pod_labels", 1, {**pods[n], "label_llm_platform_model": n}) for n in watched])  # fmt: skip
    lines = []
    for name, kind, series in families:
        if not series:
            continue
        lines.append(f"# TYPE {name} {kind}")
        for key, samples in series:
            lines += [f"{key} {sample}" for sample in samples]
    return "\n".join([*lines, "# EOF"]) + "\n"


def backfill(text: str, data_dir: Path) -> None:
    """Write ``text`` into a Prometheus data directory as TSDB blocks (``promtool`` from the prometheus package)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is not installed (Debian package prometheus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", delete=False) as source:
        source.write(text)
    try:
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", source.name, str(data_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        Path(source.name).unlink(missing_ok=True)
