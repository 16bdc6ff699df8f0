"""The tuning-drift policy (pure): from a model's measurements over a fixed lookback and its config to a decision.

Every measurement covers the same fixed lookback (30 minutes by default) ending at the tick, whenever the tick
runs: Dagster's sensor interval is a minimum, not a schedule, so nothing may depend on how many ticks ran.

- **Levels are sustained, not peaked.** A level (KV usage, waiting requests, replicas) is the value it held for at
  least ``sustained_fraction`` of a window — the (1 - fraction) quantile over time of its samples — so a burst
  of a few minutes, or traffic flapping between saturated and idle, never reads as a level. Preemptions are events,
  averaged over the window: they only count together with a sustained full cache.
- **Evidence in proportion to severity.** Each level is read over three windows ending at the tick (:class:`Tier`:
  the lookback's last quarter, last half, whole); a condition acts at the most severe tier whose window it filled
  at that tier's severity (preemptions per second for the KV cache, the queue in multiples of KEDA's threshold),
  so a severe condition acts after 5.6 minutes and a mild one after 22.5 at the defaults. One seen but not acting
  says how far it is from acting (:attr:`Evidence.pending`).
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
   not scraped): host memory, so ``resources.memory`` × ``oom_memory_factor`` up to ``max_memory_gib``. **Crash
   restarts** of another reason: a ``diagnose`` decision — a run reads the termination messages
   (:func:`crash_decision`: a CUDA out-of-memory lowers gpu_memory_utilization, then max_model_len; anything else is
   no redeploy, the pod named).
2. **Queue at the replica ceiling**: full KV cache → more replicas within the quota; KV headroom → max_num_seqs
   by half again.
3. **KV cache saturated with preemptions** (not while a queue at the ceiling is still building: capacity first):
   gpu_memory_utilization + ``memory_step`` up to ``memory_cap``, then a quarter fewer max_num_seqs.
4. **Context far larger than the traffic** (p99.9 prompt + generation tokens with ``length_margin`` at most half of
   max_model_len): shrink max_model_len to that, rounded up to ``length_quantum``.
5. **Requests crowding the context** (p99.9 prompt tokens >= ``length_crowded`` of max_model_len): double it, up
   to ``max_context``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
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
    """Restarts of the model's vLLM containers last ``OOMKilled`` in the lookback: the kernel killed the container
    for host memory (its memory limit, which the in-memory /dev/shm counts against), never the GPU running out
    (NaN where ksm is not scraped)."""
    crash_restarts: float = math.nan
    """Restarts in the lookback whose last termination was a crash, any other reason but ``Completed`` (``Error``: a
    CUDA out-of-memory among others, which only the pod's termination message tells; NaN where ksm is not
    scraped)."""
    rollout: float = math.nan
    """Pods of an unfinished rollout seen in the lookback (0: none; NaN where ksm is not scraped)."""
    kv_cache_usage_half: float = math.nan
    """The KV-cache level sustained over the lookback's last half (the moderate tier's window); NaN: not measured."""
    preemptions_per_s_half: float = math.nan
    waiting_half: float = math.nan
    replicas_half: float = math.nan
    kv_cache_usage_quarter: float = math.nan
    """The same over the lookback's last quarter (the severe tier's window)."""
    preemptions_per_s_quarter: float = math.nan
    waiting_quarter: float = math.nan
    replicas_quarter: float = math.nan

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

    def levels(self, tier: Tier) -> Levels:
        """The levels sustained over ``tier``'s window (the whole lookback for the mild tier)."""
        suffix = {"mild": "", "moderate": "_half", "severe": "_quarter"}[tier.name]
        return Levels(*(getattr(self, f"{name}{suffix}") for name in LEVEL_FIELDS))


#: The levels measured per tier window, in :class:`Levels`' order.
LEVEL_FIELDS = ("kv_cache_usage", "preemptions_per_s", "waiting", "replicas")
#: The measurements of the shorter tier windows (a tier without them is not evaluated).
TIER_MEASUREMENTS = frozenset(f"{name}{suffix}" for name in LEVEL_FIELDS for suffix in ("_half", "_quarter"))
#: Measurements only some clusters have, or that are NaN on an idle model; without them their rule is not
#: evaluated, the others still are.
OPTIONAL_MEASUREMENTS = frozenset(
    {"oom_kills", "crash_restarts", "rollout", "prompt_tokens_p999", "generation_tokens_p999", *TIER_MEASUREMENTS}
)


@dataclass(frozen=True)
class Levels:
    """What a model held over one tier's window: each level for at least the sustained fraction of it, preemptions
    averaged over it."""

    kv_cache_usage: float
    preemptions_per_s: float
    waiting: float
    replicas: float


