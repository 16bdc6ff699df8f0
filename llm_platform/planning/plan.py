"""The serving plan: which engine configs can meet a model's SLOs on the cluster's GPU type, before any GPU is used
(pure: the estimates come from a :class:`SteadyStateEstimator`, in production AIConfigurator's).

Each candidate (tensor-parallel size, ``max_num_seqs``, ``max_num_batched_tokens``, ``gpu_memory_utilization``,
``max_model_len``) is estimated at a ladder of concurrencies for the model's declared traffic: does it fit the GPU
memory, how many tokens does its KV cache hold, and at which concurrency do its p95-free steady-state TTFT and TPOT
(AIConfigurator's estimates; TPOT stands in for ITL) still meet the SLO. The best config has the most output
tokens/s per GPU at that concurrency; it is where the auto-tuner starts. When no config meets the SLO, the plan says
what the SLO would have to be for the closest one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd

from llm_platform.catalog import ModelSpec


class SteadyStateEstimate(Protocol):
    """Latency and throughput at a steady concurrency."""

    @property
    def ttft_ms(self) -> float: ...

    @property
    def tpot_ms(self) -> float: ...

    @property
    def output_tokens_per_s(self) -> float: ...


class SteadyStateEstimator(Protocol):
    """One (model, GPU type, TP size): what the plan asks of the performance model."""

    def steady_state(
        self, concurrency: int, input_len: int, output_len: int, max_num_batched_tokens: int,
        gpu_memory_utilization: float,
    ) -> SteadyStateEstimate: ...  # fmt: skip

    def kv_cache_tokens(self, gpu_memory_utilization: float, max_num_seqs: int, max_num_batched_tokens: int) -> int: ...


@dataclass(frozen=True)
class PlanAxes:
    """The candidate values per engine argument; an empty axis takes the catalog's value."""

    tensor_parallel_size: tuple[int, ...] = (1, 2, 4, 8)
    max_num_seqs: tuple[int, ...] = (64, 128, 256, 512, 1024)
    max_num_batched_tokens: tuple[int, ...] = (512, 1024, 2048, 4096, 8192)
    gpu_memory_utilization: tuple[float, ...] = ()
    max_model_len: tuple[int, ...] = ()
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Estimate:
    """One candidate: whether it fits, its KV cache, and the highest concurrency meeting the SLO (0: none)."""

    tensor_parallel_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float
    max_model_len: int
    fits: bool
    kv_cache_tokens: int
    concurrency: int = 0
    output_tokens_per_s: float = 0.0
    ttft_ms: float = math.nan
    tpot_ms: float = math.nan
    note: str = ""

    @property
    def per_gpu(self) -> float:
        return self.output_tokens_per_s / self.tensor_parallel_size

    @property
    def overrides(self) -> dict[str, float]:
        """The serving fields this candidate sets (what the auto-tuner starts from)."""
        return {
            "max_num_seqs": float(self.max_num_seqs),
            "max_num_batched_tokens": float(self.max_num_batched_tokens),
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "max_model_len": float(self.max_model_len),
        }


@dataclass(frozen=True)
class ServingPlan:
    """The plan of one model: every estimate, the best config, and, when none meets the SLO, the nearest one."""

    model: str
    gpu_type: str
    estimates: tuple[Estimate, ...] = ()
    note: str = ""
    nearest: Estimate | None = field(default=None)
    model_ref: str = ""
    """What the performance model read the architecture from (a bundled repository id or a local directory)."""

    @property
    def best(self) -> Estimate | None:
        feasible = [estimate for estimate in self.estimates if estimate.concurrency > 0]
        if not feasible:
            return None
        return max(feasible, key=lambda e: (round(e.per_gpu, 1), -e.tensor_parallel_size, -e.max_num_batched_tokens))

    @property
    def verdict(self) -> str:
        """One line for the log and the UI."""
        if self.note:
            return f"model '{self.model}': no plan: {self.note}"
        best = self.best
        if best is not None:
            return (
                f"model '{self.model}' on {self.gpu_type}: best start TP={best.tensor_parallel_size} "
                f"max_num_seqs={best.max_num_seqs} max_num_batched_tokens={best.max_num_batched_tokens}: "
                f"{best.output_tokens_per_s:.0f} output tok/s at concurrency {best.concurrency} "
                f"(TTFT {best.ttft_ms:.0f} ms, TPOT {best.tpot_ms:.1f} ms)"
            )
        if not any(estimate.fits for estimate in self.estimates):
            return f"model '{self.model}' does not fit on {self.gpu_type} at any planned tensor-parallel size"
        nearest = self.nearest
        assert nearest is not None
        return (
            f"model '{self.model}': no config meets the SLO on {self.gpu_type}; nearest: TP="
            f"{nearest.tensor_parallel_size} max_num_batched_tokens={nearest.max_num_batched_tokens} reaches "
            f"TTFT {nearest.ttft_ms:.0f} ms and TPOT {nearest.tpot_ms:.1f} ms at concurrency 1: set slo.ttft_p95_ms "
            f">= {math.ceil(nearest.ttft_ms)} and slo.itl_p95_ms >= {math.ceil(nearest.tpot_ms)}, or plan more GPUs"
        )

    def frame(self) -> pd.DataFrame:
        """Every estimate as a table (one row per candidate)."""
        rows = [
            {
                "tp": e.tensor_parallel_size, "max_num_seqs": e.max_num_seqs,
                "max_num_batched_tokens": e.max_num_batched_tokens, "gpu_memory_utilization": e.gpu_memory_utilization,
                "max_model_len": e.max_model_len, "fits": e.fits, "kv_cache_tokens": e.kv_cache_tokens,
                "slo_concurrency": e.concurrency, "output_tok_s": e.output_tokens_per_s, "tok_s_per_gpu": e.per_gpu,
                "ttft_ms": e.ttft_ms, "tpot_ms": e.tpot_ms, "note": e.note,
            }
            for e in self.estimates
        ]  # fmt: skip
        return pd.DataFrame(rows)


