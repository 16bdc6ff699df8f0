"""The model catalog's schema: the fields an operator edits, their defaults, and the checks within one field.

Defaults follow the seed architecture (gpu-memory-utilization 0.9, max-model-len 4096, chunked prefill, KEDA 1–5
replicas on the waiting queue, 10 requests/s per client IP, a namespace quota of 8 GPUs). Checks that span several
fields are in ``checks.py``; turning data into a :class:`Catalog` with one readable line per problem is in
``parsing.py``; typed changes to a model's settings are in ``patches.py``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from llm_platform.conventions import ServedModel
from llm_platform.engine import DEFAULT_ENGINE, UnknownEngineError, engine_named
from llm_platform.errors import UnknownModelError, shorten

MAX_MODEL_NAME_LENGTH = 40
DEFAULT_VLLM_IMAGE_TAG = "v0.32.0"
#: GPU types NVIDIA's AIConfigurator has vLLM performance data for (aiconfigurator-core 0.12.0), by its names.
GPU_TYPES = ("h100_sxm", "h200_sxm", "b200_sxm", "b300_sxm", "gb200", "gb300", "l40s", "rtx_pro_6000_server",
             "a100_sxm")  # fmt: skip

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

#: What an adapter download fetches unless the catalog says otherwise: its config and safetensors weights only
#: (never a pickle: ``adapter_model.bin`` is left out, and an adapter without safetensors is refused).
ADAPTER_ALLOW_PATTERNS: tuple[str, ...] = ("adapter_config.json", "*.safetensors")
#: Most adapters one model may serve (each is a served name, a download and a benchmark).
MAX_ADAPTERS = 32

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
# huggingface_hub's own repo-id rule (validate_repo_id), restated here so the core needs no hub client.
_HF_REPO_ID = re.compile(r"^(\b[\w\-.]+\b/)?\b[\w\-.]{1,96}\b\Z", re.ASCII)
_GIT_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,254}\Z")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}\Z")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][0-9]+)?\Z")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)\Z")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_IMAGE_TAG = re.compile(r"^[\w][\w.\-]{0,127}\Z", re.ASCII)
IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_IMAGE_REPOSITORY = r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
_IMAGE_REFERENCE = re.compile(rf"^{_IMAGE_REPOSITORY}(:[\w][\w.\-]{{0,127}}|@sha256:[0-9a-f]{{64}})\Z", re.ASCII)
_IMAGE_NAME = re.compile(rf"^{_IMAGE_REPOSITORY}\Z")
#: An extended resource name (``vendor.com/gpu``): a domain-prefixed name outside Kubernetes' own namespaces.
_EXTENDED_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9_.]*[a-z0-9])?\Z")
_OWNER = re.compile(r"^([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|team:[A-Za-z0-9_-]+)\Z")
_CRON_FIELD = re.compile(
    r"^(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,2})?(,(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,2})?)*\Z"
)
#: Where a cron field's values may lie: minute, hour, day of month, month, day of week.
_CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))

INT32_MAX = 2**31 - 1
"""Every integer the catalog renders lands in an int32 field of some object (probe thresholds, deadlines, replica
counts, ports): larger values would overflow it."""
MAX_FLOAT = 1e9
"""Largest finite number a float field takes (an SLO of 1e9 ms is eleven days: anything above is a mistake)."""
MAX_TEXT = 253
"""Longest string a field of the catalog takes (a DNS name's limit; descriptions and paths have their own)."""
#: Container paths the model store may not be mounted over: the root and the system's own directories.
SYSTEM_PATHS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys",
                "/usr", "/var", "/opt", "/app")  # fmt: skip
_HF_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")
_NGINX_SIZE = re.compile(r"^[0-9]{1,6}[kKmMgG]?\Z")


_NGINX_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def nginx_size_bytes(size: str) -> int:
    """An nginx size (``16m``, ``1g``, ``512k``, ``100``) in bytes, as nginx reads ``client_max_body_size``."""
    unit = size[-1].lower() if size[-1:].isalpha() else ""
    return int(size[: len(size) - len(unit)]) * _NGINX_SIZE_UNITS[unit]


