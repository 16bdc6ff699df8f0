"""The traffic profile's pure core: histograms from Prometheus' cumulative buckets, quantiles as
``histogram_quantile`` computes them, seeded draws that reproduce the shape, the catalog fallback below the evidence
floor, and the notes for refused lengths and impossible windows."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from llm_platform.catalog import parse_catalog
from llm_platform.engine.vllm import request_length_buckets
from llm_platform.workload import (
    MIN_PROFILE_REQUESTS,
    LengthHistogram,
    MeasuredTraffic,
    ShapeLimits,
    build_profile,
    ks_critical,
    length_distance,
    replay_lengths,
    shape_moved,
    window_problem,
)

TRAFFIC = {"input_tokens": 700, "output_tokens": 90}
MODEL = parse_catalog(
    {"models": [{"name": "m", "source": {"repo": "a/b"}, "serving": {"max_model_len": 4096}, "traffic": TRAFFIC}]}
).model("m")
#: 1,000 requests: 100 up to 100 tokens, 600 in (100, 500], 280 in (500, 2000], 20 in (2000, 5000], none above.
CUMULATIVE = {100.0: 100.0, 500.0: 700.0, 2000.0: 980.0, 5000.0: 1000.0, math.inf: 1000.0}


def _measured(prompt: dict[float, float], generation: dict[float, float] | None = None) -> MeasuredTraffic:
    return MeasuredTraffic(prompt, generation or prompt, 1.5, 4.0, 3.0, 0.5, 400.0, 100.0, {"stop": 900, "length": 100})


def test_buckets_and_quantiles_as_prometheus_computes_them() -> None:
    histogram = LengthHistogram.from_cumulative(CUMULATIVE)
    assert histogram.counts == (100, 600, 280, 20, 0) and histogram.total == 1000
    # histogram_quantile(0.5): rank 500 falls in (100, 500] at 400/600 of it.
    assert histogram.quantile(0.5) == pytest.approx(100 + 400 * 400 / 600)
    assert histogram.quantile(0.99) == pytest.approx(2000 + 3000 * 10 / 20)
    assert math.isnan(LengthHistogram.from_cumulative({math.inf: 0.0}).quantile(0.5))
    # A bucket sampled after a counter reset reads lower than the one below it: clipped, never negative.
    assert min(LengthHistogram.from_cumulative({10.0: 5.0, 20.0: 3.0, math.inf: 9.0}).counts) >= 0


def test_seeded_draws_reproduce_the_shape_and_respect_the_cap() -> None:
    histogram = LengthHistogram.from_cumulative(CUMULATIVE)
    first = histogram.sample(5000, random.Random(7), cap=4096)
    assert first == histogram.sample(5000, random.Random(7), cap=4096)  # a seed makes runs comparable
    assert first != histogram.sample(5000, random.Random(8), cap=4096)
    assert min(first) >= 1 and max(first) <= 4096
    share_short = sum(1 for n in first if n <= 100) / len(first)
    assert share_short == pytest.approx(0.1, abs=0.02)
    # Log-uniform within a bucket: rank 500 is 400/600 of the way through (100, 500] on a log scale.
    assert statistics.median(first) == pytest.approx(100 * 5 ** (400 / 600), rel=0.05)
    with pytest.raises(ValueError, match="nothing to draw from at or below 10 tokens"):
        LengthHistogram.from_cumulative({math.inf: 0.0}).sample(1, random.Random(0), cap=10)
    # Requests longer than the cap were refused: a replay draws none of them.
    refused = LengthHistogram.from_cumulative({100.0: 10.0, 8000.0: 1000.0, math.inf: 1000.0})
    assert set(refused.sample(200, random.Random(1), cap=100)) <= set(range(1, 101))


def test_draws_from_log_spaced_buckets_keep_a_heavy_tailed_traffic_s_mean_and_tail() -> None:
    """Log-normal lengths counted in vLLM's buckets and drawn again: the mean and the p95 within 6 % and 15 % of the
    traffic's own (uniform draws within a bucket were 10-12 % long on the mean)."""
    rng = random.Random(0)
    for median, sigma in ((80, 1.0), (24, 0.7)):
        traffic = [max(1, min(1500, round(rng.lognormvariate(math.log(median), sigma)))) for _ in range(20_000)]
        bounds = [float(bound) for bound in request_length_buckets(2048)]
        histogram = LengthHistogram.from_cumulative(
            {**{bound: float(sum(1 for n in traffic if n <= bound)) for bound in bounds}, math.inf: len(traffic)}
        )
        drawn = histogram.sample(20_000, random.Random(1), cap=2047)
        assert statistics.mean(drawn) == pytest.approx(statistics.mean(traffic), rel=0.06)
        p95 = statistics.quantiles(drawn, n=20)[-1]
        assert p95 == pytest.approx(statistics.quantiles(traffic, n=20)[-1], rel=0.15)


