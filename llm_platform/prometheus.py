"""Adapter to Prometheus' HTTP API: the serving metrics of every model in a fixed number of queries.

Plain ``requests`` against the documented ``/api/v1/query`` endpoint: the PromQL client packages on PyPI add
little over it (no typed errors, no batching) and pull in plotting libraries. Every query aggregates ``by
(model_name)`` - the label vLLM puts on its metrics, set to the served model name, which is the catalog name - and
the fields' expressions travel as one PromQL request, each result tagged with its field (``label_replace`` +
``or``): a sensor tick is :data:`QUERIES_PER_SNAPSHOT` (one) request whatever the number of models. Metric names come
from the engines (``llm_platform.engine``: each registered engine's expressions are joined with ``or``; model names
are disjoint); names an engine renamed are matched under all of them (``__name__=~"new|old"``), so a fleet with old
and new engine releases reads the same.
A canary step's figures (:func:`track_queries`) are the one exception to ``by (model_name)``: one model, ``by
(track)``, also in one request. The drift snapshot the recording rules precompute is read from the federation
endpoint (:data:`FEDERATION_PATH`), where the same series cost far less to write and to read than as JSON; the
official client's parser (``prometheus_client.parser``) reads 100,000 lines in seconds, so :func:`parse_exposition`
reads the format itself.
Transient failures (connection errors, 5xx, 429) are retried with backoff; errors become :class:`PrometheusError`
with the URL and what to do.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import requests

from llm_platform.canary import TrackFigures
from llm_platform.conventions import (
    CANARY_TRACK,
    GATE_DURATION_METRIC,
    GATE_FIRST_BYTE_METRIC,
    GATE_REQUESTS_METRIC,
    KSM_MODEL_LABEL,
    MODEL_NAME_LABEL,
    SERVED_NAME_LABEL,
    SERVING_CONTAINER,
    SERVING_OBJECT_PREFIX,
    STABLE_TRACK,
    TRACK_METRIC_LABEL,
)
from llm_platform.engine import EngineMetrics, all_engines
from llm_platform.errors import PlatformError
from llm_platform.tuning.policy import Snapshot, TuningLimits
from llm_platform.workload import LengthHistogram, MeasuredTraffic, ServedNameFigures

PROMETHEUS_URL_ENV_VAR = "LLM_PLATFORM_PROMETHEUS_URL"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"


class PrometheusError(PlatformError):
    """Prometheus could not be queried (unreachable, failing, or the query was refused)."""


def selector(metric: str, matchers: str = "", metrics: EngineMetrics | None = None) -> str:
    """A PromQL selector for ``metric`` under all the names ``metrics`` knows for it: ``{__name__=~"a|b",…}``."""
    names = metrics.names(metric) if metrics is not None else (metric,)
    if len(names) == 1:
        return f"{names[0]}{{{matchers}}}" if matchers else names[0]
    extra = f",{matchers}" if matchers else ""
    return f'{{__name__=~"{"|".join(names)}"{extra}}}'


#: The label that tags each series of the combined snapshot query with its Window field.
FIELD_LABEL = "llm_platform_field"


def _model_from_deployment(expression: str) -> str:
    """kube-state-metrics names Deployments, not models: ``<prefix><model>`` → ``model_name``."""
    return (
        f'max by ({MODEL_NAME_LABEL}) (label_replace({expression}, "{MODEL_NAME_LABEL}", "$1", "deployment", '
        f'"{SERVING_OBJECT_PREFIX}(.+)"))'
    )


def restarts_query(lookback: str, matchers: str = "", *, oom_killed: bool = True) -> str:
    """Restarts in ``lookback`` of each model's engine containers whose last termination was ``OOMKilled`` (with
    ``oom_killed=False``: a crash, any reason but ``OOMKilled`` and ``Completed``), from kube-state-metrics; 0 for
    models whose pods it sees without such restarts, no series where it is not scraped. ``matchers`` on
    ``model_name`` apply to the pods' model label."""
    restarts = f'kube_pod_container_status_restarts_total{{container="{SERVING_CONTAINER}"}}'
    reason = 'reason="OOMKilled"' if oom_killed else 'reason!~"OOMKilled|Completed"'
    oom = f'kube_pod_container_status_last_terminated_reason{{container="{SERVING_CONTAINER}",{reason}}}'
    pods = ",".join(filter(None, [f'{KSM_MODEL_LABEL}!=""', matchers.replace("model_name", KSM_MODEL_LABEL)]))
    per_pod = f"(increase({restarts}[{lookback}]) and on (namespace, pod, container) {oom}) or 0 * {restarts}"
    with_model = f"({per_pod}) * on (namespace, pod) group_left ({KSM_MODEL_LABEL}) kube_pod_labels{{{pods}}}"
    return f'sum by (model_name) (label_replace({with_model}, "model_name", "$1", "{KSM_MODEL_LABEL}", "(.+)"))'


