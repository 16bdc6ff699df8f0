"""Scripted vLLM metric histories for a real Prometheus: OpenMetrics text backfilled with ``promtool tsdb
create-blocks-from openmetrics``, so a 30-minute scenario needs no 30-minute wait.

A :class:`Behaviour` is a model's steady state plus what departs from it: episodes (a burst, or traffic flapping
on and off), OOM kills at given moments, gaps in the data, a trace that stops early (stale), and a rollout. The
series carry vLLM's own names and labels, and kube-state-metrics' (pods' restarts, the Deployment's replicas) for
models that set ``ksm`` — the others behave as on a cluster that does not scrape it (the local target).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llm_platform.conventions import (
    GATE_DURATION_METRIC,
    GATE_FIRST_BYTE_METRIC,
    GATE_LATENCY_BUCKETS,
    GATE_REQUESTS_METRIC,
    KSM_MODEL_LABEL,
    SERVED_NAME_LABEL,
    SERVING_CONTAINER,
    serving_object_name,
)
from llm_platform.engine.vllm import VLLM_METRICS as METRICS
from llm_platform.engine.vllm import request_length_buckets

#: The steady-state fields an episode may change.
LEVELS = ("kv_cache_usage", "preemptions_per_s", "waiting", "replicas", "prompt_tokens", "generation_tokens",
          "requests_per_s")  # fmt: skip


@dataclass(frozen=True)
class Episode:
    """Different levels from ``start_s`` to ``end_s`` (seconds into the trace); with ``period_s``, only for the first
    ``on_s`` of every period (traffic flapping between two states)."""

    start_s: float
    end_s: float
    changes: Mapping[str, float]
    period_s: float | None = None
    on_s: float = 0.0

    def active(self, t: float) -> bool:
        if not self.start_s <= t < self.end_s:
            return False
        return self.period_s is None or (t - self.start_s) % self.period_s < self.on_s


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
    episodes: tuple[Episode, ...] = ()
    ksm: bool = False
    """Whether kube-state-metrics' series exist for this model (restarts, pod labels, the Deployment)."""
    oom_kills_at_s: tuple[float, ...] = ()
    """Moments (seconds into the trace) the vLLM container is OOM-killed and restarted (needs ``ksm``)."""
    oom_kills_per_hour: float | None = None
    """Evenly spaced OOM kills instead of ``oom_kills_at_s`` (None: none); sets ``ksm``."""
    restart_reason: str = "OOMKilled"
    """The last termination reason kube-state-metrics reports for those restarts (``Error``: a crash, a CUDA
    out-of-memory among others)."""
    gaps: tuple[tuple[float, float], ...] = ()
    """Spans (seconds into the trace) without any of the model's vLLM samples."""
    stops_at_s: float | None = None
    """No vLLM samples after this moment (the model went silent: stale data)."""
    rollout_between: tuple[float, float] | None = None
    """A rollout in progress (kube-state-metrics: a surge pod not yet updated; one engine more reports)."""
    served: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """The gate's series (:data:`~llm_platform.conventions.GATE_REQUESTS_METRIC` and its latency histograms): served
    name → (share of the requests, seconds to the first byte); empty: no gate series."""

    def at(self, t: float) -> dict[str, float]:
        """The levels at ``t`` seconds into the trace."""
        levels = {name: float(getattr(self, name)) for name in LEVELS}
        for episode in self.episodes:
            if episode.active(t):
                levels.update(episode.changes)
        return levels

    def reports(self, t: float) -> bool:
        """Whether the model's servers report at ``t``."""
        if self.stops_at_s is not None and t > self.stops_at_s:
            return False
        return not any(start <= t < end for start, end in self.gaps)

    def rolling(self, t: float) -> bool:
        return self.rollout_between is not None and self.rollout_between[0] <= t < self.rollout_between[1]

    def kill_times(self, duration_s: float) -> tuple[float, ...]:
        if self.oom_kills_per_hour:
            every = 3600 / self.oom_kills_per_hour
            return tuple(every * (i + 1) for i in range(int(duration_s // every)))
        return self.oom_kills_at_s

    @property
    def watched(self) -> bool:
        return self.ksm or self.oom_kills_per_hour is not None


def _series(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class _Counters:
    """Counter values, each the running sum of what was added."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, key: str, amount: float) -> float:
        self.values[key] = self.values.get(key, 0.0) + amount
        return self.values[key]


class _Trace:
    """Samples of every series, built step by step (counters accumulate their rate over each step)."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, dict[str, list[str]]]] = {}

    def add(self, family: str, kind: str, metric: str, labels: Mapping[str, str], value: float, t: float) -> None:
        series = self.families.setdefault(family, (kind, {}))[1]
        series.setdefault(_series(metric, labels), []).append(f"{value:g} {t:.3f}")

    def text(self) -> str:
        lines = []
        for family, (kind, series) in self.families.items():
            if not series:
                continue
            lines.append(f"# TYPE {family} {kind}")
            for key, samples in series.items():
                lines += [f"{key} {sample}" for sample in samples]
        return "\n".join([*lines, "# EOF"]) + "\n"


def openmetrics(
    models: Mapping[str, Behaviour], start: float, end: float, step_s: float = 15.0, namespace: str = "llm-serving"
) -> str:
    """The OpenMetrics text of every model's series from ``start`` to ``end`` (seconds since the epoch)."""
    trace = _Trace()
    steps = int((end - start) // step_s) + 1
    for name in sorted(models):
        behaviour = models[name]
        base = {"model_name": name, "engine": "0"}
        buckets = {
            "prompt_tokens": request_length_buckets(behaviour.max_model_len),
            "generation_tokens": request_length_buckets(behaviour.max_model_len),
        }
        counters = _Counters()
        kills = behaviour.kill_times(end - start)
        pod = {"namespace": namespace, "pod": f"{serving_object_name(name)}-0"}
        deployment = {"namespace": namespace, "deployment": serving_object_name(name)}
        for index in range(steps):
            t_abs = start + index * step_s
            t = t_abs - start
            levels = behaviour.at(t)
            dt = step_s if index else 0.0
            preempted = counters.add("preemptions", levels["preemptions_per_s"] * dt)
            finished = {attr: counters.add(f"{attr}_count", levels["requests_per_s"] * dt) for attr in buckets}
            per_bucket = {
                attr: [counters.add(f"{attr}_{bound}", levels["requests_per_s"] * dt if levels[attr] <= bound else 0.0)
                       for bound in buckets[attr]]
                for attr in buckets
            }  # fmt: skip
            sums = {attr: counters.add(f"{attr}_sum", levels["requests_per_s"] * levels[attr] * dt) for attr in buckets}
            if behaviour.reports(t):
                trace.add(METRICS.kv_cache_usage, "gauge", METRICS.kv_cache_usage, base,
                          levels["kv_cache_usage"], t_abs)  # fmt: skip
                trace.add(METRICS.preemptions_total.removesuffix("_total"), "counter", METRICS.preemptions_total, base,
                          preempted, t_abs)  # fmt: skip
                trace.add(METRICS.requests_waiting, "gauge", METRICS.requests_waiting, base,
                          levels["waiting"], t_abs)  # fmt: skip
                engines = int(levels["replicas"]) + (1 if behaviour.rolling(t) else 0)
                for replica in range(engines):
                    trace.add(METRICS.requests_running, "gauge", METRICS.requests_running,
                              {**base, "pod": f"{name}-{replica}"}, 1, t_abs)  # fmt: skip
                for attr, metric in (("prompt_tokens", METRICS.prompt_tokens),
                                     ("generation_tokens", METRICS.generation_tokens)):  # fmt: skip
                    for bound, value in zip([*buckets[attr], "+Inf"], [*per_bucket[attr], finished[attr]],
                                            strict=True):  # fmt: skip
                        trace.add(metric, "histogram", f"{metric}_bucket", {**base, "le": str(bound)}, value, t_abs)
                    trace.add(metric, "histogram", f"{metric}_count", base, finished[attr], t_abs)
                    trace.add(metric, "histogram", f"{metric}_sum", base, sums[attr], t_abs)
                _gate_series(trace, counters, name, behaviour, levels, dt, t_abs)
            if behaviour.watched:
                restarts = sum(1 for kill in kills if kill <= t)
                container = {**pod, "container": SERVING_CONTAINER}
                trace.add("kube_pod_container_status_restarts", "counter", "kube_pod_container_status_restarts_total",
                          container, restarts, t_abs)  # fmt: skip
                if restarts:
                    trace.add("kube_pod_container_status_last_terminated_reason", "gauge",
                              "kube_pod_container_status_last_terminated_reason",
                              {**container, "reason": behaviour.restart_reason}, 1, t_abs)  # fmt: skip
                trace.add("kube_pod_labels", "gauge", "kube_pod_labels", {**pod, KSM_MODEL_LABEL: name}, 1,
                          t_abs)  # fmt: skip
                desired = int(levels["replicas"])
                rolling = behaviour.rolling(t)
                states = {
                    "kube_deployment_spec_replicas": desired,
                    "kube_deployment_status_replicas": desired + (1 if rolling else 0),
                    "kube_deployment_status_replicas_updated": 1 if rolling else desired,
                }
                for metric, value in states.items():
                    trace.add(metric, "gauge", metric, deployment, value, t_abs)
    return trace.text()


#: Seconds per generated token in the gate's durations (a request lasts its first byte plus its tokens).
GATE_SECONDS_PER_TOKEN = 0.02


def _gate_series(
    trace: _Trace, counters: _Counters, model: str, behaviour: Behaviour, levels: Mapping[str, float], dt: float,
    t_abs: float,
) -> None:  # fmt: skip
    """One step of the gate's per-served-name series: each name's share of the requests, all answered 200."""
    for served_name, (share, first_byte_s) in sorted(behaviour.served.items()):
        labels = {"model_name": model, SERVED_NAME_LABEL: served_name}
        added = levels["requests_per_s"] * share * dt
        total = counters.add(f"gate_{served_name}", added)
        trace.add(GATE_REQUESTS_METRIC.removesuffix("_total"), "counter", GATE_REQUESTS_METRIC,
                  {**labels, "code": "200"}, total, t_abs)  # fmt: skip
        duration_s = first_byte_s + levels["generation_tokens"] * GATE_SECONDS_PER_TOKEN
        for metric, seconds in ((GATE_FIRST_BYTE_METRIC, first_byte_s), (GATE_DURATION_METRIC, duration_s)):
            for bound in (*GATE_LATENCY_BUCKETS, math.inf):
                inside = counters.add(f"{metric}_{served_name}_{bound}", added if seconds <= bound else 0.0)
                le = "+Inf" if math.isinf(bound) else f"{bound:g}"
                trace.add(metric, "histogram", f"{metric}_bucket", {**labels, "le": le}, inside, t_abs)
            trace.add(metric, "histogram", f"{metric}_count", labels, total, t_abs)
            trace.add(metric, "histogram", f"{metric}_sum", labels,
                      counters.add(f"{metric}_{served_name}_sum", added * seconds), t_abs)  # fmt: skip


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