def test_a_profile_from_enough_traffic_names_its_figures() -> None:
    profile = build_profile(MODEL, 86400, _measured(CUMULATIVE))
    assert profile.source == "prometheus" and profile.requests == 1000 and not profile.notes
    assert profile.prefix_cache_hit_ratio == pytest.approx(0.25)
    assert profile.rate_peak_rps == 4.0 and dict(profile.finish_reasons) == {"stop": 900, "length": 100}
    assert profile.described.startswith("prometheus profile of 'm' over 24 h: 1000 requests, prompt p50 367 / p99")


def test_too_little_traffic_falls_back_to_the_catalog_and_says_so() -> None:
    few = {100.0: 10.0, math.inf: MIN_PROFILE_REQUESTS - 1.0}
    profile = build_profile(MODEL, 3600, _measured(few))
    assert profile.source == "catalog"
    assert profile.notes == (
        f"{MIN_PROFILE_REQUESTS - 1} finished requests in the window (fewer than {MIN_PROFILE_REQUESTS}): the "
        "catalog's traffic section (700 in / 90 out) stands in",
    )
    assert profile.prompt.quantile(0.5) == pytest.approx(699.5)
    assert profile.prompt.sample(3, random.Random(0), cap=4096) == [700, 700, 700]
    assert build_profile(MODEL, 3600, _measured({})).source == "catalog"  # no histogram at all: a note too


def test_prompts_beyond_the_context_are_a_note() -> None:
    profile = build_profile(MODEL, 3600, _measured({**CUMULATIVE, 8000.0: 1050.0, math.inf: 1050.0}))
    assert profile.notes == (
        "50 requests had prompts longer than max_model_len 4096 (refused by the engine): they are left out of what "
        "a benchmark replays",
    )


@pytest.mark.parametrize(
    ("window_s", "retention_s", "problem"),
    [
        (86400, 15 * 86400, None),
        (86400, None, None),
        (30 * 86400, 15 * 86400, "traffic profile window 720 h is longer than Prometheus keeps (360 h of retention)"),
        (0, None, "traffic profile window must be positive (got 0 s)"),
    ],
)
def test_a_window_prometheus_cannot_answer_is_one_line(
    window_s: float, retention_s: float | None, problem: str | None
) -> None:
    found = window_problem(window_s, retention_s)
    assert found == problem if problem is None else (found is not None and found.startswith(problem))


def test_replayed_lengths_are_seeded_and_fit_the_context() -> None:
    profile = build_profile(MODEL, 3600, _measured({**CUMULATIVE, 8000.0: 1050.0, math.inf: 1050.0}))
    first = replay_lengths(profile, 300, seed=3, max_model_len=4096)
    assert first == replay_lengths(profile, 300, seed=3, max_model_len=4096)
    assert first != replay_lengths(profile, 300, seed=4, max_model_len=4096)
    assert all(prompt >= 1 and output >= 1 and prompt + output <= 4096 for prompt, output in first)
    # The refused prompts (above 4,096) are not replayed; the long tail up to the context is.
    assert max(prompt for prompt, _ in first) > 2000


def test_the_mean_length_is_the_mean_of_what_a_replay_draws() -> None:
    histogram = LengthHistogram.from_cumulative(CUMULATIVE)
    draws = histogram.sample(100_000, random.Random(5), cap=10**6)
    assert histogram.mean() == pytest.approx(sum(draws) / len(draws), rel=0.01)
    # Below the buckets' midpoints: within a log-spaced bucket the mass leans to its lower end.
    midpoints = (100 * 50 + 600 * 300 + 280 * 1250 + 20 * 3500) / 1000
    assert histogram.mean() < 0.9 * midpoints
    assert LengthHistogram.point(100).mean() == pytest.approx(100)  # the catalog's length, exactly
    assert math.isnan(LengthHistogram.from_cumulative({math.inf: 0.0}).mean())


