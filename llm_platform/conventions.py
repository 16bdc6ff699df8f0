"""Names and numbers that several layers must agree on, each decided once: object names, labels, container names,
ports and paths of the gate, asset names. Pure: no I/O. Manifests, targets, the Prometheus adapter, the Dagster
wiring and the tests import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# -- the gate in front of every server ----------------------------------------------------------------------------

GATE_MODULE = "llm_platform.gate"
"""``python -m`` this to run the gate, the authenticating edge in front of every engine server."""
GATE_HEALTH_PATH = "/-/gate-health"
"""The gate's own liveness: answers without asking the engine (the server behind it may still be loading)."""
ENGINE_HEALTH_PATH = "/health"
"""The engine's health route: the one route the gate forwards without the key."""
EDGE_HEALTH_PATH = "/-/edge-health"
"""The local edge's (nginx's) own liveness; it answers the generation of the configuration it runs."""
METRICS_PATH = "/metrics"
"""Served only on the gate's metrics listener, never on the API port."""
API_KEY_ENV = "VLLM_API_KEY"
"""The environment variable with the key, for the gate and (defence in depth) the engine itself."""

API_PORT = 8000
"""The gate's API listener in a pod: the Service's and the probes' port."""
METRICS_PORT = 8001
"""The gate's metrics listener in a pod: open to the monitoring namespace only (NetworkPolicy)."""
ENGINE_LOOPBACK_PORT = 8002
"""Where the engine listens inside a serving pod: 127.0.0.1 only, so the gate is the one way in."""

# -- Kubernetes objects and labels --------------------------------------------------------------------------------

MANAGER = "llm-platform"
"""``app.kubernetes.io/managed-by`` of every object the platform applies (the admission policies key on it)."""
PART_OF = "llm-platform"
"""``app.kubernetes.io/part-of`` of every object the platform renders."""
SERVING_APP = "vllm"
"""``app.kubernetes.io/name`` of the serving pods. Older than the engine seam and part of every Deployment's
immutable selector, so it stays whatever the engine."""
SERVING_OBJECT_PREFIX = "vllm-"
"""Prefix of each model's serving objects (Deployment, Service, ScaledObject, …): kept for the same reason."""
SERVING_CONTAINER = "vllm"
"""The engine container of every serving and benchmark pod: kube-state-metrics' ``container`` label that the drift
sensor's restart queries select."""
GATE_CONTAINER = "gate"
"""The gate's native sidecar in a serving pod."""
MODEL_LABEL = "llm-platform/model"
"""The pod and object label naming the catalog model (selectors, PromQL via kube-state-metrics, RBAC audits)."""
KSM_MODEL_LABEL = "label_llm_platform_model"
""":data:`MODEL_LABEL` as kube-state-metrics exports it (``--metric-labels-allowlist=pods=[llm-platform/model]``)."""
MODEL_NAME_LABEL = "model_name"
SERVED_NAME_LABEL = "served_name"
"""The gate's label for the name a request addressed (the base's or a LoRA adapter's): vLLM labels every metric
with the engine's :data:`MODEL_NAME_LABEL`, whichever adapter served it."""
GATE_REQUESTS_METRIC = "llm_platform_gate_requests_total"
"""Requests the gate forwarded, by :data:`MODEL_NAME_LABEL`, :data:`SERVED_NAME_LABEL` and ``code``."""
GATE_FIRST_BYTE_METRIC = "llm_platform_gate_first_byte_seconds"
"""Histogram: from a request's arrival to the first byte of its answer's body (a stream's first token)."""
GATE_DURATION_METRIC = "llm_platform_gate_request_seconds"
"""Histogram: from a request's arrival to the end of its answer."""
GATE_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
"""The gate's latency histograms' bounds (seconds): a token on a busy CPU server to a 10-minute generation."""
"""The label every engine puts on its metrics: the served model name (a base model's is its catalog name)."""
TRACK_LABEL = "llm-platform/track"
"""The pod and object label of a rollout track's objects (a canary beside the stable version)."""
TRACK_METRIC_LABEL = "track"
""":data:`TRACK_LABEL` on the engine's metrics, set at scrape time from the track's pod label (the PodMonitor's
relabelling): the canary judge compares tracks by it. A series without it is the stable version's."""
STABLE_TRACK = "stable"
"""The track of the version that serves today (its pods carry no track label)."""
CANARY_TRACK = "canary"
"""The track of a canary rollout's candidate."""


def serving_object_name(model_name: str) -> str:
    """The name of the Deployment, Service, PDB, ScaledObject, Ingress and NetworkPolicy of a model."""
    return f"{SERVING_OBJECT_PREFIX}{model_name}"


ChildKind = Literal["adapter", "track"]


