"""The replay's prompts as the Kubernetes benchmark Job writes them: the lines the Job's script gets (its lengths
and ``replay_dataset.py`` as here-documents, then the writer) run by a real shell and a real tokenizer (the demo
model's), and the benchmark arguments that read the result. The local runner writes the same file with the same
code (``tests/integration/test_local_target.py`` sends it to real vLLM)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from llm_platform.benchmark.plan import BenchmarkPlan, bench_serve_args
from llm_platform.dev.tiny_model import train_tokenizer
from llm_platform.engine.vllm import VLLM
from llm_platform.manifests.benchmark_script import benchmark_script, replay_dataset_lines
from tests.conftest import tiny_catalog

pytestmark = pytest.mark.integration

LENGTHS = ((12, 4), (90, 30), (40, 1), (250, 9))
PLAN = BenchmarkPlan(prompts_per_level=len(LENGTHS), concurrency_levels=(1, 4), seed=5, requests=LENGTHS,
                     workload="test profile")  # fmt: skip


def _engine_image_path(tmp_path: Path) -> str:
    """A ``PATH`` whose ``python3`` stands for the engine image's (here the test's interpreter)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def _run_lines(lines: list[str], path: str) -> subprocess.CompletedProcess[str]:
    script = "set -eu\n" + "\n".join(lines) + "\n"
    return subprocess.run([shutil.which("sh") or "/bin/sh", "-c", script], capture_output=True, text=True,
                          check=False, env={"PATH": path})  # fmt: skip


def test_the_jobs_lines_write_a_prompt_of_each_length_with_its_output_length(tmp_path: Path) -> None:
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    train_tokenizer(tokenizer)
    path = _engine_image_path(tmp_path)
    completed = _run_lines(replay_dataset_lines(str(tmp_path), PLAN, str(tokenizer)), path)
    assert completed.returncode == 0, completed.stderr
    rows = [json.loads(line) for line in (tmp_path / "replay-dataset.jsonl").read_text().splitlines()]
    assert [row["output_tokens"] for row in rows] == [output for _, output in LENGTHS]
    from transformers import AutoTokenizer

    counted = AutoTokenizer.from_pretrained(str(tokenizer))
    for row, (prompt, _) in zip(rows, LENGTHS, strict=True):
        assert abs(len(counted(row["prompt"], add_special_tokens=False).input_ids) - prompt) <= max(2, prompt // 20)
    # The same seed writes the same prompts (runs are comparable); the writer read its lengths from the heredoc.
    first = (tmp_path / "replay-dataset.jsonl").read_text()
    assert _run_lines(replay_dataset_lines(str(tmp_path), PLAN, str(tokenizer)), path).returncode == 0
    assert (tmp_path / "replay-dataset.jsonl").read_text() == first


def test_the_jobs_lines_write_a_trace_with_each_requests_time(tmp_path: Path) -> None:
    """A trace needs no tokenizer of the Job's (vLLM draws its prompt tokens): the rows carry the arrivals."""
    trace = replace(PLAN, arrivals_s=(0.0, 0.5, 0.5, 2.0))
    completed = _run_lines(replay_dataset_lines(str(tmp_path), trace, "/no/tokenizer"), _engine_image_path(tmp_path))
    assert completed.returncode == 0, completed.stderr
    rows = [json.loads(line) for line in (tmp_path / "replay-dataset.jsonl").read_text().splitlines()]
    assert [(row["input_length"], row["output_length"], row["timestamp"]) for row in rows] == [
        (prompt, output, arrival) for (prompt, output), arrival in zip(LENGTHS, trace.arrivals_s, strict=True)
    ]


def test_the_job_copies_the_dataset_into_every_round_and_reads_it_per_request() -> None:
    catalog = tiny_catalog()
    script = benchmark_script(catalog.platform, catalog.model("tiny-llama"), "a" * 40, PLAN, rounds=2)
    copies = [line for line in script.splitlines() if line.startswith("cp ")]
    assert len(copies) == 2 and copies[0].endswith("round-0/replay-dataset.jsonl")
    assert copies[1].endswith("round-1/replay-dataset.jsonl")
    args = bench_serve_args(VLLM, PLAN, 4, base_url="http://x", served_model_name="m", tokenizer="/t",
                            result_dir="/r", result_filename="c.json")  # fmt: skip
    assert args[args.index("--dataset-name") + 1] == "custom" and args[args.index("--dataset-path") + 1] == (
        "/r/replay-dataset.jsonl"
    )
    assert "--random-input-len" not in args and args[args.index("--custom-output-len") + 1] == "-1"