@dataclass(frozen=True)
class Tier:
    """How much evidence a condition of a given severity needs: the window (ending at the tick) it must have held
    for the sustained fraction of."""

    name: Literal["severe", "moderate", "mild"]
    window_s: float


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
    moderate_window_fraction: float = 0.5
    """The moderate tier's window, as a fraction of the lookback (15 min at the defaults)."""
    severe_window_fraction: float = 0.25
    """The severe tier's window (7.5 min): a severe condition acts once it held for the sustained fraction of it,
    5.6 min, where a mild one needs 22.5 of the whole lookback's 30."""
    preemptions_moderate_per_s: float = 0.2
    """Preemptions per second that make a saturated KV cache moderate (a recomputed request every 5 s)."""
    preemptions_severe_per_s: float = 1.0
    """Preemptions per second that make it severe (users' requests recomputed every second)."""
    queue_moderate_factor: float = 2.0
    """Waiting requests per replica, in multiples of ``autoscaling.waiting_threshold``, that make a queue at the
    replica ceiling moderate."""
    queue_severe_factor: float = 4.0
    """The same for severe."""
    oom_kills: int = 2
    """OOM-killed restarts in the lookback that call for more pod memory (one can be a one-off)."""
    oom_memory_factor: float = 1.5
    """How much ``resources.memory`` grows after OOM kills (rounded up to whole GiB)."""
    max_memory_gib: int = 1024
    """Never recommend more pod memory than this (a node's size); beyond it the decision says what to raise."""
    crash_restarts: int = 2
    """Restarts for another reason (``Error``) in the lookback that call for a diagnosis of the termination
    message: a CUDA out-of-memory lowers GPU memory, any other crash is reported, never redeployed."""
    oom_memory_step: float = 0.05
    """How much gpu_memory_utilization is lowered after CUDA out-of-memory crashes (a bigger step than raising:
    a crash costs more)."""
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

    @property
    def tiers(self) -> tuple[Tier, ...]:
        """The evidence tiers, most severe (shortest window) first."""
        return (
            Tier("severe", self.lookback_s * self.severe_window_fraction),
            Tier("moderate", self.lookback_s * self.moderate_window_fraction),
            Tier("mild", self.lookback_s),
        )

    def hold_s(self, tier: Tier) -> float:
        """How long a condition of ``tier``'s severity must have held before the policy acts on it."""
        return tier.window_s * self.sustained_fraction


@dataclass(frozen=True)
class Decision:
    kind: Literal["no_change", "recommend", "skip", "diagnose"]
    """``diagnose``: the evidence is in the pods' termination messages, which a run reads (:func:`crash_decision`)."""
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


@dataclass(frozen=True)
class Condition:
    """A drift condition judged in proportion to its severity: ``holds`` says whether a tier window's levels show
    it at all, ``severity`` how bad it is there; it acts at the most severe tier whose ``needed`` severity it
    reaches over that tier's window."""

    what: str
    holds: Callable[[Levels], bool]
    severity: Callable[[Levels], float]
    needed: Mapping[str, float]
    """Tier name → the severity the condition must reach over the tier's window (mild: 0, any)."""
    describe: Callable[[Levels], str]


@dataclass(frozen=True)
class Evidence:
    """Where a condition stands against the tiers."""

    acting: Tier | None = None
    """The most severe tier at which the condition acts (None: it does not act yet)."""
    levels: Levels | None = None
    """The acting tier's levels."""
    reason: str = ""
    """Why it acts: the figures, the window and the tier."""
    pending: str = ""
    """When it shows but does not act yet: how far it is from acting (empty otherwise)."""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}".removesuffix(".0")


def _evidence(condition: Condition, snapshot: Snapshot, limits: TuningLimits) -> Evidence:
    """The condition against every tier, most severe first. A tier whose window was not measured is left out."""
    shown: tuple[Tier, Levels] | None = None
    for tier in limits.tiers:
        levels = snapshot.levels(tier)
        if any(math.isnan(value) for value in (levels.kv_cache_usage, levels.waiting, levels.replicas)):
            continue
        if not condition.holds(levels):
            continue
        if condition.severity(levels) >= condition.needed[tier.name]:
            reason = (
                f"{condition.what} ({condition.describe(levels)}) for {limits.sustained_fraction:.0%} of the last "
                f"{_minutes(tier.window_s)} min ({tier.name})"
            )
            return Evidence(tier, levels, reason)
        shown = shown or (tier, levels)
    if shown is None:
        return Evidence()
    tier, levels = shown
    severity = condition.severity(levels)
    needed = next(t for t in limits.tiers if severity >= condition.needed[t.name])
    return Evidence(
        pending=f"{condition.what} ({condition.describe(levels)}) for at least {_minutes(limits.hold_s(tier))} of the "
        f"last {_minutes(tier.window_s)} min; at this severity ({needed.name}) it must hold "
        f"{_minutes(limits.hold_s(needed))} of the last {_minutes(needed.window_s)} min"
    )


