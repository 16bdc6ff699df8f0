"""The platform's Jobs: the weights store and its download Job, and the GPU smoke-benchmark Job."""

from __future__ import annotations

import hashlib

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.catalog import Adapter, ModelSpec, Platform
from llm_platform.conventions import MANAGER, PART_OF
from llm_platform.engine import LoraAdapters
from llm_platform.manifests.benchmark_script import benchmark_script
from llm_platform.manifests.pods import (
    DNS_EGRESS,
    ENGINE_FINGERPRINT_ANNOTATION,
    HF_TOKEN_KEY,
    NONROOT_UID,
    Object,
    api_key_env,
    engine_container_base,
    engine_pod_base,
    model_labels,
    object_metadata,
    restricted_container_security,
    serving_invocation,
)
from llm_platform.store_layout import adapter_store_key
from llm_platform.weights.plan import ADAPTER_REQUIRED_FILES

WEIGHTS_COMPONENT = "weights-download"
HF_TOKEN_DIR = "/var/run/secrets/huggingface"  # noqa: S105 - a mount path, not a secret
"""Where the download Job mounts the token Secret (the file ``token``)."""
WEIGHTS_DOWNLOAD_POLICY = "llm-platform-weights-download"


def render_weights_pvc(platform: Platform) -> Object:
    """The shared ReadWriteMany model store: download Jobs write it, every vLLM pod mounts it read-only."""
    spec: Object = {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": platform.weights_storage_size}},
    }
    if platform.weights_storage_class is not None:
        spec["storageClassName"] = platform.weights_storage_class
    labels = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": MANAGER}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_metadata(platform.weights_pvc, platform, labels),
        "spec": spec,
    }


def hub_port(platform: Platform) -> int:
    """The TCP port of the hub the download Job fetches from (``hf_endpoint``, else huggingface.co's 443)."""
    endpoint = platform.hf_endpoint or "https://huggingface.co"
    scheme, _, rest = endpoint.partition("://")
    authority = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host_port = authority.rsplit(":", 1)
    if len(host_port) == 2 and host_port[1].isdigit() and not authority.endswith("]"):
        return int(host_port[1])
    return 443 if scheme == "https" else 80


def render_weights_network_policy(platform: Platform) -> Object:
    """The download Jobs reach DNS and the hub's port (its files come from the hub's CDN on the same port; the
    addresses are not known in advance), nothing else; nothing reaches them."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_metadata(
            WEIGHTS_DOWNLOAD_POLICY,
            platform,
            {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": MANAGER},
        ),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": WEIGHTS_COMPONENT}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [DNS_EGRESS, {"ports": [{"protocol": "TCP", "port": hub_port(platform)}]}],
        },
    }


def weights_job_name(model: ModelSpec, revision: str) -> str:
    """A Job name per (model, revision): at most 57 characters, so within the 63 a Job's pods need."""
    digest = hashlib.sha256(revision.encode()).hexdigest()[:8]
    return f"weights-{model.name}-{digest}"


def adapter_job_name(model: ModelSpec, adapter: Adapter) -> str:
    """A Job name per (model, adapter, revision): within the 63 characters a Job's pods need, like the weights'."""
    digest = hashlib.sha256(f"{adapter.name}@{adapter.source.revision}".encode()).hexdigest()[:8]
    return f"adapter-{model.name}-{digest}"


def weights_job_args(platform: Platform, model: ModelSpec, revision: str, adapter: Adapter | None = None) -> list[str]:
    """Arguments of ``python -m llm_platform.weights``: self-contained, the Job needs no catalog file. With
    ``adapter``: that adapter of the model, into its directory beside the base's snapshots."""
    source = adapter.source if adapter is not None else model.source
    if source.repo is None:
        raise ValueError(f"model '{model.name}' has a local source and no download Job")
    key = adapter_store_key(model.name, adapter.name) if adapter is not None else model.name
    args = ["--model", key, "--repo", source.repo, "--revision", revision]
    args += ["--dest", platform.weights_mount_path]
    for pattern in source.allow_patterns:
        args += ["--allow-pattern", pattern]
    for pattern in ADAPTER_REQUIRED_FILES if adapter is not None else ():
        args += ["--require", pattern]
    return args


