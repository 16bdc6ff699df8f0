"""Trials of the goodput search on a target: start the candidate, find the highest load that meets the SLO.

Local target: one vLLM server with the candidate's engine arguments (``LocalTarget.ensure_server``) and the load
found by :func:`~llm_platform.tuning.search.bisect_load`, each probe a ``vllm bench serve`` run at one concurrency,
in this process so that vLLM's benchmark is imported once per search, not once per probe.

Kubernetes target: one GPU benchmark Job per trial (the smoke benchmark's Job with the candidate's arguments). A
bisection would need a Job, and so a server start, per probe; the Job instead measures a geometric ladder of loads
against one server, and the goodput is that of the highest load before the first that misses the SLO.

A config vLLM refuses or cannot start (out of memory, invalid combination) is a failed trial with vLLM's own line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

from llm_platform.benchmark.parse import parse_result
from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.benchmark.runner import run_level
from llm_platform.catalog import ModelSpec, Slo, apply_serving_overrides
from llm_platform.engine import config_fingerprint
from llm_platform.errors import PlatformError
from llm_platform.targets.kubernetes import KubernetesTarget
from llm_platform.targets.local import LocalTarget
from llm_platform.tuning.search import Candidate, Probe, Trial, bisect_load, meets_slo

#: Knobs that vLLM takes as integers (the search works in floats).
INTEGER_KNOBS = frozenset({"max_num_seqs", "max_num_batched_tokens", "max_model_len"})


def as_overrides(candidate: Candidate) -> dict[str, str]:
    """A candidate as ``serving`` overrides (the run config's YAML scalars)."""
    return {
        knob: str(int(value)) if knob in INTEGER_KNOBS else f"{value:g}" for knob, value in sorted(candidate.items())
    }


def probe_from_result(result: dict[str, object], load: int, slo: Slo) -> Probe:
    """A probe from one ``vllm bench serve`` result JSON, judged against ``slo`` (no result rows: all failed)."""
    row = parse_result(result, load)
    error_rate = row["error_rate"] if not math.isnan(row["error_rate"]) else 1.0
    return meets_slo(
        Probe(load, row["output_throughput"], row["request_throughput"], row["p95_ttft_ms"], row["p95_itl_ms"],
              error_rate),
        slo,
    )  # fmt: skip


def load_ladder(low: int, high: int) -> tuple[int, ...]:
    """``low``, doubling, up to and including ``high``."""
    levels = [low]
    while levels[-1] * 2 < high:
        levels.append(levels[-1] * 2)
    return tuple(sorted({*levels, high}))


def _failed(model: ModelSpec, candidate: Candidate, error: Exception, log: Callable[[str], None]) -> Trial:
    """A failed trial with the most telling line of ``error``, logged once."""
    line = _first_error_line(error)
    log(f"model '{model.name}': trial {as_overrides(candidate)} failed: {line}")
    return Trial(candidate, error=line)


def _first_error_line(error: Exception) -> str:
    """The most telling line of a failed start: vLLM's own error when the log tail has one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line:
            return f"{lines[0]} ... {line}"[:400]
    return lines[0][:400] if lines else type(error).__name__


@dataclasses.dataclass
class LocalTrials:
    """A callable trial runner for :func:`~llm_platform.tuning.search.coordinate_search` on the local target."""

    target: LocalTarget
    model: ModelSpec
    weights_path: str
    plan: BenchmarkPlan
    work_dir: Path
    load_low: int = 1
    load_high: int = 32
    prompts_per_load: int = 2
    """Requests per probe: this many per unit of concurrency (at least ``plan.prompts_per_level``)."""
    log: Callable[[str], None] = lambda _: None

    def __call__(self, candidate: Candidate) -> Trial:
        overrides = as_overrides(candidate)
        label = ", ".join(f"{k}={v}" for k, v in overrides.items())
        try:
            model = apply_serving_overrides(self.model, overrides, origin="auto_tune candidate")
            server = self.target.ensure_server(model, self.weights_path, log=self.log)
        except PlatformError as error:
            return _failed(self.model, candidate, error, self.log)
        work_dir = self.work_dir / server.fingerprint
        try:
            found = bisect_load(
                lambda load: self._probe(server.base_url, load, work_dir), self.load_low, self.load_high
            )
        except PlatformError as error:
            return _failed(self.model, candidate, error, self.log)
        finally:
            active = self.target.active(self.model.name)
            if active is None or active.fingerprint != server.fingerprint:
                self.target.stop_server(self.model.name, server.fingerprint)
        best = (
            f"{found.goodput:.1f} output tok/s at concurrency {found.best.load}"
            if found.best
            else "no load met the SLO"
        )
        self.log(f"model '{self.model.name}': trial {label}: {best} ({len(found.probes)} probes)")
        return dataclasses.replace(found, candidate=dict(candidate))

    def _probe(self, base_url: str, load: int, work_dir: Path) -> Probe:
        prompts = max(self.plan.prompts_per_level, self.prompts_per_load * load)
        plan = dataclasses.replace(self.plan, prompts_per_level=prompts)
        result = run_level(plan, load, model=self.model.name, base_url=base_url, tokenizer=self.weights_path,
                           work_dir=work_dir, in_process=True)  # fmt: skip
        return probe_from_result(result, load, self.model.slo)


@dataclasses.dataclass
class KubernetesTrials:
    """A callable trial runner on the kubernetes target: one benchmark Job per candidate (see the module doc)."""

    target: KubernetesTarget
    model: ModelSpec
    weights_sha: str
    plan: BenchmarkPlan
    run_key: str
    load_low: int = 1
    load_high: int = 32
    log: Callable[[str], None] = lambda _: None

    def __call__(self, candidate: Candidate) -> Trial:
        overrides = as_overrides(candidate)
        ladder = load_ladder(self.load_low, self.load_high)
        try:
            model = apply_serving_overrides(self.model, overrides, origin="auto_tune candidate")
            plan = dataclasses.replace(self.plan, concurrency_levels=ladder)
            run_key = f"{self.run_key}-{config_fingerprint(model.serving, self.weights_sha)[:8]}"
            results = self.target.smoke_benchmark(model, self.weights_sha, plan, run_key=run_key, log=self.log)
        except PlatformError as error:
            return _failed(self.model, candidate, error, self.log)
        probes = tuple(probe_from_result(results[load], load, self.model.slo) for load in ladder)
        best = None
        for probe in probes:  # latency grows with load: the first miss ends the ladder
            if not probe.passed:
                break
            best = probe
        return Trial(dict(candidate), best.output_throughput if best else 0.0, best, probes)