def _kv_condition(limits: TuningLimits) -> Condition:
    """A full KV cache preempting requests; its severity is the preemption rate (each preemption recomputes a
    user's request)."""
    return Condition(
        what="KV cache saturated",
        holds=lambda lv: lv.kv_cache_usage >= limits.kv_saturated and lv.preemptions_per_s > 0,
        severity=lambda lv: lv.preemptions_per_s,
        needed={
            "severe": limits.preemptions_severe_per_s,
            "moderate": limits.preemptions_moderate_per_s,
            "mild": 0.0,
        },
        describe=lambda lv: f"{lv.kv_cache_usage:.0%}, {lv.preemptions_per_s:.2f} preemptions/s",
    )


def _queue_condition(model: ModelSpec, limits: TuningLimits) -> Condition:
    """Requests waiting above KEDA's threshold at the replica ceiling; its severity is the queue per replica in
    multiples of the threshold."""
    scaling = model.autoscaling

    def per_replica(levels: Levels) -> float:
        return levels.waiting / max(levels.replicas, 1.0)

    return Condition(
        what=f"requests waiting at the ceiling of {scaling.max_replicas} replicas",
        holds=lambda lv: lv.replicas >= scaling.max_replicas and per_replica(lv) > scaling.waiting_threshold,
        severity=lambda lv: per_replica(lv) / scaling.waiting_threshold,
        needed={"severe": limits.queue_severe_factor, "moderate": limits.queue_moderate_factor, "mild": 0.0},
        describe=lambda lv: (
            f"{lv.waiting:.1f} waiting, {per_replica(lv) / scaling.waiting_threshold:.1f}× the "
            f"threshold of {scaling.waiting_threshold:g} per replica"
        ),
    )


_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                 "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 1e-3}  # fmt: skip


