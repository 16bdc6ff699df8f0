"""The tuning-drift policy, table-driven: each rule, its limits, hysteresis, missing and stale data, the gate."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from llm_platform.catalog import parse_catalog
from llm_platform.tuning.policy import TuningLimits, Window, decide, gate

NOW = 1_000_000.0
MODEL = parse_catalog(
    {
        "models": [
            {
                "name": "m",
                "source": {"repo": "a/b"},
                "serving": {"max_model_len": 8192, "max_num_seqs": 64, "gpu_memory_utilization": 0.9},
                "autoscaling": {"min_replicas": 1, "max_replicas": 3, "waiting_threshold": 5},
            }
        ]
    }
).model("m")
CALM = Window(
    kv_cache_usage_max=0.5,
    preemptions_per_s=0.0,
    waiting_avg=0.0,
    replicas=1,
    prompt_tokens_p999=4000,
    generation_tokens_p999=1000,
    sample_time=NOW - 10,
)
SATURATED = replace(CALM, kv_cache_usage_max=0.99, preemptions_per_s=0.5)
QUEUED = replace(CALM, replicas=3, waiting_avg=30)
SHORT = replace(CALM, prompt_tokens_p999=300, generation_tokens_p999=200)
OOM = replace(CALM, oom_restarts=1)
CROWDED = replace(CALM, prompt_tokens_p999=7800)


@pytest.mark.parametrize(
    ("windows", "serving", "kind", "rule", "overrides"),
    [
        ([CALM] * 3, {}, "no_change", "", {}),
        ([SATURATED] * 3, {}, "recommend", "kv_saturation", {"gpu_memory_utilization": "0.92"}),
        ([SATURATED] * 3, {"gpu_memory_utilization": 0.95}, "recommend", "kv_saturation", {"max_num_seqs": "48"}),
        (
            [SATURATED] * 3,
            {"gpu_memory_utilization": 0.95, "max_num_seqs": 8},
            "no_change",
            "kv_saturation",
            {},
        ),
        ([QUEUED] * 3, {}, "recommend", "queue_at_ceiling", {"max_num_seqs": "96"}),
        ([replace(QUEUED, kv_cache_usage_max=0.9)] * 3, {}, "no_change", "queue_at_ceiling", {}),
        ([replace(QUEUED, replicas=2)] * 3, {}, "no_change", "", {}),  # queue high but below the ceiling: KEDA's job
        ([SHORT] * 3, {}, "recommend", "context_too_long", {"max_model_len": "768"}),
        ([SHORT] * 3, {"max_model_len": 1024}, "no_change", "", {}),
        (
            [replace(SHORT, prompt_tokens_p999=10, generation_tokens_p999=10)] * 3,
            {},
            "recommend",
            "context_too_long",
            {"max_model_len": "512"},
        ),
        # OOM kills are counted over the windows (two of three had one), and come before every other rule.
        (
            [CALM, replace(SATURATED, oom_restarts=1), OOM],
            {},
            "recommend",
            "oom_restarts",
            {"gpu_memory_utilization": "0.85"},
        ),
        ([CALM, CALM, OOM], {}, "no_change", "", {}),
        ([OOM] * 3, {"gpu_memory_utilization": 0.72}, "recommend", "oom_restarts", {"gpu_memory_utilization": "0.70"}),
        ([OOM] * 3, {"gpu_memory_utilization": 0.7}, "recommend", "oom_restarts", {"max_model_len": "4096"}),
        ([OOM] * 3, {"gpu_memory_utilization": 0.7, "max_model_len": 512}, "no_change", "oom_restarts", {}),
        # Prompts crowding the context: double it, up to max_context.
        ([CROWDED] * 3, {}, "recommend", "context_too_short", {"max_model_len": "16384"}),
        ([CROWDED] * 3, {"max_model_len": 12288}, "no_change", "", {}),  # 7,800 of 12,288: neither rule
        (
            [replace(CROWDED, prompt_tokens_p999=32000)] * 3,
            {"max_model_len": 32768},
            "no_change",
            "context_too_short",
            {},
        ),
        ([CROWDED, CALM, CROWDED], {}, "no_change", "", {}),
        # Hysteresis: one calm window among saturated ones, or too few windows, changes nothing.
        ([SATURATED, CALM, SATURATED], {}, "no_change", "", {}),
        ([SATURATED] * 2, {}, "skip", "", {}),
    ],
)
def test_rules(
    windows: list[Window], serving: dict[str, object], kind: str, rule: str, overrides: dict[str, str]
) -> None:
    model = MODEL.model_copy(update={"serving": MODEL.serving.model_copy(update=serving)})
    decision = decide(model, windows, NOW)
    assert (decision.kind, decision.rule, dict(decision.overrides)) == (kind, rule, overrides)
    assert decision.reason


def test_missing_or_stale_data_is_skipped_with_the_reason() -> None:
    missing = decide(MODEL, [CALM, CALM, replace(CALM, kv_cache_usage_max=math.nan)], NOW)
    assert (missing.kind, missing.reason) == ("skip", "no data for kv_cache_usage_max")
    stale = decide(MODEL, [replace(SATURATED, sample_time=NOW - 3600)] * 3, NOW)
    assert (stale.kind, stale.reason) == ("skip", "latest window is 3600 s old")


def test_clusters_without_kube_state_metrics_leave_only_the_oom_rule_out() -> None:
    assert math.isnan(SATURATED.oom_restarts) and SATURATED.missing() == []
    decision = decide(MODEL, [SATURATED] * 3, NOW)
    assert decision.rule == "kv_saturation" and "oom_restarts" not in decision.observed
    assert decide(MODEL, [OOM] * 3, NOW).observed["oom_restarts"] == 1


def test_limits_are_configurable() -> None:
    decision = decide(MODEL, [SATURATED], NOW, TuningLimits(sustained_windows=1, memory_step=0.05))
    assert decision.overrides == {"gpu_memory_utilization": "0.95"}


def test_gate_applies_the_cooldown_and_the_daily_cap() -> None:
    assert gate([], NOW) is None
    assert gate([NOW - 600], NOW) == "cooldown: last change 600 s ago (< 3600 s)"
    assert gate([NOW - 7200, NOW - 10800, NOW - 14400], NOW) == "daily cap: 3 changes in the last 24 h (max 3)"
    assert gate([NOW - 90000] * 5, NOW) is None
