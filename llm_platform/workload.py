"""The traffic a model really serves (pure): its request-length distributions, rates and cache behaviour over a
window, as vLLM reports them to Prometheus — what benchmarks, plans and the tuner should be judged on instead of the
catalog's two typical numbers.

vLLM counts every finished request in two histograms (prompt and generation tokens); a :class:`LengthHistogram`
holds one over the window, gives its quantiles as PromQL's ``histogram_quantile`` does (linear within a bucket, so
they read as Grafana shows them), and draws lengths from it with a seed (log-uniform within the bucket drawn by
weight: see :meth:`LengthHistogram.sample`), so that a benchmark can replay the shape. A :class:`TrafficProfile`
adds the request rate (median and peak of the 5-minute rate), the running and waiting requests, the prefix-cache
hit ratio and the finish reasons. With fewer than
:data:`MIN_PROFILE_REQUESTS` finished requests in the window the profile falls back to the catalog's ``traffic``
section and says so: a few requests say nothing about a shape.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from llm_platform.catalog import ModelSpec

#: Finished requests a window needs before its shape is trusted: with fewer, the catalog's traffic section stands in.
#: 200 requests put the p90 of a length distribution within about one bucket of where 10,000 would.
MIN_PROFILE_REQUESTS = 200


@dataclass(frozen=True)
class LengthHistogram:
    """Requests by token length over a window: ``counts[i]`` requests in ``(bounds[i-1], bounds[i]]`` (the first
    bucket from 0), and ``counts[-1]`` above the last bound."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def from_cumulative(cls, cumulative: Mapping[float, float]) -> LengthHistogram:
        """From a Prometheus histogram's cumulative ``le`` counts (``+Inf`` included); a count that decreases with
        ``le`` (a counter reset between the buckets' samples) is clipped, never negative."""
        finite = sorted(bound for bound in cumulative if math.isfinite(bound))
        total = cumulative.get(math.inf, max((cumulative[b] for b in finite), default=0.0))
        counts, below = [], 0.0
        for bound in finite:
            running = max(below, cumulative[bound])
            counts.append(running - below)
            below = running
        counts.append(max(0.0, total - below))
        return cls(tuple(finite), tuple(counts))

    @classmethod
    def point(cls, tokens: int) -> LengthHistogram:
        """Every request ``tokens`` long (the catalog's typical length, when no traffic was measured): one bucket
        of width one ending there."""
        return cls((float(tokens - 1), float(tokens)), (0.0, 1.0, 0.0))

    @property
    def total(self) -> float:
        """Requests counted; 0 for a histogram without a finite bound (it says nothing about lengths)."""
        return sum(self.counts) if self.bounds else 0.0

    @property
    def edges(self) -> tuple[tuple[float, float], ...]:
        """Each bucket's ``(lower, upper)`` bound, beside :attr:`counts` (the overflow bucket: the last bound twice)."""
        last = self.bounds[-1] if self.bounds else 0.0
        return tuple(zip((0.0, *self.bounds), (*self.bounds, last), strict=True))

    def above(self, limit: float) -> float:
        """Requests in buckets wholly above ``limit`` tokens (for the context: requests vLLM refused or cut)."""
        return sum(count for (lower, _), count in zip(self.edges, self.counts, strict=True) if lower >= limit)

    def mean(self) -> float:
        """The mean length of what :meth:`sample` draws (each bucket at its log-uniform mean, the overflow bucket at
        the last bound), so that a plan sizes for the lengths its benchmark replays; NaN when empty. The midpoint
        would put a heavy-tailed traffic's mean about 10 % long (a bucket's mass leans to its lower end)."""
        total = self.total
        if total <= 0:
            return math.nan
        return sum(c * _bucket_mean(lo, up) for (lo, up), c in zip(self.edges, self.counts, strict=True)) / total

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, interpolated within its bucket as ``histogram_quantile`` does; NaN when empty."""
        total = self.total
        if total <= 0 or not self.bounds:
            return math.nan
        rank, below = q * total, 0.0
        for index, count in enumerate(self.counts):
            if count > 0 and below + count >= rank:
                if index == len(self.bounds):  # above the last bound: its value is the last bound
                    return self.bounds[-1]
                lower = self.bounds[index - 1] if index else 0.0
                return lower + (self.bounds[index] - lower) * (rank - below) / count
            below += count
        return self.bounds[-1]

    def cdf(self, tokens: float) -> float:
        """The share of requests at most ``tokens`` long, linear within a bucket as :meth:`quantile` reads it (the
        overflow bucket counts at the last bound); NaN when empty."""
        total = self.total
        if total <= 0:
            return math.nan
        below = 0.0
        for (lower, upper), count in zip(self.edges, self.counts, strict=True):
            if tokens >= upper:
                below += count
            elif tokens > lower:
                below += count * (tokens - lower) / (upper - lower)
        return min(1.0, below / total)

    def sample(self, n: int, rng: random.Random, *, cap: int) -> list[int]:
        """``n`` lengths drawn from the distribution: a bucket by its weight, then an integer log-uniform within it
        (at least 1, at most ``cap``; above the last bound, the last bound). Buckets wholly above ``cap`` are left
        out: those requests were refused, a replay does not send them.

        Log-uniform, not uniform: vLLM's buckets are log-spaced (1-2-5 per decade) and lengths heavy-tailed, so
        within a bucket the mass leans to its lower end. On log-normal traffic (prompts median 80, sigma 1) uniform
        draws lengthened the mean output by 12 % and the mean prompt by 10 %, log-uniform ones by 4 % and 5 %; a
        replay's tokens/s and prefill follow the means. (:meth:`quantile` stays linear, as PromQL reads a bucket.)"""
        edges = self.edges
        weights = [count if lower < cap else 0.0 for (lower, _), count in zip(edges, self.counts, strict=True)]
        if not self.bounds or sum(weights) <= 0:
            raise ValueError(f"the length histogram has nothing to draw from at or below {cap} tokens")
        buckets = rng.choices(range(len(self.counts)), weights=weights, k=n)
        spans = [_integer_span(lower, upper) for lower, upper in edges]
        return [max(1, min(cap, _draw(rng, spans[b], edges[b][1]))) for b in buckets]