def _axis(values: Sequence[float], default: float) -> tuple[float, ...]:
    return tuple(values) if values else (default,)


def plan_serving(
    model: ModelSpec,
    gpu_type: str,
    estimator_for: Callable[[int], SteadyStateEstimator],
    axes: PlanAxes,
    *,
    gpu_quota: int,
    model_ref: str = "",
) -> ServingPlan:
    """Estimate every candidate of ``axes`` for ``model``'s SLO and traffic; TP sizes above ``gpu_quota`` (or 8, a
    node) are not planned. ``estimator_for(tp)`` raises what it raises (the caller turns it into a note)."""
    slo, traffic = model.slo, model.traffic
    request_len = traffic.input_tokens + traffic.output_tokens
    estimates: list[Estimate] = []
    for tp in sorted(t for t in axes.tensor_parallel_size if t <= min(gpu_quota, 8)):
        estimator = estimator_for(tp)
        for seqs, tokens, utilization, model_len in itertools.product(
            axes.max_num_seqs, axes.max_num_batched_tokens,
            _axis(axes.gpu_memory_utilization, model.serving.gpu_memory_utilization),
            _axis(axes.max_model_len, model.serving.max_model_len),
        ):  # fmt: skip
            seqs, tokens, model_len = int(seqs), int(tokens), int(model_len)
            kv = estimator.kv_cache_tokens(utilization, seqs, tokens)
            common = (tp, seqs, tokens, utilization, model_len)
            if kv < model_len:
                note = "weights leave no KV cache" if kv == 0 else f"KV cache {kv} tokens < max_model_len"
                estimates.append(Estimate(*common, fits=False, kv_cache_tokens=kv, note=note))
                continue
            if request_len > model_len:
                estimates.append(Estimate(*common, fits=True, kv_cache_tokens=kv,
                                          note="traffic.input_tokens + output_tokens > max_model_len"))  # fmt: skip
                continue
            estimates.append(_best_concurrency(estimator, common, kv, axes.concurrency, model, request_len))
    plan = ServingPlan(model.name, gpu_type, tuple(estimates), model_ref=model_ref)
    measured = [e for e in estimates if e.fits and not math.isnan(e.ttft_ms)]
    if plan.best is None and measured:

        def shortfall(e: Estimate) -> float:
            return max(e.ttft_ms / slo.ttft_p95_ms, e.tpot_ms / slo.itl_p95_ms)

        plan = ServingPlan(
            model.name, gpu_type, plan.estimates, nearest=min(measured, key=shortfall), model_ref=model_ref
        )
    return plan


def _best_concurrency(
    estimator: SteadyStateEstimator,
    common: tuple[int, int, int, float, int],
    kv: int,
    ladder: Sequence[int],
    model: ModelSpec,
    request_len: int,
) -> Estimate:
    """The highest concurrency of the ladder (within max_num_seqs and what the KV cache holds) meeting the SLO; at
    concurrency 1 when none does (the nearest-option figures)."""
    _, seqs, tokens, utilization, _ = common
    slo, traffic = model.slo, model.traffic
    limit = min(seqs, kv // request_len)
    found: Estimate | None = None
    first: Estimate | None = None
    for concurrency in sorted(c for c in ladder if c <= max(1, limit)):
        state = estimator.steady_state(concurrency, traffic.input_tokens, traffic.output_tokens, tokens, utilization)
        estimate = Estimate(*common, fits=True, kv_cache_tokens=kv, concurrency=concurrency,
                            output_tokens_per_s=state.output_tokens_per_s, ttft_ms=state.ttft_ms,
                            tpot_ms=state.tpot_ms)  # fmt: skip
        first = first or estimate
        if state.ttft_ms <= slo.ttft_p95_ms and state.tpot_ms <= slo.itl_p95_ms:
            found = estimate
        else:
            break
    if found is not None:
        return found
    assert first is not None
    return Estimate(*common, fits=True, kv_cache_tokens=kv, ttft_ms=first.ttft_ms, tpot_ms=first.tpot_ms,
                    note="misses the SLO at concurrency 1")  # fmt: skip


def predicted_vs_measured(predicted: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """The plan's estimate beside the benchmark at each concurrency level, with measured / predicted ratios (1.0:
    the plan was exact; 0.8: the GPU delivered 80 % of the estimated throughput, or 80 % of the latency)."""
    joined = predicted.merge(measured, on="concurrency", how="inner")
    frame = pd.DataFrame({"concurrency": joined["concurrency"]})
    for name, estimate, measurement in (
        ("output_throughput", "predicted_output_throughput", "output_throughput"),
        ("ttft_ms", "predicted_ttft_ms", "p50_ttft_ms"),
        ("tpot_ms", "predicted_tpot_ms", "p50_tpot_ms"),
    ):
        frame[f"predicted_{name}"] = joined[estimate]
        frame[f"measured_{name}"] = joined[measurement]
        frame[f"ratio_{name}"] = joined[measurement] / joined[estimate]
    return frame
