"""The canary judge on the figures of one rollout step (evidence floor, absolute SLOs, margins against stable), and
the driver that takes a canary through its steps on a fake clock."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import pytest

from llm_platform.canary import CanaryResult, Margins, StepRecord, TrackFigures, Verdict, judge_step, run_canary
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


def test_a_canary_too_slow_to_finish_its_share_is_aborted_for_that_not_for_traffic() -> None:
    """Sent enough but finished too few: the reason names the unfinished requests, never "too little traffic"."""
    slow = dataclasses.replace(GOOD, requests=12, in_flight=40)
    held = judge_step(slow, STABLE, SLO, MARGINS, 50, deadline_passed=False)
    assert held.outcome == "hold"
    assert held.reason == "12 requests finished, 40 more running or waiting on the canary (at least 50 finished needed)"
    aborted = judge_step(slow, STABLE, SLO, MARGINS, 50, deadline_passed=True)
    assert aborted.outcome == "abort" and aborted.reason == f"too slow to serve its share: {held.reason}"
    sent_too_little = dataclasses.replace(slow, in_flight=37)  # 12 + 37 < 50: the traffic, not the canary
    assert judge_step(sent_too_little, STABLE, SLO, MARGINS, 50, deadline_passed=True).reason.startswith(
        "too little traffic to judge (12 requests"
    )


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


class ScriptedTracks:
    """A target whose canary serves ``canary_rate`` requests per second per 10 % of the split at ``canary`` figures
    (1/s: 30 requests in a 300 s window at 10 %, 300 at 100 %); the stable version
    serves the rest of 10 requests per second at :data:`STABLE`'s. Records the split it was given and when."""

    def __init__(self, clock: Callable[[], float], canary: TrackFigures, canary_rate: float = 1.0) -> None:
        self.clock, self.canary, self.canary_rate = clock, canary, canary_rate
        self.weights: list[tuple[float, int]] = []
        self.windows: list[int] = []

    def set_canary_weight(self, percent: int) -> None:
        self.weights.append((self.clock(), percent))

    def track_figures(self, window_s: int) -> Mapping[str, TrackFigures]:
        self.windows.append(window_s)
        weight = self.weights[-1][1]
        served = self.canary_rate * window_s * weight / 10
        figures = {"canary": dataclasses.replace(self.canary, requests=served)} if served else {}
        stable = 10 * window_s * (100 - weight) / 100
        return {**figures, **({"stable": dataclasses.replace(STABLE, requests=stable)} if stable else {})}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_good_canary_takes_every_step_and_each_step_is_judged_on_its_own_window() -> None:
    clock = FakeClock()
    tracks = ScriptedTracks(clock, GOOD)
    result = run_canary(tracks, Rollout(strategy="canary"), SLO, canary_track="canary", stable_track="stable",
                        clock=clock, sleep=clock.sleep)  # fmt: skip
    assert result.promoted
    assert [weight for _, weight in tracks.weights] == [10, 25, 50, 100]
    assert [record.weight for record in result.steps] == [10, 25, 50, 100]
    assert all(record.verdict.passed for record in result.steps)
    assert tracks.windows == [300, 300, 300, 300]  # the step's own traffic, not the rollout's so far
    # At 100 % the stable version serves nothing: judged on the SLOs alone.
    assert "judged on the SLOs alone" in result.steps[-1].verdict.reason
    assert clock.now - 1000 == 4 * 300


def test_a_regressing_canary_is_aborted_at_its_first_step_and_the_split_goes_back_to_zero() -> None:
    clock = FakeClock()
    tracks = ScriptedTracks(clock, dataclasses.replace(GOOD, itl_p95_ms=80))
    result = run_canary(tracks, Rollout(strategy="canary"), SLO, canary_track="canary", stable_track="stable",
                        clock=clock, sleep=clock.sleep)  # fmt: skip
    assert not result.promoted
    assert [weight for _, weight in tracks.weights] == [10, 0]
    assert "step 10 % after 300 s: canary p95 ITL 80 ms is 100 % above stable's 40 ms" in result.reason


def test_too_little_traffic_holds_the_step_then_aborts_at_its_deadline() -> None:
    clock = FakeClock()
    # 0.01 request/s at 10 %: 3 requests per 300 s, 12 by the deadline, never the 50 the floor needs.
    tracks = ScriptedTracks(clock, GOOD, canary_rate=0.01)
    rollout = Rollout(strategy="canary", step_seconds=300, max_wait_seconds=900)
    result = run_canary(tracks, rollout, SLO, canary_track="canary", stable_track="stable", clock=clock,
                        sleep=clock.sleep)  # fmt: skip
    assert not result.promoted
    assert [record.verdict.outcome for record in result.steps] == ["hold", "hold", "hold", "abort"]
    assert [record.elapsed_s for record in result.steps] == [300, 600, 900, 1200]
    assert tracks.windows == [300, 600, 900, 1200]  # the evidence of a held step accumulates
    assert "too little traffic to judge" in result.reason and tracks.weights[-1][1] == 0


def test_a_held_step_that_gathers_enough_evidence_passes() -> None:
    clock = FakeClock()
    # 0.1 request/s at 10 %: 30 requests in 300 s (held), 60 by 600 s (passes).
    tracks = ScriptedTracks(clock, GOOD, canary_rate=0.1)
    result = run_canary(tracks, Rollout(strategy="canary", steps=(10, 100)), SLO, canary_track="canary",
                        stable_track="stable", clock=clock, sleep=clock.sleep)  # fmt: skip
    assert result.promoted
    assert [(record.weight, record.verdict.outcome) for record in result.steps][:2] == [(10, "hold"), (10, "pass")]
    assert result.steps[1].elapsed_s == 600 and result.steps[1].canary is not None


def test_the_judges_table_reads_every_judgement() -> None:
    """The per-step frame the metadata table and plot are made of (from a recorded rollout)."""
    from llm_platform.canary_report import plot_png, steps_frame

    figures = TrackFigures(40, 120.0, 30.0, 0.0, 55.5)
    result = CanaryResult(True, (StepRecord(50, 15.2, Verdict("pass", "ok"), figures, figures),
                                 StepRecord(100, 15.0, Verdict("pass", "ok"), figures, None)))  # fmt: skip
    frame = steps_frame(result)
    assert list(frame["weight_pct"]) == [50, 100] and list(frame["canary_p95_ttft_ms"]) == [120.0, 120.0]
    assert frame["stable_requests"].isna().tolist() == [False, True]
    assert plot_png("llama", frame).startswith(b"\x89PNG")
