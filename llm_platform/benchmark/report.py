"""What a benchmark shows people: a markdown summary and a PNG plot (throughput and p95 TTFT vs concurrency)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from llm_platform.benchmark.slo import SloResult
from llm_platform.charts import new_figure, to_png


def summary_markdown(model: str, frame: pd.DataFrame, results: Sequence[SloResult]) -> str:
    """A short summary: the verdict, each SLO with measured vs threshold, and the headline numbers per level."""
    verdict = "**passed**" if all(r.passed for r in results) else "**failed**"
    lines = [
        f"Smoke benchmark of `{model}`: SLOs {verdict}.",
        "",
        "| SLO | measured | threshold | |",
        "|---|---|---|---|",
    ]
    for result in results:
        mark = "ok" if result.passed else "FAIL"
        lines.append(f"| {result.name} | {result.measured:.4g} | {result.threshold:.4g} | {mark} |")
    lines += [
        "",
        "| concurrency | output tok/s | req/s | p95 TTFT ms | p95 ITL ms | failed |",
        "|---|---|---|---|---|---|",
    ]
    for row in frame.itertuples(index=False):
        lines.append(
            f"| {row.concurrency:.0f} | {row.output_throughput:.1f} | {row.request_throughput:.2f} | "
            f"{row.p95_ttft_ms:.1f} | {row.p95_itl_ms:.1f} | {row.failed:.0f} |"
        )
    return "\n".join(lines)


def plot_png(model: str, frame: pd.DataFrame) -> bytes:
    """Output throughput (left axis) and p95 TTFT (right axis) against concurrency."""
    figure, throughput_axis = new_figure(6, 3.5)
    throughput_axis.plot(frame["concurrency"], frame["output_throughput"], marker="o", color="tab:blue")
    throughput_axis.set_xlabel("concurrency")
    throughput_axis.set_ylabel("output tokens/s", color="tab:blue")
    ttft_axis = throughput_axis.twinx()
    ttft_axis.plot(frame["concurrency"], frame["p95_ttft_ms"], marker="s", color="tab:red")
    ttft_axis.set_ylabel("p95 TTFT (ms)", color="tab:red")
    throughput_axis.set_title(f"{model}: smoke benchmark")
    return to_png(figure)
