"""Benchmark plan, result parsing (recorded JSON of two vLLM generations) and SLO evaluation."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from llm_platform.benchmark import replay_dataset
from llm_platform.benchmark.parse import COLUMNS, parse_result, results_frame
from llm_platform.benchmark.plan import BenchmarkPlan, bench_serve_args, plan_for
from llm_platform.benchmark.report import summary_markdown
from llm_platform.benchmark.slo import evaluate_slos
from llm_platform.catalog import Slo, parse_catalog
from llm_platform.engine.vllm import VLLM

DATA = Path(__file__).resolve().parents[1] / "data"


def _model(**serving: object):  # type: ignore[no-untyped-def]
    return parse_catalog({"models": [{"name": "m", "source": {"repo": "o/m"}, "serving": serving}]}).model("m")


def test_plan_levels_include_max_num_seqs_and_fit_the_context() -> None:
    plan = plan_for(_model(max_num_seqs=32, max_model_len=2048))
    assert plan.concurrency_levels == (1, 8, 32)
    assert plan.input_len == 512 and plan.input_len + plan.output_len <= 2048
    assert plan_for(_model()).concurrency_levels == (1, 8)
    assert plan_for(_model(max_model_len=64)).input_len + plan_for(_model(max_model_len=64)).output_len <= 64


def test_the_catalogs_benchmark_section_sizes_every_promotion_and_a_run_overrides_it() -> None:
    section = {"prompts_per_level": 6, "input_len": 100, "output_len": 7, "concurrency_levels": [4, 2]}
    section["num_warmups"] = 0
    data = {"name": "m", "source": {"repo": "o/m"}, "serving": {"max_model_len": 2048}, "benchmark": section}
    model = parse_catalog({"models": [data]}).model("m")
    assert plan_for(model) == BenchmarkPlan(
        input_len=100, output_len=7, prompts_per_level=6, concurrency_levels=(2, 4), num_warmups=0
    )
    run = plan_for(model, prompts_per_level=3, concurrency_levels=[1], num_warmups=1, output_len=9)
    assert (run.prompts_per_level, run.concurrency_levels, run.num_warmups, run.output_len, run.input_len) == (
        3, (1,), 1, 9, 100,
    )  # fmt: skip


def test_plan_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="concurrency levels must be positive"):
        BenchmarkPlan(concurrency_levels=(0,))


def test_bench_serve_args_are_vllm_bench_serve_flags() -> None:
    plan = BenchmarkPlan(input_len=100, output_len=20, prompts_per_level=10, concurrency_levels=(1, 4), seed=7)
    args = bench_serve_args(
        VLLM,
        plan,
        4,
        base_url="http://h:1",
        served_model_name="m",
        tokenizer="/w",
        result_dir="/r",
        result_filename="c4.json",
    )
    pairs = dict(itertools.pairwise(args))
    assert pairs["--dataset-name"] == "random"
    assert pairs["--random-input-len"] == "100" and pairs["--random-output-len"] == "20"
    assert pairs["--max-concurrency"] == "4" and pairs["--num-prompts"] == "10" and pairs["--seed"] == "7"
    assert pairs["--percentile-metrics"] == "ttft,tpot,itl,e2el" and pairs["--metric-percentiles"] == "50,95,99"
    assert "--ignore-eos" in args and "--save-result" in args


TRACE = BenchmarkPlan(prompts_per_level=3, concurrency_levels=(8,), requests=((40, 5), (17, 2), (300, 9)),
                      arrivals_s=(0.0, 0.5, 2.25), workload="trace of a window")  # fmt: skip


@pytest.mark.parametrize(
    "arrivals",
    [(0.0, 1.0), (0.0, 2.0, 1.0), (-1.0, 0.0, 1.0), (0.0, math.nan, 1.0), (0.0, 1.0, math.inf)],
    ids=["one short", "out of order", "negative", "NaN", "infinite"],
)
def test_a_trace_needs_one_ordered_finite_arrival_per_request(arrivals: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="a trace's arrivals must be one per replayed request, from 0 s on, in order"):
        BenchmarkPlan(requests=TRACE.requests, arrivals_s=arrivals)


def test_a_trace_is_replayed_by_vllms_timed_trace_at_its_own_times(tmp_path: Path) -> None:
    """Each request's lengths and arrival as vLLM's ``timed_trace`` reads them, prompt chunks never shared (what
    vLLM sends from the file: ``tests/integration/test_local_target.py``)."""
    args = bench_serve_args(VLLM, TRACE, 8, base_url="http://h:1", served_model_name="m", tokenizer="/w",
                            result_dir=str(tmp_path), result_filename="c8.json")  # fmt: skip
    pairs = dict(itertools.pairwise(args))
    assert pairs["--dataset-name"] == "timed_trace" and pairs["--dataset-path"] == f"{tmp_path}/replay-dataset.jsonl"
    assert "--custom-output-len" not in args and "--ignore-eos" in args
    assert TRACE.variant == "@trace" and TRACE.described == (
        "replay of 3 requests at their own times from the trace of a window"
    )
    replay_dataset.write_dataset(TRACE.replay_rows, "/no/tokenizer/needed", 0, tmp_path / "replay-dataset.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "replay-dataset.jsonl").read_text().splitlines()]
    assert [(row["input_length"], row["output_length"], row["timestamp"]) for row in rows] == [
        (40, 5, 0.0), (17, 2, 0.5), (300, 9, 2.25)
    ]  # fmt: skip
    chunks = [row["hash_ids"] for row in rows]
    assert [len(ids) for ids in chunks] == [3, 2, 19]  # 16 tokens per hash id
    assert len({i for ids in chunks for i in ids}) == sum(len(ids) for ids in chunks)


def test_parse_vllm_0_32_result() -> None:
    raw = json.loads((DATA / "vllm-0.32.0-bench-serve-c8.json").read_text())
    row = parse_result(raw, 8)
    assert row["concurrency"] == 8
    assert row["completed"] == raw["completed"] and row["failed"] == raw["failed"] == 0
    assert row["output_throughput"] == raw["output_throughput"]
    assert row["p95_ttft_ms"] == raw["p95_ttft_ms"] and row["p99_e2el_ms"] == raw["p99_e2el_ms"]
    assert row["p50_itl_ms"] == raw["p50_itl_ms"]
    assert 1 < row["achieved_concurrency"] <= 8


def test_parse_older_result_without_failed_or_p95() -> None:
    raw = json.loads((DATA / "vllm-0.6-benchmark-serving.json").read_text())
    row = parse_result(raw)
    assert row["failed"] == 2  # num_prompts - completed
    assert row["error_rate"] == pytest.approx(0.01)
    assert row["p50_ttft_ms"] == raw["median_ttft_ms"]
    assert math.isnan(row["p95_ttft_ms"]) and math.isnan(row["concurrency"])
    assert math.isnan(row["p95_e2el_ms"])


def test_parse_garbage_is_nan_not_an_exception() -> None:
    row = parse_result({"completed": "many", "mean_ttft_ms": None, "output_throughput": True})
    assert all(math.isnan(value) for value in row.values())


def _frame(*rows: dict[str, float]) -> pd.DataFrame:
    base = {"completed": 100.0, "failed": 0.0, "output_throughput": 1000.0, "p95_ttft_ms": 100.0, "p95_itl_ms": 10.0}
    return results_frame([{**base, "concurrency": float(i + 1), **row} for i, row in enumerate(rows)])


@pytest.mark.parametrize(
    ("rows", "slo", "failing"),
    [
        (({}, {}), Slo(), set()),
        (({}, {"p95_ttft_ms": 2500.0}), Slo(ttft_p95_ms=2000), {"ttft_p95_ms"}),
        (({"p95_itl_ms": 150.0}, {}), Slo(itl_p95_ms=100), {"itl_p95_ms"}),
        (
            ({"output_throughput": 50.0}, {"output_throughput": 90.0}),
            Slo(min_output_tokens_per_s=100),
            {"min_output_tokens_per_s"},
        ),
        (({"output_throughput": 50.0}, {"output_throughput": 150.0}), Slo(min_output_tokens_per_s=100), set()),
        (({"failed": 2.0, "completed": 98.0}, {}), Slo(max_error_rate=0.005), {"max_error_rate"}),
        (({"failed": 2.0, "completed": 98.0}, {}), Slo(max_error_rate=0.01), set()),
        (({"p95_ttft_ms": math.nan}, {"p95_ttft_ms": math.nan}), Slo(), {"ttft_p95_ms"}),
    ],
)
def test_slo_evaluation(rows: tuple[dict[str, float], ...], slo: Slo, failing: set[str]) -> None:
    results = evaluate_slos(_frame(*rows), slo)
    assert [r.name for r in results] == ["ttft_p95_ms", "itl_p95_ms", "min_output_tokens_per_s", "max_error_rate"]
    assert {r.name for r in results if not r.passed} == failing


def test_frame_has_documented_columns_sorted_by_concurrency() -> None:
    frame = results_frame([{"concurrency": 8.0}, {"concurrency": 1.0}])
    assert list(frame.columns) == COLUMNS
    assert list(frame["concurrency"]) == [1.0, 8.0]


def test_summary_names_every_slo_and_verdict() -> None:
    frame = _frame({}, {"p95_ttft_ms": 2500.0})
    text = summary_markdown("m", frame, evaluate_slos(frame, Slo(ttft_p95_ms=2000)))
    assert "SLOs **failed**" in text
    assert "| ttft_p95_ms | 2500 | 2000 | FAIL |" in text
    assert text.count("\n| 1 |") == 1 and "| 2 | 1000.0 |" in text


def test_regressions_compare_each_level_with_the_promotion() -> None:
    import pandas as pd

    from llm_platform.benchmark.slo import regressions

    baseline = pd.DataFrame({"concurrency": [1, 8], "output_throughput": [100.0, 400.0], "p95_ttft_ms": [50.0, 80.0]})
    live = pd.DataFrame(
        {"concurrency": [1, 8, 32], "output_throughput": [95.0, 300.0, 1.0], "p95_ttft_ms": [50, 90, 1e9]}
    )
    found = regressions(baseline, live, max_regression_pct=20)
    assert [(r.concurrency, r.metric, round(r.change_pct)) for r in found] == [(8, "output_throughput", -25)]
    assert found[0].describe() == "output_throughput at concurrency 8: 300.0 vs 400.0 at promotion (-25.0%)"
    assert regressions(baseline, live, max_regression_pct=30) == []


def test_results_and_manifest_come_back_from_a_pod_log() -> None:
    import json

    from llm_platform.manifests.benchmark_script import rounds_from_log
    from llm_platform.weights.plan import manifest_from_log, reused_in_log

    log = (
        "vLLM noise\nLLM_PLATFORM_BENCH_RESULT 8 " + json.dumps({"completed": 3}) + "\nLLM_PLATFORM_BENCH_RESULT 1 {}\n"
    )
    assert rounds_from_log(log) == [{8: {"completed": 3}, 1: {}}]  # no round line: one round
    assert manifest_from_log("no marker here") is None
    assert not reused_in_log("LLM_PLATFORM_REUSEDX") and reused_in_log("x\nLLM_PLATFORM_REUSED abc\n")


def test_one_job_measures_the_ladder_in_rounds_and_each_round_comes_back() -> None:
    from llm_platform.manifests.benchmark_script import benchmark_script, rounds_from_log

    catalog = parse_catalog({"models": [{"name": "m", "source": {"repo": "org/m"}}]})
    model = catalog.model("m")
    script = benchmark_script(catalog.platform, model, "a" * 40, BenchmarkPlan(concurrency_levels=(1, 4)), rounds=2)
    assert script.count("echo LLM_PLATFORM_BENCH_ROUND ") == 2
    assert script.count("server=$!") == 1  # one server for both rounds
    assert "round-0/concurrency-4.json" in script and "round-1/concurrency-4.json" in script
    log = "\n".join(
        [
            "LLM_PLATFORM_BENCH_ROUND 0",
            'LLM_PLATFORM_BENCH_RESULT 1 {"completed": 1}',
            'LLM_PLATFORM_BENCH_RESULT 4 {"completed": 4}',
            "engine noise",
            "LLM_PLATFORM_BENCH_ROUND 1",
            'LLM_PLATFORM_BENCH_RESULT 1 {"completed": 2}',
        ]
    )
    assert rounds_from_log(log) == [{1: {"completed": 1}, 4: {"completed": 4}}, {1: {"completed": 2}}]
    assert rounds_from_log("no results") == []
    with pytest.raises(ValueError, match="at least one round"):
        benchmark_script(catalog.platform, model, "a" * 40, BenchmarkPlan(), rounds=0)
