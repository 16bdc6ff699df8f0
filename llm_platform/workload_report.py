"""A traffic profile for the Dagster UI: the length distributions as bars (share of requests per bucket of vLLM's
histogram) and a table of the figures. Pure but for matplotlib's rendering."""

from __future__ import annotations

from typing import Any

import pandas as pd

from llm_platform.charts import new_figure, to_png
from llm_platform.workload import LengthHistogram, TrafficProfile, span


def figures_frame(profile: TrafficProfile) -> pd.DataFrame:
    """One row per figure: the length quantiles, the rates, the queue, the prefix cache, the finish reasons."""
    rows: list[tuple[str, float]] = [
        (f"{name} {quantile}", value)
        for name, quantiles in profile.quantiles().items()
        for quantile, value in quantiles.items()
    ]
    rows += [
        ("requests", profile.requests),
        ("rate median (req/s, 5-min)", profile.rate_median_rps),
        ("rate peak (req/s, 5-min)", profile.rate_peak_rps),
        ("rate peak per server (req/s, 5-min)", profile.rate_peak_per_engine_rps),
        ("running (mean)", profile.running_mean),
        ("waiting (mean)", profile.waiting_mean),
        ("prefix cache hit ratio", profile.prefix_cache_hit_ratio),
        *((f"finished: {reason}", count) for reason, count in sorted(profile.finish_reasons.items())),
    ]
    return pd.DataFrame(rows, columns=["figure", "value"])


def served_frame(profile: TrafficProfile) -> pd.DataFrame:
    """One row per served name (the base's and each adapter's): its requests, share, errors and p95 latencies as
    the gate measured them; the lengths and rates of the profile are the engine's, shared by all of them."""
    total = sum(figures.requests for figures in profile.served.values()) or 1.0
    return pd.DataFrame(
        [
            (name, figures.requests, figures.requests / total, figures.error_ratio, figures.first_byte_p95_ms,
             figures.duration_p95_ms)
            for name, figures in sorted(profile.served.items())
        ],
        columns=["served_name", "requests", "share", "error_ratio", "first_byte_p95_ms", "duration_p95_ms"],
    )  # fmt: skip


def _bars(axis: Any, histogram: LengthHistogram, title: str) -> None:
    labels = [f"≤{bound:g}" for bound in histogram.bounds] + [f">{histogram.bounds[-1]:g}" if histogram.bounds else ""]
    total = histogram.total or 1.0
    shares = [count / total for count in histogram.counts]
    kept = [index for index, share in enumerate(shares) if share > 0] or [0]
    first, last = kept[0], kept[-1] + 1
    axis.bar(range(last - first), shares[first:last], color="tab:blue")
    axis.set_xticks(range(last - first), labels[first:last], rotation=45, fontsize="small")
    axis.set_title(title)
    axis.set_ylabel("share of requests")


def profile_png(profile: TrafficProfile) -> bytes:
    """Prompt and generation lengths, as the shares of the requests per bucket, and the request rate over the
    window (5-minute rate; empty when it was not measured)."""
    figure, _ = new_figure(12, 3.5)
    figure.clf()  # three panels instead of new_figure's one
    prompt, generation, rate = figure.subplots(1, 3)
    _bars(prompt, profile.prompt, "prompt tokens")
    _bars(generation, profile.generation, "generation tokens")
    if profile.rate_series:
        start = profile.rate_series[0][0]
        rate.plot([(t - start) / 3600 for t, _ in profile.rate_series], [v for _, v in profile.rate_series],
                  color="tab:green")  # fmt: skip
    rate.set_xlabel("hours into the window")
    rate.set_ylabel("requests/s (5-min rate)")
    rate.set_title("request rate")
    figure.suptitle(f"{profile.model}: {profile.source} profile over {span(profile.window_s)} "
                    f"({profile.requests:.0f} requests)")  # fmt: skip
    return to_png(figure)