#: Paths every vLLM pod mounts itself (``manifests/pods.py``, the download Job's ``/tmp``): the model store may
#: not overlap them.
RESERVED_MOUNT_PATHS = ("/dev/shm", "/tmp", "/home/vllm")  # noqa: S108 - container paths, not temporary files
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def check_http_url(url: str, *, https_only: bool) -> str:
    """``url`` if it is an http(s) URL with a host (``https_only``: plain http only for loopback), else ValueError."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1].rsplit(":", 1)[0] if sep else ""
    if scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
        raise ValueError(f"{shorten(url)} is not an http(s) URL such as 'https://host:port'")
    if "@" in rest.split("/", 1)[0]:
        raise ValueError("credentials do not belong in the URL (the token comes from a Secret)")
    if https_only and scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise ValueError(f"{shorten(url)} must use https (plain http only for a hub on this machine, e.g. 127.0.0.1)")
    return url


def _is_dns1123_subdomain(value: str) -> bool:
    """Kubernetes' rule for Secret names and host names."""
    return len(value) <= 253 and _DNS1123_SUBDOMAIN.match(value) is not None


def _check_secret_name(name: str) -> str:
    if not _is_dns1123_subdomain(name):
        raise ValueError(f"{shorten(name)} is not a Secret name (a DNS-1123 subdomain: lower case, digits, '-', '.')")
    return name


def is_commit_sha(revision: str) -> bool:
    """Whether ``revision`` is a full 40-hex commit id (as opposed to a branch or tag that can move)."""
    return bool(_COMMIT_SHA.match(revision))


def _check_label_key(key: str) -> None:
    prefix, _, name = key.rpartition("/")
    if len(name) > 63 or not _LABEL_NAME.match(name) or (prefix and not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"{shorten(key)} is not a valid Kubernetes label key")


def _check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    for key, value in labels.items():
        _check_label_key(key)
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(f"{shorten(value)} (label {shorten(key)}) is not a valid Kubernetes label value")
    return labels


def _check_quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"{shorten(value)} is not a Kubernetes quantity (examples: '4', '500m', '32Gi')")
    return value


class _Section(BaseModel):
    """Base of every catalog section: unknown fields are errors (a typo must not silently become a default), floats
    are finite (``inf`` and ``nan`` are refused), and every number and string is bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool) or info.field_name == "description":
            return value
        if isinstance(value, int) and abs(value) > INT32_MAX:
            raise ValueError(f"must be at most {INT32_MAX} (an int32 in the rendered objects; got {value:.3g})")
        if isinstance(value, float) and abs(value) > MAX_FLOAT:
            raise ValueError(f"must be at most {MAX_FLOAT:g} (got {value:g})")
        for text in value if isinstance(value, tuple | list) else (value,):
            if isinstance(text, str) and not (text.isascii() and text.isprintable()):
                raise ValueError(f"{shorten(text)}: only printable ASCII (no newlines, tabs or NUL bytes)")
        return value


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
            raise ValueError(f"{shorten(repo)} is not a Hugging Face repository id (expected 'org/name')")
        return repo

    @field_validator("revision")
    @classmethod
    def _revision(cls, revision: str) -> str:
        if not _GIT_REVISION.match(revision) or ".." in revision or revision.endswith(("/", ".lock")):
            raise ValueError(f"{shorten(revision)} is not a branch, tag or commit id")
        return revision

    @field_validator("path")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        if path is not None and (not path or len(path) > 4096 or ".." in path.split("/")):
            raise ValueError(
                f"{shorten(path)} is not a plain path: no '..' (a relative path stays inside the catalog's directory)"
            )
        return path

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


class AdapterSource(Source):
    """Where an adapter's weights come from: like a model's, without revision tracking (an adapter changes with a
    promotion of its base, pinned), and by default its ``adapter_config.json`` and safetensors only."""

    allow_patterns: tuple[str, ...] = ADAPTER_ALLOW_PATTERNS

    @model_validator(mode="after")
    def _no_tracking(self) -> AdapterSource:
        if self.track_revision:
            raise ValueError("an adapter follows its base's promotions: track_revision is for models only")
        return self


class Adapter(_Section):
    """A LoRA adapter served on the model's base weights under a name of its own (KServe's ``LoRASpec``; the engine
    loads it at start from the model store): requests that name it get the base with the adapter applied."""

    name: str
    """The served model name clients send: a DNS-1123 label, unique across every served name of the catalog."""
    source: AdapterSource
    """The adapter's repository (or directory) and revision; downloaded beside the base's weights."""
    base_revision: str | None = None
    """The base weights' commit the adapter was trained on (40-hex); when set, the adapter is served only on it."""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if len(name) > 63 or not _DNS1123_LABEL.match(name):
            raise ValueError(
                f"{shorten(name)} is not a served name: a DNS-1123 label of at most 63 characters (lower case letters, "
                "digits and '-')"
            )
        return name

    @field_validator("base_revision")
    @classmethod
    def _commit(cls, revision: str | None) -> str | None:
        if revision is not None and not is_commit_sha(revision):
            raise ValueError(f"{shorten(revision)} is not a commit id (40 hex characters): a branch can move")
        return revision


