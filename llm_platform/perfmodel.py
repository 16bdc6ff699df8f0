"""Adapter to NVIDIA's AIConfigurator performance data (``aiconfigurator-core``): how long one vLLM engine step takes
on a GPU type and how many KV-cache tokens a config leaves, offline, without a GPU.

The package is imported when first needed (it loads ~100 MB of tables); its version is pinned in pyproject.toml and
the vLLM version of its data is pinned here per GPU type, since an unpinned version makes it rescan its data on every
call (seconds instead of a millisecond). A model is read from the configs bundled with the package (by repository
id) or from a local directory with a ``config.json``; nothing is ever downloaded — an unknown model is a
:class:`PerfModelUnavailable`, which callers report as a note, never as a failed run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from llm_platform.catalog import GPU_TYPES, ModelSpec
from llm_platform.engine import engine_for
from llm_platform.errors import PlatformError
from llm_platform.planning.plan import PlanAxes, ServingPlan, plan_serving
from llm_platform.planning.simulator import StepLoad
from llm_platform.planning.trials import EngineDefaults

#: vLLM version of the performance data per GPU type (what aiconfigurator-core 0.12.0 ships).
VLLM_DATA_VERSION = dict.fromkeys(GPU_TYPES, "0.24.0") | {"a100_sxm": "0.14.0"}
#: The AIConfigurator backend whose data are pinned above: a model whose engine estimates under another has no plan.
BACKEND = "vllm"
#: vLLM's KV block size (tokens per block) on GPUs.
KV_BLOCK_SIZE = 16


class PerfModelUnavailable(PlatformError):
    """No performance estimate for this model on this GPU type: said in one line, and the lifecycle goes on."""


def bundled_model_configs() -> set[str]:
    """Repository ids whose ``config.json`` ships with aiconfigurator-core (e.g. ``meta-llama/Meta-Llama-3.1-8B``)."""
    folder = resources.files("aiconfigurator_core") / "model_configs"
    suffix = "_config.json"
    return {
        entry.name[: -len(suffix)].replace("--", "/", 1)
        for entry in folder.iterdir()
        if entry.name.endswith(suffix) and "--" in entry.name
    }


def model_reference(repo: str | None, local_dir: str | None, architecture: Mapping[str, Any] | None = None) -> str:
    """What AIConfigurator reads the architecture from: the bundled config of ``repo``; else ``local_dir`` when it
    holds a ``config.json``; else the architecture the weights' manifest recorded, written to a ``config.json`` of
    its own (on Kubernetes the weights are on the PVC, out of the run's reach). Never a download."""
    if repo is not None and repo in bundled_model_configs():
        return repo
    if local_dir is not None and (Path(local_dir) / "config.json").is_file():
        return str(Path(local_dir).resolve())
    if architecture:
        text = json.dumps(dict(architecture), sort_keys=True)
        folder = Path(tempfile.gettempdir()) / "llm-platform-configs" / hashlib.sha256(text.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(text)
        return str(folder)
    known = repo or local_dir or "the model"
    raise PerfModelUnavailable(
        f"AIConfigurator has no config for '{known}' (it bundles Llama 3.1, Qwen3 and a few others; otherwise the "
        "architecture comes from the downloaded weights' config.json)"
    )


def _quiet() -> None:
    # The package logs a warning per low-fidelity table it loads (tables of other backends); they say nothing here.
    for name in ("aiconfigurator_core", "aiconfigurator"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _unavailable(model: str, gpu_type: str, error: Exception) -> PerfModelUnavailable:
    first = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
    return PerfModelUnavailable(f"no AIConfigurator estimate for '{model}' on {gpu_type}: {first}")


@dataclass(frozen=True)
class SteadyState:
    """AIConfigurator's estimate of vLLM at a steady concurrency (continuous batching, chunked prefill)."""

    ttft_ms: float
    tpot_ms: float
    output_tokens_per_s: float


@dataclass(frozen=True)
class GpuPerfModel:
    """vLLM serving ``model`` on ``gpu_type`` with ``tensor_parallel_size`` GPUs: step times, steady-state
    latency and throughput, and KV capacity."""

    model: str
    gpu_type: str
    tensor_parallel_size: int
    _forward: Any
    _static: Any  # (backend, database view, model object) of the static estimator

    def steady_state(
        self, concurrency: int, input_len: int, output_len: int, max_num_batched_tokens: int,
        gpu_memory_utilization: float,
    ) -> SteadyState:  # fmt: skip
        """TTFT, TPOT and output tokens/s at ``concurrency`` requests in flight (``run_agg``)."""
        from aiconfigurator_core.sdk.config import RuntimeConfig

        backend, database, model = self._static
        try:
            summary = backend.run_agg(
                model, database, RuntimeConfig(batch_size=concurrency, isl=input_len, osl=output_len),
                ctx_tokens=max_num_batched_tokens, free_gpu_memory_fraction=gpu_memory_utilization,
            )  # fmt: skip
            row = summary.get_summary_df().iloc[0]
        except (ValueError, KeyError, IndexError, RuntimeError, AssertionError) as error:
            raise _unavailable(self.model, self.gpu_type, error) from None
        return SteadyState(float(row["ttft"]), float(row["tpot"]), float(row["tokens/s"]))

    def step_ms(self, load: StepLoad) -> float:
        """Milliseconds of one engine step (AIConfigurator's forward-pass model; decode KV rounded to 256 tokens,
        which moves an estimate by well under 1 %, so that a simulation's steps mostly hit the cache)."""
        rounded = StepLoad(load.prefill_requests, load.prefill_tokens, load.decode_requests,
                           -(-load.decode_kv_tokens // 256) * 256)  # fmt: skip
        return _cached_step(self._forward, rounded)

    def kv_cache_tokens(self, gpu_memory_utilization: float, max_num_seqs: int, max_num_batched_tokens: int) -> int:
        """KV-cache tokens per replica; 0 when weights and activations leave no room (the model does not fit)."""
        from aiconfigurator_core.sdk.memory import estimate_num_gpu_blocks

        try:
            blocks = estimate_num_gpu_blocks(
                self.model, self.gpu_type, BACKEND, VLLM_DATA_VERSION[self.gpu_type],
                scheduler_block_size=KV_BLOCK_SIZE, max_num_tokens=max_num_batched_tokens,
                max_batch_size=max_num_seqs, memory_fraction_kind="of_total",
                memory_fraction_value=gpu_memory_utilization, tp_size=self.tensor_parallel_size,
            )  # fmt: skip
        except ValueError as error:
            if "no KV budget" in str(error):
                return 0
            raise _unavailable(self.model, self.gpu_type, error) from None
        return int(blocks) * KV_BLOCK_SIZE


@functools.lru_cache(maxsize=200_000)
def _cached_step(forward: Any, load: StepLoad) -> float:
    metrics = {
        "scheduled_requests": {
            "num_prefill_requests": load.prefill_requests, "sum_prefill_tokens": load.prefill_tokens,
            "var_prefill_length": 0, "num_decode_requests": load.decode_requests,
            "sum_decode_kv_tokens": load.decode_kv_tokens, "var_decode_kv_tokens": 0,
        }
    }  # fmt: skip
    value = forward.estimate_forward_pass_time_ms(metrics)
    return float(value) if value is not None else 0.0


@functools.lru_cache(maxsize=64)
def open_perf_model(model: str, gpu_type: str, tensor_parallel_size: int) -> GpuPerfModel:
    """The performance model of one (model, GPU type, TP size); built once per process (~1 s)."""
    if gpu_type not in VLLM_DATA_VERSION:
        raise PerfModelUnavailable(f"no AIConfigurator data for GPU type '{gpu_type}' (known: {', '.join(GPU_TYPES)})")
    _quiet()
    from aiconfigurator_core.sdk.rust_engine_step import RustForwardPassPerfModel

    config = {
        "schema_version": 1, "model_name": model, "system_name": gpu_type, "backend": BACKEND,
        "backend_version": VLLM_DATA_VERSION[gpu_type], "tp_size": tensor_parallel_size, "pp_size": 1, "extra": {},
    }  # fmt: skip
    try:
        forward = RustForwardPassPerfModel.from_native(config)
        static = _static_estimator(model, gpu_type, tensor_parallel_size)
    except (ValueError, RuntimeError, KeyError, OSError, AssertionError) as error:
        raise _unavailable(model, gpu_type, error) from None
    return GpuPerfModel(model, gpu_type, tensor_parallel_size, forward, static)


def _static_estimator(model: str, gpu_type: str, tensor_parallel_size: int) -> tuple[Any, Any, Any]:
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.config_builders import build_model_config
    from aiconfigurator_core.sdk.models import get_model
    from aiconfigurator_core.sdk.perf_database import get_database_view

    database = get_database_view(gpu_type, BACKEND, VLLM_DATA_VERSION[gpu_type])
    if database is None:
        raise ValueError(f"no vLLM performance data for {gpu_type}")
    config = build_model_config(tp_size=tensor_parallel_size, pp_size=1, attention_dp_size=1, moe_tp_size=1,
                                moe_ep_size=1)  # fmt: skip
    return get_backend(BACKEND), database, get_model(model, config, BACKEND)


@functools.cache
def _gpu_memory_bytes(gpu_type: str) -> int:
    import yaml

    spec = yaml.safe_load((resources.files("aiconfigurator_core") / "systems" / f"{gpu_type}.yaml").read_text())
    return int(spec["gpu"]["mem_capacity"])


def engine_defaults(model: ModelSpec, gpu_type: str) -> EngineDefaults:
    """The engine limits ``model`` runs with on ``gpu_type``: the catalog's, and the engine's own defaults for a GPU
    of that size where the catalog sets none."""
    serving = model.serving
    seqs, tokens = engine_for(serving).gpu_scheduler_defaults(_gpu_memory_bytes(gpu_type))
    return EngineDefaults(
        max_model_len=serving.max_model_len,
        gpu_memory_utilization=serving.gpu_memory_utilization,
        max_num_seqs=serving.max_num_seqs or seqs,
        max_num_batched_tokens=serving.max_num_batched_tokens or tokens,
    )


def plan_model(
    model: ModelSpec,
    gpu_type: str | None,
    gpu_quota: int,
    local_dir: str | None,
    axes: PlanAxes,
    architecture: Mapping[str, Any] | None = None,
) -> ServingPlan:
    """The serving plan of ``model`` on ``gpu_type``; a plan with a note, never an error, when there is no estimate."""
    if gpu_type is None:
        return ServingPlan(model.name, "", note="platform.gpu_type is not set in the catalog (e.g. h100_sxm)")
    engine = engine_for(model.serving)
    if engine.aiconfigurator_backend != BACKEND:
        return ServingPlan(model.name, gpu_type, note=f"AIConfigurator has no estimates for engine '{engine.name}'")
    try:
        reference = model_reference(model.source.repo, local_dir, architecture)
        heads = attention_heads(reference)
        if heads:  # vLLM splits the attention heads over the GPUs: a size that does not divide them cannot serve
            axes = dataclasses.replace(axes, tensor_parallel_size=tuple(
                tp for tp in axes.tensor_parallel_size if heads % tp == 0
            ))  # fmt: skip
        return plan_serving(
            model, gpu_type, lambda tp: open_perf_model(reference, gpu_type, tp), axes, gpu_quota=gpu_quota,
            model_ref=reference,
        )  # fmt: skip
    except PerfModelUnavailable as error:
        return ServingPlan(model.name, gpu_type, note=str(error))


def attention_heads(reference: str) -> int | None:
    """``num_attention_heads`` of the architecture AIConfigurator reads for ``reference`` (a bundled repository id
    or a directory with a ``config.json``; the text part of a multimodal config); None when it does not say."""
    if Path(reference).is_dir():
        text = (Path(reference) / "config.json").read_text()
    else:
        bundled = (
            resources.files("aiconfigurator_core") / "model_configs" / f"{reference.replace('/', '--')}_config.json"
        )
        if not bundled.is_file():
            return None
        text = bundled.read_text()
    try:
        config = json.loads(text)
    except ValueError:
        return None
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    heads = config.get("num_attention_heads") if isinstance(config, dict) else None
    return heads if isinstance(heads, int) and heads > 0 else None


def predicted_levels(
    model: ModelSpec, plan: ServingPlan, levels: tuple[int, ...], input_len: int, output_len: int
) -> pd.DataFrame | None:
    """The plan's estimate of ``model``'s engine config at each benchmark level (output tok/s, TTFT, TPOT); ``None``
    when the plan has no performance model."""
    if plan.note or not plan.model_ref:
        return None
    try:
        perf = open_perf_model(plan.model_ref, plan.gpu_type, model.serving.tensor_parallel_size)
        tokens = engine_defaults(model, plan.gpu_type).max_num_batched_tokens
        states = {
            level: perf.steady_state(level, input_len, output_len, tokens, model.serving.gpu_memory_utilization)
            for level in levels
        }
    except PerfModelUnavailable:
        return None
    return pd.DataFrame(
        [
            {"concurrency": float(level), "predicted_output_throughput": state.output_tokens_per_s,
             "predicted_ttft_ms": state.ttft_ms, "predicted_tpot_ms": state.tpot_ms}
            for level, state in states.items()
        ]
    )  # fmt: skip
