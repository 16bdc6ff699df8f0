"""The model catalog: the schema an operator edits, its defaults, and the checks that keep bad entries out.

Defaults follow the seed architecture (gpu-memory-utilization 0.9, max-model-len 4096, chunked prefill, KEDA 1–5
replicas on the waiting queue, 10 requests/s per client IP, a namespace quota of 8 GPUs). Parsing is pure: the
loader reads the YAML file (and, for models given by a local path, their ``config.json``) and every problem is
reported as one readable line that names the model and the field path, e.g.::

    catalog/models.yaml: model 'llama-8b': serving.gpu_memory_utilization: must be > 0 and <= 1 (got 1.5)
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_platform.errors import CatalogError, UnknownModelError

CATALOG_ENV_VAR = "LLM_PLATFORM_CATALOG"
DEFAULT_CATALOG_PATH = Path("catalog/models.yaml")
MAX_MODEL_NAME_LENGTH = 40
DEFAULT_VLLM_IMAGE_TAG = "v0.32.0"

#: What a model download fetches unless the catalog says otherwise: weights in safetensors, configs, tokenizers
#: and chat templates. ``*.bin``/``*.pt`` pickles are left out on purpose (see weights/ for the fallback rule).
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.json",
    "tokenizer.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.txt",
    "*.jinja",
)

#: vLLM flags that have a dedicated catalog field; ``extra_args`` may not set them a second time.
MANAGED_ENGINE_FLAGS: Mapping[str, str] = {
    "--model": "the catalog (weights come from the model store)",
    "--served-model-name": "the catalog (the model's name)",
    "--host": "the target",
    "--port": "the target",
    "--max-model-len": "serving.max_model_len",
    "--gpu-memory-utilization": "serving.gpu_memory_utilization",
    "--enable-chunked-prefill": "serving.enable_chunked_prefill",
    "--no-enable-chunked-prefill": "serving.enable_chunked_prefill",
    "--enable-prefix-caching": "serving.enable_prefix_caching",
    "--no-enable-prefix-caching": "serving.enable_prefix_caching",
    "--max-num-seqs": "serving.max_num_seqs",
    "--max-num-batched-tokens": "serving.max_num_batched_tokens",
    "--tensor-parallel-size": "serving.tensor_parallel_size",
    "-tp": "serving.tensor_parallel_size",
    "--dtype": "serving.dtype",
    "--custom-histogram-buckets": "the platform (request-length buckets that the tuning policy reads)",
    "--api-key": "a Secret (API keys never go into the catalog)",
}

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# huggingface_hub's own repo-id rule (validate_repo_id), restated here so the core needs no hub client.
_HF_REPO_ID = re.compile(r"^(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b$")
_GIT_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]*$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][0-9]+)?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IMAGE_TAG = re.compile(r"^[\w][\w.\-]{0,127}$")
_HF_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_NGINX_SIZE = re.compile(r"^[0-9]+[kKmMgG]?$")


def is_commit_sha(revision: str) -> bool:
    """Whether ``revision`` is a full 40-hex commit id (as opposed to a branch or tag that can move)."""
    return bool(_COMMIT_SHA.match(revision))


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if len(name) > 63 or not _LABEL_NAME.match(name) or (prefix and not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"'{key}' is not a valid Kubernetes label key")


def _check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(f"'{value}' (label '{key}') is not a valid Kubernetes label value")
    return labels


def _check_quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"'{value}' is not a Kubernetes quantity (examples: '4', '500m', '32Gi')")
    return value


class _Section(BaseModel):
    """Base of every catalog section: unknown fields are errors (a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Section):
    """Where the weights come from: a Hugging Face repository (``repo``) or a directory (``path``)."""

    repo: str | None = None
    """Hugging Face repository id, ``org/name``."""
    revision: str = "main"
    """Branch, tag or 40-hex commit; a branch or tag is resolved to a commit when the weights are downloaded."""
    allow_patterns: tuple[str, ...] = DEFAULT_ALLOW_PATTERNS
    """Glob patterns of the repository files to download."""
    path: str | None = None
    """A directory in Hugging Face layout, used instead of ``repo`` (relative paths start at the catalog file)."""
    track_revision: bool = False
    """Opt-in: when ``revision`` (a branch) moves on the hub, a sensor requests a ``lifecycle`` run for the new
    commit (download, benchmark, promotion with the usual SLO gate)."""

    @field_validator("repo")
    @classmethod
    def _repo_id(cls, repo: str | None) -> str | None:
        if repo is not None and (not _HF_REPO_ID.match(repo) or "--" in repo or ".." in repo or repo.endswith(".git")):
            raise ValueError(f"'{repo}' is not a Hugging Face repository id (expected 'org/name')")
        return repo

    @field_validator("revision")
    @classmethod
    def _revision(cls, revision: str) -> str:
        if not _GIT_REVISION.match(revision) or ".." in revision or revision.endswith(("/", ".lock")):
            raise ValueError(f"'{revision}' is not a branch, tag or commit id")
        return revision

    @field_validator("allow_patterns")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        if not patterns or any(not pattern.strip() for pattern in patterns):
            raise ValueError("must list at least one non-empty glob pattern")
        return patterns

    @model_validator(mode="after")
    def _exactly_one_origin(self) -> Source:
        if (self.repo is None) == (self.path is None):
            raise ValueError("set exactly one of 'repo' (a Hugging Face repository) or 'path' (a local directory)")
        if self.track_revision and (self.repo is None or is_commit_sha(self.revision)):
            raise ValueError("track_revision needs a repository and a branch or tag to follow, not a commit")
        return self


