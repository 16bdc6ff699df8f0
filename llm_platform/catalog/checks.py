"""Checks that span several fields of a model (and its Hugging Face ``config.json``) or several models (the GPU
quota): each returns (field path, message) pairs so that the caller can prefix the file and the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm_platform.catalog.schema import IMAGE_DIGEST, Adapter, ModelSpec, Platform
from llm_platform.engine import engine_for
from llm_platform.errors import shorten

_POSITION_LIMIT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)


_PRESCALED_ROPE_TYPES = ("su", "longrope", "llama3", "yarn", "deepseek_yarn", "deepseek_llama_scaling")


def position_limit(hf_config: Mapping[str, Any]) -> int | None:
    """The longest context a model supports according to its Hugging Face ``config.json``, or None if unknown.

    Follows vLLM 0.32's reading of the config (``_get_and_verify_max_len``): the smallest of the length keys
    present (in the text sub-config of multimodal models), times the RoPE scaling factor, except for the RoPE types
    whose ``max_position_embeddings`` is already the scaled length (YaRN, LongRoPE, Llama 3).
    """
    config: Mapping[str, Any] = hf_config.get("text_config") or hf_config
    limits: list[int] = [config[key] for key in _POSITION_LIMIT_KEYS if isinstance(config.get(key), int)]
    if not limits:
        return None
    limit = min(limits)
    # Transformers 5 renamed rope_scaling to rope_parameters; configs in the wild carry either.
    rope = config.get("rope_parameters") or config.get("rope_scaling")
    if isinstance(rope, Mapping) and "gemma3" not in str(config.get("model_type", "")):
        rope_type = rope.get("rope_type", rope.get("type"))
        factor = rope.get("factor")
        if rope_type not in _PRESCALED_ROPE_TYPES and isinstance(factor, (int, float)):
            limit = int(limit * factor)
    return limit


def model_problems(
    model: ModelSpec, hf_config: Mapping[str, Any] | None = None, *, limit: int | None = None
) -> list[tuple[str, str]]:
    """Checks that span several fields of one model, and its position limit: ``limit``, or read from its Hugging
    Face ``config.json`` (``hf_config``) when that is known."""
    problems: list[tuple[str, str]] = []
    scaling, serving = model.autoscaling, model.serving
    if scaling.max_replicas < scaling.min_replicas:
        problems.append(
            (
                "autoscaling.max_replicas",
                f"must be >= autoscaling.min_replicas ({scaling.max_replicas} < {scaling.min_replicas})",
            )
        )
    if model.resources.gpus is not None and model.resources.gpus != serving.tensor_parallel_size:
        problems.append(
            (
                "resources.gpus",
                f"vLLM uses exactly serving.tensor_parallel_size={serving.tensor_parallel_size} GPUs per replica "
                f"but {model.resources.gpus} are requested; make them equal",
            )
        )
    if model.exposure.host is not None and model.exposure.tls_secret is None:
        problems.append(
            (
                "exposure.tls_secret",
                "required when exposure.host is set: clients send the API key with every request; name the Secret "
                "with the host's TLS certificate",
            )
        )
    problems += _rollout_problems(model)
    problems += _lora_problems(model)
    bench = model.benchmark
    if bench.input_len is not None and bench.input_len + bench.output_len > serving.max_model_len:
        problems.append(
            (
                "benchmark.input_len",
                f"{bench.input_len} prompt + {bench.output_len} output tokens exceed serving.max_model_len "
                f"({serving.max_model_len}): vLLM would refuse every request; shorten them",
            )
        )
    batched = serving.max_num_batched_tokens
    if batched is not None:
        if not serving.enable_chunked_prefill and batched < serving.max_model_len:
            problems.append(
                (
                    "serving.max_num_batched_tokens",
                    f"must be >= serving.max_model_len ({batched} < {serving.max_model_len}) when chunked prefill "
                    "is off, or no full-length prompt could ever be scheduled",
                )
            )
        if serving.max_num_seqs is not None and batched < serving.max_num_seqs:
            problems.append(
                (
                    "serving.max_num_batched_tokens",
                    f"must be >= serving.max_num_seqs ({batched} < {serving.max_num_seqs})",
                )
            )
    if limit is None and hf_config is not None:
        limit = position_limit(hf_config)
    if limit is not None and serving.max_model_len > limit:
        problems.append(
            (
                "serving.max_model_len",
                f"{serving.max_model_len} exceeds the model's position limit of {limit} tokens; "
                f"set it to {limit} or less",
            )
        )
    return problems


def _rollout_problems(model: ModelSpec) -> list[tuple[str, str]]:
    """A canary needs an edge that can split the traffic by weight: the model's Ingress or HTTPRoute in a cluster
    (the embedded default's nginx edge always can, but one catalog describes both targets)."""
    problems: list[tuple[str, str]] = []
    if model.rollout.strategy == "canary" and model.exposure.host is None:
        problems.append(
            (
                "rollout.strategy",
                "a canary needs exposure.host: without an Ingress or HTTPRoute there is no edge to split the "
                "traffic between the stable and the canary version; set exposure.host or rollout.strategy: replace",
            )
        )
    return problems


#: The adapter slots when the catalog leaves ``serving.max_loras`` out: every adapter, up to this many at once.
DEFAULT_MAX_LORAS = 8


def max_loras(model: ModelSpec) -> int:
    """Adapters one batch may hold: the catalog's ``serving.max_loras``, else all of them up to 8."""
    return model.serving.max_loras or min(len(model.adapters), DEFAULT_MAX_LORAS)


def _lora_problems(model: ModelSpec) -> list[tuple[str, str]]:
    """The LoRA knobs against the adapters and the engine: slots and ranks it can serve, knobs without adapters."""
    serving, engine = model.serving, engine_for(model.serving)
    problems: list[tuple[str, str]] = []
    if not model.adapters:
        problems += [(f"serving.{knob}", "set without adapters: remove it, or list the model's adapters")
                     for knob in ("max_loras", "max_lora_rank") if getattr(serving, knob) is not None]  # fmt: skip
        return problems
    if not engine.lora_ranks:
        return [("adapters", f"engine '{engine.name}' serves no LoRA adapters; serve them with vllm")]
    if serving.max_loras is not None and serving.max_loras > len(model.adapters):
        problems.append(("serving.max_loras", f"{serving.max_loras} slots for {len(model.adapters)} adapters: each "
                         "slot reserves GPU memory; at most as many as there are adapters"))  # fmt: skip
    if serving.max_lora_rank is not None and serving.max_lora_rank not in engine.lora_ranks:
        ranks = ", ".join(map(str, engine.lora_ranks))
        problems.append(("serving.max_lora_rank", f"{engine.name} serves ranks {ranks}; {serving.max_lora_rank} is "
                         "none of them (take the next one up)"))  # fmt: skip
    return problems


def adapter_config_problems(model: ModelSpec, adapter: Adapter, config: Mapping[str, Any]) -> list[str]:
    """What an adapter's ``adapter_config.json`` (read after its download, before anything serves it) says against
    its base model and the engine, one line each: a PEFT method other than LoRA, a rank missing, above
    ``serving.max_lora_rank`` or above any the engine serves, another base model than the catalog's."""
    engine, problems = engine_for(model.serving), []
    method = config.get("peft_type", "LORA")
    if not isinstance(method, str) or method.upper() != "LORA":
        problems.append(f"peft_type {shorten(str(method))} is not LORA: only LoRA adapters are served")
    rank, limit = config.get("r"), model.serving.max_lora_rank
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        problems.append("its rank 'r' is missing or not a positive integer")
    elif engine.lora_ranks and rank > max(engine.lora_ranks):
        problems.append(f"rank {rank} is above any {engine.name} serves (at most {max(engine.lora_ranks)})")
    elif limit is not None and rank > limit:
        fits = min(r for r in engine.lora_ranks if r >= rank)
        problems.append(f"rank {rank} exceeds serving.max_lora_rank {limit}: set it to {fits} or more")
    base = config.get("base_model_name_or_path")
    base = base if isinstance(base, str) else ""
    # A hub id other than the base's is another model; a local path (where it was trained) says nothing either way.
    hub_id = "/" in base and not base.startswith(("/", "."))
    if hub_id and model.source.repo and base.lower() != model.source.repo.lower():
        problems.append(f"trained on {shorten(base)}, not on the model's '{model.source.repo}'")
    return [f"model '{model.name}': adapter '{adapter.name}': {problem}" for problem in problems]


def lora_rank(model: ModelSpec, ranks: Sequence[int]) -> int:
    """The rank the engine reserves room for: ``serving.max_lora_rank``, else the smallest the engine serves that
    fits the largest adapter rank in ``ranks`` (the adapters' configs), at least the engine's default."""
    engine = engine_for(model.serving)
    if model.serving.max_lora_rank is not None:
        return model.serving.max_lora_rank
    needed = max([*ranks, engine.default_lora_rank or 1])
    return min(rank for rank in engine.lora_ranks if rank >= needed)


def _canary_replicas(model: ModelSpec) -> int:
    """The canary's fixed replicas beside the stable version (none without a canary strategy)."""
    return model.rollout.canary_replicas if model.rollout.strategy == "canary" else 0


def peak_replicas(model: ModelSpec) -> int:
    """Replicas a model can hold at once: max_replicas plus a rolling update's surge of one, plus the canary's
    fixed replicas while a canary runs beside the stable version."""
    return model.autoscaling.max_replicas + 1 + _canary_replicas(model)


def quota_problems(platform: Platform, models: Sequence[ModelSpec]) -> list[tuple[str | None, str, str]]:
    """GPU budget checks against the namespace quota: (model name or None for the catalog, field, message)."""
    quota = platform.gpu_quota
    problems: list[tuple[str | None, str, str]] = [
        (model.name, *problem) for model in models if (problem := _peak_problem(model, quota)) is not None
    ]
    baseline = _baseline_problem(sum(_minimum_gpus(model) for model in models), quota)
    return problems + ([(None, *baseline)] if baseline is not None else [])


def _minimum_gpus(model: ModelSpec) -> int:
    return model.autoscaling.min_replicas * model.gpus_per_replica


def _peak_problem(model: ModelSpec, quota: int) -> tuple[str, str] | None:
    """A rolling update surges one replica before it removes one; a canary runs its replicas beside them."""
    peak = peak_replicas(model) * model.gpus_per_replica
    if peak <= quota:
        return None
    canary = _canary_replicas(model)
    extra = f" and {canary} canary" if canary else ""
    return (
        "autoscaling.max_replicas",
        f"needs {peak} GPUs at {model.autoscaling.max_replicas} replicas plus 1 rolling-update surge{extra} "
        f"({model.gpus_per_replica} per replica) but the namespace quota is {quota}; lower max_replicas or raise "
        "platform.gpu_quota",
    )


def _baseline_problem(baseline: int, quota: int) -> tuple[str, str] | None:
    if baseline <= quota:
        return None
    return (
        "platform.gpu_quota",
        f"the models' min_replicas together need {baseline} GPUs but the namespace quota is {quota}; lower "
        "min_replicas or raise the quota",
    )


@dataclass(frozen=True)
class QuotaBudget:
    """The namespace's GPU quota against every model's minimum, summed once for a whole fleet."""

    quota: int
    minimums: dict[str, int]
    """GPUs each model keeps at its minimum replicas."""
    total: int

    @classmethod
    def of(cls, platform: Platform, models: Sequence[ModelSpec]) -> QuotaBudget:
        minimums = {model.name: _minimum_gpus(model) for model in models}
        return cls(platform.gpu_quota, minimums, sum(minimums.values()))

    def max_replicas(self, model: ModelSpec) -> int:
        """The most replicas ``model`` may scale to: its peak — (max_replicas + one rolling-update surge + a canary's
        replicas) x GPUs per replica — plus every other model's minimum must fit the quota (the catalog's
        arithmetic)."""
        others = self.total - self.minimums.get(model.name, 0)
        overhead = 1 + _canary_replicas(model)  # the surge, and a canary's replicas
        return max(0, (self.quota - others) // max(model.gpus_per_replica, 1) - overhead)

    def problems_with(self, model: ModelSpec) -> list[tuple[str, str]]:
        """What :func:`quota_problems` says of ``model`` and of the whole fleet once ``model`` replaces its entry,
        without walking the fleet again: a proposal per model stays O(1) at any fleet size."""
        total = self.total - self.minimums.get(model.name, 0) + _minimum_gpus(model)
        found = (_peak_problem(model, self.quota), _baseline_problem(total, self.quota))
        return [problem for problem in found if problem is not None]


def max_replicas_within_quota(platform: Platform, models: Sequence[ModelSpec], model: ModelSpec) -> int:
    """:meth:`QuotaBudget.max_replicas` for one model (a sensor over a fleet builds the budget once)."""
    return QuotaBudget.of(platform, models).max_replicas(model)


def model_warnings(model: ModelSpec) -> list[tuple[str, str]]:
    """Settings that are valid but deserve a second look: (field path, message)."""
    warnings = [
        ("serving.extra_args", message)
        for message in engine_for(model.serving).extra_args_warnings(model.serving.extra_args)
    ]
    if not IMAGE_DIGEST.match(model.serving.image_tag):
        warnings.append(
            (
                "serving.image_tag",
                f"'{model.serving.image_tag}' is a tag, which can be moved; pin the digest (sha256:…)",
            )
        )
    if model.serving.trust_remote_code:
        warnings.append(("serving.trust_remote_code", "vLLM will run the Python code of the model's repository"))
    return warnings


def platform_warnings(platform: Platform) -> list[tuple[str, str]]:
    """Platform settings that are valid but deserve a second look: (field path, message)."""
    if "@sha256:" in platform.platform_image:
        return []
    return [("platform.platform_image", "a tag, which can be moved; pin the digest (name@sha256:…)")]
