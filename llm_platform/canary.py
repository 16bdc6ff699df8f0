"""The canary judge (pure): does a candidate config pass one step of a progressive rollout?

At each step the edge sends a share of the model's live traffic to the canary and the rest to the stable version;
Prometheus gives, per track over the step's window, the requests served, p95 TTFT and p95 ITL (vLLM's histograms),
the error ratio (``http_requests_total`` by status) and the output tokens per second (:class:`TrackFigures`). The
canary passes a step when it has served enough requests to say anything (``min_requests``), meets the model's
absolute SLOs, and is not worse than the stable version beyond the margins. Too little traffic holds the step until
its deadline, then aborts: a rollout never passes on no evidence. Flagger's analysis does the same with generic
request-success and latency metrics; these are the figures users of an LLM engine feel.

Every verdict's reason names the figures it compared, so the rollout's log and the asset's metadata say why.
:func:`run_canary` takes a canary through the model's steps against a target's :class:`CanaryTracks` (the edge's
split and Prometheus' per-track figures, ``PrometheusClient.track_figures``), with an injected clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from llm_platform.catalog import Rollout, Slo


@dataclass(frozen=True)
class TrackFigures:
    """One track (stable or canary) over one step's window. NaN: Prometheus had no sample for it."""

    requests: float
    ttft_p95_ms: float
    itl_p95_ms: float
    error_ratio: float
    output_tokens_per_s: float
    in_flight: float = math.nan
    """Requests routed to the track and unfinished at the window's end (running plus waiting): what tells a canary
    too slow to serve its share from one that was sent too little."""


@dataclass(frozen=True)
class Margins:
    """How much worse than the stable version the canary may be before a step fails."""

    ttft_pct: float = 20.0
    """p95 TTFT above stable's, in percent."""
    itl_pct: float = 20.0
    """p95 ITL above stable's, in percent."""
    error_ratio_points: float = 0.01
    """Error ratio above stable's, in absolute terms (a ratio of ratios near zero says nothing)."""

    @classmethod
    def of(cls, rollout: Rollout, slo: Slo) -> Margins:
        """The model's margins: its rollout section's, the SLO's regression budget where that sets none."""
        return cls(
            ttft_pct=rollout.max_ttft_regression_pct or slo.max_regression_pct,
            itl_pct=rollout.max_itl_regression_pct or slo.max_regression_pct,
            error_ratio_points=rollout.max_error_ratio_increase,
        )


Outcome = Literal["pass", "hold", "abort"]


@dataclass(frozen=True)
class Verdict:
    """What the judge decided for one step, and the readable reason."""

    outcome: Outcome
    reason: str

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


def _ms(value: float) -> str:
    return "no sample" if math.isnan(value) else f"{value:.0f} ms"


def judge_step(
    canary: TrackFigures,
    stable: TrackFigures | None,
    slo: Slo,
    margins: Margins,
    min_requests: int,
    *,
    deadline_passed: bool,
) -> Verdict:
    """The verdict for one step. ``stable`` is None (or below ``min_requests``) when the stable version served too
    little to compare with, e.g. at the 100 % step: then the canary is judged on the absolute SLOs alone."""
    served = 0.0 if math.isnan(canary.requests) else canary.requests
    unmeasured = [math.isnan(value) for value in (canary.ttft_p95_ms, canary.itl_p95_ms, canary.error_ratio)]
    if served < min_requests or any(unmeasured):
        unfinished = 0.0 if math.isnan(canary.in_flight) else canary.in_flight
        if served < min_requests and served + unfinished >= min_requests:  # sent enough, finished too few
            missing = (
                f"{'too slow to serve its share: ' if deadline_passed else ''}{served:.0f} requests finished, "
                f"{unfinished:.0f} more running or waiting on the canary (at least {min_requests} finished needed)"
            )
        elif served < min_requests:
            missing = f"too little traffic to judge ({served:.0f} requests, at least {min_requests} needed)"
        else:
            missing = (
                f"no figures for the canary yet (p95 TTFT {_ms(canary.ttft_p95_ms)}, p95 ITL "
                f"{_ms(canary.itl_p95_ms)}, error ratio {canary.error_ratio:.3f})"
            )
        return Verdict("abort" if deadline_passed else "hold", missing)

    failures = [
        f"canary {name} {_ms(ours)} > SLO {_ms(limit)}"
        for name, ours, limit in (
            ("p95 TTFT", canary.ttft_p95_ms, slo.ttft_p95_ms),
            ("p95 ITL", canary.itl_p95_ms, slo.itl_p95_ms),
        )
        if ours > limit
    ]
    if canary.error_ratio > slo.max_error_rate:
        failures.append(f"canary error ratio {canary.error_ratio:.3f} > SLO {slo.max_error_rate:.3f}")
    # NaN requests compare False: no stable series is too little to compare with.
    baseline = stable if stable is not None and stable.requests >= min_requests else None
    if baseline is not None:
        failures += _regressions(canary, baseline, margins)
    figures = f"canary {_figures(canary)}"
    if baseline is not None:
        figures += f"; stable {_figures(baseline)}"
    else:
        figures += "; judged on the SLOs alone (the stable version served too little to compare)"
    if failures:
        return Verdict("abort", f"{'; '.join(failures)} ({figures})")
    return Verdict("pass", figures)