class Serving(_Section):
    """The vLLM engine arguments the catalog controls; ``engine.py`` turns them into the command line."""

    max_model_len: int = Field(4096, ge=16)
    """Longest prompt + completion in tokens; bounds the KV cache a single request may take."""
    gpu_memory_utilization: float = 0.9
    """Fraction of each GPU's memory vLLM may use for weights, activations and KV cache."""
    enable_chunked_prefill: bool = True
    """Split long prefills into chunks so that decoding requests keep streaming (lower inter-token latency)."""
    enable_prefix_caching: bool | None = None
    """Reuse the KV cache of shared prompt prefixes; ``null`` keeps vLLM's default."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Most sequences batched per step; ``null`` keeps vLLM's default."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Token budget per scheduler step; ``null`` keeps vLLM's default."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one replica shards the model over."""
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    """Weight and activation dtype; ``auto`` takes the model's own."""
    image_tag: str = DEFAULT_VLLM_IMAGE_TAG
    """Tag of the ``vllm/vllm-openai`` image; pinned so that a redeploy never changes the engine by surprise."""
    startup_timeout_s: int = Field(1800, ge=60)
    """How long loading the model may take before the server counts as failed (startup probe, local deadline)."""
    extra_args: tuple[str, ...] = ()
    """Further vLLM flags, passed through verbatim; flags with a field of their own are refused."""

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be > 0 and <= 1 (got {value})")
        return value

    @field_validator("image_tag")
    @classmethod
    def _image_tag(cls, tag: str) -> str:
        if not _IMAGE_TAG.match(tag) or tag == "latest":
            raise ValueError(f"'{tag}' is not a pinned image tag (use a release such as '{DEFAULT_VLLM_IMAGE_TAG}')")
        return tag

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, args: tuple[str, ...]) -> tuple[str, ...]:
        for arg in args:
            flag = arg.split("=", 1)[0]
            if flag in MANAGED_ENGINE_FLAGS:
                raise ValueError(f"'{flag}' is set by {MANAGED_ENGINE_FLAGS[flag]}; remove it from extra_args")
            if _HF_TOKEN_LIKE.search(arg):
                raise ValueError("an argument looks like a Hugging Face token; tokens belong in a Secret")
        if args and not args[0].startswith("-"):
            raise ValueError(f"must start with a flag such as '--seed' (got '{args[0]}')")
        return args


class Resources(_Section):
    """What one replica asks the scheduler for."""

    gpus: int | None = Field(None, ge=1)
    """GPUs per replica; defaults to ``serving.tensor_parallel_size``."""
    cpu: str = "4"
    """CPU request of the vLLM container (tokenisation, scheduling, HTTP)."""
    memory: str = "32Gi"
    """Memory request and limit of the vLLM container (weights are staged through host memory while loading)."""

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str) -> str:
        return _check_quantity(value)