def render_weights_job(platform: Platform, model: ModelSpec, revision: str, adapter: Adapter | None = None) -> Object:
    """The Job that downloads one revision of a Hugging Face model into the RWX model store; with ``adapter``, one
    of its LoRA adapters (``revision`` its own), into the adapter's directory beside the base's snapshots.

    The token comes only from the Secret, mounted as a file (``HF_TOKEN_PATH``, which huggingface_hub reads; an
    environment variable would show in ``kubectl describe`` of the pod's spec and in every child process); the
    volume is ``optional`` so that public models need no Secret. It is never an argument or a literal value.
    """
    container: Object = {
        "name": "download",
        "image": platform.platform_image,
        "command": ["python", "-m", "llm_platform.weights"],
        "args": weights_job_args(platform, model, revision, adapter),
        "env": [
            {"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/{HF_TOKEN_KEY}"},
            {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
            *([{"name": "HF_ENDPOINT", "value": platform.hf_endpoint}] if platform.hf_endpoint else []),
        ],
        "resources": {
            "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "4Gi", "ephemeral-storage": "2Gi"},
        },
        "volumeMounts": [
            {"name": "weights", "mountPath": platform.weights_mount_path},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True},
        ],
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
    }
    labels = model_labels(model, component=WEIGHTS_COMPONENT)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(
            adapter_job_name(model, adapter) if adapter is not None else weights_job_name(model, revision),
            platform,
            labels,
        ),
        "spec": {
            # The downloader resumes where a killed attempt stopped, so retrying is cheap.
            "backoffLimit": 3,
            "activeDeadlineSeconds": 6 * 3600,
            "ttlSecondsAfterFinished": 24 * 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": NONROOT_UID,
                        # Never walk a multi-terabyte store to chown it on every start.
                        "fsGroupChangePolicy": "OnRootMismatch",
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "weights", "persistentVolumeClaim": {"claimName": platform.weights_pvc}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {
                            "name": "hf-token",
                            "secret": {"secretName": platform.hf_token_secret, "optional": True, "defaultMode": 0o400},
                        },
                    ],
                },
            },
        },
    }


def benchmark_job_name(model: ModelSpec, revision: str, fingerprint: str, run_key: str) -> str:
    """One Job per benchmark run: ``run_key`` (the Dagster run id) keeps reruns of one config apart."""
    digest = hashlib.sha256(f"{revision}/{fingerprint}/{run_key}".encode()).hexdigest()[:8]
    return f"bench-{model.name}-{digest}"


def render_benchmark_job(
    platform: Platform,
    model: ModelSpec,
    revision: str,
    plan: BenchmarkPlan,
    run_key: str,
    against: str | None = None,
    rounds: int = 1,
    adapters: LoraAdapters | None = None,
) -> Object:
    """The GPU smoke benchmark: one pod serves the candidate config from the PVC and benchmarks it on localhost
    (``rounds`` times over, for the tuner's repeats).

    Same image, engine arguments, GPUs, /dev/shm and scheduling as the Deployment, so the numbers describe what a
    promotion would serve. ``backoffLimit: 0``: a failed benchmark is a result to report, not to retry. With
    ``against`` (the live benchmark of a deployed model) the pod only runs the client: no GPU, no server.
    """
    invocation = serving_invocation(platform, model, revision, adapters)
    base = engine_container_base(platform, model, invocation)
    container: Object = {
        **base,
        # The server requires the model's API key; ``vllm bench serve`` sends OPENAI_API_KEY as a bearer token.
        "env": [*base["env"], api_key_env(platform, model, "OPENAI_API_KEY")],
        "command": ["/bin/sh", "-c", benchmark_script(platform, model, revision, plan, against, rounds, adapters)],
    }
    pod_spec: Object = {**engine_pod_base(platform), "restartPolicy": "Never", "containers": [container]}
    if against is not None:
        container["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
        for key in ("tolerations", "nodeSelector"):
            pod_spec.pop(key, None)
    labels = model_labels(model, component="live-benchmark" if against else "smoke-benchmark")
    if against is not None:
        labels.update(model.exposure.client_labels)  # the model's NetworkPolicy admits labelled clients only
    name = benchmark_job_name(model, revision, invocation.fingerprint + (against or "") + plan.variant, run_key)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": object_metadata(name, platform, labels),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": model.serving.startup_timeout_s + 3600,
            "ttlSecondsAfterFinished": 24 * 3600,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {ENGINE_FINGERPRINT_ANNOTATION: invocation.fingerprint},
                },
                "spec": pod_spec,
            },
        },
    }
