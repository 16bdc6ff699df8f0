"""Benchmark fidelity: the platform's smoke benchmark against a direct ``vllm.benchmarks.serve`` run.

One tiny-model vLLM-on-CPU server (started by the local target), then, alternately and ``--rounds`` times: the
platform's runner (``llm_platform.benchmark.runner.run_plan``, one concurrency level) and vLLM's benchmark called
directly with hand-written arguments, as a user would type ``vllm bench serve``. Both report output tokens/s.
Each round runs the pair back to back (order alternating between rounds) and the figure is the median of the
per-round ratios, so that the drift of a shared 2-core machine between rounds cancels out. Goal: ratio within
1 +/- 0.05 (the platform adds no load generator of its own).

    .venv/bin/python bench/benchmark_fidelity.py [--rounds 3] [--prompts 64] [--concurrency 8]
        [--base-url URL --tokenizer DIR [--api-key-file FILE]]   # a tiny-llama server already running

With ``--base-url`` both clients measure that server (served as ``tiny-llama``, e.g. the test session's) instead of
one the script starts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from shortmode import parse_options, scratch_dir  # noqa: E402

from llm_platform.benchmark.plan import BenchmarkPlan  # noqa: E402
from llm_platform.benchmark.runner import run_plan  # noqa: E402
from llm_platform.catalog import parse_catalog  # noqa: E402
from llm_platform.dev.tiny_model import make_tiny_model  # noqa: E402
from llm_platform.engine.vllm import VLLM  # noqa: E402
from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings  # noqa: E402

DIRECT = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def direct_run(base_url: str, model_dir: str, prompts: int, concurrency: int, out: Path, api_key: str | None) -> float:
    args = ["--backend", "vllm", "--base-url", base_url, "--model", "tiny-llama", "--tokenizer", model_dir,
            "--dataset-name", "random", "--random-input-len", "256", "--random-output-len", "64",
            "--num-prompts", str(prompts), "--max-concurrency", str(concurrency), "--seed", "0", "--ignore-eos",
            "--num-warmups", "2", "--save-result", "--result-dir", str(out.parent),
            "--result-filename", out.name]  # fmt: skip
    # vLLM's client sends OPENAI_API_KEY as the bearer token, as a user's shell would.
    env = {**os.environ, **({"OPENAI_API_KEY": api_key} if api_key else {})}
    subprocess.run([sys.executable, "-c", DIRECT, *args], check=True, capture_output=True, env=env)
    return float(json.loads(out.read_text())["output_throughput"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--base-url", help="measure this running tiny-llama server instead of starting one")
    parser.add_argument("--tokenizer", help="the running server's weights directory (with --base-url)")
    parser.add_argument("--api-key-file", help="the key the running server requires (with --base-url)")
    options = parse_options(parser, {"rounds": 1, "prompts": 8, "concurrency": 2})

    work = scratch_dir("fidelity-")
    if options.base_url and not options.tokenizer:
        parser.error("--base-url needs --tokenizer (the server's weights directory)")
    api_key = Path(options.api_key_file).read_text().strip() if options.api_key_file else None
    plan = BenchmarkPlan(input_len=256, output_len=64, prompts_per_level=options.prompts,
                         concurrency_levels=(options.concurrency,), seed=0, num_warmups=2)  # fmt: skip
    ours: list[float] = []
    direct: list[float] = []
    target = None
    try:
        if options.base_url:
            base_url, model_dir = options.base_url, options.tokenizer
        else:
            model_dir = str(make_tiny_model(work / "tiny"))
            catalog = parse_catalog({"models": [{"name": "tiny-llama", "source": {"path": model_dir},
                                                 "serving": {"max_model_len": 2048, "max_num_seqs": 32}}]})  # fmt: skip
            target = LocalServers(LocalTargetSettings(state_dir=work / "target", file_sd_dir=work / "sd"))
            base_url = target.ensure_server(catalog.model("tiny-llama"), model_dir, log=lambda _: None).base_url
            api_key = target.api_key
        for round_ in range(options.rounds):
            for which in ("ours", "direct") if round_ % 2 == 0 else ("direct", "ours"):
                if which == "ours":
                    frame, _ = run_plan(plan, engine=VLLM, model="tiny-llama", base_url=base_url, api_key=api_key,
                                        tokenizer=model_dir, work_dir=work / f"ours-{round_}")  # fmt: skip
                    ours.append(float(frame["output_throughput"].iloc[0]))
                else:
                    direct.append(direct_run(base_url, model_dir, options.prompts, options.concurrency,
                                             work / f"direct-{round_}.json", api_key))  # fmt: skip
    finally:
        if target is not None:
            target.stop("tiny-llama")
    ours_median, direct_median = statistics.median(ours), statistics.median(direct)
    ratio = statistics.median(o / d for o, d in zip(ours, direct, strict=True))
    print(f"tiny Llama on vLLM-on-CPU, {options.prompts} prompts (256 in, 64 out) at concurrency {options.concurrency}")
    print(f"platform benchmark output tok/s: {', '.join(f'{v:.0f}' for v in ours)}")
    print(f"direct vllm.benchmarks.serve output tok/s: {', '.join(f'{v:.0f}' for v in direct)}")
    print(f"per-round ratios: {', '.join(f'{o / d:.3f}' for o, d in zip(ours, direct, strict=True))}")
    print(
        f"ours_output_tok_s={ours_median:.0f} direct_output_tok_s={direct_median:.0f} ratio={ratio:.3f} "
        f"goal=0.95..1.05 goal_met={0.95 <= ratio <= 1.05}"
    )


if __name__ == "__main__":
    main()
