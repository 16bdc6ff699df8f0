"""What a smoke benchmark runs, derived from the catalog, and the ``vllm bench serve`` arguments for it.

The same argument list is used locally (``python -m llm_platform.engine.vllm_bench``, a shim around
``vllm.benchmarks.serve`` because the CPU wheel breaks the ``vllm`` console script) and in the Kubernetes benchmark
Job (``vllm bench serve`` in the vLLM image), so both paths produce the same result JSON for one parser.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llm_platform.catalog import ModelSpec
from llm_platform.engine import Engine

#: Percentiles recorded for every latency metric; p95 is what the SLOs use.
PERCENTILES = (50, 95, 99)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
#: Prefix of the line the Kubernetes benchmark Job prints per level: ``<marker> <concurrency> <result json>``.
BENCH_RESULT_MARKER = "LLM_PLATFORM_BENCH_RESULT"
#: The line before each round of levels when one Job measures the ladder more than once: ``<marker> <round>``.
BENCH_ROUND_MARKER = "LLM_PLATFORM_BENCH_ROUND"


@dataclass(frozen=True)
class BenchmarkPlan:
    """A random-dataset benchmark at a few concurrency levels (closed loop: ``--max-concurrency``)."""

    input_len: int = 256
    output_len: int = 64
    prompts_per_level: int = 64
    concurrency_levels: tuple[int, ...] = (1, 8)
    seed: int = 0
    num_warmups: int = 2
    #: Requests are all offered at once and throttled by the concurrency limit.
    request_rate: str = "inf"
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    requests: tuple[tuple[int, int], ...] = ()
    """``(prompt tokens, output tokens)`` of each request to replay (drawn from a traffic profile) instead of the
    random dataset's fixed lengths; empty: the random dataset."""
    workload: str = ""
    """What the requests replay (the profile's description), for the benchmark's metadata."""
    served_name: str = ""
    """The served name the requests address: one of the model's LoRA adapters; empty: the model's own."""
    peak_rate_rps: float = 0.0
    """Requests/s of one more run after the levels: open-loop arrivals at the per-server peak of the traffic the
    requests replay, capped at the top level's concurrency (0: none)."""
    arrivals_s: tuple[float, ...] = ()
    """When each of :attr:`requests` arrives, in seconds from the first: a trace replayed in its own order and
    timing (vLLM's ``timed_trace``) rather than at :attr:`request_rate`; empty: no trace."""

    def __post_init__(self) -> None:
        if not self.concurrency_levels or min(self.concurrency_levels) < 1:
            raise ValueError("concurrency levels must be positive")
        if self.input_len < 1 or self.output_len < 1 or self.prompts_per_level < 1:
            raise ValueError("input_len, output_len and prompts_per_level must be positive")
        if any(prompt < 1 or output < 1 for prompt, output in self.requests):
            raise ValueError("replayed requests need at least one prompt and one output token")
        if not self.peak_rate_rps >= 0:
            raise ValueError("the peak rate must be 0 (none) or positive")
        arrivals = self.arrivals_s
        if arrivals and (
            len(arrivals) != len(self.requests)
            or not all(0 <= arrival < math.inf for arrival in arrivals)
            or any(later < earlier for earlier, later in itertools.pairwise(arrivals))
        ):
            raise ValueError("a trace's arrivals must be one per replayed request, from 0 s on, in order")

    def at_peak_rate(self) -> BenchmarkPlan:
        """The peak-rate run: the same requests arriving at :attr:`peak_rate_rps` (Poisson, seeded), at most the
        top level's concurrency in flight."""
        return replace(
            self, request_rate=f"{self.peak_rate_rps:.3f}", concurrency_levels=(max(self.concurrency_levels),),
            peak_rate_rps=0.0, num_warmups=0,
        )  # fmt: skip

    @property
    def replay_rows(self) -> list[list[float]]:
        """What ``replay_dataset.py`` reads: ``[prompt, output]`` per request, ``[prompt, output, arrival s]`` in a
        trace (empty: the random dataset)."""
        if self.arrivals_s:
            pairs = zip(self.requests, self.arrivals_s, strict=True)
            return [[prompt, output, arrival] for (prompt, output), arrival in pairs]
        return [[prompt, output] for prompt, output in self.requests]

    @property
    def variant(self) -> str:
        """What tells this plan's runs from the default plan's on the same server (a served name, a rate): part of
        a benchmark Job's name, so that one run's succeeded Job is never read back as another's."""
        timing = "@trace" if self.arrivals_s else "" if self.request_rate == "inf" else f"@{self.request_rate}"
        return self.served_name + timing

    @property
    def described(self) -> str:
        """What the benchmark sends, in one line."""
        if self.arrivals_s:
            return f"replay of {len(self.requests)} requests at their own times from the {self.workload}"
        if self.requests:
            return f"replay of {len(self.requests)} requests drawn from the {self.workload}"
        return f"random dataset: {self.input_len} prompt tokens, {self.output_len} output tokens per request"


def plan_for(
    model: ModelSpec,
    *,
    prompts_per_level: int | None = None,
    input_len: int | None = None,
    output_len: int | None = None,
    concurrency_levels: Sequence[int] | None = None,
    num_warmups: int | None = None,
) -> BenchmarkPlan:
    """The smoke plan of a model: what a run's config sets, else the catalog's ``benchmark`` section, else its
    defaults (concurrency 1, 8 and ``max_num_seqs``; prompts of a quarter of ``max_model_len``, at most 1,024 tokens,
    so that prompt + completion always fit the context the config promises)."""
    size = model.benchmark
    levels = set(concurrency_levels or size.concurrency_levels or ())
    if not levels:
        levels = {1, 8} | ({model.serving.max_num_seqs} if model.serving.max_num_seqs is not None else set())
    length = _given(
        input_len, size.input_len if size.input_len is not None else min(1024, model.serving.max_model_len // 4)
    )
    return BenchmarkPlan(
        input_len=length,
        output_len=min(_given(output_len, size.output_len), model.serving.max_model_len - length),
        prompts_per_level=_given(prompts_per_level, size.prompts_per_level),
        concurrency_levels=tuple(sorted(levels)),
        num_warmups=_given(num_warmups, size.num_warmups),
    )


def _given(value: int | None, default: int) -> int:
    """``value`` when a caller set it (0 included, which the plan then refuses), else ``default``."""
    return default if value is None else value


def bench_serve_args(
    engine: Engine,
    plan: BenchmarkPlan,
    concurrency: int,
    *,
    base_url: str,
    served_model_name: str,
    tokenizer: str,
    result_dir: str,
    result_filename: str,
) -> list[str]:
    """Arguments of the engine's benchmark client (``vllm bench serve``) for one concurrency level of ``plan``,
    recording :data:`PERCENTILES` of :data:`LATENCY_METRICS`."""
    return engine.benchmark_args(
        plan,
        concurrency,
        base_url=base_url,
        served_model_name=served_model_name,
        tokenizer=tokenizer,
        result_dir=result_dir,
        result_filename=result_filename,
        percentile_metrics=LATENCY_METRICS,
        percentiles=PERCENTILES,
    )


def level_filename(concurrency: int) -> str:
    return f"concurrency-{concurrency}.json"
