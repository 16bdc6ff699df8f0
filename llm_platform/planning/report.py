"""What a serving plan shows people: tokens/s per GPU at the SLO across the planned engine configs."""

from __future__ import annotations

import pandas as pd

from llm_platform.charts import new_figure, to_png


def plan_png(model: str, frame: pd.DataFrame) -> bytes:
    """The serving plan: output tokens/s per GPU at the SLO against max_num_batched_tokens, one line per
    tensor-parallel size and max_num_seqs (candidates that miss the SLO at every concurrency sit at 0)."""
    figure, axis = new_figure()
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
    return to_png(figure)