def memory_gib(quantity: str) -> float:
    """A Kubernetes memory quantity (``32Gi``, ``64G``, ``1.5Ti``, bytes) in GiB."""
    for suffix in sorted(_MEMORY_UNITS, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * _MEMORY_UNITS[suffix] / 2**30
    return float(quantity) / 2**30


def _oom_decision(
    model: ModelSpec, snapshot: Snapshot, limits: TuningLimits, observed: dict[str, float]
) -> Decision | None:
    """OOM kills (host memory) → more pod memory; crash restarts of another reason → a diagnosis of the pods'
    termination messages (CUDA out of memory or not), which only a run may read."""
    lookback = f"in the last {_minutes(limits.lookback_s)} min"
    if not math.isnan(snapshot.oom_kills) and snapshot.oom_kills >= limits.oom_kills:
        reason = (
            f"{snapshot.oom_kills:.0f} OOMKilled restarts {lookback}: the container ran out of host memory (its "
            "limit, which the in-memory /dev/shm counts against), not GPU memory"
        )
        current = memory_gib(model.resources.memory)
        more = min(limits.max_memory_gib, math.ceil(current * limits.oom_memory_factor))
        if more > current:
            return Decision("recommend", reason, "oom_kills", {"resources.memory": f"{more}Gi"}, observed)
        return Decision("no_change", f"{reason}, but resources.memory is at the {limits.max_memory_gib} GiB cap: "
                        "find what fills it (/dev/shm, CPU swap space, tokenizer workers)", "oom_kills",
                        observed=observed)  # fmt: skip
    if not math.isnan(snapshot.crash_restarts) and snapshot.crash_restarts >= limits.crash_restarts:
        reason = (
            f"{snapshot.crash_restarts:.0f} crash restarts (not OOMKilled) {lookback}: the pods' termination "
            "messages say whether the GPU ran out of memory"
        )
        return Decision("diagnose", reason, "crash_loop", observed=observed)
    return None


def crash_decision(model: ModelSpec, crashes: Sequence[Crash], limits: TuningLimits | None = None) -> Decision:
    """The decision from the crashed containers' termination messages (read by a run, which may read pods): a CUDA
    out-of-memory lowers gpu_memory_utilization to ``memory_floor``, then halves max_model_len; any other crash is
    no redeploy, with the failing pod and its message named."""
    limits = limits or TuningLimits()
    serving = model.serving
    cuda = [crash for crash in crashes if crash.cuda_out_of_memory]
    if not cuda:
        if not crashes:
            return Decision("no_change", "no crashed vLLM container found (the pods restarted since)", "crash_loop")
        first = crashes[0]
        return Decision("no_change", f"pod {first.pod} crash-loops ({first.describe()}): not a memory shortage; "
                        "fix the cause the message names", "crash_loop")  # fmt: skip
    reason = f"pod {cuda[0].pod} ran out of GPU memory ({cuda[0].describe()})"
    if serving.gpu_memory_utilization - 1e-9 > limits.memory_floor:
        memory = max(limits.memory_floor, serving.gpu_memory_utilization - limits.oom_memory_step)
        return Decision("recommend", reason, "cuda_oom", {"gpu_memory_utilization": f"{memory:.2f}"})
    shorter = _quantised(serving.max_model_len // 2, limits)
    if shorter < serving.max_model_len:
        return Decision("recommend", reason, "cuda_oom", {"max_model_len": str(shorter)})
    return Decision("no_change", f"{reason}, but gpu_memory_utilization and max_model_len are at their floors: a "
                    "larger GPU or more tensor parallelism", "cuda_oom")  # fmt: skip


@dataclass(frozen=True)
class Crash:
    """One crashed vLLM container, as its pod's status tells (``lastState.terminated``)."""

    pod: str
    reason: str
    exit_code: int | None
    message: str
    """The termination message: the log's tail, with ``terminationMessagePolicy: FallbackToLogsOnError``."""

    @property
    def cuda_out_of_memory(self) -> bool:
        return any(marker in self.message for marker in CUDA_OOM_MARKERS)

    def describe(self) -> str:
        last = next((line.strip() for line in reversed(self.message.splitlines()) if line.strip()), "no message")
        return f"{self.reason}, exit code {self.exit_code}: {last[:200]}"


#: What PyTorch and vLLM print when the GPU runs out of memory.
CUDA_OOM_MARKERS = ("CUDA out of memory", "torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError",
                    "CUBLAS_STATUS_ALLOC_FAILED")  # fmt: skip


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

    oom = _oom_decision(model, snapshot, limits, observed)
    if oom is not None:
        return oom

    queue = _evidence(_queue_condition(model, limits), snapshot, limits)
    if queue.acting is not None and queue.levels is not None:
        reason = queue.reason
        if queue.levels.kv_cache_usage >= limits.kv_saturated:
            if max_replicas_allowed is not None and max_replicas_allowed > scaling.max_replicas:
                return Decision("recommend", f"{reason} with the KV cache full: more replicas", "capacity",
                                {"autoscaling.max_replicas": str(max_replicas_allowed)}, observed)  # fmt: skip
            return Decision("no_change", f"{reason} with the KV cache full, but the GPU quota has no headroom for "
                            "another replica: raise platform.gpu_quota", "capacity", observed=observed)  # fmt: skip
        if queue.levels.kv_cache_usage < limits.kv_headroom:
            return Decision("recommend", f"{reason}, KV cache has headroom", "queue_at_ceiling",
                            {"max_num_seqs": str(seqs + max(1, seqs // 2))}, observed)  # fmt: skip
        return Decision("no_change", f"{reason}; the KV cache is neither full nor free enough to batch more",
                        "queue_at_ceiling", observed=observed)  # fmt: skip

    kv = _evidence(_kv_condition(limits), snapshot, limits)
    if kv.acting is not None:
        reason = kv.reason
        if queue.pending:
            # A capacity shortage fills the cache too: more memory would not serve a queue at the ceiling.
            return Decision("no_change", f"{reason}, but {queue.pending}: capacity is judged first, memory waits",
                            "queue_at_ceiling", observed=observed)  # fmt: skip
        if serving.gpu_memory_utilization + 1e-9 < limits.memory_cap:
            memory = min(limits.memory_cap, serving.gpu_memory_utilization + limits.memory_step)
            return Decision("recommend", reason, "kv_saturation", {"gpu_memory_utilization": f"{memory:.2f}"}, observed)
        fewer = max(limits.min_max_num_seqs, seqs * 3 // 4)
        if fewer < seqs:
            return Decision("recommend", reason, "kv_saturation", {"max_num_seqs": str(fewer)}, observed)
        return Decision("no_change", f"{reason}, but memory and max_num_seqs are at their limits", "kv_saturation",
                        observed=observed)  # fmt: skip

    pending = "; ".join(evidence.pending for evidence in (queue, kv) if evidence.pending)
    decision = _workload_decision(model, snapshot, limits, observed)
    if pending and decision.kind != "recommend":
        return replace(decision, reason=f"{decision.reason}; not yet: {pending}")
    return decision


def _workload_decision(
    model: ModelSpec, snapshot: Snapshot, limits: TuningLimits, observed: dict[str, float]
) -> Decision:
    """The rules about the workload's shape (the context length), once no stability or capacity rule acted."""
    serving = model.serving
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
