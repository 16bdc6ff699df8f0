"""The tuning-drift policy, table-driven: each rule and its limits, capacity before knobs, the evidence and data
quality gates, the quota arithmetic and the cooldown/daily-cap gate."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from llm_platform.catalog import max_replicas_within_quota, parse_catalog
from llm_platform.tuning.policy import Snapshot, TuningLimits, decide, gate

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
        (replace(CALM, oom_kills=2), {}, "recommend", "oom_kills", {"gpu_memory_utilization": "0.85"}),
        (replace(SATURATED, oom_kills=3), {}, "recommend", "oom_kills", {"gpu_memory_utilization": "0.85"}),
        (replace(CALM, oom_kills=1), {}, "no_change", "", {}),  # one kill can be a one-off
        (
            replace(CALM, oom_kills=2),
            {"gpu_memory_utilization": 0.72},
            "recommend",
            "oom_kills",
            {"gpu_memory_utilization": "0.70"},
        ),
        (
            replace(CALM, oom_kills=2),
            {"gpu_memory_utilization": 0.7},
            "recommend",
            "oom_kills",
            {"max_model_len": "4096"},
        ),
        (
            replace(CALM, oom_kills=2),
            {"gpu_memory_utilization": 0.7, "max_model_len": 512},
            "no_change",
            "oom_kills",
            {},
        ),
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
