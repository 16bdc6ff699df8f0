"""The tuning-drift policy (pure): from a model's measurements over a fixed lookback and its config to a decision.

Every measurement covers the same fixed lookback (30 minutes by default) ending at the tick, whenever the tick
runs: Dagster's sensor interval is a minimum, not a schedule, so nothing may depend on how many ticks ran.

- **Levels are sustained, not peaked.** A level (KV usage, waiting requests, replicas) is the value it held for at
  least ``sustained_fraction`` of the lookback — the (1 - fraction) quantile over time of its samples — so a burst
  of a few minutes, or traffic flapping between saturated and idle, never reads as a level. Preemptions are events,
  averaged over the lookback: they only count together with a sustained full cache.
- **Events are counted over the lookback** (``increase()``): two OOM kills ten minutes apart are two kills at
  every tick that follows within the lookback, and none is counted twice across configs because the sensor only
  decides once a whole lookback of the deployed config's own data exists (``config_age_s``).
- **Enough data and enough evidence.** No decision without data for ``min_coverage`` of the lookback, on stale
  data, or while a rollout is in progress; rules about the workload's shape need ``min_requests`` finished
  requests in the lookback ("too few requests (n)").
- **Capacity before engine knobs.** A queue above the threshold at the replica ceiling with a full KV cache asks for
  more replicas — ``autoscaling.max_replicas`` as far as the GPU quota allows (the catalog's own arithmetic,
  ``max_replicas_within_quota``) — or says that there is no quota headroom; only with KV headroom does it ask for
  more ``max_num_seqs``.

Rules, in priority order (stability, then capacity, then throughput, then the context):

1. **OOM kills** (``oom_kills`` >= ``oom_kills`` over the lookback, from kube-state-metrics; left out where it is
   not scraped): gpu_memory_utilization - ``oom_memory_step`` down to ``memory_floor``, then half max_model_len.
2. **Queue at the replica ceiling**: full KV cache → more replicas within the quota; KV headroom → max_num_seqs
   by half again.
3. **KV cache saturated with preemptions**: gpu_memory_utilization + ``memory_step`` up to ``memory_cap``, then a
   quarter fewer max_num_seqs.
4. **Context far larger than the traffic** (p99.9 prompt + generation tokens with ``length_margin`` at most half of
   max_model_len): shrink max_model_len to that, rounded up to ``length_quantum``.
5. **Requests crowding the context** (p99.9 prompt tokens >= ``length_crowded`` of max_model_len): double it, up
   to ``max_context``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from llm_platform.catalog import ModelSpec
from llm_platform.engine import engine_for


@dataclass(frozen=True)
class Snapshot:
    """One model's measurements over the lookback (NaN: no data). Mirrors the Prometheus snapshot's fields."""

    coverage: float
    """Fraction of the lookback's steps with data from the model's servers (0-1)."""
    age_s: float
    """Seconds since the model's newest sample (NaN: none in the last five minutes)."""
    kv_cache_usage: float
    """KV-cache usage held for at least the sustained fraction of the lookback."""
    preemptions_per_s: float
    """Preemptions per second, averaged over the lookback (an event rate; the KV level says whether it lasted)."""
    waiting: float
    """Waiting requests (all replicas) held for at least the sustained fraction."""
    replicas: float
    """Replicas held for at least the sustained fraction: the Deployment's desired count (kube-state-metrics),
    else the number of engines reporting (the local target)."""
    requests: float
    """Requests finished in the lookback."""
    prompt_tokens_p999: float
    generation_tokens_p999: float
    sample_time: float
    oom_kills: float = math.nan
    """Restarts of the model's vLLM containers last killed for OOM in the lookback (NaN where ksm is not scraped)."""
    rollout: float = math.nan
    """Pods of an unfinished rollout seen in the lookback (0: none; NaN where ksm is not scraped)."""

    @classmethod
    def no_data(cls, sample_time: float) -> Snapshot:
        """The model's series were absent."""
        nan = math.nan
        return cls(0.0, nan, nan, nan, nan, nan, nan, nan, nan, sample_time)

    def missing(self) -> list[str]:
        """Required measurements without data (optional ones leave their rule out instead; the request-length
        quantiles are NaN when no request finished, which the evidence rule reports)."""
        return sorted(
            item.name
            for item in fields(self)
            if item.name not in OPTIONAL_MEASUREMENTS and math.isnan(getattr(self, item.name))
        )


