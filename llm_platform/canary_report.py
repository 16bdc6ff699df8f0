"""A canary rollout for the Dagster UI: one row per judgement (weight, both tracks' figures, the verdict) and a plot
of both tracks over the rollout. Pure but for matplotlib's rendering."""

from __future__ import annotations

import pandas as pd

from llm_platform.canary import NO_FIGURES, CanaryResult, TrackFigures
from llm_platform.charts import new_figure, to_png

FIGURE_COLUMNS = {
    "requests": "requests",
    "ttft_p95_ms": "p95_ttft_ms",
    "itl_p95_ms": "p95_itl_ms",
    "error_ratio": "error_ratio",
    "output_tokens_per_s": "output_tok_s",
}


def steps_frame(result: CanaryResult) -> pd.DataFrame:
    """Every judgement of the rollout, in order: the step's weight, how long into the step, the verdict and its
    reason, and each track's figures (NaN where a track had no sample)."""
    rows = []
    for record in result.steps:
        row: dict[str, object] = {
            "weight_pct": record.weight,
            "elapsed_s": round(record.elapsed_s, 1),
            "verdict": record.verdict.outcome,
        }
        for track, figures in (("canary", record.canary), ("stable", record.stable)):
            values: TrackFigures = figures or NO_FIGURES
            for field, column in FIGURE_COLUMNS.items():
                row[f"{track}_{column}"] = getattr(values, field)
        row["reason"] = record.verdict.reason
        rows.append(row)
    return pd.DataFrame(rows)


def plot_png(model: str, frame: pd.DataFrame) -> bytes:
    """p95 TTFT (left) and output tokens/s (right) of both tracks at each judgement, labelled with its weight."""
    figure, latency_axis = new_figure(6.5, 3.5)
    judgements = range(len(frame))
    for track, style in (("canary", "-"), ("stable", "--")):
        latency_axis.plot(judgements, frame[f"{track}_p95_ttft_ms"], style, marker="o", color="tab:red",
                          label=f"{track} p95 TTFT")  # fmt: skip
    latency_axis.set_ylabel("p95 TTFT (ms)", color="tab:red")
    latency_axis.set_xticks(list(judgements), [f"{weight} %" for weight in frame["weight_pct"]])
    latency_axis.set_xlabel("canary weight at each judgement")
    throughput_axis = latency_axis.twinx()
    for track, style in (("canary", "-"), ("stable", "--")):
        throughput_axis.plot(judgements, frame[f"{track}_output_tok_s"], style, marker="s", color="tab:blue",
                             label=f"{track} output tok/s")  # fmt: skip
    throughput_axis.set_ylabel("output tokens/s", color="tab:blue")
    latency_axis.legend(loc="upper left", fontsize="small")
    throughput_axis.legend(loc="upper right", fontsize="small")
    latency_axis.set_title(f"{model}: canary rollout (solid: canary, dashed: stable)")
    return to_png(figure)
