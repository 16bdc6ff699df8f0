"""What a benchmark shows people: a markdown summary and a PNG plot (throughput and p95 TTFT vs concurrency)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import pandas as pd

from llm_platform.benchmark.slo import SloResult
from llm_platform.tuning.search import KNOBS, Trial


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
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, throughput_axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    throughput_axis.plot(frame["concurrency"], frame["output_throughput"], marker="o", color="tab:blue")
    throughput_axis.set_xlabel("concurrency")
    throughput_axis.set_ylabel("output tokens/s", color="tab:blue")
    ttft_axis = throughput_axis.twinx()
    ttft_axis.plot(frame["concurrency"], frame["p95_ttft_ms"], marker="s", color="tab:red")
    ttft_axis.set_ylabel("p95 TTFT (ms)", color="tab:red")
    throughput_axis.set_title(f"{model}: smoke benchmark")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


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
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4), dpi=100)
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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def plan_png(model: str, frame: pd.DataFrame) -> bytes:
    """The serving plan: output tokens/s per GPU at the SLO against max_num_batched_tokens, one line per
    tensor-parallel size and max_num_seqs (candidates that miss the SLO at every concurrency sit at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4), dpi=100)
    fitting = frame[frame["fits"]]
    for (tp, seqs), group in fitting.groupby(["tp", "max_num_seqs"]):
        group = group.sort_values("max_num_batched_tokens")
        axis.plot(group["max_num_batched_tokens"], group["tok_s_per_gpu"], marker="o", label=f"TP={tp} seqs={seqs}")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("max_num_batched_tokens")
    axis.set_ylabel("output tokens/s per GPU at the SLO")
    axis.set_title(f"{model}: serving plan")
    if len(fitting):
        axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
