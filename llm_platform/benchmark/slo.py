"""SLO evaluation of a benchmark table against the catalog's objectives (pure).

Latency objectives must hold at every tested concurrency level, so the measured value is the worst level's p95;
the throughput objective is met by the best level (the capacity the config reaches); the error rate is over all
requests of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from llm_platform.catalog import Slo


@dataclass(frozen=True)
class SloResult:
    name: str
    measured: float
    threshold: float
    passed: bool
    description: str


def evaluate_slos(frame: pd.DataFrame, slo: Slo) -> list[SloResult]:
    """One result per catalog SLO; a NaN measurement (the benchmark produced none) fails."""

    def result(name: str, measured: float, threshold: float, ok: bool, what: str) -> SloResult:
        passed = ok and not math.isnan(measured)
        return SloResult(name, measured, threshold, passed, what)

    ttft = float(frame["p95_ttft_ms"].max())
    itl = float(frame["p95_itl_ms"].max())
    throughput = float(frame["output_throughput"].max())
    requests = float(frame["completed"].sum() + frame["failed"].sum())
    error_rate = float(frame["failed"].sum()) / requests if requests else math.nan
    return [
        result("ttft_p95_ms", ttft, slo.ttft_p95_ms, ttft <= slo.ttft_p95_ms,
               "worst p95 time to first token over the concurrency levels (ms)"),
        result("itl_p95_ms", itl, slo.itl_p95_ms, itl <= slo.itl_p95_ms,
               "worst p95 inter-token latency over the concurrency levels (ms)"),
        result("min_output_tokens_per_s", throughput, slo.min_output_tokens_per_s,
               throughput >= slo.min_output_tokens_per_s, "best output throughput over the levels (tokens/s)"),
        result("max_error_rate", error_rate, slo.max_error_rate, error_rate <= slo.max_error_rate,
               "failed requests / all requests"),
    ]  # fmt: skip