class Slo(_Section):
    """Service-level objectives the smoke benchmark must meet before a config is promoted."""

    ttft_p95_ms: float = Field(2000.0, gt=0)
    """95th percentile time to first token, in milliseconds."""
    itl_p95_ms: float = Field(100.0, gt=0)
    """95th percentile inter-token latency, in milliseconds."""
    min_output_tokens_per_s: float = Field(100.0, ge=0)
    """Lowest acceptable output throughput, tokens per second over the benchmark."""
    max_error_rate: float = Field(0.01, ge=0, le=1)
    """Highest acceptable fraction of failed requests."""
    max_regression_pct: float = Field(20.0, gt=0)
    """How much worse (output throughput down, p95 TTFT up, in %) the nightly live benchmark may be than the
    benchmark of the promotion before its check fails."""


class Autoscaling(_Section):
    """KEDA scaling on ``vllm:num_requests_waiting`` summed over the model's pods."""

    min_replicas: int = Field(1, ge=1)
    """Fewest replicas; at least 1, since with no pod there is no queue metric to wake the model up."""
    max_replicas: int = Field(5, ge=1)
    """Most replicas."""
    waiting_threshold: float = Field(5.0, gt=0)
    """Waiting requests per replica above which KEDA adds a replica."""
    polling_interval_s: int = Field(15, ge=1)
    """How often KEDA evaluates the query, in seconds."""
    cooldown_s: int = Field(300, ge=0)
    """How long the queue must stay low before KEDA removes replicas, in seconds."""


class Exposure(_Section):
    """How clients reach the model: an optional Ingress and the NetworkPolicy's allowed clients."""

    host: str | None = None
    """Ingress host name; no Ingress is rendered without one."""
    tls_secret: str | None = None
    """Secret with the TLS certificate for ``host``."""
    rate_limit_rps: int = Field(10, ge=1)
    """Requests per second allowed per client IP at the ingress controller."""
    timeout_s: int = Field(600, ge=600)
    """Ingress read/send timeout in seconds; at least 10 minutes so long generations are not cut off."""
    max_body_size: str = "16m"
    """Largest request body the ingress accepts (long prompts are large JSON documents)."""
    client_labels: dict[str, str] = Field(default_factory=lambda: {"llm-platform/client": "true"})
    """Pod labels of in-cluster clients allowed by the NetworkPolicy (in any namespace)."""

    @field_validator("host")
    @classmethod
    def _host(cls, host: str | None) -> str | None:
        if host is not None and (len(host) > 253 or not _DNS1123_SUBDOMAIN.match(host)):
            raise ValueError(f"'{host}' is not a DNS host name (lower case, e.g. 'llama.example.com')")
        return host

    @field_validator("max_body_size")
    @classmethod
    def _body_size(cls, size: str) -> str:
        if not _NGINX_SIZE.match(size):
            raise ValueError(f"'{size}' is not an nginx size (examples: '16m', '1g')")
        return size

    @field_validator("client_labels")
    @classmethod
    def _client_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels:
            raise ValueError("must name at least one label, or the NetworkPolicy would admit no client pod")
        _check_labels(labels)
        return labels