#: Measurements only some clusters have, or that are NaN on an idle model; without them their rule is not
#: evaluated, the others still are.
OPTIONAL_MEASUREMENTS = frozenset({"oom_kills", "rollout", "prompt_tokens_p999", "generation_tokens_p999"})


@dataclass(frozen=True)
class TuningLimits:
    """Thresholds and bounds of the policy; each default is a conservative production choice."""

    lookback_s: float = 1800.0
    """The fixed span every measurement covers, ending at the tick."""
    sustained_fraction: float = 0.75
    """A level counts when it held for at least this fraction of the lookback."""
    min_coverage: float = 0.8
    """No decision unless the model's servers reported for this fraction of the lookback."""
    stale_after_s: float = 300.0
    """No decision when the newest sample is older than this."""
    min_requests: int = 1000
    """Finished requests in the lookback that rules about the workload's shape need."""
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
    oom_kills: int = 2
    """OOM-killed restarts in the lookback that call for less memory (one can be a one-off)."""
    oom_memory_step: float = 0.05
    """How much gpu_memory_utilization is lowered after OOM kills (a bigger step than raising: a crash costs more)."""
    memory_floor: float = 0.7
    """Never recommend less gpu_memory_utilization than this; below it max_model_len is halved instead."""
    length_crowded: float = 0.9
    """p99.9 prompt length, as a fraction of max_model_len, at which requests crowd the context."""
    max_context: int = 32768
    """Never recommend a larger max_model_len than this (the model's own position limit is checked as well)."""

    @property
    def quantile(self) -> float:
        """The quantile over time that is the sustained level."""
        return 1.0 - self.sustained_fraction


@dataclass(frozen=True)
class Decision:
    kind: Literal["no_change", "recommend", "skip"]
    reason: str
    rule: str = ""
    overrides: Mapping[str, str] = field(default_factory=dict)
    observed: Mapping[str, float] = field(default_factory=dict)


def _observed(snapshot: Snapshot) -> dict[str, float]:
    return {
        item.name: round(getattr(snapshot, item.name), 4)
        for item in fields(snapshot)
        if item.name != "sample_time" and not math.isnan(getattr(snapshot, item.name))
    }


def _quantised(tokens: float, limits: TuningLimits) -> int:
    return max(limits.min_model_len, math.ceil(tokens / limits.length_quantum) * limits.length_quantum)


def _data_problem(snapshot: Snapshot, now: float, config_age_s: float, limits: TuningLimits) -> str | None:
    lookback_min = limits.lookback_s / 60
    if config_age_s < limits.lookback_s:
        return (
            f"the config was deployed {config_age_s / 60:.0f} min ago; waiting for {lookback_min:.0f} min of its own "
            "data"
        )
    if math.isnan(snapshot.age_s) and snapshot.coverage > 0:
        return "no sample in the last 5 min (the model's servers stopped reporting)"
    if snapshot.age_s > limits.stale_after_s:
        return f"the newest sample is {snapshot.age_s:.0f} s old"
    if snapshot.coverage < limits.min_coverage:
        return f"data for only {snapshot.coverage:.0%} of the last {lookback_min:.0f} min"
    if snapshot.missing():
        return f"no data for {', '.join(snapshot.missing())}"
    if not math.isnan(snapshot.rollout) and snapshot.rollout > 0:
        return "a rollout is in progress (or was, within the lookback)"
    return None


