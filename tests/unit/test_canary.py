"""The canary judge on the figures of one rollout step: evidence floor, absolute SLOs, margins against stable."""

from __future__ import annotations

import dataclasses
import math

import pytest

from llm_platform.canary import Margins, TrackFigures, judge_step
from llm_platform.catalog import Rollout, Slo

SLO = Slo(ttft_p95_ms=2000, itl_p95_ms=100, max_error_rate=0.01, max_regression_pct=20)
MARGINS = Margins.of(Rollout(), SLO)
STABLE = TrackFigures(requests=400, ttft_p95_ms=500, itl_p95_ms=40, error_ratio=0.0, output_tokens_per_s=900)
GOOD = TrackFigures(requests=60, ttft_p95_ms=520, itl_p95_ms=41, error_ratio=0.0, output_tokens_per_s=110)


def test_a_canary_as_good_as_stable_passes_and_names_both_tracks_figures() -> None:
    verdict = judge_step(GOOD, STABLE, SLO, MARGINS, 50, deadline_passed=False)
    assert verdict.passed
    assert "canary 60 requests, p95 TTFT 520 ms, p95 ITL 41 ms" in verdict.reason
    assert "stable 400 requests, p95 TTFT 500 ms" in verdict.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ttft_p95_ms": 700}, "canary p95 TTFT 700 ms is 40 % above stable's 500 ms (margin 20 %)"),
        ({"itl_p95_ms": 60}, "canary p95 ITL 60 ms is 50 % above stable's 40 ms (margin 20 %)"),
        ({"error_ratio": 0.02}, "canary error ratio 0.020 > SLO 0.010"),
        ({"ttft_p95_ms": 2500}, "canary p95 TTFT 2500 ms > SLO 2000 ms"),
        ({"itl_p95_ms": 150}, "canary p95 ITL 150 ms > SLO 100 ms"),
    ],
)
def test_a_worse_canary_is_aborted_with_the_figures_it_was_compared_on(change: dict[str, float], reason: str) -> None:
    verdict = judge_step(dataclasses.replace(GOOD, **change), STABLE, SLO, MARGINS, 50, deadline_passed=False)
    assert verdict.outcome == "abort" and reason in verdict.reason


def test_errors_are_compared_in_points_not_ratios() -> None:
    loose = Slo(max_error_rate=0.5)
    margins = Margins.of(Rollout(), loose)
    stable = dataclasses.replace(STABLE, error_ratio=0.001)
    slightly = dataclasses.replace(GOOD, error_ratio=0.005)  # 5x stable's, but half a point
    assert judge_step(slightly, stable, loose, margins, 50, deadline_passed=False).passed
    worse = dataclasses.replace(GOOD, error_ratio=0.03)
    verdict = judge_step(worse, stable, loose, margins, 50, deadline_passed=False)
    assert verdict.outcome == "abort" and "exceeds stable's 0.001 by more than 0.01" in verdict.reason


def test_too_little_traffic_holds_the_step_then_aborts_at_the_deadline() -> None:
    quiet = dataclasses.replace(GOOD, requests=12)
    held = judge_step(quiet, STABLE, SLO, MARGINS, 50, deadline_passed=False)
    assert held.outcome == "hold" and held.reason == "too little traffic to judge (12 requests, at least 50 needed)"
    aborted = judge_step(quiet, STABLE, SLO, MARGINS, 50, deadline_passed=True)
    assert aborted.outcome == "abort" and aborted.reason == held.reason
    silent = dataclasses.replace(GOOD, requests=math.nan)  # no series at all: nothing served
    assert "0 requests" in judge_step(silent, STABLE, SLO, MARGINS, 50, deadline_passed=True).reason


def test_a_canary_without_latency_samples_is_never_passed() -> None:
    blind = dataclasses.replace(GOOD, itl_p95_ms=math.nan)
    verdict = judge_step(blind, STABLE, SLO, MARGINS, 50, deadline_passed=False)
    assert verdict.outcome == "hold" and "p95 ITL no sample" in verdict.reason
    assert judge_step(blind, STABLE, SLO, MARGINS, 50, deadline_passed=True).outcome == "abort"


def test_without_stable_traffic_the_canary_is_judged_on_the_slos_alone() -> None:
    slower = dataclasses.replace(GOOD, ttft_p95_ms=900)  # 80 % above stable, but within the SLO
    for stable in (None, dataclasses.replace(STABLE, requests=3)):
        verdict = judge_step(slower, stable, SLO, MARGINS, 50, deadline_passed=False)
        assert verdict.passed and "judged on the SLOs alone" in verdict.reason
    assert judge_step(slower, STABLE, SLO, MARGINS, 50, deadline_passed=False).outcome == "abort"


def test_a_stable_figure_without_samples_compares_nothing() -> None:
    stable = dataclasses.replace(STABLE, ttft_p95_ms=math.nan)
    assert judge_step(dataclasses.replace(GOOD, ttft_p95_ms=1500), stable, SLO, MARGINS, 50,
                      deadline_passed=False).passed  # fmt: skip


def test_the_margins_come_from_the_rollout_section_and_default_to_the_slos_regression_budget() -> None:
    assert Margins.of(Rollout(), SLO) == Margins(ttft_pct=20, itl_pct=20, error_ratio_points=0.01)
    own = Rollout(max_ttft_regression_pct=5, max_error_ratio_increase=0)
    assert Margins.of(own, SLO) == Margins(ttft_pct=5, itl_pct=20, error_ratio_points=0)