@dataclass(frozen=True)
class Lookback:
    """The span every measurement of a snapshot covers, its resolution, and the sustained quantile."""

    seconds: int = 1800
    step_s: int = 60
    """Resolution of the few measurements that need a subquery (coverage, rollout, counted engines)."""
    quantile: float = 0.25
    """The level held for at least 1 - quantile of the lookback (0.25: three quarters of it)."""
    namespace: str = ""
    """The serving namespace, for kube-state-metrics' Deployment series (empty: any)."""
    half_s: int = 900
    """The moderate tier's window (the lookback's last half at the defaults), whose levels are measured too."""
    quarter_s: int = 450
    """The severe tier's window."""

    @classmethod
    def of(cls, limits: TuningLimits, namespace: str = "") -> Lookback:
        """The lookback the drift sensor reads for ``limits`` (and the recording rules precompute)."""
        seconds = int(limits.lookback_s)
        step_s = max(1, min(60, seconds // 10))  # at least ten steps per lookback
        windows = {tier.name: max(1, int(tier.window_s)) for tier in limits.tiers}
        return cls(seconds=seconds, step_s=step_s, quantile=limits.quantile, namespace=namespace,
                   half_s=windows["moderate"], quarter_s=windows["severe"])  # fmt: skip

    @property
    def range(self) -> str:
        return f"{self.seconds}s"

    @property
    def key(self) -> str:
        """What the recorded snapshot of this lookback is labelled with (:data:`LOOKBACK_LABEL`): a tick reads the
        recording rules' values only when they were computed for exactly its lookback."""
        return (
            f"{self.seconds}s/{self.step_s}s/q{self.quantile:g}/{self.namespace or '*'}/"
            f"{self.half_s}s,{self.quarter_s}s"
        )

    def sustained(self, selector: str, span_s: int | None = None) -> str:
        """The level each series of ``selector`` held for at least 1 - quantile of the lookback (or of its last
        ``span_s``): a quantile over its raw samples (a range function, not a subquery: cheap for thousands of
        models)."""
        return f"quantile_over_time({self.quantile:g}, {selector}[{span_s or self.seconds}s])"

    def over_steps(self, expression: str, span_s: int | None = None) -> str:
        """``expression`` evaluated at every step of the lookback (a subquery: for what needs an aggregation first)."""
        return f"({expression})[{span_s or self.seconds}s:{self.step_s}s]"


#: How recent the newest sample must be found: far beyond a scrape interval, within Prometheus' staleness window.
RECENT_S = 300


def snapshot_queries(lookback: Lookback, matchers: str = "", metrics: EngineMetrics | None = None) -> dict[str, str]:
    """The queries of one snapshot, keyed by :class:`~llm_platform.tuning.policy.Snapshot` field; each returns
    one series per model. ``matchers`` narrows every selector (e.g. to one model: what a per-model client would do);
    ``metrics``: one engine's (default: every registered engine's, joined with ``or``).

    Levels are quantiles over each series' raw samples, aggregated per model afterwards (the most loaded engine's
    KV cache, the sum of the engines' queues); events are increases. Only the coverage, the newest sample, the
    rollout and the engine count need subqueries, at a coarse step: the cost of a tick stays far below a second per
    thousand models.
    """
    if metrics is None:
        per_engine = [snapshot_queries(lookback, matchers, engine.metrics) for engine in all_engines()]
        if len(per_engine) == 1:
            return per_engine[0]
        return {name: " or ".join(f"({queries[name]})" for queries in per_engine) for name in per_engine[0]}
    by, span = f"by ({MODEL_NAME_LABEL})", lookback.range

    def of(metric: str) -> str:
        return selector(metric, matchers, metrics)

    running = of(metrics.requests_running)
    deployments = ",".join(filter(None, [f'namespace="{lookback.namespace}"' if lookback.namespace else "",
                                         f'deployment=~"{SERVING_OBJECT_PREFIX}.+"']))  # fmt: skip

    def replicas(span_s: int) -> str:
        # The Deployment's desired count (what KEDA set): its status counts also hold a rollout's surge pod. Where
        # kube-state-metrics is not scraped (the local target), the engines that report, held for the sustained
        # share.
        desired = _model_from_deployment(lookback.sustained(f"kube_deployment_spec_replicas{{{deployments}}}", span_s))
        engines = f"quantile_over_time({lookback.quantile:g}, {lookback.over_steps(f'count {by} ({running})', span_s)})"
        return f"{desired} or {engines}"

    def levels(span_s: int, suffix: str = "") -> dict[str, str]:
        """The levels a tier reads over its window (:data:`~llm_platform.tuning.policy.LEVEL_FIELDS`)."""
        return {
            f"kv_cache_usage{suffix}": f"max {by} ({lookback.sustained(of(metrics.kv_cache_usage), span_s)})",
            f"preemptions_per_s{suffix}": f"sum {by} (increase({of(metrics.preemptions_total)}[{span_s}s])) / {span_s}",
            f"waiting{suffix}": f"sum {by} ({lookback.sustained(of(metrics.requests_waiting), span_s)})",
            f"replicas{suffix}": replicas(span_s),
        }

    unfinished = (
        f"clamp_min(kube_deployment_status_replicas{{{deployments}}} - "
        f"kube_deployment_status_replicas_updated{{{deployments}}}, 0) + "
        f"clamp_min(kube_deployment_spec_replicas{{{deployments}}} - "
        f"kube_deployment_status_replicas_updated{{{deployments}}}, 0)"
    )
    lengths = {
        "prompt_tokens_p999": f"{metrics.prompt_tokens}_bucket",
        "generation_tokens_p999": f"{metrics.generation_tokens}_bucket",
    }
    steps = max(1, lookback.seconds // lookback.step_s)
    return {
        "coverage": f"clamp_max(count_over_time({lookback.over_steps(f'max {by} ({running})')}) / {steps}, 1)",
        "age_s": f"time() - max {by} (max_over_time({lookback.over_steps(f'timestamp({running})', RECENT_S)}))",
        **levels(lookback.seconds),
        "requests": f"sum {by} (increase({of(metrics.prompt_tokens + '_count')}[{span}]))",
        **{
            name: f"histogram_quantile(0.999, sum by ({MODEL_NAME_LABEL}, le) (increase({of(metric)}[{span}])))"
            for name, metric in lengths.items()
        },
        "oom_kills": restarts_query(span, matchers),
        "crash_restarts": restarts_query(span, matchers, oom_killed=False),
        "rollout": f"max_over_time({lookback.over_steps(_model_from_deployment(unfinished))})",
        **levels(lookback.half_s, "_half"),
        **levels(lookback.quarter_s, "_quarter"),
    }


def one_query(fields: dict[str, str]) -> str:
    """Queries keyed by field as one PromQL expression; each series carries its field in ``FIELD_LABEL``."""
    return " or ".join(f'label_replace({promql}, "{FIELD_LABEL}", "{name}", "", "")' for name, promql in fields.items())


def snapshot_query(lookback: Lookback) -> str:
    """All of :func:`snapshot_queries` as one PromQL expression."""
    return one_query(snapshot_queries(lookback))


#: PromQL requests per snapshot, whatever the number of models (where the recording rules run; one more otherwise).
QUERIES_PER_SNAPSHOT = 1

#: The snapshot precomputed by Prometheus' recording rules (:func:`drift_recording_group`): one series per model
#: and field, so that a tick reads one instant vector instead of evaluating range functions over raw samples.
RECORDED_SNAPSHOT = "llm_platform:drift_snapshot"
#: The label naming the lookback a recorded series was computed for (:attr:`Lookback.key`).
LOOKBACK_LABEL = "llm_platform_lookback"
#: The rule group that records it.
RECORDING_GROUP = "llm-platform.drift-snapshot"
#: How often Prometheus evaluates the recording rules: a recorded value is at most this old (plus one evaluation).
RECORDING_INTERVAL_S = 60
#: The field that carries when the rules were last evaluated (not a Snapshot field).
EVALUATED_AT = "evaluated_at"


def drift_recording_group(lookback: Lookback) -> dict[str, Any]:
    """The Prometheus rule group that records :func:`snapshot_queries` for ``lookback`` every
    :data:`RECORDING_INTERVAL_S`: what ``k8s/observability/prometheusrule.yaml`` ships for the default lookback
    (and the local Prometheus loads)."""
    return {
        "name": RECORDING_GROUP,
        "interval": f"{RECORDING_INTERVAL_S}s",
        "rules": [
            {"record": RECORDED_SNAPSHOT, "expr": promql, "labels": {FIELD_LABEL: name, LOOKBACK_LABEL: lookback.key}}
            for name, promql in snapshot_queries(lookback).items()
        ],
    }


def recorded_snapshot_selector(lookback: Lookback) -> str:
    """The series the recording rules write for ``lookback`` (one per model and field)."""
    return f'{RECORDED_SNAPSHOT}{{{LOOKBACK_LABEL}="{lookback.key}"}}'


def recorded_snapshot_query(lookback: Lookback) -> str:
    """The recorded snapshot of ``lookback`` and, as field :data:`EVALUATED_AT`, when it was evaluated: what the
    query API answers where Prometheus' federation endpoint is not served."""
    one_field = f'{RECORDED_SNAPSHOT}{{{LOOKBACK_LABEL}="{lookback.key}",{FIELD_LABEL}="coverage"}}'
    evaluated = f'label_replace(min(timestamp({one_field})), "{FIELD_LABEL}", "{EVALUATED_AT}", "", "")'
    return f"{recorded_snapshot_selector(lookback)} or {evaluated}"


#: Prometheus' federation endpoint: the newest sample of every series a selector matches, in the text exposition
#: format. The recorded snapshot is read there rather than through the query API: at 5,000 models it is 100,000
#: series, and the text format costs Prometheus less to write and the sensor far less to read than the same series
#: as JSON objects (docs/benchmarks.md); each line also carries its own sample's time.
FEDERATION_PATH = "/federate"
#: The exposition format asked of the federation endpoint (its default; protobuf is the alternative it offers).
EXPOSITION_FORMAT = "text/plain;version=0.0.4"


class Sample(NamedTuple):
    """One series' newest sample, as the federation endpoint writes it (a tuple: 100,000 of them per tick)."""

    labels: dict[str, str]
    value: float
    time_s: float
    """When it was taken (NaN where the line has no timestamp)."""


_EXPOSITION_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')
_EXPOSITION_ESCAPE = re.compile(r"\\(.)")


def parse_exposition(text: str, source: str) -> list[Sample]:
    """The samples of Prometheus' text exposition format (comments and blank lines skipped); a line in another
    form is a :class:`PrometheusError` naming ``source`` and the line.

    Label values without a backslash (model and field names: every line of the recorded snapshot) are split
    directly, since a quote inside a value is always escaped; the others go through the full grammar and are
    unescaped (``\\\\``, ``\\"``, ``\\n``)."""
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            continue
        try:
            head, closed, rest = line.rpartition("} ")
            if closed:  # name{labels} value [timestamp]
                body = head.partition("{")[2]
                labels = _exposition_labels(body) if "\\" in body or not body.endswith('"') else _plain_labels(body)
            else:  # name value [timestamp]
                labels, rest = {}, line.partition(" ")[2]
            value, _, timestamp = rest.partition(" ")
            samples.append(Sample(labels, float(value), int(timestamp) / 1000 if timestamp else math.nan))
        except ValueError:
            raise PrometheusError(
                f"{source} answered line {number} in a form that is not Prometheus' text exposition format: "
                f"{line[:120]!r}"
            ) from None
    return samples


def _plain_labels(body: str) -> dict[str, str]:
    """``a="x",b="y"`` without a backslash: no value holds a quote, so ``",`` separates the pairs."""
    return dict(pair.split('="', 1) for pair in body[:-1].split('",'))


def _exposition_labels(body: str) -> dict[str, str]:
    """Labels by the format's grammar, their values unescaped (a body in another form is a ``ValueError``)."""
    pairs = _EXPOSITION_LABEL.findall(body)
    if "".join(f'{name}="{value}",' for name, value in pairs) != body.rstrip(",") + ",":
        raise ValueError(body)
    return {name: _EXPOSITION_ESCAPE.sub(_unescaped, value) for name, value in pairs}


def _unescaped(escape: re.Match[str]) -> str:
    return "\n" if escape.group(1) == "n" else escape.group(1)


#: The latency quantile the canary judge compares (the SLO's: p95).
TRACK_QUANTILE = 0.95


def _label_value(value: str) -> str:
    """``value`` as a PromQL string literal's body (catalog names are DNS labels; escape anyway)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def track_queries(model_name: str, window_s: int, metrics: EngineMetrics) -> dict[str, str]:
    """The queries of one canary step, keyed by :class:`~llm_platform.canary.TrackFigures` field; each returns one
    series per track (:data:`TRACK_METRIC_LABEL`; a series without it counts as :data:`STABLE_TRACK`) of the model
    over the step's last ``window_s`` seconds. Latencies are in milliseconds."""
    model = f'{MODEL_NAME_LABEL}="{_label_value(model_name)}"'
    span, by = f"{window_s}s", f"by ({TRACK_METRIC_LABEL})"

    def tracked(series: str) -> str:
        """Each series labelled with its track (none: the stable one)."""
        return f'label_replace({series}, "{TRACK_METRIC_LABEL}", "{STABLE_TRACK}", "{TRACK_METRIC_LABEL}", "")'

    def per_track(metric: str, matchers: str = "") -> str:
        """The increase of ``metric`` over the window, each series labelled with its track."""
        return tracked(f"increase({selector(metric, ','.join(filter(None, [model, matchers])), metrics)}[{span}])")

    def p95_ms(histogram: str) -> str:
        buckets = per_track(f"{histogram}_bucket")
        return f"histogram_quantile({TRACK_QUANTILE:g}, sum by ({TRACK_METRIC_LABEL}, le) ({buckets})) * 1000"

    def now_per_track(gauge: str) -> str:
        """The gauge at the window's end, summed per track."""
        return f"sum {by} ({tracked(selector(gauge, model, metrics))})"

    finished = f"sum {by} ({per_track(metrics.requests_finished)})"
    failed = f"sum {by} ({per_track(metrics.requests_finished, metrics.failed_requests)})"
    return {
        "requests": finished,
        "ttft_p95_ms": p95_ms(metrics.ttft_seconds),
        "itl_p95_ms": p95_ms(metrics.itl_seconds),
        # No failure series yet is no failure: ``or`` fills a zero for every track that finished requests.
        "error_ratio": f"({failed} or 0 * {finished}) / ({finished} > 0)",
        "output_tokens_per_s": f"sum {by} ({per_track(metrics.generated_tokens_total)}) / {window_s}",
        "in_flight": f"{now_per_track(metrics.requests_running)} + {now_per_track(metrics.requests_waiting)}",
    }


#: The traffic profile's single-valued measurements (:class:`~llm_platform.workload.MeasuredTraffic` fields).
TRAFFIC_SCALARS = ("rate_median_rps", "rate_peak_rps", "rate_peak_per_engine_rps", "running_mean", "waiting_mean",
                   "prefix_cache_queries", "prefix_cache_hits")  # fmt: skip
#: The request rate a profile reads the median and the peak of (5-minute rates, at a 1-minute step).
RATE_WINDOW_S, RATE_STEP_S = 300, 60


def request_rate_query(model_name: str, metrics: EngineMetrics) -> str:
    """The model's 5-minute rate of finished requests (all servers)."""
    count = selector(metrics.prompt_tokens + "_count", f'{MODEL_NAME_LABEL}="{_label_value(model_name)}"', metrics)
    return f"sum(rate({count}[{RATE_WINDOW_S}s]))"


def traffic_queries(model_name: str, window_s: int, metrics: EngineMetrics) -> dict[str, str]:
    """The queries of one model's traffic profile over the last ``window_s`` seconds: both request-length
    histograms by ``le``, the 5-minute request rate's median and peak, mean running and waiting requests, the
    prefix cache's queries and hits, and finished requests by ``finished_reason``."""
    model = f'{MODEL_NAME_LABEL}="{_label_value(model_name)}"'
    span = f"{window_s}s"

    def of(metric: str) -> str:
        return selector(metric, model, metrics)

    def mean(expression: str) -> str:
        return f"avg_over_time(({expression})[{span}:{RATE_STEP_S}s])"

    rate = request_rate_query(model_name, metrics)
    return {
        "prompt": f"sum by (le) (increase({of(metrics.prompt_tokens + '_bucket')}[{span}]))",
        "generation": f"sum by (le) (increase({of(metrics.generation_tokens + '_bucket')}[{span}]))",
        "rate_median_rps": f"quantile_over_time(0.5, ({rate})[{span}:{RATE_STEP_S}s])",
        "rate_peak_rps": f"max_over_time(({rate})[{span}:{RATE_STEP_S}s])",
        # What one server took at the busiest time: the model's rate over its engines then (autoscaling spreads it).
        "rate_peak_per_engine_rps": (
            f"max_over_time(({rate} / count({of(metrics.requests_running)}))[{span}:{RATE_STEP_S}s])"
        ),
        "running_mean": mean(f"sum({of(metrics.requests_running)})"),
        "waiting_mean": mean(f"sum({of(metrics.requests_waiting)})"),
        "prefix_cache_queries": f"sum(increase({of(metrics.prefix_cache_queries_total)}[{span}]))",
        "prefix_cache_hits": f"sum(increase({of(metrics.prefix_cache_hits_total)}[{span}]))",
        "finish_reasons": f"sum by (finished_reason) (increase({of(metrics.requests_finished)}[{span}]))",
    }


#: The :class:`~llm_platform.workload.ServedNameFigures` fields, as :func:`served_name_queries` keys them.
SERVED_FIELDS = {
    "served_requests": "requests",
    "served_error_ratio": "error_ratio",
    "served_first_byte_p95_ms": "first_byte_p95_ms",
    "served_duration_p95_ms": "duration_p95_ms",
}


def served_name_queries(model_name: str, window_s: int) -> dict[str, str]:
    """The gate's figures of one model per served name (:data:`SERVED_NAME_LABEL`: the base's and each adapter's)
    over the last ``window_s`` seconds, keyed as :data:`SERVED_FIELDS`. Latencies are in milliseconds."""
    model, by = f'{MODEL_NAME_LABEL}="{_label_value(model_name)}"', f"by ({SERVED_NAME_LABEL})"

    def increase(metric: str, matchers: str = "") -> str:
        return f"increase({selector(metric, ','.join(filter(None, [model, matchers])))}[{window_s}s])"

    def p95_ms(histogram: str) -> str:
        buckets = increase(f"{histogram}_bucket")
        return f"histogram_quantile({TRACK_QUANTILE:g}, sum by ({SERVED_NAME_LABEL}, le) ({buckets})) * 1000"

    requests = f"sum {by} ({increase(GATE_REQUESTS_METRIC)})"
    server_errors = 'code=~"5.."'
    failed = f"sum {by} ({increase(GATE_REQUESTS_METRIC, server_errors)})"
    return {
        "served_requests": requests,
        "served_error_ratio": f"({failed} or 0 * {requests}) / ({requests} > 0)",
        "served_first_byte_p95_ms": p95_ms(GATE_FIRST_BYTE_METRIC),
        "served_duration_p95_ms": p95_ms(GATE_DURATION_METRIC),
    }


#: A model's live length shapes for the shape sensor: ``(prompt, generation)`` of the earlier half, then the recent.
LiveShapes = tuple[tuple[LengthHistogram, LengthHistogram], tuple[LengthHistogram, LengthHistogram]]


def shape_queries(window_s: int, metrics: EngineMetrics) -> dict[str, str]:
    """Both request-length histograms of every model by ``le``, over each half of the last ``window_s`` seconds
    (the earlier half through ``offset``): four expressions, one series per model, field and bucket."""
    half = f"{window_s // 2}s"
    fields = {}
    for kind, metric in (("prompt", metrics.prompt_tokens), ("generation", metrics.generation_tokens)):
        buckets = selector(metric + "_bucket", "", metrics)
        for name, offset in (("earlier", f" offset {half}"), ("recent", "")):
            fields[f"{kind}_{name}"] = f"sum by ({MODEL_NAME_LABEL}, le) (increase({buckets}[{half}]{offset}))"
    return fields


def parse_duration_s(text: str) -> float | None:
    """A Prometheus duration (``15d``, ``1w2d``, ``36h30m``) in seconds; None when it is not one, or ``0s`` (the
    default retention, which Prometheus does not state)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    if not parts or "".join(number + unit for number, unit in parts) != text.strip():
        return None
    seconds = sum(int(number) * units[unit] for number, unit in parts)
    return float(seconds) if seconds > 0 else None


def canary_models_query(metrics: EngineMetrics) -> str:
    """The models that have a canary track's server being scraped right now (one series each)."""
    canary = selector(metrics.requests_running, f'{TRACK_METRIC_LABEL}="{CANARY_TRACK}"', metrics)
    return f"count by ({MODEL_NAME_LABEL}) ({canary})"


@dataclass
class PrometheusClient:
    """Instant PromQL queries with retries; ``session`` and ``sleep`` are injectable for tests."""

    url: str = DEFAULT_PROMETHEUS_URL
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5
    session: requests.Session = field(default_factory=requests.Session)
    sleep: Callable[[float], None] = time.sleep
    queries_sent: int = 0
    recorded: bool | None = None
    """Whether the last snapshot was read from the recording rules (None: no snapshot yet)."""
    federation: bool = True
    """Read the recorded snapshot through Prometheus' federation endpoint where it is served; False: through the
    query API alone (what a tick costs behind a query frontend, which ``bench/sensor_scale.py`` compares)."""

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """``(labels, value)`` per series of an instant query (a scalar result is one series without labels)."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        return self._parse(self._get("/api/v1/query", params), promql)

    def query_range(self, promql: str, start: float, end: float, step_s: int) -> list[tuple[float, float]]:
        """The samples of a range query's first series, as ``(time, value)`` (empty when it has none)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}s"}
        result = self._data(self._get("/api/v1/query_range", params), promql).get("result") or []
        return [(float(t), float(v)) for t, v in result[0].get("values", [])] if result else []

    def retention_s(self) -> float | None:
        """How far back Prometheus keeps samples (its ``--storage.tsdb.retention.time``; None: not told)."""
        response = self._get("/api/v1/status/flags", {})
        try:
            flags = response.json().get("data", {})
        except ValueError:
            return None
        return parse_duration_s(str(flags.get("storage.tsdb.retention.time", "")))

    def _get(self, path: str, params: dict[str, str], accept: str | None = None) -> requests.Response:
        endpoint = f"{self.url.rstrip('/')}{path}"
        headers = {"Accept": accept} if accept else None
        for attempt in range(self.retries + 1):
            self.queries_sent += 1
            try:
                response = self.session.get(endpoint, params=params, headers=headers, timeout=self.timeout_s)
            except requests.RequestException as error:
                failure = f"unreachable ({type(error).__name__})"
            else:
                if response.status_code in (429, 500, 502, 503, 504):
                    failure = f"HTTP {response.status_code}"
                else:
                    return response
            if attempt == self.retries:
                raise PrometheusError(
                    f"Prometheus at {self.url} is {failure} after {self.retries + 1} attempts; check "
                    f"${PROMETHEUS_URL_ENV_VAR} and that Prometheus runs (`make run` starts one locally)"
                )
            self.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _data(self, response: requests.Response, promql: str) -> dict[str, Any]:
        """The ``data`` of a query's answer; a non-JSON answer or a refused query is a :class:`PrometheusError`."""
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise PrometheusError(
                f"{self.url} answered HTTP {response.status_code} without JSON; is it Prometheus?"
            ) from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus refused the query {promql!r}: {body.get('error', 'no reason given')}")
        data: dict[str, Any] = body.get("data", {})
        return data

    def _parse(self, response: requests.Response, promql: str) -> list[tuple[dict[str, str], float]]:
        data = self._data(response, promql)
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(item.get("metric", {})), float(item["value"][1])) for item in data.get("result", [])]

    def newest_samples(self, selector: str) -> list[Sample] | None:
        """The newest sample of every series ``selector`` matches, from Prometheus' federation endpoint in one
        request; None where the endpoint is not served (a query frontend such as Thanos Query or Mimir: HTTP 404)."""
        response = self._get(FEDERATION_PATH, {"match[]": selector}, accept=EXPOSITION_FORMAT)
        if response.status_code in (404, 405):
            return None
        source = f"Prometheus at {self.url} ({FEDERATION_PATH})"
        if response.status_code != 200:
            reason = response.text.strip().splitlines()[:1] or ["no reason given"]
            raise PrometheusError(f"{source} refused {selector!r}: HTTP {response.status_code} {reason[0][:200]}")
        if not response.headers.get("Content-Type", "").startswith("text/plain"):
            raise PrometheusError(f"{source} answered {response.headers.get('Content-Type')!r}; is it Prometheus?")
        return parse_exposition(response.text, source)

    def snapshot(self, lookback: Lookback | None = None, at: float | None = None) -> dict[str, Snapshot]:
        """Every model's :class:`Snapshot` from :data:`QUERIES_PER_SNAPSHOT` queries (NaN where a query had no
        series for the model: "no data", never a zero that was not measured).

        The recording rules' values for ``lookback`` when Prometheus has them (their newest evaluation, at most
        :data:`RECORDING_INTERVAL_S` old: the newest sample's age counts to ``at``, not to the evaluation);
        otherwise, the same expressions evaluated at ``at`` over the raw samples."""
        lookback = lookback or Lookback()
        sample_time = at if at is not None else time.time()
        fields = snapshot_queries(lookback)
        values = self._recorded_snapshot(lookback, fields, sample_time)
        self.recorded = bool(values)
        if not values:
            values, _ = self._by_model(self.query(snapshot_query(lookback), sample_time), fields)
        nothing = {**dict.fromkeys(fields, math.nan), "coverage": 0.0}
        return {
            model: Snapshot(**{**nothing, **measured}, sample_time=sample_time) for model, measured in values.items()
        }

    def _recorded_snapshot(
        self, lookback: Lookback, fields: dict[str, str], sample_time: float
    ) -> dict[str, dict[str, float]]:
        """The recording rules' fields per model (empty where they are not loaded), through the federation
        endpoint, else through the query API; ``age_s`` grows by the time since its evaluation."""
        samples = self.newest_samples(recorded_snapshot_selector(lookback)) if self.federation else None
        if samples is None:
            values, evaluated_at = self._by_model(self.query(recorded_snapshot_query(lookback), sample_time), fields)
            evaluated = dict.fromkeys(values, evaluated_at)  # model -> when its age_s was recorded
        else:
            values, _ = self._by_model([(sample.labels, sample.value) for sample in samples], fields)
            ages = (sample for sample in samples if sample.labels.get(FIELD_LABEL) == "age_s")
            evaluated = {sample.labels.get(MODEL_NAME_LABEL, ""): sample.time_s for sample in ages}
        for model, evaluated_at in evaluated.items():
            if "age_s" in values.get(model, {}) and not math.isnan(evaluated_at):
                values[model]["age_s"] += max(0.0, sample_time - evaluated_at)
        return values

    def track_figures(
        self, model_name: str, window_s: int, metrics: EngineMetrics, at: float | None = None
    ) -> dict[str, TrackFigures]:
        """Each track's :class:`~llm_platform.canary.TrackFigures` for the model over the last ``window_s`` seconds,
        from one query (NaN where a field had no series for the track)."""
        fields = track_queries(model_name, window_s, metrics)
        values, _ = self._by_model(self.query(one_query(fields), at), fields, key=TRACK_METRIC_LABEL)
        return {track: TrackFigures(**{**dict.fromkeys(fields, math.nan), **measured})
                for track, measured in values.items()}  # fmt: skip

    def measured_traffic(
        self, model_name: str, window_s: int, metrics: EngineMetrics, at: float | None = None
    ) -> MeasuredTraffic:
        """What the model served over the last ``window_s`` seconds: :func:`traffic_queries` in one query, and the
        request rate over the window (for the plot) in a range query."""
        fields = {**traffic_queries(model_name, window_s, metrics), **served_name_queries(model_name, window_s)}
        end = at if at is not None else time.time()
        rate = self.query_range(request_rate_query(model_name, metrics), end - window_s, end, RATE_WINDOW_S)
        histograms: dict[str, dict[float, float]] = {"prompt": {}, "generation": {}}
        reasons: dict[str, float] = {}
        scalars: dict[str, float] = {}
        served: dict[str, dict[str, float]] = {}
        for labels, value in self.query(one_query(fields), at):
            name = labels.get(FIELD_LABEL, "")
            if name in SERVED_FIELDS and labels.get(SERVED_NAME_LABEL) and not math.isnan(value):
                served.setdefault(labels[SERVED_NAME_LABEL], {})[SERVED_FIELDS[name]] = value
            elif name in histograms and "le" in labels:
                histograms[name][float(labels["le"])] = value
            elif name == "finish_reasons" and labels.get("finished_reason"):
                reasons[labels["finished_reason"]] = value
            elif name in fields and not math.isnan(value):
                scalars[name] = value
        return MeasuredTraffic(
            prompt_cumulative=histograms["prompt"], generation_cumulative=histograms["generation"],
            finish_reasons=reasons, rate_series=tuple(rate),
            **{name: scalars.get(name, math.nan) for name in TRAFFIC_SCALARS},
            served={name: ServedNameFigures(**figures) for name, figures in served.items() if "requests" in figures},
        )  # fmt: skip

    def live_shapes(self, window_s: int, metrics: EngineMetrics, at: float | None = None) -> dict[str, LiveShapes]:
        """Every model's request-length histograms over the two halves of the last ``window_s`` seconds, from one
        query (:func:`shape_queries`); a model without length series is absent."""
        cumulative: dict[str, dict[str, dict[float, float]]] = {}
        for labels, value in self.query(one_query(shape_queries(window_s, metrics)), at):
            model, name, bound = labels.get(MODEL_NAME_LABEL), labels.get(FIELD_LABEL), labels.get("le")
            if model and name and bound is not None and not math.isnan(value):
                cumulative.setdefault(model, {}).setdefault(name, {})[float(bound)] = value

        def half(fields: dict[str, dict[float, float]], which: str) -> tuple[LengthHistogram, LengthHistogram]:
            return (LengthHistogram.from_cumulative(fields.get(f"prompt_{which}", {})),
                    LengthHistogram.from_cumulative(fields.get(f"generation_{which}", {})))  # fmt: skip

        return {model: (half(fields, "earlier"), half(fields, "recent")) for model, fields in cumulative.items()}

    def canary_models(self, metrics: EngineMetrics) -> set[str]:
        """The models whose canary Prometheus scrapes now (a stopped one's series end at once: staleness markers)."""
        return {labels[MODEL_NAME_LABEL] for labels, _ in self.query(canary_models_query(metrics))
                if MODEL_NAME_LABEL in labels}  # fmt: skip

    @staticmethod
    def _by_model(
        series: list[tuple[dict[str, str], float]], fields: dict[str, str], key: str = MODEL_NAME_LABEL
    ) -> tuple[dict[str, dict[str, float]], float]:
        """Each model's (each ``key`` value's) measured fields, and the recorded snapshot's evaluation time (NaN when
        not recorded)."""
        values: dict[str, dict[str, float]] = {}
        evaluated_at = math.nan
        for labels, value in series:
            model, name = labels.get(key), labels.get(FIELD_LABEL)
            if name == EVALUATED_AT and not model:
                evaluated_at = value
            elif model and name in fields:
                values.setdefault(model, {})[name] = value
        return values, evaluated_at