def _figures(track: TrackFigures) -> str:
    return (
        f"{track.requests:.0f} requests, p95 TTFT {_ms(track.ttft_p95_ms)}, p95 ITL {_ms(track.itl_p95_ms)}, "
        f"errors {track.error_ratio:.3f}, {track.output_tokens_per_s:.1f} output tok/s"
    )


def _regressions(canary: TrackFigures, stable: TrackFigures, margins: Margins) -> list[str]:
    """Where the canary is worse than stable beyond the margins (a stable figure with no sample compares nothing)."""
    failures = []
    for name, ours, theirs, pct in (
        ("p95 TTFT", canary.ttft_p95_ms, stable.ttft_p95_ms, margins.ttft_pct),
        ("p95 ITL", canary.itl_p95_ms, stable.itl_p95_ms, margins.itl_pct),
    ):
        if not math.isnan(theirs) and theirs > 0 and ours > theirs * (1 + pct / 100):
            failures.append(
                f"canary {name} {_ms(ours)} is {(ours / theirs - 1) * 100:.0f} % above stable's {_ms(theirs)} "
                f"(margin {pct:g} %)"
            )
    stable_errors = 0.0 if math.isnan(stable.error_ratio) else stable.error_ratio
    if canary.error_ratio > stable_errors + margins.error_ratio_points:
        failures.append(
            f"canary error ratio {canary.error_ratio:.3f} exceeds stable's {stable_errors:.3f} by more than "
            f"{margins.error_ratio_points:g}"
        )
    return failures


class CanaryTracks(Protocol):
    """What the rollout driver needs of a target: shift the edge's split, and read each track's figures."""

    def set_canary_weight(self, percent: int) -> None:
        """Send ``percent`` of the model's traffic to the canary (0: none, the canary is being withdrawn)."""

    def track_figures(self, window_s: int) -> Mapping[str, TrackFigures]:
        """Each track's figures over the last ``window_s`` seconds, keyed by track name."""


@dataclass(frozen=True)
class StepRecord:
    """One judgement of one step, for the asset's per-step table."""

    weight: int
    elapsed_s: float
    verdict: Verdict
    canary: TrackFigures | None
    stable: TrackFigures | None


@dataclass(frozen=True)
class CanaryResult:
    """How a canary rollout ended: promoted (every step passed) or aborted (the split is back at 0)."""

    promoted: bool
    steps: tuple[StepRecord, ...]

    @property
    def reason(self) -> str:
        last = self.steps[-1]
        return f"step {last.weight} % after {last.elapsed_s:.0f} s: {last.verdict.reason}"


NO_FIGURES = TrackFigures(math.nan, math.nan, math.nan, math.nan, math.nan)


def run_canary(
    tracks: CanaryTracks,
    rollout: Rollout,
    slo: Slo,
    *,
    canary_track: str,
    stable_track: str,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    on_step: Callable[[StepRecord], None] = lambda _: None,
) -> CanaryResult:
    """Drive a canary through ``rollout.steps``: at each step set the split, wait ``step_seconds``, judge the step's
    own window (only this step's traffic counts); hold while the evidence is short, re-judging every ``step_seconds``
    until ``max_wait_seconds`` past the step's length; abort at the first failed verdict. An abort sets the split back
    to 0 before it returns, so the stable version owns all traffic again whatever the caller does next. ``clock`` and
    ``sleep`` are injected (dagster-k8s' way), so the loop is tested without waiting; ``on_step`` sees every
    judgement as it is made (the run's log)."""
    margins = Margins.of(rollout, slo)
    deadline_s = rollout.step_seconds + rollout.max_wait_seconds  # from the start of a step
    records: list[StepRecord] = []
    for weight in rollout.steps:
        tracks.set_canary_weight(weight)
        started = clock()
        sleep(rollout.step_seconds)
        while True:
            elapsed = clock() - started
            figures = tracks.track_figures(max(1, math.ceil(elapsed)))
            canary, stable = figures.get(canary_track), figures.get(stable_track)
            deadline_passed = elapsed >= deadline_s
            verdict = judge_step(
                canary or NO_FIGURES, stable, slo, margins, rollout.min_requests, deadline_passed=deadline_passed
            )
            records.append(StepRecord(weight, elapsed, verdict, canary, stable))
            on_step(records[-1])
            if verdict.outcome == "abort":
                tracks.set_canary_weight(0)
                return CanaryResult(promoted=False, steps=tuple(records))
            if verdict.passed:
                break
            sleep(max(1.0, min(rollout.step_seconds, deadline_s - elapsed)))
    return CanaryResult(promoted=True, steps=tuple(records))