def _scaled(cumulative: dict[float, float], requests: float) -> LengthHistogram:
    """The same shape as ``cumulative`` with ``requests`` requests."""
    return LengthHistogram.from_cumulative({le: n * requests / cumulative[math.inf] for le, n in cumulative.items()})


#: Short chat turns: 800 of 1,000 prompts up to 100 tokens (vLLM's buckets 1, 2, 5, 10, 20, 50, 100, 200, 500, ...).
SHORT = {50.0: 400.0, 100.0: 800.0, 500.0: 980.0, 2000.0: 1000.0, 5000.0: 1000.0, math.inf: 1000.0}
#: Long documents: most prompts in (500, 2000].
LONG = {50.0: 20.0, 100.0: 50.0, 500.0: 150.0, 2000.0: 900.0, 5000.0: 1000.0, math.inf: 1000.0}


def test_the_distance_between_shapes_is_the_largest_gap_of_their_cumulative_shares() -> None:
    short, long = LengthHistogram.from_cumulative(SHORT), LengthHistogram.from_cumulative(LONG)
    assert length_distance(short, _scaled(SHORT, 50)) == pytest.approx(0)  # the shape, not the count
    assert length_distance(short, long) == pytest.approx(0.83)  # at 500 tokens: 98 % of one, 15 % of the other
    assert length_distance(long, short) == length_distance(short, long)
    # A catalog's point length against a measured shape: read at both's bounds, linear within a bucket.
    assert length_distance(LengthHistogram.point(100), short) == pytest.approx(0.792)  # at 99: 0 against 79.2 %
    assert math.isnan(length_distance(short, LengthHistogram.from_cumulative({math.inf: 0.0})))
    assert short.cdf(75) == pytest.approx(0.6) and short.cdf(10_000) == 1 and short.cdf(0) == 0
    # The chance gap between two samples of one shape shrinks with their size.
    assert ks_critical(200, 200, 0.001) == pytest.approx(0.195, abs=0.001)
    assert ks_critical(10_000, 10_000, 0.001) < 0.03


def test_a_shape_moves_only_when_both_halves_left_the_baseline_by_more_than_chance() -> None:
    baseline = build_profile(MODEL, 86400, _measured(SHORT, SHORT))
    short, long = (LengthHistogram.from_cumulative(c) for c in (SHORT, LONG))
    moved = shape_moved(baseline, ((long, short), (long, short)))
    assert moved.moved and moved.reason.startswith("prompt lengths (KS 0.83 and 0.83 >= 0.20) moved away from")
    assert moved.distances["output_recent"] == pytest.approx(0)
    # Stationary: no move, and the skip says how far each half is.
    held = shape_moved(baseline, ((short, short), (_scaled(SHORT, 400), short)))
    assert not held.moved and "the shape holds over the last 2 h" in held.reason
    # A burst of documents in the recent half only is not a new shape yet.
    assert not shape_moved(baseline, ((short, short), (long, short))).moved
    # Thin halves are no evidence, however far apart.
    thin = shape_moved(baseline, ((_scaled(LONG, 150), short), (long, short)))
    assert not thin.moved and thin.reason.startswith("too little traffic: 150 requests")
    # A gap above the minimum but within chance for the requests counted is no move either.
    slight = {50.0: 300.0, 100.0: 700.0, 500.0: 980.0, 2000.0: 1000.0, 5000.0: 1000.0, math.inf: 1000.0}
    assert length_distance(short, LengthHistogram.from_cumulative(slight)) == pytest.approx(0.1)
    limits = ShapeLimits(min_distance=0.05)
    few = _scaled(slight, 250)
    assert not shape_moved(baseline, ((few, short), (few, short)), limits).moved  # critical value ~0.13 at 250
    many = _scaled(slight, 5000)
    assert shape_moved(baseline, ((many, short), (many, short)), limits).moved
    # Nothing measured to compare with: never a move.
    catalog = build_profile(MODEL, 86400, _measured({math.inf: 0.0}))
    assert not shape_moved(catalog, ((long, long), (long, long))).moved