def _integer_span(lower: float, upper: float) -> tuple[int, int] | None:
    """The integer lengths a bucket holds, above its lower bound up to its upper bound (Prometheus' ``le``; at
    least 1); None when it holds none (the overflow bucket, or bounds closer than one token)."""
    low, high = max(1, math.floor(lower) + 1), math.floor(upper)
    return (low, high) if high >= low else None


def _draw(rng: random.Random, span: tuple[int, int] | None, upper: float) -> int:
    """A length from one bucket: log-uniform over its integers, or its upper bound when it holds none."""
    return _log_uniform(rng, *span) if span is not None else math.floor(upper)


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    """An integer in ``[low, high]`` (``low`` >= 1), each equal ratio of the range as likely as any other."""
    return min(high, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1)))))


def _bucket_mean(lower: float, upper: float) -> float:
    """The mean of :func:`_log_uniform` over a bucket's integers ``L..H``: ``k`` comes with probability
    ``ln((k+1)/k) / ln((H+1)/L)``, and the sum of ``k ln((k+1)/k)`` telescopes to
    ``H ln(H+1) - L ln L - ln(H!/L!)``. A bucket without integers: its upper bound (as :meth:`sample` draws)."""
    span = _integer_span(lower, upper)
    if span is None:
        return max(1, math.floor(upper))
    low, high = span
    weighted = high * math.log(high + 1) - low * math.log(low) - (math.lgamma(high + 1) - math.lgamma(low + 1))
    return weighted / math.log((high + 1) / low)


def span(seconds: float) -> str:
    """A window's length as people say it: ``24 h``, ``1.5 h``, ``5 min``, ``45 s``."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.0f} s"


@dataclass(frozen=True)
class ServedNameFigures:
    """One served name's part of a model's traffic (the base's or a LoRA adapter's), as the gate in front of the
    engine measured it: vLLM labels every metric with the engine's name, whichever adapter a request named."""

    requests: float
    error_ratio: float = math.nan
    """Share of the answers that were server errors (5xx)."""
    first_byte_p95_ms: float = math.nan
    """p95 from arrival to the answer's first byte (a stream's first token: TTFT as the client sees it)."""
    duration_p95_ms: float = math.nan


