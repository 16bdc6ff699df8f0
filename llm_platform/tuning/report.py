"""What an auto-tune run shows people: the trial table and the goodput-vs-latency Pareto plot."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from llm_platform.charts import new_figure, to_png
from llm_platform.tuning.search import KNOBS, Trial


def trials_frame(trials: Sequence[Trial], labels: Sequence[str]) -> pd.DataFrame:
    """One row per trial of a goodput search: its label, knobs, goodput and the probe that set it, or its error."""
    rows = []
    for label, trial in zip(labels, trials, strict=True):
        best = trial.best
        rows.append(
            {
                "trial": label,
                **{knob: trial.candidate.get(knob, math.nan) for knob in KNOBS},
                "status": "ok" if trial.ok else "failed",
                "goodput_tok_s": trial.goodput,
                "load": best.load if best else math.nan,
                "p95_ttft_ms": best.p95_ttft_ms if best else math.nan,
                "p95_itl_ms": best.p95_itl_ms if best else math.nan,
                "probes": len(trial.probes),
                "error": trial.error,
            }
        )
    frame = pd.DataFrame(rows)
    return frame.dropna(axis="columns", how="all")


def pareto_png(model: str, trials: Sequence[Trial], labels: Sequence[str]) -> bytes:
    """Every probe of every successful trial (output throughput against p95 TTFT, grey), each trial's goodput
    point (blue) and their Pareto front (red: no other trial is both faster and of lower latency)."""
    figure, axis = new_figure()
    probes = [probe for trial in trials if trial.ok for probe in trial.probes]
    axis.scatter([p.p95_ttft_ms for p in probes], [p.output_throughput for p in probes], s=10, color="lightgrey",
                 label="probes")  # fmt: skip
    points = [(trial.best.p95_ttft_ms, trial.goodput, label)
              for trial, label in zip(trials, labels, strict=True) if trial.ok and trial.best]  # fmt: skip
    axis.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", label="trials (goodput)")
    front, best_so_far = [], -1.0
    for latency, goodput, _ in sorted(points):
        if goodput > best_so_far:
            front.append((latency, goodput))
            best_so_far = goodput
    axis.plot([p[0] for p in front], [p[1] for p in front], color="tab:red", marker="o", label="Pareto front")
    for latency, goodput, label in points:
        axis.annotate(label, (latency, goodput), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel("p95 TTFT (ms)")
    axis.set_ylabel("output tokens/s")
    axis.set_title(f"{model}: auto-tune trials")
    axis.legend(fontsize=8)
    return to_png(figure)
