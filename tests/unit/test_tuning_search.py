"""The goodput search on deterministic synthetic response surfaces: bisection of the load, the coordinate search
against the exhaustive grid, crashed trials, equivalent configs."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from llm_platform.catalog import Slo
from llm_platform.tuning.search import (
    Candidate,
    Probe,
    SearchSpace,
    Trial,
    bisect_load,
    clamp_seqs,
    coordinate_search,
    grid_search,
    meets_slo,
)

SLO = Slo(ttft_p95_ms=1000, itl_p95_ms=50, max_error_rate=0.01)
SEQS = (4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
TOKENS = (256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0)


def engine(seqs: float, tokens: float, load: int) -> Probe:
    """A synthetic engine: throughput grows with the running batch (capped by max_num_seqs); ITL grows with the
    batch and with the token budget's prefill stalls; TTFT grows when the budget is small (slow prefill) and with
    queueing beyond max_num_seqs. Large budgets with large batches run out of memory."""
    running = min(load, seqs)
    throughput = 40 * running / (1 + running / 48)
    itl = 8 + 0.5 * running + tokens / 400
    ttft = 20_000 / tokens * (1 + running / 8) + max(0, load - seqs) * 60
    return meets_slo(Probe(load, throughput, throughput / 64, ttft, itl, 0.0), SLO)


def evaluate(calls: list[Candidate]) -> Callable[[Candidate], Trial]:
    def run(candidate: Candidate) -> Trial:
        calls.append(dict(candidate))
        seqs, tokens = candidate["max_num_seqs"], candidate["max_num_batched_tokens"]
        if seqs * tokens > 256 * 8192:
            return Trial(candidate, error="vLLM exited with code 1 while starting: CUDA out of memory")
        trial = bisect_load(lambda load: engine(seqs, tokens, load), 1, 256)
        return Trial(candidate, trial.goodput, trial.best, trial.probes)

    return run


def test_bisection_finds_the_highest_passing_load() -> None:
    measured: list[int] = []

    def step(load: int) -> Probe:
        measured.append(load)
        return Probe(load, load * 10.0, load / 10, 100, 10, 0.0, passed=load <= 37)

    trial = bisect_load(step, 1, 256, precision=0)
    assert trial.best is not None and trial.best.load == 37 and trial.goodput == 370
    assert measured[:2] == [256, 1] and len(measured) <= 2 + math.ceil(math.log2(256))
    assert bisect_load(step, 1, 32).goodput == 320  # the upper bound passes: one probe
    assert bisect_load(lambda load: Probe(load, 1, 1, 9e9, 1, 0), 1, 64).best is None  # nothing meets the SLO


def test_the_slo_decides_pass_and_nan_fails() -> None:
    assert meets_slo(Probe(1, 1, 1, 999, 49, 0.0), SLO).passed
    assert not meets_slo(Probe(1, 1, 1, 1001, 49, 0.0), SLO).passed
    assert not meets_slo(Probe(1, 1, 1, math.nan, 49, 0.0), SLO).passed
    assert not meets_slo(Probe(1, 1, 1, 10, 10, 0.02), SLO).passed


def test_coordinate_search_reaches_the_grid_best_in_a_third_of_the_trials() -> None:
    space = SearchSpace({"max_num_seqs": SEQS, "max_num_batched_tokens": TOKENS})
    grid_calls: list[Candidate] = []
    grid = grid_search(space, evaluate(grid_calls))
    calls: list[Candidate] = []
    tuned = coordinate_search(
        space,
        evaluate(calls),
        space.nearest({"max_num_seqs": None, "max_num_batched_tokens": 2048}),
        equivalent=clamp_seqs(256),
    )
    assert grid.best is not None and tuned.best is not None
    assert len(grid.trials) == len(grid_calls) == 49
    assert tuned.best.goodput >= 0.95 * grid.best.goodput
    assert len(tuned.trials) == len(calls) <= 49 / 3
    # Crashed configs are recorded with their error and never win.
    assert any(not t.ok for t in grid.trials) and grid.best.ok


def test_a_crashed_trial_is_recorded_and_excluded() -> None:
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0)})

    def run(candidate: Candidate) -> Trial:
        if candidate["max_num_seqs"] == 32:
            return Trial(candidate, error="OOMKilled")
        return Trial(candidate, goodput=candidate["max_num_seqs"] * 10)

    result = coordinate_search(space, run, {"max_num_seqs": 16.0})
    assert [t.candidate["max_num_seqs"] for t in result.trials] == [16.0, 8.0, 32.0]
    assert result.best is not None and result.best.candidate == {"max_num_seqs": 16.0}
    assert [t.error for t in result.trials if not t.ok] == ["OOMKilled"]


def test_equivalent_configs_run_once() -> None:
    space = SearchSpace({"max_num_seqs": (16.0, 64.0, 128.0, 256.0)})
    calls: list[Candidate] = []

    def run(candidate: Candidate) -> Trial:
        calls.append(candidate)
        return Trial(candidate, goodput=min(candidate["max_num_seqs"], 64))

    coordinate_search(space, run, {"max_num_seqs": 256.0}, equivalent=clamp_seqs(64))
    # 64 and 128 are equal to 256 under a load of at most 64: the plateau costs one trial.
    assert [c["max_num_seqs"] for c in calls] == [256.0]


def test_a_search_space_refuses_unknown_knobs_and_unsorted_values() -> None:
    with pytest.raises(ValueError, match="'block_size' is not a tunable engine argument"):
        SearchSpace({"block_size": (16.0,)})
    with pytest.raises(ValueError, match="must be distinct and ascending"):
        SearchSpace({"max_num_seqs": (64.0, 8.0)})
    space = SearchSpace({"max_num_seqs": (8.0, 64.0, 256.0), "max_num_batched_tokens": (512.0, 2048.0)})
    assert space.nearest({"max_num_seqs": 48, "max_num_batched_tokens": None}) == {
        "max_num_seqs": 64.0,
        "max_num_batched_tokens": 2048.0,
    }


def test_candidates_become_serving_overrides_and_ladders_double() -> None:
    from llm_platform.benchmark.trials import as_overrides, load_ladder

    assert as_overrides({"max_num_seqs": 64.0, "gpu_memory_utilization": 0.92}) == {
        "gpu_memory_utilization": "0.92",
        "max_num_seqs": "64",
    }
    assert load_ladder(1, 32) == (1, 2, 4, 8, 16, 32)
    assert load_ladder(3, 20) == (3, 6, 12, 20)
    assert load_ladder(4, 4) == (4,)


def test_the_trial_table_and_pareto_plot() -> None:
    from llm_platform.tuning.report import pareto_png, trials_frame

    fast = Probe(8, 800.0, 10.0, 300.0, 20.0, 0.0, passed=True)
    slow = Probe(16, 900.0, 11.0, 900.0, 30.0, 0.0, passed=True)
    trials = [
        Trial({"max_num_seqs": 8.0}, 800.0, fast, (fast,)),
        Trial({"max_num_seqs": 16.0}, 900.0, slow, (fast, slow)),
        Trial({"max_num_seqs": 64.0}, error="OOM"),
    ]
    frame = trials_frame(trials, ["a", "b", "c"])
    assert list(frame["status"]) == ["ok", "ok", "failed"] and list(frame["probes"]) == [1, 2, 0]
    assert "max_model_len" not in frame.columns  # knobs no trial set are left out
    assert pareto_png("m", trials, ["a", "b", "c"]).startswith(b"\x89PNG")


def test_knobs_that_hide_each_others_gain_are_raised_together() -> None:
    """More sequences pay only with a token budget that prefills them in time, and a larger budget only with more
    sequences: each alone is flat from the start, and a line search per knob stays put. The step up the ridge
    raises both where each tied upwards, and finds the better corner."""
    space = SearchSpace({"max_num_seqs": (64.0, 128.0, 256.0, 512.0), "max_num_batched_tokens": TOKENS[:4]})
    calls: list[Candidate] = []

    def run(candidate: Candidate) -> Trial:
        calls.append(dict(candidate))
        seqs, tokens = candidate["max_num_seqs"], candidate["max_num_batched_tokens"]
        if tokens > 1024 or seqs < 128:
            return Trial(candidate, goodput=80.0)  # prefill stalls decoding / too few sequences
        return Trial(candidate, goodput=120.0 if seqs >= 256 and tokens >= 1024 else 100.0)

    start = {"max_num_seqs": 128.0, "max_num_batched_tokens": 512.0}
    result = coordinate_search(space, run, start)
    assert result.best is not None and result.best.goodput == 120.0
    assert result.best.candidate == {"max_num_seqs": 256.0, "max_num_batched_tokens": 1024.0}
    # Each knob alone from the start gained nothing: the first better trial is the step raising both.
    first_gain = next(trial for trial in result.trials if trial.goodput > 100.0)
    assert first_gain.candidate == {"max_num_seqs": 256.0, "max_num_batched_tokens": 1024.0}
    assert len(calls) < len(space.grid())
