"""The tuning-drift policy (pure): from a model's recent metric windows and its current config to a decision.

A rule fires only when its condition held in every one of the last ``limits.sustained_windows`` windows
(hysteresis), and never on missing, NaN or stale data (the decision is ``skip`` with the reason). The caller keeps
the windows, and applies the cooldown and the daily cap (:func:`gate`), so that this module stays a table of rules.

Rules, in priority order (stability before throughput):

1. **OOM kills** (the vLLM container restarted after ``OOMKilled`` at least ``oom_restarts`` times over the
   hysteresis windows; an event count, not a level, so it is summed rather than required in every window): lower
   gpu_memory_utilization by ``oom_memory_step`` down to ``memory_floor``; at the floor, halve max_model_len. Only
   evaluated where kube-state-metrics is scraped (the local target has no such series: the rule is left out, the
   others still run).
2. **KV cache saturated with preemptions** (max KV usage >= ``kv_saturated`` and preemptions > 0): raise
   gpu_memory_utilization by ``memory_step`` up to ``memory_cap``; at the cap, lower max_num_seqs by a quarter.
3. **Queue high at the replica ceiling** (waiting per replica > the catalog's ``waiting_threshold`` while running at
   ``max_replicas``): with KV headroom (< ``kv_headroom``) raise max_num_seqs by half; without, no engine change
   helps - the decision says to raise ``autoscaling.max_replicas`` within the GPU quota.
4. **Context far larger than the traffic** (p99.9 prompt + generation tokens, with ``length_margin``, below half of
   max_model_len): shrink max_model_len to that length rounded up to ``length_quantum`` (not below
   ``min_model_len``): the freed KV cache serves more sequences.
5. **Requests crowding the context** (p99.9 prompt tokens >= ``length_crowded`` of max_model_len: those requests
   have almost no room left to generate, and longer ones are refused by the server with HTTP 400, which vLLM does
   not count): double max_model_len up to ``max_context``. Prompt length alone, because the p99.9s of prompt and
   generation come from different requests and their sum only bounds a request from above. vLLM's default length
   buckets stop at the largest 1-2-5 value below max_model_len; ``engine.py`` adds buckets near the limit so that
   this quantile can be read at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from llm_platform.catalog import ModelSpec

#: vLLM's default max_num_seqs when the catalog leaves it unset.
VLLM_DEFAULT_MAX_NUM_SEQS = 256


@dataclass(frozen=True)
class Window:
    """One model's measurements over one window (NaN: no data). Mirrors the Prometheus snapshot's fields."""

    kv_cache_usage_max: float
    preemptions_per_s: float
    waiting_avg: float
    replicas: float
    prompt_tokens_p999: float
    generation_tokens_p999: float
    sample_time: float
    oom_restarts: float = math.nan
    """Restarts of the model's vLLM containers last killed for OOM (kube-state-metrics; NaN where not scraped)."""

    @classmethod
    def no_data(cls, sample_time: float) -> Window:
        """A window in which nothing was measured (the model's series were absent)."""
        nan = math.nan
        return cls(nan, nan, nan, nan, nan, nan, sample_time)

    def missing(self) -> list[str]:
        """Names of the required measurements without data (optional ones leave their rule out instead)."""
        return sorted(
            key for key, value in self.__dict__.items() if math.isnan(value) and key not in OPTIONAL_MEASUREMENTS
        )


#: Measurements only some clusters have; without them their rule is not evaluated, the others still are.
OPTIONAL_MEASUREMENTS = frozenset({"oom_restarts"})


@dataclass(frozen=True)
class TuningLimits:
    """Thresholds and bounds of the policy; each default is a conservative production choice."""

    sustained_windows: int = 3
    """Windows in a row a condition must hold (hysteresis against one noisy scrape)."""
    stale_after_s: float = 600.0
    """A window older than this (against ``now``) is stale: no decision from it."""
    kv_saturated: float = 0.95
    """KV-cache usage counted as saturated."""
    kv_headroom: float = 0.8
    """KV-cache usage below which more concurrent sequences fit."""
    memory_step: float = 0.02
    """How much gpu_memory_utilization is raised per recommendation."""
    memory_cap: float = 0.95
    """Never recommend more than this gpu_memory_utilization (CUDA graphs and activations need the rest)."""
    min_max_num_seqs: int = 8
    """Never recommend fewer sequences than this."""
    length_margin: float = 1.25
    """Headroom over the observed p99.9 request length when shrinking max_model_len."""
    length_quantum: int = 256
    """max_model_len recommendations are multiples of this."""
    min_model_len: int = 512
    """Never recommend a smaller max_model_len than this."""
    oom_restarts: int = 2
    """OOM-killed restarts, summed over the hysteresis windows, that call for less memory (one can be a one-off)."""
    oom_memory_step: float = 0.05
    """How much gpu_memory_utilization is lowered after OOM kills (a bigger step than raising: a crash costs more)."""
    memory_floor: float = 0.7
    """Never recommend less gpu_memory_utilization than this; below it max_model_len is halved instead."""
    length_crowded: float = 0.9
    """p99.9 prompt length, as a fraction of max_model_len, at which requests crowd the context."""
    max_context: int = 32768
    """Never recommend a larger max_model_len than this (vLLM also refuses more than the model's own limit)."""


@dataclass(frozen=True)
class Decision:
    kind: Literal["no_change", "recommend", "skip"]
    reason: str
    rule: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)
    observed: Mapping[str, float] = field(default_factory=dict)


def _observed(latest: Window) -> dict[str, float]:
    return {
        key: round(value, 4)
        for key, value in latest.__dict__.items()
        if key != "sample_time" and not (key in OPTIONAL_MEASUREMENTS and math.isnan(value))
    }


