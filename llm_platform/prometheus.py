"""Adapter to Prometheus' HTTP API: the serving metrics of every model in a fixed number of queries.

Plain ``requests`` against the documented ``/api/v1/query`` endpoint: the PromQL client packages on PyPI add
little over it (no typed errors, no batching) and pull in plotting libraries. Every query aggregates ``by
(model_name)`` - the label vLLM puts on its metrics, set to the served model name, which is the catalog name - and
the fields' expressions travel as one PromQL request, each result tagged with its field (``label_replace`` +
``or``): a sensor tick is :data:`QUERIES_PER_SNAPSHOT` (one) request whatever the number of models. Metric names that
vLLM renamed are matched under both names (``__name__=~"new|old"``), so a fleet with old and new engines reads the same.
Transient failures (connection errors, 5xx, 429) are retried with backoff; errors become :class:`PrometheusError`
with the URL and what to do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from llm_platform.errors import PlatformError
from llm_platform.tuning.policy import Window

PROMETHEUS_URL_ENV_VAR = "LLM_PLATFORM_PROMETHEUS_URL"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"

#: Current vLLM metric name → every name it has had (vLLM < 0.12 exported the old ones).
METRIC_NAMES: Mapping[str, tuple[str, ...]] = {
    "vllm:kv_cache_usage_perc": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "vllm:num_preemptions_total": ("vllm:num_preemptions_total", "vllm:num_preemptions"),
    "vllm:num_requests_waiting": ("vllm:num_requests_waiting",),
    "vllm:num_requests_running": ("vllm:num_requests_running",),
    "vllm:request_prompt_tokens_bucket": ("vllm:request_prompt_tokens_bucket",),
    "vllm:request_generation_tokens_bucket": ("vllm:request_generation_tokens_bucket",),
}


class PrometheusError(PlatformError):
    """Prometheus could not be queried (unreachable, failing, or the query was refused)."""


def selector(metric: str, matchers: str = "") -> str:
    """A PromQL selector for ``metric`` under all its names: ``{__name__=~"a|b",<matchers>}``."""
    names = METRIC_NAMES.get(metric, (metric,))
    if len(names) == 1:
        return f"{names[0]}{{{matchers}}}" if matchers else names[0]
    extra = f",{matchers}" if matchers else ""
    return f'{{__name__=~"{"|".join(names)}"{extra}}}'


#: The label that tags each series of the combined snapshot query with its Window field.
FIELD_LABEL = "llm_platform_field"

#: The vLLM container's name in the rendered Deployment and the pod label naming its model, as kube-state-metrics
#: exports it (``--metric-labels-allowlist=pods=[llm-platform/model]``; see k8s/observability/).
VLLM_CONTAINER = "vllm"
KSM_MODEL_LABEL = "label_llm_platform_model"


def oom_restarts_query(window: str, matchers: str = "") -> str:
    """Restarts in ``window`` of each model's vLLM containers whose last termination was ``OOMKilled``, from
    kube-state-metrics; 0 for models whose pods it sees without such restarts, no series where it is not scraped.
    ``matchers`` on ``model_name`` apply to the pods' model label."""
    restarts = f'kube_pod_container_status_restarts_total{{container="{VLLM_CONTAINER}"}}'
    oom = f'kube_pod_container_status_last_terminated_reason{{container="{VLLM_CONTAINER}",reason="OOMKilled"}}'
    pods = ",".join(filter(None, [f'{KSM_MODEL_LABEL}!=""', matchers.replace("model_name", KSM_MODEL_LABEL)]))
    per_pod = f"(increase({restarts}[{window}]) and on (namespace, pod, container) {oom}) or 0 * {restarts}"
    with_model = f"({per_pod}) * on (namespace, pod) group_left ({KSM_MODEL_LABEL}) kube_pod_labels{{{pods}}}"
    return f'sum by (model_name) (label_replace({with_model}, "model_name", "$1", "{KSM_MODEL_LABEL}", "(.+)"))'


