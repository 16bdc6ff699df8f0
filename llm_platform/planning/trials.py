"""The simulated GPU server as a trial backend: the same questions as ``vllm bench serve`` against a real server
(TTFT, ITL, throughput at a concurrency), answered by :mod:`llm_platform.planning.simulator` from a performance
model (pure: the performance model comes in as :class:`PerfSource`)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

from llm_platform.benchmark.trials import probe_from_result
from llm_platform.catalog import Slo
from llm_platform.planning.simulator import EngineLimits, EngineStartError, StepLoad, Workload, simulate
from llm_platform.tuning.search import Candidate, Probe, Trial, TrialRunner, bisect_load

#: Fewest requests one probe sends (a p95 of fewer is mostly noise), as the real trials do.
MIN_PROMPTS_PER_PROBE = 16


class PerfSource(Protocol):
    """What the simulator needs from a performance model (``perfmodel.GpuPerfModel`` is one)."""

    def step_ms(self, load: StepLoad) -> float: ...

    def kv_cache_tokens(self, gpu_memory_utilization: float, max_num_seqs: int, max_num_batched_tokens: int) -> int: ...


@dataclass(frozen=True)
class EngineDefaults:
    """The engine arguments a candidate does not set: the catalog's, and vLLM's own where the catalog has none
    (vLLM v1 on a GPU with at least 70 GiB: 1024 sequences and 8192 tokens per step; smaller GPUs 256 and 2048)."""

    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 1024
    max_num_batched_tokens: int = 8192


def engine_limits(perf: PerfSource, candidate: Candidate, defaults: EngineDefaults) -> EngineLimits:
    """The scheduler limits a candidate gives, with the KV cache the performance model leaves for it."""
    seqs = int(candidate.get("max_num_seqs", defaults.max_num_seqs))
    tokens = int(candidate.get("max_num_batched_tokens", defaults.max_num_batched_tokens))
    model_len = int(candidate.get("max_model_len", defaults.max_model_len))
    utilization = float(candidate.get("gpu_memory_utilization", defaults.gpu_memory_utilization))
    return EngineLimits(seqs, max(tokens, 1), perf.kv_cache_tokens(utilization, seqs, tokens), model_len)


@dataclass
class SimulatedTrials(TrialRunner):
    """``candidate → Trial`` on the simulated server: bisect the closed-loop load for the highest one meeting the
    SLO, as the local target's trials do against a real server. Every call is a new measurement: its noise is
    seeded from ``seed`` and a call counter, so a whole search is reproducible and repeats differ."""

    perf: PerfSource
    slo: Slo
    defaults: EngineDefaults
    input_len: int
    output_len: int
    load_low: int = 1
    load_high: int = 256
    prompts_per_load: int = 4
    noise: float = 0.1
    seed: int = 0
    calls: int = 0
    lengths: tuple[tuple[int, int], ...] = ()
    """Each request's ``(prompt, output)`` tokens, drawn from a traffic profile (empty: the fixed lengths)."""

    def measure(self, candidate: Candidate, load: int, *, seed: int) -> dict[str, float]:
        """One simulated ``vllm bench serve`` run of ``candidate`` at ``load``: its result JSON."""
        workload = Workload(load, max(MIN_PROMPTS_PER_PROBE, self.prompts_per_load * load), self.input_len,
                            self.output_len, self.lengths)  # fmt: skip
        limits = engine_limits(self.perf, candidate, self.defaults)
        return simulate(limits, workload, self.perf.step_ms, noise=self.noise, seed=seed)

    def __call__(self, candidate: Candidate) -> Trial:
        self.calls += 1
        trial_seed = zlib.crc32(f"{self.seed}/{self.calls}".encode())
        try:
            engine_limits(self.perf, candidate, self.defaults)
        except EngineStartError as error:
            return Trial(dict(candidate), error=f"the engine would not start: {error}")

        def probe(load: int) -> Probe:
            result: dict[str, object] = {**self.measure(candidate, load, seed=trial_seed + load)}
            return probe_from_result(result, load, self.slo)

        trial = bisect_load(probe, self.load_low, self.load_high)
        return Trial(dict(candidate), trial.goodput, trial.best, trial.probes)
