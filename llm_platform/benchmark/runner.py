"""Runs a benchmark plan against a serving endpoint with vLLM's own benchmark client (``vllm.benchmarks.serve``),
one process per concurrency level, with the arguments the serving engine gives it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from llm_platform.benchmark import replay_dataset, vllm_bench
from llm_platform.benchmark.parse import parse_result, results_frame
from llm_platform.benchmark.plan import BenchmarkPlan, bench_serve_args, level_filename
from llm_platform.conventions import REPLAY_DATASET_FILE, REPLAY_LENGTHS_FILE
from llm_platform.engine import Engine
from llm_platform.errors import BenchmarkError


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_level(
    plan: BenchmarkPlan,
    concurrency: int,
    *,
    engine: Engine,
    model: str,
    base_url: str,
    tokenizer: str,
    work_dir: Path,
    python: str = sys.executable,
    timeout_s: float = 1800,
    in_process: bool = False,
    api_key: str | None = None,
) -> dict[str, object]:
    """The result JSON of ``vllm bench serve`` at one concurrency level of ``plan``.

    ``in_process`` runs vLLM's benchmark in this interpreter (its import costs ~10 s on CPU, which a search that
    measures many short levels pays once instead of per level); otherwise a child process, with ``timeout_s``.
    ``api_key`` is sent as the bearer token (vLLM's benchmark reads it from ``OPENAI_API_KEY``).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    result_file = work_dir / level_filename(concurrency)
    result_file.unlink(missing_ok=True)
    if plan.requests:  # a replay: the prompts of these lengths, written with the model's tokenizer
        lengths = [list(pair) for pair in plan.requests]
        (work_dir / REPLAY_LENGTHS_FILE).write_text(json.dumps(lengths))
        replay_dataset.write_dataset(lengths, tokenizer, plan.seed, work_dir / REPLAY_DATASET_FILE)
    args = bench_serve_args(
        engine,
        plan,
        concurrency,
        base_url=base_url,
        served_model_name=model,
        tokenizer=tokenizer,
        result_dir=str(work_dir),
        result_filename=level_filename(concurrency),
    )
    if in_process:
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), _api_key_env(api_key):
                code = vllm_bench.main(args)
        except (Exception, SystemExit) as error:  # vLLM's benchmark raises what its HTTP client met
            code, output = 1, io.StringIO(f"{output.getvalue()}\n{type(error).__name__}: {error}")
        log_text = output.getvalue()
    else:
        try:
            completed = subprocess.run(
                [python, "-m", "llm_platform.benchmark.vllm_bench", *args],
                capture_output=True, text=True, timeout=timeout_s, check=False,
                env={**os.environ, **({"OPENAI_API_KEY": api_key} if api_key else {})},
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BenchmarkError(
                f"model '{model}': the benchmark at concurrency {concurrency} ran past {timeout_s:.0f} s"
            ) from None
        code, log_text = completed.returncode, completed.stdout + completed.stderr
    if code != 0 or not result_file.is_file():
        raise BenchmarkError(
            f"model '{model}': vllm bench serve failed at concurrency {concurrency} (exit {code}):\n{_tail(log_text)}"
        )
    result: dict[str, object] = json.loads(result_file.read_text())
    return result


@contextlib.contextmanager
def _api_key_env(api_key: str | None) -> Iterator[None]:
    """``OPENAI_API_KEY`` for an in-process benchmark, restored afterwards."""
    if api_key is None:
        yield
        return
    previous = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = api_key
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = previous


def run_plan(
    plan: BenchmarkPlan,
    *,
    engine: Engine,
    model: str,
    base_url: str,
    tokenizer: str,
    work_dir: Path,
    python: str = sys.executable,
    timeout_s: float = 1800,
    log: Callable[[str], None] = lambda _: None,
    api_key: str | None = None,
) -> tuple[pd.DataFrame, dict[int, dict[str, object]]]:
    """The benchmark table (one row per concurrency level) and the raw result JSON of each level."""
    rows, raw = [], {}
    for concurrency in plan.concurrency_levels:
        log(f"model '{model}': vllm bench serve at concurrency {concurrency} ({plan.prompts_per_level} prompts)")
        result = run_level(
            plan, concurrency, engine=engine, model=model, base_url=base_url, tokenizer=tokenizer, work_dir=work_dir,
            python=python, timeout_s=timeout_s, api_key=api_key,
        )  # fmt: skip
        raw[concurrency] = result
        rows.append(parse_result(result, concurrency))
    return results_frame(rows), raw
