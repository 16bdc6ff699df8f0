"""``vllm bench serve`` result JSON → one row per concurrency level → a pandas DataFrame.

Parsed defensively: key names have changed between vLLM releases (``failed`` appeared late, ``e2el`` percentiles
need ``--percentile-metrics``, concurrency is reported differently), so every field has fallbacks and a missing
value becomes NaN instead of an exception. The same parser reads the JSON of the local run and of the Kubernetes
benchmark Job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from llm_platform.benchmark.plan import LATENCY_METRICS, PERCENTILES

COLUMNS = (
    ["concurrency", "completed", "failed", "error_rate", "duration_s", "request_throughput", "output_throughput",
     "total_token_throughput", "achieved_concurrency"]
    + [f"{stat}_{metric}_ms" for metric in LATENCY_METRICS for stat in ("mean", *(f"p{p}" for p in PERCENTILES))]
)  # fmt: skip


def _number(result: Mapping[str, Any], *keys: str) -> float:
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def parse_result(result: Mapping[str, Any], concurrency: int | None = None) -> dict[str, float]:
    """One row of the benchmark table from one result JSON."""
    completed = _number(result, "completed", "num_completed")
    prompts = _number(result, "num_prompts")
    failed = _number(result, "failed", "num_failed")
    if math.isnan(failed) and not math.isnan(prompts) and not math.isnan(completed):
        failed = prompts - completed
    requests = completed + failed
    row: dict[str, float] = {
        "concurrency": float(concurrency) if concurrency is not None else _number(result, "max_concurrency"),
        "completed": completed,
        "failed": failed,
        "error_rate": failed / requests if requests and not math.isnan(requests) else math.nan,
        "duration_s": _number(result, "duration", "benchmark_duration"),
        "request_throughput": _number(result, "request_throughput"),
        "output_throughput": _number(result, "output_throughput", "output_token_throughput"),
        "total_token_throughput": _number(result, "total_token_throughput"),
    }
    for metric in LATENCY_METRICS:
        row[f"mean_{metric}_ms"] = _number(result, f"mean_{metric}_ms")
        for percentile in PERCENTILES:
            keys = [f"p{percentile}_{metric}_ms"]
            if percentile == 50:
                keys.append(f"median_{metric}_ms")
            row[f"p{percentile}_{metric}_ms"] = _number(result, *keys)
    # Little's law: requests in flight = arrival rate x time in system. Reported by newer releases directly.
    reported = _number(result, "mean_concurrency", "achieved_concurrency")
    little = row["request_throughput"] * row["mean_e2el_ms"] / 1000
    row["achieved_concurrency"] = reported if not math.isnan(reported) else little
    return row


def results_frame(rows: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """The benchmark table, one row per concurrency level, in the documented column order."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    return frame.sort_values("concurrency").reset_index(drop=True)