def _quantised(tokens: float, limits: TuningLimits) -> int:
    return max(limits.min_model_len, math.ceil(tokens / limits.length_quantum) * limits.length_quantum)


def decide(model: ModelSpec, windows: Sequence[Window], now: float, limits: TuningLimits | None = None) -> Decision:
    """The decision for ``model`` from its windows, oldest first."""
    limits = limits or TuningLimits()
    recent = list(windows)[-limits.sustained_windows :]
    if len(recent) < limits.sustained_windows:
        return Decision("skip", f"{len(recent)} of {limits.sustained_windows} windows collected")
    for window in recent:
        if window.missing():
            return Decision("skip", f"no data for {', '.join(window.missing())}")
    if now - recent[-1].sample_time > limits.stale_after_s:
        return Decision("skip", f"latest window is {now - recent[-1].sample_time:.0f} s old")
    serving, latest = model.serving, recent[-1]
    observed = _observed(latest)
    seqs = serving.max_num_seqs or VLLM_DEFAULT_MAX_NUM_SEQS

    oom_kills = sum(w.oom_restarts for w in recent if not math.isnan(w.oom_restarts))
    if oom_kills >= limits.oom_restarts:
        reason = f"{oom_kills:.0f} OOM-killed restarts over {len(recent)} windows"
        if serving.gpu_memory_utilization - 1e-9 > limits.memory_floor:
            memory = max(limits.memory_floor, serving.gpu_memory_utilization - limits.oom_memory_step)
            return Decision("recommend", reason, "oom_restarts", {"gpu_memory_utilization": f"{memory:.2f}"}, observed)
        shorter = _quantised(serving.max_model_len // 2, limits)
        if shorter < serving.max_model_len:
            return Decision("recommend", reason, "oom_restarts", {"max_model_len": str(shorter)}, observed)
        return Decision(
            "no_change",
            f"{reason}, but memory and max_model_len are at their floors: raise resources.memory",
            "oom_restarts",
            observed=observed,
        )

    if all(w.kv_cache_usage_max >= limits.kv_saturated and w.preemptions_per_s > 0 for w in recent):
        reason = (
            f"KV cache saturated ({latest.kv_cache_usage_max:.0%}) with {latest.preemptions_per_s:.2f} "
            f"preemptions/s over {len(recent)} windows"
        )
        if serving.gpu_memory_utilization + 1e-9 < limits.memory_cap:
            memory = min(limits.memory_cap, serving.gpu_memory_utilization + limits.memory_step)
            return Decision("recommend", reason, "kv_saturation", {"gpu_memory_utilization": f"{memory:.2f}"}, observed)
        fewer = max(limits.min_max_num_seqs, seqs * 3 // 4)
        if fewer < seqs:
            return Decision("recommend", reason, "kv_saturation", {"max_num_seqs": str(fewer)}, observed)
        return Decision("no_change", f"{reason}, but memory and max_num_seqs are at their limits", "kv_saturation")

    scaling = model.autoscaling
    if all(
        w.replicas >= scaling.max_replicas and w.waiting_avg / max(w.replicas, 1) > scaling.waiting_threshold
        for w in recent
    ):
        reason = (
            f"{latest.waiting_avg:.1f} requests waiting at the ceiling of {scaling.max_replicas} replicas "
            f"(threshold {scaling.waiting_threshold:g} per replica)"
        )
        if latest.kv_cache_usage_max < limits.kv_headroom:
            more = str(seqs + max(1, seqs // 2))
            return Decision("recommend", f"{reason}, KV cache has headroom", "queue_at_ceiling",
                            {"max_num_seqs": more}, observed)  # fmt: skip
        return Decision(
            "no_change",
            f"{reason} and the KV cache is full: raise autoscaling.max_replicas (GPUs within the quota)",
            "queue_at_ceiling",
            observed=observed,
        )

    longest = max(w.prompt_tokens_p999 + w.generation_tokens_p999 for w in recent)
    needed = _quantised(longest * limits.length_margin, limits)
    if needed * 2 <= serving.max_model_len:
        reason = (
            f"p99.9 request length {longest:.0f} tokens is far below max_model_len {serving.max_model_len}; "
            f"{needed} covers it with a {limits.length_margin - 1:.0%} margin and frees KV cache"
        )
        return Decision("recommend", reason, "context_too_long", {"max_model_len": str(needed)}, observed)

    crowded = limits.length_crowded * serving.max_model_len
    if all(w.prompt_tokens_p999 >= crowded for w in recent):
        reason = (
            f"p99.9 prompt length {latest.prompt_tokens_p999:.0f} tokens crowds max_model_len "
            f"{serving.max_model_len} (>= {limits.length_crowded:.0%}): requests are cut short or refused"
        )
        longer = min(limits.max_context, serving.max_model_len * 2)
        if longer > serving.max_model_len:
            return Decision("recommend", reason, "context_too_short", {"max_model_len": str(longer)}, observed)
        return Decision("no_change", f"{reason}, but max_context {limits.max_context} is reached",
                        "context_too_short", observed=observed)  # fmt: skip
    return Decision("no_change", "the config fits the traffic", observed=observed)


def gate(history: Sequence[float], now: float, cooldown_s: float = 3600.0, max_per_day: int = 3) -> str | None:
    """Why a recommendation must wait (cooldown since the last one, or the daily cap), or None when it may go.

    ``history`` holds the times of the model's earlier recommendations that were acted on.
    """
    if history and now - max(history) < cooldown_s:
        return f"cooldown: last change {now - max(history):.0f} s ago (< {cooldown_s:.0f} s)"
    today = [when for when in history if now - when < 86400]
    if len(today) >= max_per_day:
        return f"daily cap: {len(today)} changes in the last 24 h (max {max_per_day})"
    return None