class Toleration(_Section):
    """A Kubernetes toleration for the GPU nodes' taints."""

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Platform(_Section):
    """Settings shared by every model: namespace, quota, images, storage and the neighbours the policies allow."""

    namespace: str = "llm-serving"
    """Namespace of every model's objects."""
    gpu_quota: int = Field(8, ge=0)
    """``requests.nvidia.com/gpu`` of the namespace ResourceQuota; the catalog may not plan beyond it."""
    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource name of a GPU (the NVIDIA device plugin's)."""
    vllm_image: str = "vllm/vllm-openai"
    """Image repository of the vLLM server; the tag comes from each model's ``serving.image_tag``."""
    platform_image: str = "ghcr.io/llm-platform/llm-platform:0.1.0"
    """Image with this package installed; it runs the weights download Job."""
    weights_pvc: str = "model-weights"
    """The ReadWriteMany PersistentVolumeClaim that holds the model store."""
    weights_storage_class: str | None = None
    """Storage class of that claim (an RWX-capable one such as NFS or CephFS); ``null`` takes the default."""
    weights_storage_size: str = "1Ti"
    """Size of that claim."""
    weights_mount_path: str = "/models"
    """Where the model store is mounted in every pod."""
    hf_token_secret: str = "hf-token"  # noqa: S105 - the Secret's name, not a secret
    """Secret holding the Hugging Face token under the key ``token`` (only the download Job reads it)."""
    hf_endpoint: str | None = None
    """Hub the download Job fetches from (an in-cluster mirror such as olah for air-gapped clusters); ``null`` is
    huggingface.co."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that KEDA queries for the waiting queue."""
    prometheus_namespace: str = "monitoring"
    """Namespace of Prometheus, admitted by each model's NetworkPolicy."""
    ingress_class: str = "nginx"
    """IngressClass of ingress-nginx."""
    ingress_controller_namespace: str = "ingress-nginx"
    """Namespace of the ingress controller, admitted by each model's NetworkPolicy."""
    ingress_controller_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "ingress-nginx"}
    )
    """Pod labels of the ingress controller (those of the official ingress-nginx chart)."""
    prometheus_pod_labels: dict[str, str] = Field(default_factory=lambda: {"app.kubernetes.io/name": "prometheus"})
    """Pod labels of Prometheus (those the Prometheus Operator sets)."""
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the vLLM and benchmark pods require (e.g. a GPU product label)."""
    gpu_tolerations: tuple[Toleration, ...] = (Toleration(key="nvidia.com/gpu", effect="NoSchedule"),)
    """Tolerations for GPU node taints."""
    live_benchmark_cron: str | None = "0 3 * * *"
    """When the scheduled live benchmark of every deployed model runs (cron, 5 fields); ``null``: never."""
    live_benchmark_timezone: str = "UTC"
    """IANA time zone of that cron schedule."""

    @field_validator("live_benchmark_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(f"'{value}' is not a 5-field cron expression such as '0 3 * * *'")
        return value

    @field_validator("live_benchmark_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{value}' is not an IANA time zone such as 'Europe/Berlin'") from None
        return value

    @field_validator("namespace", "weights_pvc", "hf_token_secret")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS1123_LABEL.match(value):
            raise ValueError(f"'{value}' is not a DNS-1123 label (lower case letters, digits and '-')")
        return value

    @field_validator("weights_storage_size")
    @classmethod
    def _size(cls, value: str) -> str:
        return _check_quantity(value)

    @field_validator("gpu_node_selector", "ingress_controller_pod_labels", "prometheus_pod_labels")
    @classmethod
    def _selector(cls, labels: dict[str, str]) -> dict[str, str]:
        _check_labels(labels)
        return labels

    @field_validator("weights_mount_path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"'{path}' is not an absolute path")
        return path


class ModelSpec(_Section):
    """One catalog entry: a model, how it is served, what it must achieve and how it is scaled and exposed."""

    name: str
    """DNS-1123 label of at most 40 characters: it becomes Kubernetes names and the Dagster partition key."""
    description: str = ""
    owners: tuple[str, ...] = ()
    """Dagster asset owners (e-mail addresses or ``team:name``)."""
    source: Source
    serving: Serving = Serving()
    resources: Resources = Resources()
    slo: Slo = Slo()
    autoscaling: Autoscaling = Autoscaling()
    exposure: Exposure = Exposure()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if len(name) > MAX_MODEL_NAME_LENGTH:
            raise ValueError(f"'{name}' is {len(name)} characters long; at most {MAX_MODEL_NAME_LENGTH} are allowed")
        if not _DNS1123_LABEL.match(name):
            raise ValueError(f"'{name}' is not a DNS-1123 label (lower case letters, digits and '-', e.g. 'llama-8b')")
        return name

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica requests."""
        return self.resources.gpus if self.resources.gpus is not None else self.serving.tensor_parallel_size


