"""The engine interface: everything the platform needs to know about an inference server, and nothing else.

An engine (vLLM today) turns a catalog serving config into a server command line and environment, says which of its
flags ``serving.extra_args`` may carry, names its Prometheus metrics (under every name they have had), writes the
autoscaling query on its queue, and says how its benchmark client is invoked. Manifests, targets, the Prometheus
adapter, the tuning policy and the planner ask the engine; none of them names a flag or a metric.

Pure core below the catalog: the catalog validates ``serving.engine`` and ``serving.extra_args`` through the
registry, so this package sees a serving config only through :class:`ServingSettings`, the fields it reads.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class ServingSettings(Protocol):
    """The fields of a catalog ``serving`` section an engine translates (``llm_platform.catalog.Serving``)."""

    @property
    def engine(self) -> str: ...
    @property
    def max_model_len(self) -> int: ...
    @property
    def gpu_memory_utilization(self) -> float: ...
    @property
    def enable_chunked_prefill(self) -> bool: ...
    @property
    def enable_prefix_caching(self) -> bool | None: ...
    @property
    def max_num_seqs(self) -> int | None: ...
    @property
    def max_num_batched_tokens(self) -> int | None: ...
    @property
    def tensor_parallel_size(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def trust_remote_code(self) -> bool: ...
    @property
    def extra_args(self) -> tuple[str, ...]: ...


class BenchmarkWorkload(Protocol):
    """What one benchmark level sends (``llm_platform.benchmark.plan.BenchmarkPlan``)."""

    @property
    def input_len(self) -> int: ...
    @property
    def output_len(self) -> int: ...
    @property
    def prompts_per_level(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def num_warmups(self) -> int: ...
    @property
    def request_rate(self) -> str: ...
    @property
    def extra_args(self) -> tuple[str, ...]: ...
    @property
    def requests(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def arrivals_s(self) -> tuple[float, ...]: ...


#: The engine whose fingerprints predate the seam: they hash arguments and environment only, as before, because a
#: changed fingerprint rolls every Deployment (it is a pod-template annotation). Other engines' include the program.
FIRST_ENGINE = "vllm"


@dataclass(frozen=True)
class LoraAdapters:
    """The LoRA adapters one server loads at start beside its base weights."""

    paths: Mapping[str, str]
    """Served name → the adapter's directory."""
    max_loras: int
    """Adapters one batch may hold at once."""
    max_lora_rank: int
    """The highest rank the engine reserves room for."""


@dataclass(frozen=True)
class EngineInvocation:
    """What starts one server: the program (after the Python interpreter), its arguments and its environment."""

    engine: str
    """The registered name of the engine this starts."""
    program: tuple[str, ...]
    """What follows the interpreter, e.g. ``("-m", "vllm.entrypoints.openai.api_server")``."""
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, python: str = "python3") -> list[str]:
        """The full command line with the given Python interpreter."""
        return [python, *self.program, *self.args]

    @property
    def fingerprint(self) -> str:
        """Short hash of what starts the server: equal fingerprints mean an identical running server."""
        identity: dict[str, object] = {"args": self.args, "env": dict(sorted(self.env.items()))}
        if self.engine != FIRST_ENGINE:
            identity |= {"engine": self.engine, "program": self.program}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BenchmarkRunner:
    """A script the benchmark Job runs in the engine's image to measure every level of a benchmark in one process
    (the client's import is paid once per Job instead of once per level)."""

    source: str
    """Python source; it needs nothing but the engine's image."""
    runs_flag: str
    """``python3 SCRIPT <runs_flag> FILE`` runs each benchmark argument list of the JSON ``FILE`` in turn and exits
    non-zero at the first that fails."""


