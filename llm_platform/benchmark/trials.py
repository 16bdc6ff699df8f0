"""What every target's trials of the goodput search share: a candidate as overrides, a probe from one ``vllm bench
serve`` result, the load ladder, and a failed trial with vLLM's own line. The trial runners themselves belong to the
targets (``ServingTarget.trial_runner``): the local one bisects the load against a server on this machine, the
kubernetes one measures a ladder of loads in one benchmark Job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from llm_platform.benchmark.parse import parse_result
from llm_platform.catalog import ModelSpec, Slo, apply_serving_overrides
from llm_platform.tuning.search import Candidate, Probe, Trial, meets_slo

#: Knobs that vLLM takes as integers (the search works in floats).
INTEGER_KNOBS = frozenset({"max_num_seqs", "max_num_batched_tokens", "max_model_len"})


def as_overrides(candidate: Candidate) -> dict[str, str]:
    """A candidate as ``serving`` overrides (the run config's YAML scalars)."""
    return {
        knob: str(int(value)) if knob in INTEGER_KNOBS else f"{value:g}" for knob, value in sorted(candidate.items())
    }


def candidate_model(model: ModelSpec, candidate: Candidate, position_limit: int | None) -> ModelSpec:
    """``model`` with the candidate's knobs, validated like the catalog (a ``max_model_len`` past the weights'
    position limit is refused here, as a failed trial, not by vLLM at start)."""
    return apply_serving_overrides(
        model, as_overrides(candidate), origin="auto_tune candidate", position_limit=position_limit
    )


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


def failed_trial(model: ModelSpec, candidate: Candidate, error: Exception, log: Callable[[str], None]) -> Trial:
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


def ladder_trial(candidate: Candidate, results: dict[int, dict[str, Any]], ladder: tuple[int, ...], slo: Slo) -> Trial:
    """A trial from one benchmark of a ladder of loads against one server: the goodput of the highest load before
    the first that misses the SLO (latency grows with load)."""
    probes = tuple(probe_from_result(results[load], load, slo) for load in ladder)
    best = None
    for probe in probes:
        if not probe.passed:
            break
        best = probe
    return Trial(dict(candidate), best.output_throughput if best else 0.0, best, probes)
