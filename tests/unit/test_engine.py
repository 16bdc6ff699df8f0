"""Engine arguments: the single translation from a serving config to a vLLM command line."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_platform.catalog import Serving
from llm_platform.engine import EngineInvocation
from llm_platform.engine.vllm import BASE_ENVIRONMENT, SINGLE_DEVICE_CPU_ENVIRONMENT, VLLM, VLLM_SERVER_MODULE

engine_args = VLLM.server_args


def engine_invocation(serving: Serving, *, host: str = "0.0.0.0", port: int = 8000, **kwargs: Any) -> EngineInvocation:
    return VLLM.invocation(serving, host=host, port=port, **kwargs)


def _value(args: tuple[str, ...], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} appears {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def test_defaults_become_explicit_flags() -> None:
    args = engine_args(Serving(), served_model_name="llama", weights_path="/models/llama/abc")
    assert _value(args, "--model") == "/models/llama/abc"
    assert _value(args, "--served-model-name") == "llama"
    assert _value(args, "--max-model-len") == "4096"
    assert _value(args, "--gpu-memory-utilization") == "0.9"
    assert _value(args, "--tensor-parallel-size") == "1"
    assert _value(args, "--dtype") == "auto"
    assert "--enable-chunked-prefill" in args
    # Unset optional knobs keep vLLM's own defaults: no flag at all.
    for flag in ("--max-num-seqs", "--max-num-batched-tokens", "--enable-prefix-caching", "--no-enable-prefix-caching"):
        assert flag not in args


@pytest.mark.parametrize(
    ("serving", "present", "absent"),
    [
        (Serving(enable_chunked_prefill=False), ["--no-enable-chunked-prefill"], ["--enable-chunked-prefill"]),
        (Serving(enable_prefix_caching=True), ["--enable-prefix-caching"], ["--no-enable-prefix-caching"]),
        (Serving(enable_prefix_caching=False), ["--no-enable-prefix-caching"], ["--enable-prefix-caching"]),
    ],
)
def test_booleans_map_to_vllm_flag_pairs(serving: Serving, present: list[str], absent: list[str]) -> None:
    args = engine_args(serving, served_model_name="m", weights_path="/w")
    assert all(flag in args for flag in present)
    assert not any(flag in args for flag in absent)


def test_tuning_knobs_and_extra_args_pass_through_in_order() -> None:
    serving = Serving(
        max_num_seqs=64,
        max_num_batched_tokens=8192,
        tensor_parallel_size=2,
        dtype="bfloat16",
        extra_args=("--seed", "7", "--kv-cache-dtype=fp8"),
    )
    args = engine_args(serving, served_model_name="m", weights_path="/w")
    assert _value(args, "--max-num-seqs") == "64"
    assert _value(args, "--max-num-batched-tokens") == "8192"
    assert _value(args, "--tensor-parallel-size") == "2"
    assert _value(args, "--dtype") == "bfloat16"
    assert args[-3:] == ("--seed", "7", "--kv-cache-dtype=fp8")


def test_invocation_adds_listen_address_and_base_environment() -> None:
    invocation = engine_invocation(
        Serving(),
        served_model_name="m",
        weights_path="/w",
        host="127.0.0.1",
        port=8123,
        extra_env={"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "0"},
    )
    assert _value(invocation.args, "--host") == "127.0.0.1"
    assert _value(invocation.args, "--port") == "8123"
    assert invocation.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # Targets may add settings but not undo the base ones (weights are always local).
    assert invocation.env["HF_HUB_OFFLINE"] == BASE_ENVIRONMENT["HF_HUB_OFFLINE"] == "1"
    assert invocation.command("/venv/bin/python")[:3] == ["/venv/bin/python", "-m", VLLM_SERVER_MODULE]


@pytest.mark.parametrize(
    ("threads_bind", "one_process"), [("nobind", True), ("auto", False), ("0-1", False), (None, False)]
)
def test_an_unpinned_cpu_server_runs_its_model_in_the_engine_process(
    threads_bind: str | None, one_process: bool
) -> None:
    env = VLLM.cpu_environment(kv_cache_space_gib=2, threads_bind=threads_bind, threads=3)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    # vLLM pins OpenMP threads only from a worker process of their own, so pinned servers keep it.
    assert (env.items() >= SINGLE_DEVICE_CPU_ENVIRONMENT.items()) is one_process
    # The thread count applies to an unpinned server; a pinned one runs a thread per core of its list.
    assert env.get("OMP_NUM_THREADS") == ("3" if one_process else None)
    assert "OMP_NUM_THREADS" not in VLLM.cpu_environment(kv_cache_space_gib=2, threads_bind=threads_bind)


def test_fingerprint_changes_with_any_argument_and_only_then() -> None:
    first = engine_invocation(Serving(), served_model_name="m", weights_path="/w")
    same = engine_invocation(Serving(), served_model_name="m", weights_path="/w")
    other = engine_invocation(Serving(max_num_seqs=8), served_model_name="m", weights_path="/w")
    assert first.fingerprint == same.fingerprint
    assert first.fingerprint != other.fingerprint


def test_request_length_buckets_resolve_the_top_of_the_context() -> None:
    args = engine_args(Serving(max_model_len=4096), served_model_name="m", weights_path="/w")
    buckets = json.loads(_value(args, "--custom-histogram-buckets"))["request_tokens"]
    # vLLM's own 1-2-5 series below the limit, then bounds near it (its default would stop at 2000).
    assert buckets[:4] == [1, 2, 5, 10] and buckets == sorted(set(buckets))
    assert buckets[-6:] == [2000, 2048, 3072, 3686, 3891, 4096]
