"""Names and numbers that several layers must agree on, each decided once: object names, labels, container names,
ports and paths of the gate, asset names. Pure: no I/O. Manifests, targets, the Prometheus adapter, the Dagster
wiring and the tests import them from here.
"""

from __future__ import annotations

# -- the gate in front of every server ----------------------------------------------------------------------------

GATE_MODULE = "llm_platform.gate"
"""``python -m`` this to run the gate, the authenticating edge in front of every engine server."""
GATE_HEALTH_PATH = "/-/gate-health"
"""The gate's own liveness: answers without asking the engine (the server behind it may still be loading)."""
ENGINE_HEALTH_PATH = "/health"
"""The engine's health route: the one route the gate forwards without the key."""
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
"""The label every engine puts on its metrics: the served model name, which is the catalog name."""


def serving_object_name(model_name: str) -> str:
    """The name of the Deployment, Service, PDB, ScaledObject, Ingress and NetworkPolicy of a model."""
    return f"{SERVING_OBJECT_PREFIX}{model_name}"


# -- Dagster assets -----------------------------------------------------------------------------------------------

WEIGHTS_ASSET = "model_weights"
PLAN_ASSET = "serving_plan"
SERVING_CONFIG_ASSET = "serving_config"
SMOKE_BENCHMARK_ASSET = "smoke_benchmark"
DEPLOYMENT_ASSET = "vllm_deployment"
"""The promoted deployment (its name predates the engine seam; renaming an asset orphans its history)."""
LIVE_BENCHMARK_ASSET = "live_benchmark"
TUNED_ASSET = "tuned_serving_config"
LIFECYCLE_ASSETS = (WEIGHTS_ASSET, PLAN_ASSET, SERVING_CONFIG_ASSET, SMOKE_BENCHMARK_ASSET, DEPLOYMENT_ASSET)
"""What the lifecycle job materializes, in order."""
PROMOTE_ASSETS = (SERVING_CONFIG_ASSET, SMOKE_BENCHMARK_ASSET, DEPLOYMENT_ASSET)
"""What a promotion materializes: a config, its benchmark, the deployment."""
