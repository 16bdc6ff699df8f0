"""The simulated vLLM v1 scheduler, the serving plan and the noise-aware search, on deterministic step-time models
(pure core; AIConfigurator's own figures are in tests/integration/test_perfmodel.py)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from llm_platform.benchmark.parse import parse_result
from llm_platform.catalog import parse_catalog
from llm_platform.planning.plan import PlanAxes, plan_serving, predicted_vs_measured
from llm_platform.planning.simulator import EngineLimits, EngineStartError, StepLoad, Workload, simulate
from llm_platform.tuning.search import (
    Candidate,
    SearchSpace,
    Trial,
    TrialRunner,
    gain_interval,
    noise_aware_search,
    relative_spread,
)


def linear_step(load: StepLoad) -> float:
    """2 ms fixed, 0.02 ms per prefill token, 0.05 ms per decoding request, 0.00001 ms per KV token read."""
    return 2.0 + 0.02 * load.prefill_tokens + 0.05 * load.decode_requests + 1e-5 * load.decode_kv_tokens


def test_one_request_prefills_then_decodes_one_token_per_step() -> None:
    limits = EngineLimits(max_num_seqs=8, max_num_batched_tokens=4096, kv_cache_tokens=100_000, max_model_len=4096)
    result = simulate(limits, Workload(1, 1, 1000, 11), linear_step)
    prefill_ms = linear_step(StepLoad(1, 1000, 0, 0))
    assert result["completed"] == 1 and result["failed"] == 0
    assert result["p50_ttft_ms"] == pytest.approx(prefill_ms)
    assert result["mean_itl_ms"] == pytest.approx(linear_step(StepLoad(0, 0, 1, 1005)), rel=0.01)
    assert result["output_throughput"] == pytest.approx(11 / result["duration"])
    row = parse_result(result, 1)  # the benchmark parser reads it as a vllm bench serve result
    assert row["completed"] == 1 and not math.isnan(row["p95_itl_ms"])


def test_chunked_prefill_splits_a_long_prompt_over_steps_within_the_token_budget() -> None:
    seen: list[StepLoad] = []

    def record(load: StepLoad) -> float:
        seen.append(load)
        return linear_step(load)

    limits = EngineLimits(max_num_seqs=8, max_num_batched_tokens=512, kv_cache_tokens=100_000, max_model_len=4096)
    simulate(limits, Workload(1, 1, 2000, 2), record)
    assert [load.prefill_tokens for load in seen[:4]] == [512, 512, 512, 464]
    assert all(load.prefill_tokens + load.decode_requests <= 512 for load in seen)


def test_max_num_seqs_caps_the_running_batch_and_the_rest_queue() -> None:
    seen: list[StepLoad] = []

    def record(load: StepLoad) -> float:
        seen.append(load)
        return linear_step(load)

    limits = EngineLimits(max_num_seqs=4, max_num_batched_tokens=8192, kv_cache_tokens=100_000, max_model_len=4096)
    result = simulate(limits, Workload(16, 32, 100, 20), record)
    assert max(load.prefill_requests + load.decode_requests for load in seen) == 4
    assert result["completed"] == 32
    # Queued behind 4 running requests, TTFT grows: the p95 waits for several batches.
    assert result["p95_ttft_ms"] > 3 * result["p50_tpot_ms"] * 20 / 4


def test_a_full_kv_cache_preempts_by_recompute_and_every_request_still_finishes() -> None:
    prefilled: dict[str, int] = {"roomy": 0, "tight": 0}

    def counting(name: str):  # type: ignore[no-untyped-def]
        def step(load: StepLoad) -> float:
            prefilled[name] += load.prefill_tokens
            return linear_step(load)

        return step

    roomy = EngineLimits(max_num_seqs=64, max_num_batched_tokens=8192, kv_cache_tokens=1_000_000, max_model_len=2048)
    tight = EngineLimits(max_num_seqs=64, max_num_batched_tokens=8192, kv_cache_tokens=4096, max_model_len=2048)
    workload = Workload(16, 32, 500, 300)
    ample = simulate(roomy, workload, counting("roomy"))
    preempting = simulate(tight, workload, counting("tight"))
    assert ample["completed"] == preempting["completed"] == 32
    assert prefilled["roomy"] == 32 * 500  # every prompt once
    assert prefilled["tight"] > 32 * 500  # preempted requests recompute their prompt and what they generated
    assert preempting["output_throughput"] < ample["output_throughput"]


def test_requests_longer_than_max_model_len_are_refused_and_a_kv_cache_below_it_cannot_start() -> None:
    limits = EngineLimits(max_num_seqs=8, max_num_batched_tokens=2048, kv_cache_tokens=10_000, max_model_len=1024)
    result = simulate(limits, Workload(4, 8, 1000, 100), linear_step)
    assert result["failed"] == 8 and result["completed"] == 0
    with pytest.raises(EngineStartError, match="raise gpu_memory_utilization or lower max_model_len"):
        EngineLimits(max_num_seqs=8, max_num_batched_tokens=2048, kv_cache_tokens=1000, max_model_len=4096)


def test_a_profiles_lengths_are_sent_in_turn_and_judged_request_by_request() -> None:
    limits = EngineLimits(max_num_seqs=8, max_num_batched_tokens=8192, kv_cache_tokens=100_000, max_model_len=1024)
    mixed = Workload(4, 8, 1, 1, lengths=((100, 10), (900, 50), (2000, 10)))
    assert [mixed.request(i) for i in range(4)] == [(100, 10), (900, 50), (2000, 10), (100, 10)]
    result = simulate(limits, mixed, linear_step)
    # The third and the sixth request (2,000-token prompts) do not fit the context: refused, the others served.
    assert result["failed"] == 2 and result["completed"] == 6
    assert result["output_throughput"] * result["duration"] == pytest.approx(3 * 10 + 3 * 50)
    # Long prompts cost time to first token that the fixed short lengths never show.
    short = simulate(limits, Workload(4, 8, 100, 10), linear_step)
    assert result["p95_ttft_ms"] > 2 * short["p95_ttft_ms"]


@pytest.mark.parametrize(
    ("limits", "workload"),
    [
        (EngineLimits(256, 8192, 1_000_000, 4096), Workload(64, 256, 1024, 128)),  # decode runs between arrivals
        (EngineLimits(16, 512, 1_000_000, 4096), Workload(64, 128, 600, 50)),  # a full batch with a queue
        (EngineLimits(64, 8192, 8192, 2048), Workload(32, 64, 500, 300)),  # preemption
    ],
)
def test_skipping_ahead_over_decode_only_steps_changes_nothing(limits: EngineLimits, workload: Workload) -> None:
    fast = simulate(limits, workload, linear_step, noise=0.1, seed=5)
    slow = simulate(limits, workload, linear_step, noise=0.1, seed=5, skip_ahead=False)
    assert fast.keys() == slow.keys()
    for key, value in slow.items():
        assert fast[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key


def test_noise_is_seeded_and_of_the_size_asked_for() -> None:
    limits = EngineLimits(max_num_seqs=32, max_num_batched_tokens=2048, kv_cache_tokens=200_000, max_model_len=4096)
    workload = Workload(8, 32, 256, 32)
    exact = simulate(limits, workload, linear_step)["output_throughput"]
    runs = [simulate(limits, workload, linear_step, noise=0.1, seed=seed)["output_throughput"] for seed in range(20)]
    assert runs[3] == simulate(limits, workload, linear_step, noise=0.1, seed=3)["output_throughput"]
    assert len(set(runs)) == 20
    assert all(0.8 * exact < value < 1.25 * exact for value in runs)
    assert max(runs) / min(runs) > 1.05


class TableEstimator:
    """A steady-state model: TTFT grows with the token budget and the load, TPOT with the load; memory per TP."""

    def __init__(self, tp: int) -> None:
        self.tp = tp

    def steady_state(self, concurrency: int, input_len: int, output_len: int, tokens: int, utilization: float):  # type: ignore[no-untyped-def]
        from types import SimpleNamespace

        tpot = (5.0 + 0.2 * concurrency) / self.tp
        ttft = (0.02 * input_len + 0.01 * tokens + concurrency) / self.tp
        return SimpleNamespace(ttft_ms=ttft, tpot_ms=tpot, output_tokens_per_s=concurrency * 1000 / tpot)

    def kv_cache_tokens(self, utilization: float, seqs: int, tokens: int) -> int:
        return 0 if self.tp == 1 else int(200_000 * self.tp * utilization)  # TP=1: the weights fill the GPU


def _model(slo: dict[str, float]):  # type: ignore[no-untyped-def]
    catalog = {"models": [{"name": "m", "source": {"repo": "org/m"}, "slo": slo,
                           "traffic": {"input_tokens": 1000, "output_tokens": 200}}]}  # fmt: skip
    return parse_catalog(catalog).model("m")


def test_the_plan_finds_the_best_config_per_gpu_and_what_does_not_fit() -> None:
    axes = PlanAxes(tensor_parallel_size=(1, 2, 4, 8, 16), max_num_seqs=(64, 256), max_num_batched_tokens=(512, 8192))
    plan = plan_serving(_model({"ttft_p95_ms": 200, "itl_p95_ms": 30}), "h100_sxm", TableEstimator, axes, gpu_quota=4)
    assert {e.tensor_parallel_size for e in plan.estimates} == {1, 2, 4}  # within the quota
    assert all(
        not e.fits and e.note == "weights leave no KV cache" for e in plan.estimates if e.tensor_parallel_size == 1
    )
    best = plan.best
    assert best is not None and best.tensor_parallel_size == 2 and best.max_num_batched_tokens == 512
    assert best.ttft_ms <= 200 and best.tpot_ms <= 30 and best.concurrency <= best.max_num_seqs
    assert "best start TP=2" in plan.verdict
    frame = plan.frame()
    assert len(frame) == len(plan.estimates) and frame["fits"].sum() == 8


def test_an_slo_no_config_meets_is_reported_with_the_nearest_option() -> None:
    axes = PlanAxes(tensor_parallel_size=(2, 4), max_num_seqs=(64,), max_num_batched_tokens=(512, 8192))
    plan = plan_serving(_model({"ttft_p95_ms": 5, "itl_p95_ms": 1}), "h100_sxm", TableEstimator, axes, gpu_quota=8)
    assert plan.best is None and plan.nearest is not None
    assert plan.nearest.tensor_parallel_size == 4 and plan.nearest.max_num_batched_tokens == 512
    assert "no config meets the SLO" in plan.verdict and "slo.ttft_p95_ms >= 7" in plan.verdict


def test_predicted_vs_measured_gives_a_ratio_per_level() -> None:
    import pandas as pd

    predicted = pd.DataFrame({"concurrency": [1.0, 8.0], "predicted_output_throughput": [100.0, 400.0],
                              "predicted_ttft_ms": [50.0, 80.0], "predicted_tpot_ms": [10.0, 20.0]})  # fmt: skip
    measured = pd.DataFrame({"concurrency": [1.0, 8.0], "output_throughput": [80.0, 400.0],
                             "p50_ttft_ms": [60.0, 80.0], "p50_tpot_ms": [10.0, 30.0]})  # fmt: skip
    frame = predicted_vs_measured(predicted, measured)
    assert list(frame["ratio_output_throughput"]) == [0.8, 1.0]
    assert list(frame["ratio_tpot_ms"]) == [1.0, 1.5]


def _noisy(surface: dict[float, float], noise: float, seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)

    def evaluate(candidate: dict[str, float]) -> Trial:
        value = surface[candidate.get("max_num_seqs", 0.0)] * (1 + rng.uniform(-noise, noise))
        return Trial(dict(candidate), value)

    return evaluate


SURFACE = {0.0: 100.0, 8.0: 100.0, 16.0: 120.0, 32.0: 150.0, 64.0: 155.0, 128.0: 150.0, 256.0: 140.0}


def test_the_noise_aware_search_adopts_a_real_gain_with_an_interval_above_the_margin() -> None:
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0, 64.0, 128.0, 256.0)})
    outcome = noise_aware_search(space, _noisy(SURFACE, 0.05, 1), {"max_num_seqs": 16.0}, current={}, margin=0.2)
    assert outcome.winner is not None and outcome.winner.candidate["max_num_seqs"] in (32.0, 64.0, 128.0)
    low, high = outcome.gain_interval
    assert 0.2 <= low <= outcome.gain <= high and outcome.adopted
    assert len(outcome.baseline) == 3 and len(outcome.winner_goodputs) >= 3
    assert outcome.trials == len(outcome.result.trials)


def test_the_noise_aware_search_does_not_adopt_noise() -> None:
    flat = dict.fromkeys(SURFACE, 100.0)
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0, 64.0, 128.0, 256.0)})
    adopted = [
        noise_aware_search(space, _noisy(flat, 0.10, seed), {"max_num_seqs": 32.0}, current={}, margin=0.1).adopted
        for seed in range(20)
    ]
    assert not any(adopted)  # a lucky single trial of +10 % never clears the margin


def test_spread_and_interval() -> None:
    assert relative_spread([90.0, 100.0, 110.0]) == pytest.approx(0.2)
    low, high = gain_interval([120.0, 121.0, 119.0], [100.0, 101.0, 99.0])
    assert 0.17 < low < 0.2 < high < 0.23
    with pytest.raises(ValueError, match="repeats must be at least 2"):
        noise_aware_search(SearchSpace({"max_num_seqs": (8.0,)}), _noisy(SURFACE, 0, 0), {}, repeats=1)


class _ServerStarts(TrialRunner):
    """Counts what a real target pays for: a server start per call, one per ``repeated`` batch."""

    def __init__(self, evaluate: Callable[[dict[str, float]], Trial]) -> None:
        self.evaluate = evaluate
        self.starts: list[tuple[float, int]] = []

    def __call__(self, candidate: Candidate) -> Trial:
        return self.repeated(candidate, 1)[0]

    def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
        self.starts.append((candidate.get("max_num_seqs", 0.0), times))
        return [self.evaluate(dict(candidate)) for _ in range(times)]


def test_the_repeats_of_one_config_are_one_server_start() -> None:
    runner = _ServerStarts(_noisy(SURFACE, 0.05, 3))
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0, 64.0, 128.0, 256.0)})
    outcome = noise_aware_search(space, runner, {"max_num_seqs": 16.0}, current={}, repeats=3, margin=0.2)
    # The current config's and the incumbent's three measurements each come from one start.
    assert runner.starts[:2] == [(0.0, 3), (16.0, 3)]
    assert sum(times for _, times in runner.starts) == outcome.trials
    assert len(runner.starts) < outcome.trials
    # A finalist measured once during the search is topped up to three in one more start.
    assert outcome.winner is not None and len(outcome.winner_goodputs) == 3
    winner = outcome.winner.candidate["max_num_seqs"]
    assert [times for seqs, times in runner.starts if seqs == winner] in ([1, 2], [3])


class _FirstStartSlowed(_ServerStarts):
    """A machine whose load lifts after the first server start (the current config's repeats): those read
    ``factor`` of their speed, what another process finishing does to the trials measured before and after it."""

    def __init__(self, evaluate: Callable[[dict[str, float]], Trial], factor: float) -> None:
        super().__init__(evaluate)
        self.factor = factor

    def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
        factor = self.factor if not self.starts else 1.0
        return [Trial(trial.candidate, trial.goodput * factor) for trial in super().repeated(candidate, times)]


def test_a_load_that_lifted_after_the_current_config_was_measured_is_not_a_gain() -> None:
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0, 64.0)})
    runner = _FirstStartSlowed(lambda candidate: Trial(candidate, 200.0), 0.5)  # a flat surface, noiseless
    outcome = noise_aware_search(space, runner, {"max_num_seqs": 16.0}, current={}, margin=0.1)
    # Against the first measurements the winner is +100 %; measured again after the winner, the current config is
    # as fast as it: it moved by +100 % itself, the gain was the load's, and nothing is adopted.
    assert outcome.baseline == (100.0, 100.0, 100.0) and outcome.confirmation == (200.0, 200.0, 200.0)
    assert outcome.current_moved == pytest.approx(1.0) and outcome.gain_after == pytest.approx(0.0)
    assert outcome.gain == pytest.approx(1.0) and not outcome.adopted
    assert runner.starts[-1] == (0.0, 3) and outcome.trials == sum(times for _, times in runner.starts)


def test_a_real_gain_is_confirmed_against_the_current_config_measured_again() -> None:
    runner = _ServerStarts(_noisy(SURFACE, 0.05, 1))
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0, 64.0, 128.0, 256.0)})
    outcome = noise_aware_search(space, runner, {"max_num_seqs": 16.0}, current={}, margin=0.2)
    assert outcome.adopted and len(outcome.confirmation) == 3 and runner.starts[-1] == (0.0, 3)
    assert min(outcome.confirmation) > 90  # the current config's own goodput (100 ± 5 %), measured last
    assert abs(outcome.current_moved) < 0.1 and outcome.gain_after >= 0.2
    # A search that finds nothing worth adopting does not pay for the confirmation.
    flat = _ServerStarts(_noisy(dict.fromkeys(SURFACE, 100.0), 0.05, 1))
    kept = noise_aware_search(space, flat, {"max_num_seqs": 16.0}, current={}, margin=0.2)
    assert not kept.adopted and kept.confirmation == () and flat.starts.count((0.0, 3)) == 1


def test_a_current_config_that_fails_is_replaced_by_a_winner_that_serves() -> None:
    def evaluate(candidate: dict[str, float]) -> Trial:
        if not candidate:  # the current config: vLLM refuses it
            return Trial(candidate, error="vLLM exited with code 1 while starting: CUDA out of memory")
        return Trial(candidate, 100.0)

    space = SearchSpace({"max_num_seqs": (8.0, 16.0)})
    outcome = noise_aware_search(space, _ServerStarts(evaluate), {"max_num_seqs": 16.0}, current={})
    assert outcome.adopted and outcome.confirmation == (0.0, 0.0, 0.0)  # it failed again, measured after the winner


def test_the_confirmation_costs_little_power_and_stops_most_lifted_loads() -> None:
    space = SearchSpace({"max_num_seqs": (8.0, 16.0, 32.0, 64.0, 128.0)})
    surface = {0.0: 100.0, 8.0: 100.0, 16.0: 110.0, 32.0: 120.0, 64.0: 120.0, 128.0: 110.0}  # +20 %, ±10 % noise
    outcomes = [noise_aware_search(space, _noisy(surface, 0.10, seed), {"max_num_seqs": 16.0}, current={})
                for seed in range(60)]  # fmt: skip
    proposed = sum(bool(outcome.confirmation) for outcome in outcomes)  # what was adopted before the confirmation
    assert sum(outcome.adopted for outcome in outcomes) >= proposed - 6  # 43 of 46 when written

    flat = dict.fromkeys(surface, 100.0)  # noisy, the current config's start 40 % slow
    lifted = [noise_aware_search(space, _FirstStartSlowed(_noisy(flat, 0.10, seed), 0.6), {"max_num_seqs": 16.0},
                                 current={}) for seed in range(60)]  # fmt: skip
    assert all(outcome.confirmation for outcome in lifted)  # each looked like a +67 % gain: all 60 adopted before
    # A winner chosen among noisy configs is lucky by a few per cent; against the second set it rarely clears both.
    assert sum(outcome.adopted for outcome in lifted) <= 9  # 7 of 60 when written


def test_a_runner_that_returns_too_few_repeats_is_an_error() -> None:
    class Short(_ServerStarts):
        def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
            return super().repeated(candidate, times)[:1]

    with pytest.raises(ValueError, match="asked for 3 trials"):
        noise_aware_search(SearchSpace({"max_num_seqs": (8.0,)}), Short(_noisy(SURFACE, 0, 0)), {}, current={})