class Catalog(_Section):
    """The whole catalog file."""

    platform: Platform = Platform()
    models: tuple[ModelSpec, ...]

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``; :class:`UnknownModelError` lists the known ones otherwise."""
        for model in self.models:
            if model.name == name:
                return model
        raise UnknownModelError(name, self.model_names)


# ----------------------------------------------------------------------------------------------------------------
# Cross-field checks: each returns (field path, message) pairs so that the caller can prefix file and model.

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


def model_problems(model: ModelSpec, hf_config: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """Checks that span several fields of one model (and its Hugging Face config, when known)."""
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
    if hf_config is not None:
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


def quota_problems(platform: Platform, models: Sequence[ModelSpec]) -> list[tuple[str | None, str, str]]:
    """GPU budget checks against the namespace quota: (model name or None for the catalog, field, message)."""
    problems: list[tuple[str | None, str, str]] = []
    quota = platform.gpu_quota
    for model in models:
        # A rolling update surges one replica before it removes one, so the peak is max_replicas + 1.
        peak = (model.autoscaling.max_replicas + 1) * model.gpus_per_replica
        if peak > quota:
            problems.append(
                (
                    model.name,
                    "autoscaling.max_replicas",
                    f"needs {peak} GPUs at {model.autoscaling.max_replicas} replicas plus 1 rolling-update surge "
                    f"({model.gpus_per_replica} per replica) but the namespace quota is {quota}; lower max_replicas "
                    "or raise platform.gpu_quota",
                )
            )
    baseline = sum(model.autoscaling.min_replicas * model.gpus_per_replica for model in models)
    if baseline > quota:
        problems.append(
            (
                None,
                "platform.gpu_quota",
                f"the models' min_replicas together need {baseline} GPUs but the namespace quota is {quota}; lower "
                "min_replicas or raise the quota",
            )
        )
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Turning pydantic errors into one line per problem.


def _allowed_fields(model_class: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names valid at ``loc`` (the parent of an unknown field), for 'did you mean' hints."""
    current: Any = model_class
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _describe(error: Mapping[str, Any], model_class: type[BaseModel]) -> tuple[str, str]:
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    path = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc).replace(".[", "[")
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(loc[-1]) if loc else ""
        hint = difflib.get_close_matches(unknown, _allowed_fields(model_class, loc[:-1]), n=1)
        message = "unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("value_error", "assertion_error"):
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    else:
        shown = repr(error.get("input"))
        message = f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {shown[:60]})"
    return path or "(top level)", message


def _format(where: str, path: str, message: str) -> str:
    return f"{where}: {path}: {message}"


def parse_catalog(
    data: object,
    *,
    origin: str = "catalog",
    model_configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Catalog:
    """Validate parsed catalog data; raises :class:`CatalogError` listing every problem, one line each.

    ``model_configs`` maps model names to their Hugging Face ``config.json`` where it is known, for the
    max-model-len check. ``origin`` (usually the file path) starts every message.
    """
    model_configs = model_configs or {}
    if not isinstance(data, Mapping):
        raise CatalogError([f"{origin}: expected a mapping with 'models' (and optionally 'platform') at the top"])
    problems: list[str] = []
    for key in data:
        if key not in Catalog.model_fields:
            problems.append(_format(origin, str(key), "unknown top-level field (expected 'platform' and 'models')"))
    platform = Platform()
    try:
        platform = Platform.model_validate(data.get("platform") or {})
    except ValidationError as exc:
        problems += [_format(origin, "platform." + p, m) for p, m in (_describe(e, Platform) for e in exc.errors())]
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        problems.append(_format(origin, "models", "must be a non-empty list of models"))
        raise CatalogError(problems)

    models: list[ModelSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_models):
        name = raw.get("name") if isinstance(raw, Mapping) else None
        where = f"{origin}: model '{name}'" if isinstance(name, str) and name else f"{origin}: models[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with 'name' and 'source'")
            continue
        try:
            model = ModelSpec.model_validate(raw)
        except ValidationError as exc:
            problems += [_format(where, *_describe(error, ModelSpec)) for error in exc.errors()]
            continue
        if model.name in seen:
            problems.append(_format(where, "name", "duplicate model name; each model needs its own"))
        seen.add(model.name)
        problems += [_format(where, p, m) for p, m in model_problems(model, model_configs.get(model.name))]
        models.append(model)

    for model_name, path, message in quota_problems(platform, models):
        where = f"{origin}: model '{model_name}'" if model_name else origin
        problems.append(_format(where, path, message))
    if problems:
        raise CatalogError(problems)
    return Catalog(platform=platform, models=tuple(models))