@dataclass(frozen=True, order=True)
class ServedModel:
    """What serves: a catalog model's base weights, or a named child of them.

    The catalog model (``base``) is the Dagster partition and owns the weights; a child never is a partition of its
    own. An ``adapter`` (LoRA weights on the base's engine) adds a served name and shares the base's objects; a
    ``track`` (a rollout's candidate beside the stable version, e.g. ``canary``) adds objects of its own and serves
    under the base's name, so clients never see it. Everything that names, labels or records "what serves" takes one
    of these, so children are added without new signatures.
    """

    base: str
    child: str | None = None
    kind: ChildKind | None = None

    def __post_init__(self) -> None:
        if (self.child is None) != (self.kind is None):
            raise ValueError(f"model '{self.base}': a child needs both a name and a kind (adapter or track)")
        if self.child is not None and ("/" in self.child or not self.child):
            raise ValueError(f"model '{self.base}': {self.child!r} is not a child name")

    def adapter(self, name: str) -> ServedModel:
        """The adapter ``name`` served on this base."""
        return ServedModel(self.base, name, "adapter")

    def track(self, name: str) -> ServedModel:
        """The rollout track ``name`` of this base."""
        return ServedModel(self.base, name, "track")

    @property
    def served_name(self) -> str:
        """The model name requests carry and metrics are labelled with (:data:`MODEL_NAME_LABEL`)."""
        return self.child if self.kind == "adapter" and self.child else self.base

    @property
    def object_name(self) -> str:
        """Its Kubernetes objects' name: a track's own (``vllm-<model>-<track>``), otherwise the base's."""
        suffix = f"-{self.child}" if self.kind == "track" else ""
        return serving_object_name(self.base + suffix)

    def labels(self) -> dict[str, str]:
        """The labels that select its pods: the model, and a track's name for a track."""
        return {MODEL_LABEL: self.base, **({TRACK_LABEL: self.child} if self.kind == "track" and self.child else {})}

    @property
    def key(self) -> str:
        """A stable string for records and paths: ``base`` or ``base/kind:child``."""
        return self.base if self.child is None else f"{self.base}/{self.kind}:{self.child}"

    @classmethod
    def parse(cls, key: str) -> ServedModel:
        """The inverse of :attr:`key`."""
        base, _, child = key.partition("/")
        if not child:
            return cls(base)
        kind, _, name = child.partition(":")
        if kind not in ("adapter", "track"):
            raise ValueError(f"{key!r} is not a served-model key (base or base/adapter:name or base/track:name)")
        return cls(base, name, "adapter" if kind == "adapter" else "track")


# -- Dagster assets -----------------------------------------------------------------------------------------------

WEIGHTS_ASSET = "model_weights"
ADAPTERS_ASSET = "adapter_weights"
"""The model's LoRA adapters beside its weights; its value is the weights as served (base and adapters)."""
PLAN_ASSET = "serving_plan"
TRAFFIC_PROFILE_ASSET = "traffic_profile"
SERVING_CONFIG_ASSET = "serving_config"
SMOKE_BENCHMARK_ASSET = "smoke_benchmark"
DEPLOYMENT_ASSET = "vllm_deployment"
"""The promoted deployment (its name predates the engine seam; renaming an asset orphans its history)."""
LIVE_BENCHMARK_ASSET = "live_benchmark"
TUNED_ASSET = "tuned_serving_config"
LIFECYCLE_ASSETS = (
    WEIGHTS_ASSET, ADAPTERS_ASSET, PLAN_ASSET, SERVING_CONFIG_ASSET, SMOKE_BENCHMARK_ASSET, DEPLOYMENT_ASSET,
)  # fmt: skip
"""What the lifecycle job materializes, in order."""
PROMOTE_ASSETS = (ADAPTERS_ASSET, SERVING_CONFIG_ASSET, SMOKE_BENCHMARK_ASSET, DEPLOYMENT_ASSET)
"""What a promotion materializes: the adapters the catalog lists now (verified; only a new one is fetched), a
config, its benchmark, the deployment."""

#: Beside a replaying benchmark's results: the lengths it sends (``[[prompt, output], ...]``) and the custom dataset
#: written from them (``llm_platform/benchmark/replay_dataset.py``), which the benchmark client reads.
REPLAY_LENGTHS_FILE = "replay-lengths.json"
REPLAY_DATASET_FILE = "replay-dataset.jsonl"
#: Beside a local benchmark's results: the ``vllm bench serve`` argument list of each level, in the order one child
#: process runs them (``python -m llm_platform.engine.vllm_bench --runs FILE``).
BENCH_RUNS_FILE = "bench-serve-runs.json"
#: ... and what that process printed (vLLM's own lines: what a failed level's error quotes the tail of).
BENCH_LOG_FILE = "bench-serve.log"