def snapshot_queries(window: str, matchers: str = "") -> dict[str, str]:
    """The queries of one snapshot, keyed by :class:`~llm_platform.tuning.policy.Window` field; each returns one
    series per model. ``matchers`` narrows every selector (e.g. to one model: what a per-model client would do)."""
    by = "by (model_name)"
    return {
        "kv_cache_usage_max": f"max {by} (max_over_time({selector('vllm:kv_cache_usage_perc', matchers)}[{window}]))",
        "preemptions_per_s": f"sum {by} (rate({selector('vllm:num_preemptions_total', matchers)}[{window}]))",
        "waiting_avg": f"sum {by} (avg_over_time({selector('vllm:num_requests_waiting', matchers)}[{window}]))",
        "replicas": f"count {by} ({selector('vllm:num_requests_running', matchers)})",
        "prompt_tokens_p999": "histogram_quantile(0.999, sum by (model_name, le) "
        f"(rate({selector('vllm:request_prompt_tokens_bucket', matchers)}[{window}])))",
        "generation_tokens_p999": "histogram_quantile(0.999, sum by (model_name, le) "
        f"(rate({selector('vllm:request_generation_tokens_bucket', matchers)}[{window}])))",
        "oom_restarts": oom_restarts_query(window, matchers),
    }


def snapshot_query(window: str) -> str:
    """All of :func:`snapshot_queries` as one PromQL expression; each series carries its field in ``FIELD_LABEL``."""
    return " or ".join(
        f'label_replace({promql}, "{FIELD_LABEL}", "{name}", "", "")'
        for name, promql in snapshot_queries(window).items()
    )


#: PromQL requests per snapshot, whatever the number of models.
QUERIES_PER_SNAPSHOT = 1


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

    def query(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """``(labels, value)`` per series of an instant query (a scalar result is one series without labels)."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        endpoint = f"{self.url.rstrip('/')}/api/v1/query"
        for attempt in range(self.retries + 1):
            self.queries_sent += 1
            try:
                response = self.session.get(endpoint, params=params, timeout=self.timeout_s)
            except requests.RequestException as error:
                failure = f"unreachable ({type(error).__name__})"
            else:
                if response.status_code in (429, 500, 502, 503, 504):
                    failure = f"HTTP {response.status_code}"
                else:
                    return self._parse(response, promql)
            if attempt == self.retries:
                raise PrometheusError(
                    f"Prometheus at {self.url} is {failure} after {self.retries + 1} attempts; check "
                    f"${PROMETHEUS_URL_ENV_VAR} and that Prometheus runs (`make run` starts one locally)"
                )
            self.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _parse(self, response: requests.Response, promql: str) -> list[tuple[dict[str, str], float]]:
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise PrometheusError(
                f"{self.url} answered HTTP {response.status_code} without JSON; is it Prometheus?"
            ) from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus refused the query {promql!r}: {body.get('error', 'no reason given')}")
        data = body.get("data", {})
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(item.get("metric", {})), float(item["value"][1])) for item in data.get("result", [])]

    def snapshot(self, window: str = "5m", at: float | None = None) -> dict[str, Window]:
        """Every model's :class:`Window` from :data:`QUERIES_PER_SNAPSHOT` queries (NaN where a query had no
        series for the model: "no data", never a zero that was not measured)."""
        values: dict[str, dict[str, float]] = {}
        sample_time = at if at is not None else time.time()
        fields = snapshot_queries(window)
        for labels, value in self.query(snapshot_query(window), sample_time):
            model, name = labels.get("model_name"), labels.get(FIELD_LABEL)
            if model and name in fields:
                values.setdefault(model, {})[name] = value
        nothing = dict.fromkeys(fields, math.nan)
        return {model: Window(**{**nothing, **fields}, sample_time=sample_time) for model, fields in values.items()}
