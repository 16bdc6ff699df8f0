"""The tuning-drift policy, table-driven: each rule and its limits, capacity before knobs, the evidence and data
quality gates, the quota arithmetic and the cooldown/daily-cap gate."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from llm_platform.catalog import max_replicas_within_quota, parse_catalog
from llm_platform.tuning.policy import (
    LEVEL_FIELDS,
    Crash,
    Snapshot,
    TuningLimits,
    crash_decision,
    decide,
    gate,
    memory_gib,
)

NOW = 1_000_000.0
CATALOG = parse_catalog(
    {
        "platform": {"gpu_quota": 8},
        "models": [
            {
                "name": "m",
                "source": {"repo": "a/b"},
                "serving": {"max_model_len": 8192, "max_num_seqs": 64, "gpu_memory_utilization": 0.9},
                "autoscaling": {"min_replicas": 1, "max_replicas": 3, "waiting_threshold": 5},
            },
            {"name": "other", "source": {"repo": "a/c"}, "autoscaling": {"min_replicas": 2, "max_replicas": 3}},
        ],
    }
)
MODEL = CATALOG.model("m")
CALM = Snapshot(
    coverage=1.0,
    age_s=10,
    kv_cache_usage=0.5,
    preemptions_per_s=0.0,
    waiting=0.0,
    replicas=1,
    requests=5000,
    prompt_tokens_p999=4000,
    generation_tokens_p999=1000,
    sample_time=NOW,
)
SATURATED = replace(CALM, kv_cache_usage=0.99, preemptions_per_s=0.5)
QUEUED = replace(CALM, replicas=3, waiting=30)
SHORT = replace(CALM, prompt_tokens_p999=300, generation_tokens_p999=200)
CROWDED = replace(CALM, prompt_tokens_p999=7800)


@pytest.mark.parametrize(
    ("snapshot", "serving", "kind", "rule", "overrides"),
    [
        (CALM, {}, "no_change", "", {}),
        (SATURATED, {}, "recommend", "kv_saturation", {"gpu_memory_utilization": "0.92"}),
        (SATURATED, {"gpu_memory_utilization": 0.95}, "recommend", "kv_saturation", {"max_num_seqs": "48"}),
        (SATURATED, {"gpu_memory_utilization": 0.95, "max_num_seqs": 8}, "no_change", "kv_saturation", {}),
        # Saturated without preemptions: a full cache doing its job.
        (replace(SATURATED, preemptions_per_s=0.0), {}, "no_change", "", {}),
        (QUEUED, {}, "recommend", "queue_at_ceiling", {"max_num_seqs": "96"}),
        (replace(QUEUED, kv_cache_usage=0.9), {}, "no_change", "queue_at_ceiling", {}),
        # Capacity before engine knobs: the queue at the ceiling with a full, preempting cache asks for replicas.
        (
            replace(QUEUED, kv_cache_usage=0.99, preemptions_per_s=0.5),
            {},
            "recommend",
            "capacity",
            {"autoscaling.max_replicas": "5"},
        ),
        (replace(QUEUED, replicas=2), {}, "no_change", "", {}),  # below the ceiling: KEDA's job
        (SHORT, {}, "recommend", "context_too_long", {"max_model_len": "768"}),
        (SHORT, {"max_model_len": 1024}, "no_change", "", {}),
        (
            replace(SHORT, prompt_tokens_p999=10, generation_tokens_p999=10),
            {},
            "recommend",
            "context_too_long",
            {"max_model_len": "512"},
        ),
        # OOMKilled is host memory: the pod's memory grows (32Gi by default), GPU memory is left alone.
        (replace(CALM, oom_kills=2), {}, "recommend", "oom_kills", {"resources.memory": "48Gi"}),
        (replace(SATURATED, oom_kills=3), {}, "recommend", "oom_kills", {"resources.memory": "48Gi"}),
        (replace(CALM, oom_kills=1), {}, "no_change", "", {}),  # one kill can be a one-off
        # Any other crash reason: the termination message decides, which a run reads.
        (replace(CALM, crash_restarts=2), {}, "diagnose", "crash_loop", {}),
        (replace(CALM, crash_restarts=1), {}, "no_change", "", {}),
        (CROWDED, {}, "recommend", "context_too_short", {"max_model_len": "16384"}),
        (CROWDED, {"max_model_len": 12288}, "no_change", "", {}),  # 7,800 of 12,288: neither rule
        (replace(CROWDED, prompt_tokens_p999=32000), {"max_model_len": 32768}, "no_change", "context_too_short", {}),
    ],
)
def test_rules(snapshot: Snapshot, serving: dict[str, object], kind: str, rule: str, overrides: dict[str, str]) -> None:
    model = MODEL.model_copy(update={"serving": MODEL.serving.model_copy(update=serving)})
    allowed = max_replicas_within_quota(CATALOG.platform, CATALOG.models, model)
    decision = decide(model, snapshot, NOW, max_replicas_allowed=allowed)
    assert (decision.kind, decision.rule, dict(decision.overrides)) == (kind, rule, overrides)
    assert decision.reason


def test_the_quota_arithmetic_counts_the_surge_and_the_other_models_minimums() -> None:
    # 8 GPUs; the other model keeps 2 at its minimum; one surge replica during a rollout: 8 - 2 - 1 = 5.
    assert max_replicas_within_quota(CATALOG.platform, CATALOG.models, MODEL) == 5
    crowded = CATALOG.platform.model_copy(update={"gpu_quota": 5})
    assert max_replicas_within_quota(crowded, CATALOG.models, MODEL) == 2
    full = replace(QUEUED, kv_cache_usage=0.99, preemptions_per_s=0.5)
    decision = decide(MODEL, full, NOW, max_replicas_allowed=2)
    assert (decision.kind, decision.rule) == ("no_change", "capacity")
    assert "the GPU quota has no headroom for another replica" in decision.reason


@pytest.mark.parametrize(
    ("snapshot", "config_age_s", "reason"),
    [
        (replace(CALM, kv_cache_usage=math.nan), math.inf, "no data for kv_cache_usage"),
        (replace(SATURATED, coverage=0.4), math.inf, "data for only 40% of the last 30 min"),
        (replace(SATURATED, age_s=1200), math.inf, "the newest sample is 1200 s old"),
        (replace(SATURATED, rollout=1), math.inf, "a rollout is in progress (or was, within the lookback)"),
        (SATURATED, 600, "the config was deployed 10 min ago; waiting for 30 min of its own data"),
        (
            replace(SHORT, requests=12),
            math.inf,
            "too few requests (12 in 30 min, need 1000) to judge the context length",
        ),
        (Snapshot.no_data(NOW), math.inf, "data for only 0% of the last 30 min"),
    ],
)
def test_missing_stale_young_or_thin_data_is_a_skip_with_the_reason(
    snapshot: Snapshot, config_age_s: float, reason: str
) -> None:
    decision = decide(MODEL, snapshot, NOW, config_age_s=config_age_s)
    assert (decision.kind, decision.reason) == ("skip", reason)


def test_clusters_without_kube_state_metrics_leave_only_the_oom_rule_out() -> None:
    assert math.isnan(SATURATED.oom_kills) and SATURATED.missing() == []
    decision = decide(MODEL, SATURATED, NOW)
    assert decision.rule == "kv_saturation" and "oom_kills" not in decision.observed


def test_limits_are_configurable() -> None:
    decision = decide(MODEL, SATURATED, NOW, limits=TuningLimits(memory_step=0.05))
    assert decision.overrides == {"gpu_memory_utilization": "0.95"}
    few = decide(MODEL, replace(SHORT, requests=200), NOW, limits=TuningLimits(min_requests=100))
    assert few.rule == "context_too_long"
    assert TuningLimits(sustained_fraction=0.9).quantile == pytest.approx(0.1)


def test_gate_applies_the_cooldown_and_the_daily_cap() -> None:
    assert gate([], NOW) is None
    assert gate([NOW - 600], NOW) == "cooldown: last change 600 s ago (< 3600 s)"
    assert gate([NOW - 7200, NOW - 10800, NOW - 14400], NOW) == "daily cap: 3 changes in the last 24 h (max 3)"
    assert gate([NOW - 90000] * 5, NOW) is None


def _recent(snapshot: Snapshot, window: str, **levels: float) -> Snapshot:
    """``snapshot`` with levels of one tier window (``half`` or ``quarter``) set; the window's others as they were
    (as the whole lookback's where they were not measured)."""

    def was(name: str) -> float:
        value = float(getattr(snapshot, f"{name}_{window}"))
        return float(getattr(snapshot, name)) if math.isnan(value) else value

    fields = {f"{name}_{window}": levels.get(name, was(name)) for name in LEVEL_FIELDS}
    return replace(snapshot, **fields)


#: The cache full with 1.5 preemptions/s over the last quarter (7.5 min), calm before: severe, and recent.
SEVERE_NOW = _recent(CALM, "quarter", kv_cache_usage=0.99, preemptions_per_s=1.5)
#: 0.3 preemptions/s (moderate) over the last quarter only.
MODERATE_NOW = _recent(CALM, "quarter", kv_cache_usage=0.99, preemptions_per_s=0.3)


def test_evidence_shrinks_with_severity() -> None:
    """A severe saturation acts on the last quarter of the lookback; a moderate one as recent does not, and says
    how far it is from acting; a moderate one over the last half acts."""
    severe = decide(MODEL, SEVERE_NOW, NOW)
    assert (severe.kind, severe.rule) == ("recommend", "kv_saturation")
    assert severe.reason == "KV cache saturated (99%, 1.50 preemptions/s) for 75% of the last 7.5 min (severe)"
    moderate = decide(MODEL, MODERATE_NOW, NOW)
    assert moderate.kind == "no_change"
    assert moderate.reason.endswith(
        "not yet: KV cache saturated (99%, 0.30 preemptions/s) for at least 5.6 of the last 7.5 min; at this "
        "severity (moderate) it must hold 11.2 of the last 15 min"
    )
    longer = _recent(MODERATE_NOW, "half", kv_cache_usage=0.97, preemptions_per_s=0.25)
    assert decide(MODEL, longer, NOW).reason.endswith("for 75% of the last 15 min (moderate)")
    # Mild (0.05/s) over the last half is not enough: mild needs the whole lookback.
    mild = _recent(CALM, "half", kv_cache_usage=0.99, preemptions_per_s=0.05)
    assert decide(MODEL, mild, NOW).kind == "no_change"
    # The windows follow the settings: a severe tier of a fifth of the lookback needs 4.5 of 6 minutes.
    limits = TuningLimits(severe_window_fraction=0.2)
    assert limits.hold_s(limits.tiers[0]) == pytest.approx(270)


def test_a_queue_building_at_the_ceiling_keeps_the_kv_rule_from_acting_first() -> None:
    """A capacity shortage fills the cache too: while the queue at the ceiling has not held long enough, a severe
    KV saturation is not answered with memory."""
    building = _recent(SEVERE_NOW, "quarter", kv_cache_usage=0.99, preemptions_per_s=1.5, waiting=45, replicas=3)
    decision = decide(MODEL, building, NOW, max_replicas_allowed=5)
    assert (decision.kind, decision.rule) == ("no_change", "queue_at_ceiling")
    assert "capacity is judged first, memory waits" in decision.reason
    assert "requests waiting at the ceiling of 3 replicas (45.0 waiting, 3.0× the threshold" in decision.reason
    # Severe (4× the threshold per replica) over the same window: the capacity rule acts.
    severe_queue = _recent(building, "quarter", waiting=75)
    decision = decide(MODEL, severe_queue, NOW, max_replicas_allowed=5)
    assert (decision.rule, dict(decision.overrides)) == ("capacity", {"autoscaling.max_replicas": "5"})


def test_oom_kills_grow_the_pod_memory_up_to_its_cap() -> None:
    big = MODEL.model_copy(update={"resources": MODEL.resources.model_copy(update={"memory": "1000Gi"})})
    assert dict(decide(big, replace(CALM, oom_kills=2), NOW).overrides) == {"resources.memory": "1024Gi"}
    full = big.model_copy(update={"resources": MODEL.resources.model_copy(update={"memory": "1Ti"})})
    decision = decide(full, replace(CALM, oom_kills=2), NOW)
    assert decision.kind == "no_change" and "at the 1024 GiB cap" in decision.reason
    assert [memory_gib(q) for q in ("32Gi", "1Ti", "64G", str(2**30))] == [32, 1024, pytest.approx(59.6, 0.01), 1]


CUDA_OOM = Crash("vllm-m-7d9f-x2", "Error", 1, "Loading...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to "
                 "allocate 2.00 GiB")  # fmt: skip
BAD_FLAG = Crash("vllm-m-7d9f-x2", "Error", 2, "vllm: error: unrecognized arguments: --foo\n")


@pytest.mark.parametrize(
    ("crashes", "serving", "kind", "overrides", "reason"),
    [
        ([BAD_FLAG, CUDA_OOM], {}, "recommend", {"gpu_memory_utilization": "0.85"},
         "pod vllm-m-7d9f-x2 ran out of GPU memory (Error, exit code 1: torch.OutOfMemoryError: CUDA out of memory"),
        ([CUDA_OOM], {"gpu_memory_utilization": 0.7}, "recommend", {"max_model_len": "4096"}, "ran out of GPU memory"),
        ([CUDA_OOM], {"gpu_memory_utilization": 0.7, "max_model_len": 512}, "no_change", {}, "at their floors"),
        ([BAD_FLAG], {}, "no_change", {}, "pod vllm-m-7d9f-x2 crash-loops (Error, exit code 2: vllm: error: "
         "unrecognized arguments: --foo): not a memory shortage; fix the cause"),
        ([], {}, "no_change", {}, "no crashed vLLM container found"),
    ],
)  # fmt: skip
def test_a_crash_loop_is_diagnosed_from_the_termination_message(
    crashes: list[Crash], serving: dict[str, object], kind: str, overrides: dict[str, str], reason: str
) -> None:
    model = MODEL.model_copy(update={"serving": MODEL.serving.model_copy(update=serving)})
    decision = crash_decision(model, crashes)
    assert (decision.kind, dict(decision.overrides)) == (kind, overrides)
    assert reason in decision.reason