@dataclass(frozen=True)
class EngineMetrics:
    """The engine's Prometheus metrics the platform reads, by role, with the names each has had.

    Every server labels them ``model_name`` with its served model name (the catalog name).
    """

    kv_cache_usage: str
    """Gauge: fraction of the KV cache in use."""
    preemptions_total: str
    """Counter: requests preempted (their KV cache given away and recomputed later)."""
    requests_waiting: str
    """Gauge: requests queued for a slot in the batch (what autoscaling reads)."""
    requests_running: str
    """Gauge: requests in the running batch."""
    prompt_tokens: str
    """Histogram (base name): prompt length of each finished request."""
    generation_tokens: str
    """Histogram (base name): generated tokens of each finished request."""
    generated_tokens_total: str
    """Counter: tokens generated (a track's output throughput)."""
    requests_finished: str
    """Counter: requests finished, labelled with how they finished (:attr:`failed_requests` selects the failures)."""
    failed_requests: str
    """Label matchers on :attr:`requests_finished` that select the requests the engine failed (its HTTP 500s)."""
    ttft_seconds: str
    """Histogram (base name, seconds): time to the first token of each request (a canary's latency, as users feel
    it at the start of a stream)."""
    itl_seconds: str
    """Histogram (base name, seconds): time between successive tokens of a request (its streaming speed)."""
    renamed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Current name → the names it had in earlier releases, matched too so a mixed fleet reads the same."""
    prefix_cache_queries_total: str = "prefix_cache_queries_total"
    """Counter: prompt tokens looked up in the prefix cache (a traffic profile's hit ratio; an engine without one
    has no such series, and the ratio is NaN)."""
    prefix_cache_hits_total: str = "prefix_cache_hits_total"
    """Counter: of those, tokens found in the cache."""

    def names(self, metric: str) -> tuple[str, ...]:
        """``metric`` under every name it has had, the current one first."""
        return (metric, *self.renamed.get(metric, ()))

    @property
    def all_names(self) -> frozenset[str]:
        """Every metric name this engine exports that the platform reads (histogram series included)."""
        current = {self.kv_cache_usage, self.preemptions_total, self.requests_waiting, self.requests_running,
                   self.generated_tokens_total, self.requests_finished}  # fmt: skip
        for histogram in (self.prompt_tokens, self.generation_tokens, self.ttft_seconds,
                          self.itl_seconds):  # fmt: skip
            current |= {f"{histogram}_bucket", f"{histogram}_count", f"{histogram}_sum"}
        return frozenset(current | {old for olds in self.renamed.values() for old in olds})


class Engine(ABC):
    """One inference server implementation. Subclasses are registered in :mod:`llm_platform.engine.registry`."""

    name: str
    """The value of ``serving.engine`` that selects this engine."""
    metrics: EngineMetrics
    default_max_num_seqs: int
    """The batch limit the engine uses when ``serving.max_num_seqs`` is unset (the tuning policy's starting point)."""
    container_home: str
    """HOME inside the engine's image: where its compile caches go (an emptyDir in the pod)."""
    aiconfigurator_backend: str | None
    """The backend name AIConfigurator estimates this engine under; None: the planner has no estimate for it."""
    lora_ranks: tuple[int, ...] = ()
    """The LoRA ranks the engine can reserve room for (``serving.max_lora_rank``); empty: it serves no adapters."""
    default_lora_rank: int | None = None
    """The rank it reserves room for when ``serving.max_lora_rank`` is unset."""

    def lora_args(self, adapters: LoraAdapters) -> tuple[str, ...]:
        """Arguments that serve ``adapters`` beside the base weights. Only engines with :attr:`lora_ranks` serve
        adapters."""
        raise NotImplementedError(f"engine '{self.name}' serves no LoRA adapters")

    @abstractmethod
    def server_args(
        self, serving: ServingSettings, *, served_model_name: str, weights_path: str,
        adapters: LoraAdapters | None = None,
    ) -> tuple[str, ...]:  # fmt: skip
        """Server arguments for ``serving`` (with ``adapters`` on the base weights), without the listen address
        (that belongs to the target)."""

    @abstractmethod
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
        """The complete server invocation: arguments, listen address (``uds``: a Unix socket instead of host and
        port) and environment (``extra_env``: the target's, e.g. the CPU build's KV cache size)."""

    @abstractmethod
    def gpu_scheduler_defaults(self, gpu_memory_bytes: int) -> tuple[int, int]:
        """``(max_num_seqs, max_num_batched_tokens)`` the engine picks on a GPU of that memory when the catalog
        sets neither (what the planner and the simulator assume)."""

    @abstractmethod
    def cpu_environment(
        self, *, kv_cache_space_gib: int, threads_bind: str | None, threads: int | None = None
    ) -> dict[str, str]:
        """Environment of a server on CPU (the local target): its KV cache size, thread binding (None: the engine's
        own) and thread count (None: one per core)."""

    @abstractmethod
    def extra_args_problems(self, args: Sequence[str]) -> list[str]:
        """One line per argument of ``serving.extra_args`` the engine refuses (an allow-list); empty: accepted."""

    def extra_args_warnings(self, args: Sequence[str]) -> list[str]:
        """Accepted arguments worth a warning from ``llm-platform validate``."""
        return []

    @abstractmethod
    def image(self, repository: str, tag: str) -> str:
        """The server image: ``repository:tag``, or ``repository@sha256:…`` when ``tag`` is a digest."""

    @property
    @abstractmethod
    def image_repository(self) -> str:
        """The engine's image repository when the platform names no mirror."""

    def autoscaling_query(self, *, namespace: str, model_name: str) -> str:
        """PromQL for KEDA: the requests waiting, summed over the model's pods."""
        return f'sum({self.metrics.requests_waiting}{{namespace="{namespace}",model_name="{model_name}"}})'

    @abstractmethod
    def benchmark_command(self) -> list[str]:
        """The benchmark client's command inside the engine's image (the benchmark Job runs it)."""

    def benchmark_runner(self) -> BenchmarkRunner | None:
        """The script that runs a Job's benchmark levels in one process; None: :meth:`benchmark_command` per level."""
        return None

    @abstractmethod
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
        """Arguments of the benchmark client (``vllm bench serve``: its result JSON is what the parser reads) for
        one concurrency level, against the server at ``base_url``."""
