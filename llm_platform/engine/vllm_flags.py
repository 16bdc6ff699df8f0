"""vLLM's command-line flags as ``serving.extra_args`` may use them: an allow-list, read the way vLLM reads it.

vLLM's parser (``FlexibleArgumentParser``, an ``argparse.ArgumentParser``) is generous: ``--max_model_len`` is
``--max-model-len``, ``--max-model`` is an abbreviation of it, ``-t`` a prefix of ``-tp``, ``--api-key.x foo`` a
JSON key of ``--api-key``, ``--flag=value`` a value, and a bare ``--`` turns what follows into the positional model.
Every one of those spellings has been used to walk around a deny-list. So ``extra_args`` is read strictly:

- a flag is written in full, in its long form: ``--name`` or ``--name=value`` (underscores read as dashes, as
  vLLM does); no abbreviations, short forms, dotted keys or bare ``--``;
- a flag the platform manages (:data:`MANAGED_FLAGS`) is refused with the catalog field that covers it;
- a flag known to load code, change what is served or write users' data somewhere (:data:`REFUSED_FLAGS`) is
  refused with its reason;
- a flag is accepted only when it is on :data:`ALLOWED_FLAGS`, which also says whether it takes a value; anything
  else is refused. A newer vLLM's new flags are therefore refused until someone adds them here.

``tests/unit/test_engine_flags.py`` checks every flag here against the installed vLLM's own option list (name and
arity), and that vLLM's parser changes exactly the settings this module says an accepted ``extra_args`` changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llm_platform.errors import shorten

SWITCH = 0
"""A flag without a value (``--enforce-eager``; vLLM's boolean flags also have a ``--no-`` form)."""
VALUE = 1
"""A flag followed by exactly one value (``--seed 7`` or ``--seed=7``)."""

#: Flags the platform sets itself, and the catalog field (or the reason) that covers each.
MANAGED_FLAGS: Mapping[str, str] = {
    "--model": "the catalog (weights come from the model store)",
    "--served-model-name": "the catalog (the model's name)",
    "--host": "the target",
    "--port": "the target",
    "--uds": "the target (vLLM listens behind the gate)",
    "--max-model-len": "serving.max_model_len",
    "--gpu-memory-utilization": "serving.gpu_memory_utilization",
    "--enable-chunked-prefill": "serving.enable_chunked_prefill",
    "--no-enable-chunked-prefill": "serving.enable_chunked_prefill",
    "--enable-prefix-caching": "serving.enable_prefix_caching",
    "--no-enable-prefix-caching": "serving.enable_prefix_caching",
    "--max-num-seqs": "serving.max_num_seqs",
    "--max-num-batched-tokens": "serving.max_num_batched_tokens",
    "--tensor-parallel-size": "serving.tensor_parallel_size",
    "--pipeline-parallel-size": "serving.tensor_parallel_size (the GPU quota counts tensor parallelism only)",
    "--data-parallel-size": "autoscaling (replicas, which the GPU quota counts)",
    "--dtype": "serving.dtype",
    "--custom-histogram-buckets": "the platform (request-length buckets that the tuning policy reads)",
    "--disable-uvicorn-access-log": "the platform (the gate writes the access log, without query strings)",
    "--no-disable-uvicorn-access-log": "the platform (the gate writes the access log, without query strings)",
    "--api-key": "a Secret (API keys never go into the catalog)",
    "--trust-remote-code": "serving.trust_remote_code",
    "--no-trust-remote-code": "serving.trust_remote_code",
    "--enable-lora": "adapters (the model's LoRA adapters, downloaded and verified like its weights)",
    "--lora-modules": "adapters (the model's LoRA adapters, downloaded and verified like its weights)",
    "--max-loras": "serving.max_loras",
    "--max-lora-rank": "serving.max_lora_rank",
}

#: Flags that are never accepted, and why (the most likely to be asked for; everything not allowed is refused).
REFUSED_FLAGS: Mapping[str, str] = {
    "--middleware": "it imports and runs arbitrary Python in the server",
    "--tool-parser-plugin": "it imports a Python file into the server",
    "--reasoning-parser-plugin": "it imports a Python file into the server",
    "--io-processor-plugin": "it loads a plugin into the server",
    "--worker-extension-cls": "it imports a class into every worker",
    "--logging-config": "a logging config can import handlers and write anywhere",
    "--allowed-local-media-path": "it lets requests read files of the pod",
    "--config": "a config file would set flags the platform manages",
    "--load-format": "it changes what is loaded (e.g. 'dummy': random weights) behind a benchmarked name",
    "--otlp-traces-endpoint": "it sends request traces to another host",
    "--enable-log-outputs": "it writes users' generated text into the server log",
    "--speculative-config": "a draft model is weights of its own: they would be fetched outside the lineage",
    "--hf-overrides": "it rewrites the model's config behind its benchmark (use the catalog's serving fields)",
    "--generation-config": "it reads a directory of the pod",
    "--api-server-count": "the gate fronts one API server per pod",
    "--headless": "a pod without an API server serves nothing",
}

#: Flags ``extra_args`` may carry, with their arity. Tuning and behaviour knobs that load no code, fetch nothing,
#: read no file and leave the served weights and the GPU count alone.
ALLOWED_FLAGS: Mapping[str, int] = {
    "--seed": VALUE,
    "--block-size": VALUE,
    "--kv-cache-dtype": VALUE,
    "--kv-cache-memory-bytes": VALUE,
    "--num-gpu-blocks-override": VALUE,
    "--cpu-offload-gb": VALUE,
    "--quantization": VALUE,
    "--max-logprobs": VALUE,
    "--scheduling-policy": VALUE,
    "--long-prefill-token-threshold": VALUE,
    "--long-prefill-token-threshold-adaptive": SWITCH,
    "--no-long-prefill-token-threshold-adaptive": SWITCH,
    "--max-cudagraph-capture-size": VALUE,
    "--optimization-level": VALUE,
    "--tokenizer-mode": VALUE,
    "--model-impl": VALUE,
    "--tool-call-parser": VALUE,
    "--reasoning-parser": VALUE,
    "--override-generation-config": VALUE,
    "--limit-mm-per-prompt": VALUE,
    "--enforce-eager": SWITCH,
    "--no-enforce-eager": SWITCH,
    "--async-scheduling": SWITCH,
    "--no-async-scheduling": SWITCH,
    "--disable-log-stats": SWITCH,
    "--disable-custom-all-reduce": SWITCH,
    "--no-disable-custom-all-reduce": SWITCH,
    "--enable-expert-parallel": SWITCH,
    "--no-enable-expert-parallel": SWITCH,
    "--enable-auto-tool-choice": SWITCH,
    "--no-enable-auto-tool-choice": SWITCH,
    "--enable-prompt-tokens-details": SWITCH,
    "--no-enable-prompt-tokens-details": SWITCH,
    "--return-tokens-as-token-ids": SWITCH,
    "--no-return-tokens-as-token-ids": SWITCH,
    "--enable-log-requests": SWITCH,
    "--no-enable-log-requests": SWITCH,
}

#: Allowed, but worth a warning from ``llm-platform validate``.
RISKY_FLAGS: Mapping[str, str] = {
    "--enable-log-requests": "it writes every prompt into the server log",
}

MAX_VALUE_LENGTH = 1024
"""Longest value of one flag (the JSON of ``--override-generation-config`` included)."""


@dataclass(frozen=True)
class ParsedFlag:
    """One flag of ``extra_args``: its canonical name and its value (None for a switch)."""

    flag: str
    value: str | None


def canonical(name: str) -> str:
    """``--max_model_len`` → ``--max-model-len``: how vLLM's parser reads a long flag's name."""
    return "--" + name[2:].replace("_", "-")


def _refusal(flag: str) -> str | None:
    if flag in MANAGED_FLAGS:
        return f"{shorten(flag)} is set by {MANAGED_FLAGS[flag]}; remove it from extra_args"
    if flag in REFUSED_FLAGS:
        return f"{shorten(flag)} is not allowed: {REFUSED_FLAGS[flag]}"
    if flag not in ALLOWED_FLAGS:
        longer = sorted(known for known in (*ALLOWED_FLAGS, *MANAGED_FLAGS) if known.startswith(flag))
        hint = f"; write flags in full (did you mean {shorten(longer[0])}?)" if longer else ""
        return (
            f"{shorten(flag)} is not on the extra_args allow-list (llm_platform/engine/vllm_flags.py: flags that load "
            f"no code and change neither the weights nor the GPUs){hint}"
        )
    return None


def parse_extra_args(args: Sequence[str]) -> tuple[list[ParsedFlag], list[str]]:
    """``extra_args`` read as vLLM would read them: the flags, and one problem line per argument refused."""
    parsed: list[ParsedFlag] = []
    problems: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.isascii() or not arg.isprintable():
            problems.append(f"{shorten(arg)}: only printable ASCII is accepted")
            continue
        if arg == "--":
            problems.append("a bare '--' ends vLLM's options (what follows would become the model); remove it")
            continue
        if not arg.startswith("--"):
            kind = "a short flag" if arg.startswith("-") else "a value without a flag"
            problems.append(f"{shorten(arg)} is {kind}; write each flag in full, e.g. '--seed 7'")
            continue
        name, equals, inline = arg.partition("=")
        if "." in name:
            problems.append(
                f"{shorten(arg)}: dotted keys set a field inside a flag's JSON value; not accepted in extra_args"
            )
            continue
        flag = canonical(name)
        refusal = _refusal(flag)
        if refusal is not None:
            problems.append(refusal)
            index += 1 if not equals and index < len(args) and not args[index].startswith("-") else 0
            continue
        if ALLOWED_FLAGS[flag] == SWITCH:
            if equals:
                problems.append(f"{shorten(flag)} takes no value (got {shorten(arg)})")
            else:
                parsed.append(ParsedFlag(flag, None))
            continue
        if equals:
            value = inline
        elif index < len(args) and not args[index].startswith("-"):
            value = args[index]
            index += 1
        else:
            problems.append(f"{shorten(flag)} needs a value, e.g. '{flag}=…'")
            continue
        if not value or len(value) > MAX_VALUE_LENGTH or not value.isascii() or not value.isprintable():
            problems.append(f"{shorten(flag)}: its value must be 1 to {MAX_VALUE_LENGTH} printable ASCII characters")
            continue
        parsed.append(ParsedFlag(flag, value))
    seen: set[str] = set()
    for item in parsed:
        if item.flag in seen:
            problems.append(f"{shorten(item.flag)} is given twice")
        seen.add(item.flag)
    return parsed, problems


def risky_flags(args: Sequence[str]) -> list[str]:
    """Warnings for accepted flags that deserve one."""
    flags, _ = parse_extra_args(args)
    return [f"{shorten(item.flag)}: {RISKY_FLAGS[item.flag]}" for item in flags if item.flag in RISKY_FLAGS]
