"""Runs a benchmark plan against a serving endpoint with vLLM's own benchmark client (``vllm.benchmarks.serve``),
with the arguments the serving engine gives it."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import multiprocessing.context
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from llm_platform.benchmark import replay_dataset
from llm_platform.benchmark.parse import parse_result, results_frame
from llm_platform.benchmark.plan import BenchmarkPlan, bench_serve_args, level_filename
from llm_platform.conventions import BENCH_LOG_FILE, BENCH_RUNS_FILE, REPLAY_DATASET_FILE, REPLAY_LENGTHS_FILE
from llm_platform.engine import Engine, vllm_bench
from llm_platform.errors import BenchmarkError


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _write_dataset(plan: BenchmarkPlan, tokenizer: str, work_dir: Path) -> None:
    """``work_dir`` with the replayed prompts of ``plan`` (written with the model's tokenizer), when it replays."""
    work_dir.mkdir(parents=True, exist_ok=True)
    if plan.requests:
        rows = plan.replay_rows
        (work_dir / REPLAY_LENGTHS_FILE).write_text(json.dumps(rows))
        replay_dataset.write_dataset(rows, tokenizer, plan.seed, work_dir / REPLAY_DATASET_FILE)


def _level_args(
    plan: BenchmarkPlan, concurrency: int, *, engine: Engine, model: str, base_url: str, tokenizer: str, work_dir: Path
) -> list[str]:
    (work_dir / level_filename(concurrency)).unlink(missing_ok=True)
    return bench_serve_args(
        engine, plan, concurrency, base_url=base_url, served_model_name=model, tokenizer=tokenizer,
        result_dir=str(work_dir), result_filename=level_filename(concurrency),
    )  # fmt: skip


def _level_result(model: str, concurrency: int, work_dir: Path, code: int, log_text: str) -> dict[str, object]:
    result_file = work_dir / level_filename(concurrency)
    if code != 0 or not result_file.is_file():
        raise _level_failed(model, concurrency, code, log_text)
    result: dict[str, object] = json.loads(result_file.read_text())
    return result


def _level_failed(model: str, concurrency: int, code: int, log_text: str) -> BenchmarkError:
    return BenchmarkError(
        f"model '{model}': vllm bench serve failed at concurrency {concurrency} (exit {code}):\n{_tail(log_text)}"
    )


def run_level(
    plan: BenchmarkPlan,
    concurrency: int,
    *,
    engine: Engine,
    model: str,
    base_url: str,
    tokenizer: str,
    work_dir: Path,
    api_key: str | None = None,
) -> dict[str, object]:
    """The result JSON of ``vllm bench serve`` at one concurrency level of ``plan``, run in this interpreter: a
    search that measures many short levels pays vLLM's import (~15 s on CPU) once instead of per level.
    ``api_key`` is sent as the bearer token (vLLM's benchmark reads it from ``OPENAI_API_KEY``)."""
    _write_dataset(plan, tokenizer, work_dir)
    args = _level_args(
        plan, concurrency, engine=engine, model=model, base_url=base_url, tokenizer=tokenizer, work_dir=work_dir
    )
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), _api_key_env(api_key):
            code = vllm_bench.main(args)
    except (Exception, SystemExit) as error:  # vLLM's benchmark raises what its HTTP client met
        code, output = 1, io.StringIO(f"{output.getvalue()}\n{type(error).__name__}: {error}")
    return _level_result(model, concurrency, work_dir, code, output.getvalue())


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
    timeout_s: float = 1800,
    log: Callable[[str], None] = lambda _: None,
    api_key: str | None = None,
) -> tuple[pd.DataFrame, dict[int, dict[str, object]]]:
    """The benchmark table (one row per concurrency level) and the raw result JSON of each level.

    Every level runs in one child process, in order, forked from a warm client (:func:`_client_processes`);
    ``timeout_s`` bounds each level. The argument lists and the child's output are kept in ``work_dir`` beside the
    results."""
    _write_dataset(plan, tokenizer, work_dir)
    levels = plan.concurrency_levels
    runs = [
        _level_args(plan, level, engine=engine, model=model, base_url=base_url, tokenizer=tokenizer, work_dir=work_dir)
        for level in levels
    ]
    runs_file, log_file = work_dir / BENCH_RUNS_FILE, work_dir / BENCH_LOG_FILE
    runs_file.write_text(json.dumps(runs, indent=1))
    described = ", ".join(str(level) for level in levels)
    log(f"model '{model}': vllm bench serve at concurrency {described} ({plan.prompts_per_level} prompts each)")
    environment = {**os.environ, **({"OPENAI_API_KEY": api_key} if api_key else {})}
    child = _client_processes().Process(
        target=_run_client, args=(str(runs_file), environment, str(log_file)), name=f"vllm bench serve: {model}"
    )
    child.start()
    child.join(timeout_s * len(levels))
    if child.is_alive():
        child.kill()
        child.join()
        raise BenchmarkError(
            f"model '{model}': the benchmark ran past {timeout_s * len(levels):.0f} s ({timeout_s:.0f} s a level) "
            f"at concurrency {_first_unfinished(levels, work_dir)}"
        )
    code = child.exitcode if child.exitcode is not None else 1
    log_text = log_file.read_text(errors="replace") if log_file.is_file() else ""
    if code != 0:  # the level that failed is the first without its result (the child stops there)
        raise _level_failed(model, _first_unfinished(levels, work_dir), code, log_text)
    raw = {level: _level_result(model, level, work_dir, code, log_text) for level in levels}
    return results_frame([parse_result(raw[level], level) for level in levels]), raw


def _client_processes() -> multiprocessing.context.ForkServerContext:
    """Where each plan's client process comes from: a fork server that imported vLLM's benchmark once, started by
    the first plan of this process (a Dagster step, a test worker, a bench script) and gone with it. A fresh
    interpreter importing vLLM for every plan was ~10 s of CPU per benchmark on two cores."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__, *vllm_bench.PRELOAD])  # once started, this changes nothing
    return context


def _run_client(runs_file: str, environment: dict[str, str], log_file: str) -> None:
    """The child: the caller's environment as it is now (the server's is as it was when it started), its output
    into ``log_file``, then every run of ``runs_file`` in order (``SystemExit`` at the first that fails)."""
    os.environ.clear()
    os.environ.update(environment)
    with Path(log_file).open("wb") as output:
        for standard_stream in (1, 2):  # the descriptors: vLLM's loggers hold the streams of the server's start
            os.dup2(output.fileno(), standard_stream)
    sys.exit(vllm_bench.main([vllm_bench.RUNS_FLAG, runs_file]))


def _first_unfinished(levels: tuple[int, ...], work_dir: Path) -> int:
    return next((level for level in levels if not (work_dir / level_filename(level)).is_file()), levels[-1])