@dataclass(frozen=True)
class TrafficProfile:
    """What one model served over ``window_s`` seconds (``source: catalog``: too little was measured, and these are
    the catalog's typical lengths)."""

    model: str
    window_s: float
    source: Literal["prometheus", "catalog"]
    requests: float
    prompt: LengthHistogram
    generation: LengthHistogram
    rate_median_rps: float = math.nan
    """Median of the 5-minute request rate over the window."""
    rate_peak_rps: float = math.nan
    """Highest 5-minute request rate in the window (all servers of the model together)."""
    rate_peak_per_engine_rps: float = math.nan
    """Highest 5-minute request rate per server in the window (the model's rate over its engines at the time): what
    the smoke benchmark's peak-rate run sends one candidate server."""
    running_mean: float = math.nan
    waiting_mean: float = math.nan
    prefix_cache_hit_ratio: float = math.nan
    finish_reasons: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    rate_series: tuple[tuple[float, float], ...] = ()
    """``(time, requests/s)`` over the window (the 5-minute rate): what the plot shows."""
    served: Mapping[str, ServedNameFigures] = field(default_factory=dict)
    """Each served name's requests and latency (base and adapters share the engine, so the lengths and rates
    above are the engine's: what its knobs are tuned for)."""

    @classmethod
    def from_catalog(cls, model: ModelSpec, window_s: float, requests: float, note: str) -> TrafficProfile:
        """The catalog's ``traffic`` section as a profile, with the reason it stands in."""
        return cls(
            model=model.name, window_s=window_s, source="catalog", requests=requests,
            prompt=LengthHistogram.point(model.traffic.input_tokens),
            generation=LengthHistogram.point(model.traffic.output_tokens), notes=(note,),
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """The profile as JSON (NaN as null): what its materialization records for the benchmarks that replay it."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "model": self.model, "window_s": self.window_s, "source": self.source, "requests": self.requests,
            "prompt": {"bounds": list(self.prompt.bounds), "counts": list(self.prompt.counts)},
            "generation": {"bounds": list(self.generation.bounds), "counts": list(self.generation.counts)},
            **{name: number(getattr(self, name)) for name in _SCALARS},
            "finish_reasons": dict(self.finish_reasons), "notes": list(self.notes),
            "rate_series": [list(point) for point in self.rate_series],
            "served": {name: {key: number(value) for key, value in asdict(figures).items()}
                       for name, figures in self.served.items()},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrafficProfile:
        """:meth:`as_json`'s output back (a ``ValueError``/``KeyError``/``TypeError`` when it is not one)."""

        def histogram(part: Mapping[str, Any]) -> LengthHistogram:
            bounds, counts = tuple(float(b) for b in part["bounds"]), tuple(float(c) for c in part["counts"])
            if len(counts) != len(bounds) + 1 or any(c < 0 for c in counts) or list(bounds) != sorted(bounds):
                raise ValueError("not a length histogram")
            return LengthHistogram(bounds, counts)

        source = data["source"]
        if source not in ("prometheus", "catalog"):
            raise ValueError(f"unknown profile source {source!r}")
        return cls(
            model=str(data["model"]), window_s=float(data["window_s"]), source=source,
            requests=float(data["requests"]), prompt=histogram(data["prompt"]),
            generation=histogram(data["generation"]),
            **{name: math.nan if data.get(name) is None else float(data[name]) for name in _SCALARS},
            finish_reasons={str(k): float(v) for k, v in dict(data.get("finish_reasons") or {}).items()},
            notes=tuple(str(note) for note in data.get("notes") or ()),
            rate_series=tuple((float(t), float(v)) for t, v in data.get("rate_series") or ()),
            served={str(name): ServedNameFigures(**{key: math.nan if value is None else float(value)
                                                    for key, value in dict(figures).items()})
                    for name, figures in dict(data.get("served") or {}).items()},
        )  # fmt: skip

    def quantiles(self) -> dict[str, dict[str, float]]:
        """p50/p90/p99 of both lengths (the table the asset shows)."""
        return {
            name: {f"p{round(q * 100)}": histogram.quantile(q) for q in (0.5, 0.9, 0.99)}
            for name, histogram in (("prompt_tokens", self.prompt), ("generation_tokens", self.generation))
        }

    @property
    def described(self) -> str:
        """One line naming the profile (what a benchmark's metadata says it replayed)."""
        lengths = self.quantiles()
        return (
            f"{self.source} profile of '{self.model}' over {span(self.window_s)}: {self.requests:.0f} requests, "
            f"prompt p50 {lengths['prompt_tokens']['p50']:.0f} / p99 {lengths['prompt_tokens']['p99']:.0f}, "
            f"output p50 {lengths['generation_tokens']['p50']:.0f} / p99 {lengths['generation_tokens']['p99']:.0f} "
            "tokens"
        )


#: The profile's single-valued fields (NaN where not measured).
_SCALARS = (
    "rate_median_rps",
    "rate_peak_rps",
    "rate_peak_per_engine_rps",
    "running_mean",
    "waiting_mean",
    "prefix_cache_hit_ratio",
)


@dataclass(frozen=True)
class MeasuredTraffic:
    """What Prometheus answered for one model over a window (NaN: no series)."""

    prompt_cumulative: Mapping[float, float]
    generation_cumulative: Mapping[float, float]
    rate_median_rps: float
    rate_peak_rps: float
    running_mean: float
    waiting_mean: float
    prefix_cache_queries: float
    prefix_cache_hits: float
    finish_reasons: Mapping[str, float]
    rate_series: tuple[tuple[float, float], ...] = ()
    """``(time, requests/s)`` over the window, every 5 minutes (the plot's)."""
    served: Mapping[str, ServedNameFigures] = field(default_factory=dict)
    """Per served name (the gate's figures); empty where no gate reported any."""
    rate_peak_per_engine_rps: float = math.nan


def build_profile(model: ModelSpec, window_s: float, measured: MeasuredTraffic) -> TrafficProfile:
    """The model's profile from what was measured; the catalog's traffic section when the window holds fewer than
    :data:`MIN_PROFILE_REQUESTS` finished requests or no length histogram; bad data is a note, never an error."""
    prompt = LengthHistogram.from_cumulative(measured.prompt_cumulative)
    generation = LengthHistogram.from_cumulative(measured.generation_cumulative)
    requests = min(prompt.total, generation.total)
    if requests < MIN_PROFILE_REQUESTS:
        return TrafficProfile.from_catalog(
            model, window_s, requests,
            f"{requests:.0f} finished requests in the window (fewer than {MIN_PROFILE_REQUESTS}): the catalog's "
            f"traffic section ({model.traffic.input_tokens} in / {model.traffic.output_tokens} out) stands in",
        )  # fmt: skip
    notes = []
    limit = model.serving.max_model_len
    beyond = prompt.above(limit)
    if beyond > 0:
        notes.append(
            f"{beyond:.0f} requests had prompts longer than max_model_len {limit} (refused by the engine): "
            "they are left out of what a benchmark replays"
        )
    hit_ratio = (
        measured.prefix_cache_hits / measured.prefix_cache_queries
        if measured.prefix_cache_queries and measured.prefix_cache_queries > 0
        else math.nan
    )
    return TrafficProfile(
        model=model.name, window_s=window_s, source="prometheus", requests=requests, prompt=prompt,
        generation=generation, rate_median_rps=measured.rate_median_rps, rate_peak_rps=measured.rate_peak_rps,
        rate_peak_per_engine_rps=measured.rate_peak_per_engine_rps,
        running_mean=measured.running_mean, waiting_mean=measured.waiting_mean, prefix_cache_hit_ratio=hit_ratio,
        finish_reasons=dict(measured.finish_reasons), notes=tuple(notes), rate_series=tuple(measured.rate_series),
        served=dict(measured.served),
    )  # fmt: skip


def planned_traffic(model: ModelSpec, profile: TrafficProfile | None) -> tuple[ModelSpec, str]:
    """``model`` with the typical lengths a serving plan sizes the engine for taken from a measured profile (its
    mean prompt and output lengths: AIConfigurator's steady state takes one of each), and what was planned for."""
    traffic = model.traffic
    if profile is None or profile.source != "prometheus":
        return model, f"the catalog's traffic: {traffic.input_tokens} in / {traffic.output_tokens} out"
    measured = traffic.model_copy(update={"input_tokens": max(1, round(profile.prompt.mean())),
                                          "output_tokens": max(1, round(profile.generation.mean()))})  # fmt: skip
    return model.model_copy(update={"traffic": measured}), (
        f"the measured traffic's means ({measured.input_tokens} in / {measured.output_tokens} out) of the "
        f"{profile.described}"
    )


def replay_lengths(profile: TrafficProfile, n: int, *, seed: int, max_model_len: int) -> tuple[tuple[int, int], ...]:
    """``n`` ``(prompt, output)`` token lengths drawn from ``profile`` with ``seed`` (the same seed, the same
    requests): prompts that fit the context with at least one output token, outputs cut to what the context leaves
    (as the engine would stop them)."""
    rng = random.Random(seed)  # noqa: S311 - benchmark lengths, seeded so that runs are comparable
    prompts = profile.prompt.sample(n, rng, cap=max_model_len - 1)
    outputs = profile.generation.sample(n, rng, cap=max_model_len - 1)
    return tuple(
        (prompt, max(1, min(output, max_model_len - prompt))) for prompt, output in zip(prompts, outputs, strict=True)
    )


def window_problem(window_s: float, retention_s: float | None) -> str | None:
    """Why a profile window cannot be read (one line), or None: longer than what Prometheus keeps, or not positive."""
    if not window_s > 0:
        return f"traffic profile window must be positive (got {window_s:g} s)"
    if retention_s is not None and window_s > retention_s:
        return (
            f"traffic profile window {window_s / 3600:g} h is longer than Prometheus keeps ({retention_s / 3600:g} h "
            "of retention): shorten the window or raise --storage.tsdb.retention.time"
        )
    return None


def length_distance(a: LengthHistogram, b: LengthHistogram) -> float:
    """The two-sample Kolmogorov-Smirnov distance between two length distributions: the largest gap between their
    cumulative shares, read at every bucket bound of either (where histograms know their shares). 0: the same
    shape; 1: no request of one is as long as any of the other. NaN when either is empty."""
    if a.total <= 0 or b.total <= 0:
        return math.nan
    points = sorted({*a.bounds, *b.bounds})
    return max(abs(a.cdf(x) - b.cdf(x)) for x in points)


def ks_critical(n: float, m: float, alpha: float) -> float:
    """The distance two samples of ``n`` and ``m`` requests from one distribution exceed with probability
    ``alpha`` (the two-sample KS test's asymptotic critical value)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


@dataclass(frozen=True)
class ShapeLimits:
    """When live traffic counts as having moved away from the shape the deployed config was tuned and benchmarked
    on (the profile it replayed), so that ``traffic_shape_sensor`` requests a retune on the new one."""

    window_s: int = 2 * 3600
    """The live window compared with the baseline, read as two halves (1 h each): both must have moved, so a burst
    of long documents for twenty minutes is not a new shape, two hours of them are."""
    min_distance: float = 0.2
    """The least KS distance that counts: a fifth of the requests on the other side of some length. Smaller moves
    shift a tuned ``max_num_batched_tokens`` or ``max_num_seqs`` optimum by less than the tuner's noise margin."""
    alpha: float = 0.001
    """The chance that two samples of one shape look this far apart: the distance must also exceed the KS critical
    value at this level for the requests counted (with 200 requests per side about 0.195), so a thin sample's
    chance gap never retunes."""
    min_requests: int = MIN_PROFILE_REQUESTS
    """Finished requests each half must hold (the profile's own floor: fewer say nothing about a shape)."""
    cooldown_s: float = 6 * 3600
    """At least this long between two retunes of one model (a retune costs GPU hours of trials)."""
    max_per_day: int = 2
    """At most this many retunes of one model in 24 h."""


@dataclass(frozen=True)
class ShapeVerdict:
    """Whether the live shape moved away from the baseline, why, and each half's distances (what the skip says)."""

    moved: bool
    reason: str
    distances: Mapping[str, float] = field(default_factory=dict)


def shape_moved(
    baseline: TrafficProfile,
    halves: tuple[tuple[LengthHistogram, LengthHistogram], tuple[LengthHistogram, LengthHistogram]],
    limits: ShapeLimits = ShapeLimits(),
) -> ShapeVerdict:
    """Whether both halves of the live window (each a ``(prompt, generation)`` pair, earlier half first) moved away
    from ``baseline``'s shape in the same length: beyond :attr:`ShapeLimits.min_distance` and beyond chance for the
    requests counted. A catalog baseline (nothing was measured) or a half with too few requests is never a move."""
    if baseline.source != "prometheus":
        return ShapeVerdict(False, "no measured profile to compare with (the catalog's lengths stood in)")
    thin = [min(p.total, g.total) for p, g in halves]
    if min(thin) < limits.min_requests:
        return ShapeVerdict(False, f"too little traffic: {min(thin):.0f} requests in an hour of the window "
                                   f"(at least {limits.min_requests})")  # fmt: skip
    distances: dict[str, float] = {}
    moved_in = []
    for kind, reference, index in (("prompt", baseline.prompt, 0), ("output", baseline.generation, 1)):
        needed = [max(limits.min_distance, ks_critical(reference.total, half[index].total, limits.alpha))
                  for half in halves]  # fmt: skip
        gaps = [length_distance(reference, half[index]) for half in halves]
        distances.update({f"{kind}_earlier": round(gaps[0], 3), f"{kind}_recent": round(gaps[1], 3)})
        if all(gap >= need for gap, need in zip(gaps, needed, strict=True)):
            moved_in.append(f"{kind} lengths (KS {gaps[0]:.2f} and {gaps[1]:.2f} >= {max(needed):.2f})")
    last = span(limits.window_s)
    if moved_in:
        return ShapeVerdict(True, f"{' and '.join(moved_in)} moved away from the {baseline.described} in both halves "
                                  f"of the last {last}", distances)  # fmt: skip
    return ShapeVerdict(False, f"the shape holds over the last {last} (KS distances {distances}, moving needs "
                               f">= {limits.min_distance:g} in both halves)", distances)  # fmt: skip
