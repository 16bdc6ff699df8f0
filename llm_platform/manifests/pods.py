"""What every engine pod the platform renders shares (the Deployment's and the benchmark Job's): names, labels, the
engine invocation, the container and pod hardening, GPU scheduling and probes.

Objects are plain dicts in the shape the API server takes, ready for server-side apply. Nothing here reads
files, talks to a cluster or knows about Dagster. Each choice that departs from a default is explained where it
is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llm_platform.catalog import ModelSpec, Platform, lora_rank, max_loras
from llm_platform.conventions import (
    API_KEY_ENV,
    API_PORT,
    ENGINE_HEALTH_PATH,
    ENGINE_LOOPBACK_PORT,
    MANAGER,
    PART_OF,
    SERVING_APP,
    SERVING_CONTAINER,
)
from llm_platform.engine import EngineInvocation, LoraAdapters, engine_for
from llm_platform.store_layout import snapshot_path
from llm_platform.weights.plan import SnapshotManifest

Object = dict[str, Any]

PORT_NAME = "http"
HF_TOKEN_KEY = "token"  # noqa: S105 - a key name in the Secret
SHM_SIZE = "8Gi"
CACHE_SIZE = "30Gi"
"""torch.compile / Triton / FlashInfer caches: a few GB per model and engine configuration."""
#: Annotations on the pod template; a change to either rolls the Deployment.
WEIGHTS_REVISION_ANNOTATION = "llm-platform/weights-revision"
ENGINE_FINGERPRINT_ANNOTATION = "llm-platform/engine-fingerprint"
NONROOT_UID = 10001
"""Above the range of host users (UIDs < 10000), so a container escape maps to no host account."""


def resource_name(model: ModelSpec) -> str:
    """Name of the Deployment, Service, PDB, ScaledObject, Ingress and NetworkPolicy of a model."""
    return model.identity.object_name


def selector_labels(model: ModelSpec) -> dict[str, str]:
    """The immutable Deployment selector: kept minimal so that label additions never need a re-create."""
    return {"app.kubernetes.io/name": SERVING_APP, **model.identity.labels()}


SERVING_COMPONENT = "inference-server"
"""The component label of the Deployment's pods (Jobs' pods carry other components)."""


def serving_component(model: ModelSpec) -> str:
    """The component label of the model's serving pods; a rollout track's own (``inference-server-canary``), so
    that the stable version's Service, PodDisruptionBudget and NetworkPolicy never select a canary's pods (its
    labels are a superset of the stable selector's)."""
    identity = model.identity
    return f"{SERVING_COMPONENT}-{identity.child}" if identity.kind == "track" else SERVING_COMPONENT


def model_labels(model: ModelSpec, component: str | None = None) -> dict[str, str]:
    """Recommended Kubernetes labels plus the model label that selectors, PromQL and RBAC audits use."""
    return {
        **selector_labels(model),
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/component": component or serving_component(model),
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGER,
    }


def object_metadata(name: str, platform: Platform, labels: Mapping[str, str], **extra: Any) -> Object:
    return {"name": name, "namespace": platform.namespace, "labels": dict(labels), **extra}


def weights_path(platform: Platform, model: ModelSpec, revision: str) -> str:
    """Where the serving pods find the weights: the snapshot directory on the PVC, or the catalog's local path."""
    if model.source.path is not None:
        return model.source.path
    return snapshot_path(platform.weights_mount_path, model.name, revision)


def lora_adapters(model: ModelSpec, weights: SnapshotManifest, root: str) -> LoraAdapters | None:
    """The adapters served on ``weights`` (their snapshots under the model store ``root``, as the servers see it),
    with the slots and the rank the engine reserves: derived from the catalog and the adapters' configs where the
    catalog leaves them out. None: no adapters, LoRA stays off."""
    if not weights.adapters:
        return None
    ranks = [adapter.lora_rank for adapter in weights.adapters.values() if adapter.lora_rank is not None]
    return LoraAdapters(
        {name: snapshot_path(root, adapter.model, adapter.sha) for name, adapter in weights.adapters.items()},
        max_loras=max_loras(model),
        max_lora_rank=lora_rank(model, ranks),
    )


def cache_dir(model: ModelSpec) -> str:
    """HOME of the engine container: its image's home, on an emptyDir for the compile caches."""
    return engine_for(model.serving).container_home


def serving_invocation(
    platform: Platform, model: ModelSpec, revision: str, adapters: LoraAdapters | None = None
) -> EngineInvocation:
    """The engine invocation inside the serving container (with ``adapters`` on the weights): on the pod's loopback
    only, behind the gate (the Deployment) or the benchmark client in the same pod (the benchmark Job); nothing
    outside the pod reaches the engine itself."""
    return engine_for(model.serving).invocation(
        model.serving,
        served_model_name=model.name,
        weights_path=weights_path(platform, model, revision),
        host="127.0.0.1",
        port=ENGINE_LOOPBACK_PORT,
        extra_env={"HOME": cache_dir(model)},
        adapters=adapters,
    )


def gpu_scheduling(platform: Platform) -> Object:
    spec: Object = {
        "tolerations": [toleration.model_dump(exclude_none=True) for toleration in platform.gpu_tolerations]
    }
    if platform.gpu_node_selector:
        spec["nodeSelector"] = dict(platform.gpu_node_selector)
    return spec


def restricted_container_security() -> Object:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def http_probe(period_s: int, failures: int, timeout_s: int, path: str = ENGINE_HEALTH_PATH) -> Object:
    """A probe on the gate's API port: kubelet cannot reach vLLM on the pod's loopback, the gate forwards
    ``/health`` (the one route it forwards without the key)."""
    return {
        "httpGet": {"path": path, "port": API_PORT},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": timeout_s,
    }


def engine_image(platform: Platform, model: ModelSpec) -> str:
    """``repository:tag``, or ``repository@sha256:…`` when the catalog pins the image by digest."""
    engine = engine_for(model.serving)
    return engine.image(platform.image_repository(engine.name), model.serving.image_tag)


API_KEY_SECRET_KEY = "api-key"  # noqa: S105 - a key name in the Secret
"""The key of the API-key Secret that holds the key."""


def api_key_secret(platform: Platform, model: ModelSpec) -> str:
    return model.exposure.api_key_secret or platform.api_key_secret


def api_key_env(platform: Platform, model: ModelSpec, name: str = API_KEY_ENV) -> Object:
    """The API key as an environment variable from its Secret (never a value in a manifest or an argument)."""
    reference = {"name": api_key_secret(platform, model), "key": API_KEY_SECRET_KEY}
    return {"name": name, "valueFrom": {"secretKeyRef": reference}}


def engine_container_base(platform: Platform, model: ModelSpec, invocation: EngineInvocation) -> Object:
    """What the serving container and the benchmark Job's container share: image, env (the API key
    that the engine then requires on every ``/v1/`` call included), resources, mounts."""
    gpus = str(model.gpus_per_replica)
    return {
        "name": SERVING_CONTAINER,
        "image": engine_image(platform, model),
        "imagePullPolicy": "IfNotPresent",
        # A crash's log tail becomes its termination message, which the drift policy reads to tell a CUDA
        # out-of-memory from any other crash (kube-state-metrics only says "Error").
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [
            *({"name": key, "value": value} for key, value in sorted(invocation.env.items())),
            api_key_env(platform, model),
        ],
        # No CPU limit: CFS throttling of the tokenizer and scheduler threads shows up directly as latency.
        "resources": {
            # Ephemeral storage: the compile caches under HOME and the container's writable layer.
            "requests": {
                "cpu": model.resources.cpu,
                "memory": model.resources.memory,
                platform.gpu_resource: gpus,
                "ephemeral-storage": "10Gi",
            },
            "limits": {"memory": model.resources.memory, platform.gpu_resource: gpus, "ephemeral-storage": "40Gi"},
        },
        "volumeMounts": [
            {"name": "weights", "mountPath": platform.weights_mount_path, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": cache_dir(model)},
        ],
        # The vllm-openai image runs as root by default but needs no root: with HOME (torch/triton compile caches)
        # on an emptyDir it runs as any UID. The root filesystem stays writable because Python and CUDA libraries
        # write scratch files in places that vary between releases.
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": False},
    }


def engine_command(invocation: EngineInvocation) -> Object:
    """The container's ``command`` (the interpreter and the engine's program) and ``args``."""
    return {"command": invocation.command()[: -len(invocation.args) or None], "args": list(invocation.args)}


def engine_pod_base(platform: Platform) -> Object:
    """Pod settings of every engine pod (Deployment and benchmark Job)."""
    return {
        # Service links inject VLLM_*-looking variables (e.g. VLLM_PORT) that vLLM reads as its own settings.
        "enableServiceLinks": False,
        # vLLM never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [
            {"name": "weights", "persistentVolumeClaim": {"claimName": platform.weights_pvc, "readOnly": True}},
            # NCCL and PyTorch workers exchange tensors through /dev/shm; the container runtime's 64 MiB is far
            # too small for tensor parallelism.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {"name": "cache", "emptyDir": {"sizeLimit": CACHE_SIZE}},
        ],
        **gpu_scheduling(platform),
    }


#: Where the cluster's DNS runs (kube-dns / CoreDNS): the one destination every platform pod may reach.
DNS_EGRESS: Object = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
}