def decide(
    model: ModelSpec,
    snapshot: Snapshot,
    now: float,
    *,
    config_age_s: float = math.inf,
    max_replicas_allowed: int | None = None,
    limits: TuningLimits | None = None,
) -> Decision:
    """The decision for ``model`` (as deployed) from its ``snapshot``. ``config_age_s``: how long the deployed
    config has served; ``max_replicas_allowed``: :func:`max_replicas_within_quota` (None: no capacity rule)."""
    limits = limits or TuningLimits()
    problem = _data_problem(snapshot, now, config_age_s, limits)
    if problem:
        return Decision("skip", problem, observed=_observed(snapshot))
    serving, scaling, observed = model.serving, model.autoscaling, _observed(snapshot)
    seqs = serving.max_num_seqs or engine_for(serving).default_max_num_seqs

    if not math.isnan(snapshot.oom_kills) and snapshot.oom_kills >= limits.oom_kills:
        reason = f"{snapshot.oom_kills:.0f} OOM-killed restarts in the last {limits.lookback_s / 60:.0f} min"
        if serving.gpu_memory_utilization - 1e-9 > limits.memory_floor:
            memory = max(limits.memory_floor, serving.gpu_memory_utilization - limits.oom_memory_step)
            return Decision("recommend", reason, "oom_kills", {"gpu_memory_utilization": f"{memory:.2f}"}, observed)
        shorter = _quantised(serving.max_model_len // 2, limits)
        if shorter < serving.max_model_len:
            return Decision("recommend", reason, "oom_kills", {"max_model_len": str(shorter)}, observed)
        return Decision("no_change", f"{reason}, but memory and max_model_len are at their floors: raise "
                        "resources.memory", "oom_kills", observed=observed)  # fmt: skip

    replicas = max(snapshot.replicas, 1.0)
    if snapshot.replicas >= scaling.max_replicas and snapshot.waiting / replicas > scaling.waiting_threshold:
        reason = (
            f"{snapshot.waiting:.1f} requests waiting at the ceiling of {scaling.max_replicas} replicas for "
            f"{limits.sustained_fraction:.0%} of the lookback (threshold {scaling.waiting_threshold:g} per replica)"
        )
        if snapshot.kv_cache_usage >= limits.kv_saturated:
            if max_replicas_allowed is not None and max_replicas_allowed > scaling.max_replicas:
                return Decision("recommend", f"{reason} with the KV cache full: more replicas", "capacity",
                                {"autoscaling.max_replicas": str(max_replicas_allowed)}, observed)  # fmt: skip
            return Decision("no_change", f"{reason} with the KV cache full, but the GPU quota has no headroom for "
                            "another replica: raise platform.gpu_quota", "capacity", observed=observed)  # fmt: skip
        if snapshot.kv_cache_usage < limits.kv_headroom:
            return Decision("recommend", f"{reason}, KV cache has headroom", "queue_at_ceiling",
                            {"max_num_seqs": str(seqs + max(1, seqs // 2))}, observed)  # fmt: skip
        return Decision("no_change", f"{reason}; the KV cache is neither full nor free enough to batch more",
                        "queue_at_ceiling", observed=observed)  # fmt: skip

    if snapshot.kv_cache_usage >= limits.kv_saturated and snapshot.preemptions_per_s > 0:
        reason = (
            f"KV cache saturated ({snapshot.kv_cache_usage:.0%}) with {snapshot.preemptions_per_s:.2f} "
            f"preemptions/s for {limits.sustained_fraction:.0%} of the lookback"
        )
        if serving.gpu_memory_utilization + 1e-9 < limits.memory_cap:
            memory = min(limits.memory_cap, serving.gpu_memory_utilization + limits.memory_step)
            return Decision("recommend", reason, "kv_saturation", {"gpu_memory_utilization": f"{memory:.2f}"}, observed)
        fewer = max(limits.min_max_num_seqs, seqs * 3 // 4)
        if fewer < seqs:
            return Decision("recommend", reason, "kv_saturation", {"max_num_seqs": str(fewer)}, observed)
        return Decision("no_change", f"{reason}, but memory and max_num_seqs are at their limits", "kv_saturation",
                        observed=observed)  # fmt: skip

    if snapshot.requests < limits.min_requests or math.isnan(snapshot.prompt_tokens_p999):
        return Decision(
            "skip",
            f"too few requests ({snapshot.requests:.0f} in {limits.lookback_s / 60:.0f} min, need "
            f"{limits.min_requests}) to judge the context length",
            observed=observed,
        )
    longest = snapshot.prompt_tokens_p999 + snapshot.generation_tokens_p999
    needed = _quantised(longest * limits.length_margin, limits)
    if needed * 2 <= serving.max_model_len:
        reason = (
            f"p99.9 request length {longest:.0f} tokens is far below max_model_len {serving.max_model_len}; "
            f"{needed} covers it with a {limits.length_margin - 1:.0%} margin and frees KV cache"
        )
        return Decision("recommend", reason, "context_too_long", {"max_model_len": str(needed)}, observed)

    if snapshot.prompt_tokens_p999 >= limits.length_crowded * serving.max_model_len:
        reason = (
            f"p99.9 prompt length {snapshot.prompt_tokens_p999:.0f} tokens crowds max_model_len "
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