class _StrictLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys, which PyYAML would otherwise resolve silently to the last one."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _load_yaml(text: str, origin: str) -> object:
    """YAML text to data; a syntax error becomes a single line with its position."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise CatalogError([f"{origin}{position}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([f"{origin}: invalid YAML: {exc}"]) from None


def parse_catalog_text(
    text: str, *, origin: str = "catalog", model_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> Catalog:
    """Parse and validate catalog YAML text (see :func:`parse_catalog`)."""
    return parse_catalog(_load_yaml(text, origin), origin=origin, model_configs=model_configs)


def default_catalog_path() -> Path:
    """``$LLM_PLATFORM_CATALOG``, else ``catalog/models.yaml`` in the working directory."""
    return Path(os.environ.get(CATALOG_ENV_VAR) or DEFAULT_CATALOG_PATH)


def _local_model_configs(data: object, base: Path) -> dict[str, Mapping[str, Any]]:
    """``config.json`` of the models given by a local path, where it exists and parses."""
    configs: dict[str, Mapping[str, Any]] = {}
    models = data.get("models") if isinstance(data, Mapping) else None
    for raw in models if isinstance(models, list) else []:
        source = raw.get("source") if isinstance(raw, Mapping) else None
        if isinstance(source, Mapping) and isinstance(source.get("path"), str) and isinstance(raw.get("name"), str):
            config_file = base / source["path"] / "config.json"
            try:
                configs[raw["name"]] = json.loads(config_file.read_text())
            except (OSError, ValueError):
                continue  # no readable config: the position check is skipped, the download will tell
    return configs


def load_catalog(
    path: Path | str | None = None, *, model_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> Catalog:
    """Read and validate the catalog file (default: :func:`default_catalog_path`).

    Relative ``source.path`` entries are resolved against the catalog's directory; their ``config.json`` feeds
    the max-model-len check, together with any ``model_configs`` the caller knows (e.g. from downloaded weights).
    """
    catalog_path = Path(path) if path is not None else default_catalog_path()
    origin = str(catalog_path)
    try:
        text = catalog_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(
            [f"{origin}: catalog file not found; pass --catalog PATH or set {CATALOG_ENV_VAR}"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([f"{origin}: cannot read the catalog: {exc}"]) from None
    data = _load_yaml(text, origin)
    configs = _local_model_configs(data, catalog_path.parent)
    configs.update(model_configs or {})
    catalog = parse_catalog(data, origin=origin, model_configs=configs)
    return _resolve_local_paths(catalog, catalog_path.parent)


def _resolve_local_paths(catalog: Catalog, base: Path) -> Catalog:
    models = []
    for model in catalog.models:
        if model.source.path is not None and not Path(model.source.path).is_absolute():
            source = model.source.model_copy(update={"path": str((base / model.source.path).resolve())})
            model = model.model_copy(update={"source": source})
        models.append(model)
    return catalog.model_copy(update={"models": tuple(models)})


def parse_assignments(assignments: Sequence[str]) -> dict[str, str]:
    """``["max_num_seqs=64", …]`` (the CLI's ``--set``) to a mapping; a malformed item is a :class:`CatalogError`."""
    parsed: dict[str, str] = {}
    problems = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected FIELD=VALUE, e.g. max_num_seqs=64")
            continue
        parsed[key.strip().removeprefix("serving.")] = value.strip()
    if problems:
        raise CatalogError(problems)
    return parsed


def apply_serving_overrides(model: ModelSpec, overrides: Mapping[str, object], origin: str = "overrides") -> ModelSpec:
    """``model`` with ``serving`` fields replaced, validated like the catalog itself (one line per problem).

    String values are read as YAML scalars, as in the catalog file: ``"64"`` is 64, ``"true"`` is true,
    ``"[--seed, '1']"`` a list.
    """
    values = {
        key.removeprefix("serving."): _load_yaml(value, origin) if isinstance(value, str) else value
        for key, value in overrides.items()
    }
    where = f"{origin}: model '{model.name}'"
    try:
        serving = Serving.model_validate({**model.serving.model_dump(exclude_unset=True), **values})
    except ValidationError as error:
        described = (_describe(problem, Serving) for problem in error.errors())
        raise CatalogError([_format(where, f"serving.{path}", message) for path, message in described]) from None
    effective = model.model_copy(update={"serving": serving})
    problems = model_problems(effective)
    if problems:
        raise CatalogError([_format(where, path, message) for path, message in problems])
    return effective


def serving_diff(base: Serving, effective: Serving) -> dict[str, tuple[object, object]]:
    """Fields whose value differs: ``{field: (catalog value, effective value)}``."""
    before, after = base.model_dump(), effective.model_dump()
    return {key: (before[key], after[key]) for key in after if before[key] != after[key]}
