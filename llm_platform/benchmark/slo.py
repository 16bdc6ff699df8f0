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


@dataclass(frozen=True)
class Regression:
    """One metric at one concurrency level that got worse than the baseline allows."""

    concurrency: int
    metric: str
    baseline: float
    live: float
    change_pct: float

    def describe(self) -> str:
        return (
            f"{self.metric} at concurrency {self.concurrency}: {self.live:.1f} vs {self.baseline:.1f} at promotion "
            f"({self.change_pct:+.1f}%)"
        )


def regressions(baseline: pd.DataFrame, live: pd.DataFrame, max_regression_pct: float) -> list[Regression]:
    """Levels present in both tables where output throughput fell, or p95 TTFT rose, by more than the allowance."""
    found: list[Regression] = []
    before = baseline.set_index("concurrency")
    for _, row in live.iterrows():
        level = int(row["concurrency"])
        if level not in before.index:
            continue
        base = before.loc[level].to_dict()
        throughput, base_throughput = float(row["output_throughput"]), float(base["output_throughput"])
        if base_throughput > 0:
            change = (throughput - base_throughput) / base_throughput * 100
            if change < -max_regression_pct or math.isnan(throughput):
                found.append(Regression(level, "output_throughput", base_throughput, throughput, change))
        ttft, base_ttft = float(row["p95_ttft_ms"]), float(base["p95_ttft_ms"])
        if base_ttft > 0:
            change = (ttft - base_ttft) / base_ttft * 100
            if change > max_regression_pct or math.isnan(ttft):
                found.append(Regression(level, "p95_ttft_ms", base_ttft, ttft, change))
    return found
