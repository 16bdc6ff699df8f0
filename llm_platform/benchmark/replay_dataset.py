"""Writes the prompts a replaying benchmark sends: ``python replay_dataset.py LENGTHS TOKENIZER SEED OUT``.

``LENGTHS`` is a JSON list of ``[prompt tokens, output tokens]`` (drawn from a traffic profile); ``OUT`` becomes
vLLM's ``custom`` benchmark dataset, one ``{"prompt", "output_tokens"}`` line per request, with a prompt of each
length written with the model's tokenizer (token ids drawn with ``SEED``, decoded, re-encoded and cut to length; a
round trip can merge a token or two). ``vllm bench serve --dataset-name custom --custom-output-len -1
--skip-chat-template --ignore-eos`` then sends every request with its own lengths.

With a third number per request, ``[prompt tokens, output tokens, arrival s]`` (a trace: the requests in their own
order and timing), ``OUT`` becomes vLLM's ``timed_trace`` dataset instead, one ``{"timestamp", "input_length",
"output_length", "hash_ids"}`` line per request: ``vllm bench serve --dataset-name timed_trace`` sends each request
at its own time (``--self-timed``), with a prompt of exactly its length drawn by vLLM itself, one chunk of
:data:`TRACE_CHUNK_TOKENS` per hash id (ids never shared: no prefix the requests did not share).

Standalone on purpose (the standard library and ``transformers`` only): the Kubernetes benchmark Job runs this very
file in the engine image, where the platform is not installed; locally the runner imports it.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def prompt_of_length(tokenizer: Any, tokens: int, rng: random.Random, vocabulary: list[int]) -> str:
    """Text that the tokenizer reads as about ``tokens`` tokens."""
    ids = [rng.choice(vocabulary) for _ in range(tokens)]
    again = tokenizer(tokenizer.decode(ids), add_special_tokens=False).input_ids[:tokens]
    return str(tokenizer.decode(again))


#: Tokens per hash id of a timed trace (vLLM's ``--timed-trace-chunk-hash-size`` default).
TRACE_CHUNK_TOKENS = 16


def write_trace(rows: Sequence[Sequence[float]], out: Path) -> Path:
    """The timed trace of ``rows`` (``[prompt tokens, output tokens, arrival s]``), written to ``out``."""
    lines = []
    for index, (prompt, output, arrival) in enumerate(rows):
        chunks = -(-int(prompt) // TRACE_CHUNK_TOKENS)
        hash_ids = [(index << 20) + chunk for chunk in range(chunks)]  # unique: no shared prefix
        lines.append(json.dumps({"timestamp": float(arrival), "input_length": int(prompt),
                                 "output_length": int(output), "hash_ids": hash_ids}))  # fmt: skip
    out.write_text("\n".join(lines) + "\n")
    return out


def write_dataset(lengths: Sequence[Sequence[float]], tokenizer_path: str, seed: int, out: Path) -> Path:
    """The custom dataset of ``lengths``, written to ``out`` (a timed trace where each row has its arrival)."""
    if lengths and len(lengths[0]) == 3:
        return write_trace(lengths, out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    special = set(tokenizer.all_special_ids)
    vocabulary = [index for index in range(tokenizer.vocab_size) if index not in special]
    rng = random.Random(seed)  # noqa: S311 - benchmark prompts, seeded so that runs are comparable
    lines = [
        json.dumps({"prompt": prompt_of_length(tokenizer, int(prompt), rng, vocabulary), "output_tokens": int(output)})
        for prompt, output in lengths
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv: list[str]) -> int:
    lengths, tokenizer, seed, out = argv
    write_dataset(json.loads(Path(lengths).read_text()), tokenizer, int(seed), Path(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
