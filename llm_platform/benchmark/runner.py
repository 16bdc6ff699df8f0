"""Runs a benchmark plan against a serving endpoint with vLLM's own benchmark, one process per concurrency level."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from llm_platform.benchmark.parse import parse_result, results_frame
from llm_platform.benchmark.plan import BenchmarkPlan, bench_serve_args, level_filename
from llm_platform.errors import BenchmarkError


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_plan(
    plan: BenchmarkPlan,
    *,
    model: str,
    base_url: str,
    tokenizer: str,
    work_dir: Path,
    python: str = sys.executable,
    timeout_s: float = 1800,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[pd.DataFrame, dict[int, dict[str, object]]]:
    """The benchmark table (one row per concurrency level) and the raw result JSON of each level."""
    work_dir.mkdir(parents=True, exist_ok=True)
    rows, raw = [], {}
    for concurrency in plan.concurrency_levels:
        args = bench_serve_args(
            plan,
            concurrency,
            base_url=base_url,
            served_model_name=model,
            tokenizer=tokenizer,
            result_dir=str(work_dir),
            result_filename=level_filename(concurrency),
        )
        log(f"model '{model}': vllm bench serve at concurrency {concurrency} ({plan.prompts_per_level} prompts)")
        try:
            completed = subprocess.run(
                [python, "-m", "llm_platform.benchmark.vllm_bench", *args],
                capture_output=True, text=True, timeout=timeout_s, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BenchmarkError(
                f"model '{model}': the benchmark at concurrency {concurrency} ran past {timeout_s:.0f} s"
            ) from None
        result_file = work_dir / level_filename(concurrency)
        if completed.returncode != 0 or not result_file.is_file():
            raise BenchmarkError(
                f"model '{model}': vllm bench serve failed at concurrency {concurrency} (exit "
                f"{completed.returncode}):\n{_tail(completed.stdout + completed.stderr)}"
            )
        result = json.loads(result_file.read_text())
        raw[concurrency] = result
        rows.append(parse_result(result, concurrency))
    return results_frame(rows), raw