class Serving(_Section):
    """The engine settings the catalog controls; the engine (``llm_platform/engine/``) turns them into its command
    line."""

    engine: str = DEFAULT_ENGINE
    """The inference engine that serves the model: one of the registered engines (``vllm``, the one shipped)."""

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
    """Tag of the ``vllm/vllm-openai`` image, or its digest (``sha256:…``, the safer pin: a tag can be moved);
    ``latest`` is refused so that a redeploy never changes the engine by surprise."""
    startup_timeout_s: int = Field(1800, ge=60)
    """How long loading the model may take before the server counts as failed (startup probe, local deadline)."""
    trust_remote_code: bool = False
    """Let vLLM run the Python code that comes with the model's repository (vLLM's remote-code flag): only for
    repositories you trust as you trust this platform's own code."""
    max_loras: int | None = Field(None, ge=1)
    """LoRA adapters one batch may hold at once (the engine's adapter slots); ``null``: all the model's adapters, up
    to 8. Adapters beyond it take turns (loaded from host memory as requests ask for them)."""
    max_lora_rank: int | None = Field(None, ge=1)
    """Highest adapter rank the engine reserves room for (vLLM's: 1, 8, 16, 32, 64, 128, 256, 320 or 512);
    ``null``: the engine's default (16), raised to the adapters' rank once their configs are read."""
    extra_args: tuple[str, ...] = ()
    """Further engine flags from the engine's allow-list (vLLM's: ``llm_platform/engine/vllm_flags.py``), each
    written in full; flags with a field of their own, and every flag not on the list, are refused with the reason."""

    @field_validator("engine")
    @classmethod
    def _engine(cls, name: str) -> str:
        try:
            engine_named(name)
        except UnknownEngineError as error:
            raise ValueError(str(error)) from None
        return name

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be > 0 and <= 1 (got {value})")
        return value

    @field_validator("image_tag")
    @classmethod
    def _image_tag(cls, tag: str) -> str:
        if IMAGE_DIGEST.match(tag):
            return tag
        if not _IMAGE_TAG.match(tag) or tag == "latest":
            raise ValueError(
                f"{shorten(tag)} is not a pinned image tag or digest (use a release such as '{DEFAULT_VLLM_IMAGE_TAG}' "
                "or 'sha256:…')"
            )
        return tag

    @field_validator("extra_args")
    @classmethod
    def _extra_args(cls, args: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if any(_HF_TOKEN_LIKE.search(arg) for arg in args):
            raise ValueError("an argument looks like a Hugging Face token; tokens belong in a Secret")
        if "engine" not in info.data:  # the engine field failed: its own error says so
            return args
        problems = engine_named(info.data["engine"]).extra_args_problems(args)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ValueError("; ".join(problems[:3]) + more)
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


#: Most requests one benchmark level sends, and the highest closed-loop concurrency it measures.
MAX_BENCHMARK_PROMPTS = 100_000
MAX_BENCHMARK_CONCURRENCY = 4096


class Benchmark(_Section):
    """The smoke benchmark of every promotion of the model - the UI's, the CLI's, the drift and revision sensors'
    - unless a run's config sizes its own. The live benchmark repeats exactly the promotion's."""

    prompts_per_level: int = Field(64, ge=1, le=MAX_BENCHMARK_PROMPTS)
    """Requests sent at each concurrency level."""
    input_len: int | None = Field(None, ge=1)
    """Prompt tokens of each request; ``null``: a quarter of ``serving.max_model_len``, at most 1,024."""
    output_len: int = Field(64, ge=1)
    """Tokens generated by each request (end-of-sequence ignored), at most what ``serving.max_model_len`` leaves."""
    concurrency_levels: tuple[int, ...] | None = None
    """Closed-loop concurrency levels measured (in ascending order); ``null``: 1, 8 and ``serving.max_num_seqs``."""
    num_warmups: int = Field(2, ge=0, le=1000)
    """Requests sent before each level and not measured."""

    @field_validator("concurrency_levels")
    @classmethod
    def _levels(cls, levels: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if levels is None:
            return None
        if not levels or any(not 1 <= level <= MAX_BENCHMARK_CONCURRENCY for level in levels):
            raise ValueError(f"must list concurrencies from 1 to {MAX_BENCHMARK_CONCURRENCY} (or be null)")
        if len(set(levels)) != len(levels):
            raise ValueError("lists a concurrency twice")
        return tuple(sorted(levels))


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


class Traffic(_Section):
    """The requests a model is expected to serve: what the serving plan sizes the engine for."""

    input_tokens: int = Field(1024, ge=1)
    """Typical prompt length in tokens."""
    output_tokens: int = Field(256, ge=1)
    """Typical completion length in tokens."""


class Autoscaling(_Section):
    """KEDA scaling on the engine's waiting-request queue (vLLM's ``num_requests_waiting``) summed over the model's
    pods."""

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

    kind: Literal["ingress", "gateway"] = "ingress"
    """How ``host`` is exposed: an ingress-nginx ``Ingress`` (the seed's choice), or a Gateway API ``HTTPRoute`` on
    ``platform.gateway_name`` (ingress-nginx was retired in March 2026)."""
    host: str | None = None
    """Host name clients call; nothing is exposed outside the cluster without one."""
    tls_secret: str | None = None
    """Secret with the TLS certificate for ``host``; required with a host (the API key travels in every request)."""
    api_key_secret: str | None = None
    """Secret holding this model's API key under the key ``api-key``; ``null`` takes ``platform.api_key_secret``."""
    max_connections_per_ip: int = Field(20, ge=1)
    """Concurrent connections allowed per client IP at the ingress controller (besides the request rate)."""
    rate_limit_rps: int = Field(10, ge=1)
    """Requests per second allowed per client IP at the ingress controller."""
    timeout_s: int = Field(600, ge=600)
    """Ingress read/send timeout in seconds; at least 10 minutes so long generations are not cut off."""
    max_body_size: str = "16m"
    """Largest request body the ingress accepts (long prompts are large JSON documents)."""
    client_labels: dict[str, str] = Field(default_factory=lambda: {"llm-platform/client": "true"})
    """Pod labels of in-cluster clients allowed by the NetworkPolicy."""
    client_namespace_labels: dict[str, str] = Field(default_factory=lambda: {"llm-platform/clients": "true"})
    """Labels of the namespaces those clients may run in (both must match; the serving namespace's own labelled
    pods, e.g. the live benchmark, are always admitted)."""

    @field_validator("tls_secret", "api_key_secret")
    @classmethod
    def _secret_name(cls, name: str | None) -> str | None:
        return None if name is None else _check_secret_name(name)

    @field_validator("host")
    @classmethod
    def _host(cls, host: str | None) -> str | None:
        if host is not None and not _is_dns1123_subdomain(host):
            raise ValueError(f"{shorten(host)} is not a DNS host name (lower case, e.g. 'llama.example.com')")
        return host

    @field_validator("max_body_size")
    @classmethod
    def _body_size(cls, size: str) -> str:
        if not _NGINX_SIZE.match(size):
            raise ValueError(f"{shorten(size)} is not an nginx size (examples: '16m', '1g')")
        return size

    @field_validator("client_labels", "client_namespace_labels")
    @classmethod
    def _client_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        if not labels:
            raise ValueError("must name at least one label, or the NetworkPolicy would admit no client pod")
        _check_labels(labels)
        return labels


class Rollout(_Section):
    """How a promotion reaches the model's traffic: at once (``replace``), or as a canary that takes growing shares
    of the live traffic and is judged against the stable version at every step (Flagger's way, on LLM figures)."""

    strategy: Literal["replace", "canary"] = "replace"
    """``replace``: the new config takes all traffic once its benchmark passed; ``canary``: stepped, judged."""
    steps: tuple[int, ...] = (10, 25, 50, 100)
    """Percent of the traffic the canary takes at each step: strictly increasing, ending at 100."""
    step_seconds: int = Field(300, ge=10)
    """How long each step lasts before it is judged (the window of its figures)."""
    min_requests: int = Field(50, ge=1)
    """Requests each version must serve in a step before it can be judged (the evidence floor)."""
    max_wait_seconds: int = Field(1800, ge=10)
    """How long a step may wait for ``min_requests`` past ``step_seconds`` before the canary is aborted."""
    canary_replicas: int = Field(1, ge=1)
    """Replicas of the canary (fixed, not autoscaled; counted in the GPU quota)."""
    max_ttft_regression_pct: float | None = Field(None, gt=0)
    """How much higher than stable's the canary's p95 TTFT may be, in %; ``null``: ``slo.max_regression_pct``."""
    max_itl_regression_pct: float | None = Field(None, gt=0)
    """How much higher than stable's the canary's p95 ITL may be, in %; ``null``: ``slo.max_regression_pct``."""
    max_error_ratio_increase: float = Field(0.01, ge=0, le=1)
    """How much higher than stable's the canary's error ratio may be, in absolute terms."""

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if not steps:
            raise ValueError("needs at least one step, ending at 100")
        if any(not 1 <= step <= 100 for step in steps):
            raise ValueError(f"each step is a percent of the traffic, 1 to 100 (got {list(steps)})")
        if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError(f"must be strictly increasing (got {list(steps)})")
        if steps[-1] != 100:
            raise ValueError(f"must end at 100, where the canary serves all traffic (got {list(steps)})")
        return steps


class Toleration(_Section):
    """A Kubernetes toleration for the GPU nodes' taints."""

    key: str
    """The taint's key; required (an empty key with ``Exists`` would tolerate every taint of every node)."""
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if not key:
            raise ValueError("must name the taint (an empty key would tolerate every taint)")
        _check_label_key(key)
        return key

    @model_validator(mode="after")
    def _value_matches_operator(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("'Exists' takes no value; use operator 'Equal' to match one")
        if self.operator == "Equal" and self.value is None:
            raise ValueError("'Equal' needs a value")
        if self.value is not None and (len(self.value) > 63 or not _LABEL_VALUE.match(self.value)):
            raise ValueError(f"{shorten(self.value)} is not a valid taint value")
        return self


class Platform(_Section):
    """Settings shared by every model: namespace, quota, images, storage and the neighbours the policies allow."""

    namespace: str = "llm-serving"
    """Namespace of every model's objects."""
    gpu_quota: int = Field(8, ge=0)
    """``requests.nvidia.com/gpu`` of the namespace ResourceQuota; the catalog may not plan beyond it."""
    gpu_resource: str = "nvidia.com/gpu"
    """Extended resource name of a GPU (the NVIDIA device plugin's)."""
    vllm_image: str = engine_named(DEFAULT_ENGINE).image_repository
    """Image repository of the vLLM engine's server (a registry mirror may replace it); the tag comes from each
    model's ``serving.image_tag``. Another engine's image is its own (``Engine.image_repository``)."""
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
    api_key_secret: str = "llm-api-keys"  # noqa: S105 - the Secret's name, not a secret
    """Secret holding the models' shared API key under the key ``api-key`` (vLLM requires it on every ``/v1/`` call);
    a model names its own with ``exposure.api_key_secret``."""
    hf_endpoint: str | None = None
    """Hub the download Job fetches from (an in-cluster mirror such as olah for air-gapped clusters); ``null`` is
    huggingface.co."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that KEDA queries for the waiting queue."""
    prometheus_namespace: str = "monitoring"
    """Namespace of Prometheus, admitted by each model's NetworkPolicy."""
    gateway_name: str = "llm-gateway"
    """The Gateway (Gateway API) that ``exposure.kind: gateway`` models attach their HTTPRoute to."""
    gateway_namespace: str = "gateway-system"
    """Namespace of that Gateway (its listeners must allow routes from the serving namespace)."""
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
    gpu_type: str | None = None
    """The serving nodes' GPU, as NVIDIA's AIConfigurator names it (``h100_sxm``, ``h200_sxm``, ``b200_sxm``,
    ``l40s``, …): the serving plan estimates each model on it before any GPU is used; ``null``: no plan."""
    gpu_node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the vLLM and benchmark pods require (e.g. a GPU product label)."""
    gpu_tolerations: tuple[Toleration, ...] = (Toleration(key="nvidia.com/gpu", effect="NoSchedule"),)
    """Tolerations for GPU node taints."""
    rollout: Rollout = Rollout()
    """Every model's rollout unless its own ``rollout`` section sets a field (field by field)."""
    live_benchmark_cron: str | None = "0 3 * * *"
    """When the scheduled live benchmark of every deployed model runs (cron, 5 fields); ``null``: never."""
    live_benchmark_timezone: str = "UTC"
    """IANA time zone of that cron schedule."""

    @field_validator("gpu_type")
    @classmethod
    def _gpu_type(cls, value: str | None) -> str | None:
        if value is not None and value not in GPU_TYPES:
            raise ValueError(
                f"{shorten(value)} is not a GPU type the performance data covers (one of {', '.join(GPU_TYPES)})"
            )
        return value

    @field_validator("live_benchmark_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        fields = value.split(" ") if value is not None else []
        if value is not None and (
            len(fields) != 5
            or not all(_CRON_FIELD.match(field) for field in fields)
            or not all(
                low <= int(number) <= high
                for field, (low, high) in zip(fields, _CRON_RANGES, strict=True)
                for number in re.findall(r"[0-9]+", re.sub(r"/[0-9]+", "", field))
            )
        ):
            raise ValueError(f"{shorten(value)} is not a 5-field cron expression such as '0 3 * * *'")
        return value

    @field_validator("live_benchmark_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{shorten(value)} is not an IANA time zone such as 'Europe/Berlin'") from None
        return value

    @field_validator("platform_image")
    @classmethod
    def _image_reference(cls, image: str) -> str:
        if not _IMAGE_REFERENCE.match(image) or image.endswith(":latest"):
            raise ValueError(
                f"{shorten(image)} is not a pinned image reference (registry/name:tag or registry/name@sha256:…)"
            )
        return image

    def image_repository(self, engine_name: str) -> str:
        """The repository of ``engine_name``'s server image: ``vllm_image`` for the default engine."""
        return self.vllm_image if engine_name == DEFAULT_ENGINE else engine_named(engine_name).image_repository

    @field_validator("vllm_image")
    @classmethod
    def _image_name(cls, image: str) -> str:
        if not _IMAGE_NAME.match(image) or len(image) > MAX_TEXT:
            raise ValueError(
                f"{shorten(image)} is not an image repository such as 'vllm/vllm-openai' (the tag or digest is each "
                "model's serving.image_tag)"
            )
        return image

    @field_validator("gpu_resource")
    @classmethod
    def _extended_resource(cls, name: str) -> str:
        domain = name.split("/", 1)[0]
        if not _EXTENDED_RESOURCE.match(name) or len(name) > MAX_TEXT or domain.endswith("kubernetes.io"):
            raise ValueError(f"{shorten(name)} is not an extended resource name such as 'nvidia.com/gpu'")
        return name

    @field_validator("api_key_secret")
    @classmethod
    def _api_key_secret(cls, name: str) -> str:
        return _check_secret_name(name)

    @field_validator("namespace", "weights_pvc", "hf_token_secret", "gateway_name", "gateway_namespace")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if len(value) > 63 or not _DNS1123_LABEL.match(value):
            raise ValueError(f"{shorten(value)} is not a DNS-1123 label (lower case letters, digits and '-')")
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
        if not path.startswith("/") or "/../" in f"{path}/" or "//" in path:
            raise ValueError(f"{shorten(path)} is not a plain absolute path")
        normal = path.rstrip("/") or "/"
        for reserved in RESERVED_MOUNT_PATHS:
            if normal == reserved or reserved.startswith(f"{normal}/") or normal.startswith(f"{reserved}/"):
                raise ValueError(
                    f"{shorten(path)} overlaps {reserved}, which the pods mount already (the API server refuses two "
                    "mounts at one path); choose another, e.g. /models"
                )
        if any(normal == system or (system != "/" and normal.startswith(f"{system}/")) for system in SYSTEM_PATHS):
            raise ValueError(f"{shorten(path)} is a system directory of the image; choose another, e.g. /models")
        return path

    @field_validator("prometheus_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return check_http_url(url, https_only=False)

    @field_validator("hf_endpoint")
    @classmethod
    def _hub_url(cls, url: str | None) -> str | None:
        # The download Job sends the HF token to this host: plain http only where it cannot leave the machine.
        return check_http_url(url, https_only=True) if url is not None else None


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
    traffic: Traffic = Traffic()
    benchmark: Benchmark = Benchmark()
    autoscaling: Autoscaling = Autoscaling()
    exposure: Exposure = Exposure()
    rollout: Rollout = Rollout()
    adapters: tuple[Adapter, ...] = ()
    """LoRA adapters served on these weights, each under its own name (at most :data:`MAX_ADAPTERS`)."""
    _track: str | None = PrivateAttr(default=None)
    """Set by :meth:`as_track` only, never from a catalog file: the rollout track this view renders."""

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if len(name) > MAX_MODEL_NAME_LENGTH:
            raise ValueError(
                f"{shorten(name)} is {len(name)} characters long; at most {MAX_MODEL_NAME_LENGTH} are allowed"
            )
        if not _DNS1123_LABEL.match(name):
            raise ValueError(
                f"{shorten(name)} is not a DNS-1123 label (lower case letters, digits and '-', e.g. 'llama-8b')"
            )
        return name

    @field_validator("adapters")
    @classmethod
    def _adapters(cls, adapters: tuple[Adapter, ...], info: ValidationInfo) -> tuple[Adapter, ...]:
        if len(adapters) > MAX_ADAPTERS:
            raise ValueError(f"{len(adapters)} adapters; at most {MAX_ADAPTERS} per model")
        names = [adapter.name for adapter in adapters]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"adapter names must differ: {', '.join(repeated)} more than once")
        if info.data.get("name") in names:
            raise ValueError(f"adapter '{info.data['name']}' has the model's own name: a served name must be unique")
        return adapters

    @field_validator("owners")
    @classmethod
    def _owners(cls, owners: tuple[str, ...]) -> tuple[str, ...]:
        for owner in owners:
            if not _OWNER.match(owner) or len(owner) > MAX_TEXT:
                raise ValueError(f"{shorten(owner)} is not an owner (an e-mail address or 'team:name')")
        return owners

    @field_validator("description")
    @classmethod
    def _description(cls, text: str) -> str:
        if len(text) > 2000 or not all(c.isprintable() or c in "\n\t" for c in text):
            raise ValueError("must be at most 2000 printable characters")
        return text

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica requests."""
        return self.resources.gpus if self.resources.gpus is not None else self.serving.tensor_parallel_size

    @property
    def served_names(self) -> tuple[str, ...]:
        """The names requests may address: the model's, then each adapter's."""
        return (self.name, *(adapter.name for adapter in self.adapters))

    @property
    def identity(self) -> ServedModel:
        """What this entry serves: its base weights (adapters and rollout tracks are children of it)."""
        base = ServedModel(self.name)
        return base.track(self._track) if self._track else base

    def as_track(self, track: str) -> ModelSpec:
        """This entry as the rollout track ``track`` (a canary beside the stable version): the same config under the
        track's object names and labels, so that every renderer and rollout wait serves it unchanged."""
        view = self.model_copy()
        view._track = track
        return view


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
