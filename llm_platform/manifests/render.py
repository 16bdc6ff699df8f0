"""Pure renderers: a catalog model (and the platform settings) to the Kubernetes objects that serve it.

Objects are plain dicts in the shape the API server takes, ready for server-side apply. Nothing here reads
files, talks to a cluster or knows about Dagster. Each choice that departs from a default is explained where it
is made.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from llm_platform.benchmark.plan import BENCH_RESULT_MARKER, BenchmarkPlan, bench_serve_args, level_filename
from llm_platform.catalog import Catalog, ModelSpec, Platform
from llm_platform.engine import DEFAULT_PORT, VLLM_SERVER_MODULE, EngineInvocation, engine_invocation
from llm_platform.store_layout import snapshot_path

Object = dict[str, Any]

MANAGER = "llm-platform"
PORT_NAME = "http"
HF_TOKEN_KEY = "token"  # noqa: S105 - a key name in the Secret
SHM_SIZE = "8Gi"
CACHE_DIR = "/home/vllm"
#: Annotations on the pod template; a change to either rolls the Deployment.
WEIGHTS_REVISION_ANNOTATION = "llm-platform/weights-revision"
ENGINE_FINGERPRINT_ANNOTATION = "llm-platform/engine-fingerprint"
NONROOT_UID = 1000


def resource_name(model: ModelSpec) -> str:
    """Name of the Deployment, Service, PDB, ScaledObject, Ingress and NetworkPolicy of a model."""
    return f"vllm-{model.name}"


def selector_labels(model: ModelSpec) -> dict[str, str]:
    """The immutable Deployment selector: kept minimal so that label additions never need a re-create."""
    return {"app.kubernetes.io/name": "vllm", "llm-platform/model": model.name}


def model_labels(model: ModelSpec, component: str = "inference-server") -> dict[str, str]:
    """Recommended Kubernetes labels plus the model label that selectors, PromQL and RBAC audits use."""
    return {
        **selector_labels(model),
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "llm-platform",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def _metadata(name: str, platform: Platform, labels: Mapping[str, str], **extra: Any) -> Object:
    return {"name": name, "namespace": platform.namespace, "labels": dict(labels), **extra}


def weights_path(platform: Platform, model: ModelSpec, revision: str) -> str:
    """Where the serving pods find the weights: the snapshot directory on the PVC, or the catalog's local path."""
    if model.source.path is not None:
        return model.source.path
    return snapshot_path(platform.weights_mount_path, model.name, revision)


def serving_invocation(platform: Platform, model: ModelSpec, revision: str) -> EngineInvocation:
    """The vLLM invocation inside the serving container."""
    return engine_invocation(
        model.serving,
        served_model_name=model.name,
        weights_path=weights_path(platform, model, revision),
        port=DEFAULT_PORT,
        extra_env={"HOME": CACHE_DIR},
    )


def _gpu_scheduling(platform: Platform) -> Object:
    spec: Object = {
        "tolerations": [toleration.model_dump(exclude_none=True) for toleration in platform.gpu_tolerations]
    }
    if platform.gpu_node_selector:
        spec["nodeSelector"] = dict(platform.gpu_node_selector)
    return spec


def _restricted_container_security() -> Object:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "runAsGroup": NONROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _http_probe(period_s: int, failures: int, timeout_s: int) -> Object:
    return {
        "httpGet": {"path": "/health", "port": PORT_NAME},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": timeout_s,
    }


def vllm_image(platform: Platform, model: ModelSpec) -> str:
    return f"{platform.vllm_image}:{model.serving.image_tag}"


def _vllm_container_base(platform: Platform, model: ModelSpec, invocation: EngineInvocation) -> Object:
    """What the serving container and the benchmark Job's container share: image, env, resources, mounts."""
    gpus = str(model.gpus_per_replica)
    return {
        "name": "vllm",
        "image": vllm_image(platform, model),
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": key, "value": value} for key, value in sorted(invocation.env.items())],
        # No CPU limit: CFS throttling of the tokenizer and scheduler threads shows up directly as latency.
        "resources": {
            "requests": {"cpu": model.resources.cpu, "memory": model.resources.memory, platform.gpu_resource: gpus},
            "limits": {"memory": model.resources.memory, platform.gpu_resource: gpus},
        },
        "volumeMounts": [
            {"name": "weights", "mountPath": platform.weights_mount_path, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": CACHE_DIR},
        ],
        # The vllm-openai image runs as root by default but needs no root: with HOME (torch/triton compile caches)
        # on an emptyDir it runs as any UID. The root filesystem stays writable because Python and CUDA libraries
        # write scratch files in places that vary between releases.
        "securityContext": {**_restricted_container_security(), "readOnlyRootFilesystem": False},
    }


def _vllm_pod_base(platform: Platform) -> Object:
    """Pod settings of every vLLM pod (Deployment and benchmark Job)."""
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
            {"name": "cache", "emptyDir": {}},
        ],
        **_gpu_scheduling(platform),
    }


def render_deployment(platform: Platform, model: ModelSpec, revision: str) -> Object:
    """The vLLM Deployment. ``revision`` is the weights' commit sha (the snapshot directory on the PVC)."""
    invocation = serving_invocation(platform, model, revision)
    startup_period_s = 10
    container: Object = {
        **_vllm_container_base(platform, model, invocation),
        "command": ["python3", "-m", VLLM_SERVER_MODULE],
        "args": list(invocation.args),
        "ports": [{"name": PORT_NAME, "containerPort": DEFAULT_PORT, "protocol": "TCP"}],
        # Loading weights takes from seconds to tens of minutes depending on size and storage. A fixed
        # initialDelaySeconds (the seed's 60 s) is wrong both ways: too short for a 70B model (the kubelet kills it
        # in a crash loop) and a needless wait for a small one. A startupProbe (as KServe does) holds liveness and
        # readiness back until /health first answers, for up to serving.startup_timeout_s; after that liveness
        # restarts a wedged engine quickly and readiness takes an overloaded pod out of the Service.
        "startupProbe": _http_probe(
            period_s=startup_period_s, failures=-(-model.serving.startup_timeout_s // startup_period_s), timeout_s=5
        ),
        "readinessProbe": _http_probe(period_s=5, failures=3, timeout_s=5),
        "livenessProbe": _http_probe(period_s=15, failures=4, timeout_s=10),
        # Give the endpoints controller time to take the pod out of the Service before vLLM stops accepting.
        "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
    }
    pod_spec: Object = {**_vllm_pod_base(platform), "terminationGracePeriodSeconds": 60, "containers": [container]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            # No `replicas`: KEDA's HPA owns the count, and applying one here would fight it on every promotion.
            "selector": {"matchLabels": selector_labels(model)},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": model.serving.startup_timeout_s + 300,
            # Surge one new pod before removing an old one: the model never drops below its capacity during a
            # promotion (the catalog's quota check reserves the surge GPUs).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": model_labels(model),
                    "annotations": {
                        WEIGHTS_REVISION_ANNOTATION: revision,
                        ENGINE_FINGERPRINT_ANNOTATION: invocation.fingerprint,
                        # For Prometheus' kubernetes_sd annotation-based scraping; the Operator uses the PodMonitor.
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(DEFAULT_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def render_service(platform: Platform, model: ModelSpec) -> Object:
    """ClusterIP Service in front of the ready vLLM pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(model),
            "ports": [{"name": PORT_NAME, "port": DEFAULT_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def render_pod_disruption_budget(platform: Platform, model: ModelSpec) -> Object:
    """Voluntary evictions (node drains) take at most one replica at a time.

    ``maxUnavailable: 1`` rather than ``minAvailable: 1``: with a single replica the latter blocks every drain
    forever, which cluster operators then work around by force.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(resource_name(model), platform, model_labels(model)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(model)}},
    }


def waiting_queue_query(platform: Platform, model: ModelSpec) -> str:
    """PromQL for the requests waiting in all of this model's pods (vLLM labels its metrics with model_name)."""
    return f'sum(vllm:num_requests_waiting{{namespace="{platform.namespace}",model_name="{model.name}"}})'


def render_scaled_object(platform: Platform, model: ModelSpec) -> Object:
    """KEDA ScaledObject on the waiting queue, averaged per replica against the catalog threshold."""
    scaling = model.autoscaling
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": resource_name(model)},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": scaling.polling_interval_s,
            "cooldownPeriod": scaling.cooldown_s,
            # If Prometheus cannot be read 3 times in a row, keep the current replica count (never scale a busy
            # model down to its minimum because monitoring is down). Fallback needs metricType AverageValue.
            "fallback": {
                "failureThreshold": 3,
                "replicas": scaling.min_replicas,
                "behavior": "currentReplicasIfHigher",
            },
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Scale down one pod at a time after the cooldown; a new vLLM pod takes minutes to load.
                        "scaleDown": {
                            "stabilizationWindowSeconds": scaling.cooldown_s,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "waiting-requests",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": platform.prometheus_url,
                        "query": waiting_queue_query(platform, model),
                        "threshold": f"{scaling.waiting_threshold:g}",
                        # An empty result is an error (so the fallback applies), not a silent zero.
                        "ignoreNullValues": "false",
                    },
                }
            ],
        },
    }


def render_ingress(platform: Platform, model: ModelSpec) -> Object | None:
    """ingress-nginx Ingress for ``exposure.host``; None when the model is not exposed outside the cluster."""
    exposure = model.exposure
    if exposure.host is None:
        return None
    timeout = str(exposure.timeout_s)
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-body-size": exposure.max_body_size,
        # Stream tokens (server-sent events) as they are generated instead of buffering whole responses.
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        # Per client IP (ingress-nginx keys limit-rps on the remote address).
        "nginx.ingress.kubernetes.io/limit-rps": str(exposure.rate_limit_rps),
    }
    spec: Object = {
        "ingressClassName": platform.ingress_class,
        "rules": [
            {
                "host": exposure.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": resource_name(model), "port": {"name": PORT_NAME}}},
                        }
                    ]
                },
            }
        ],
    }
    if exposure.tls_secret is not None:
        spec["tls"] = [{"hosts": [exposure.host], "secretName": exposure.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _metadata(resource_name(model), platform, model_labels(model), annotations=annotations),
        "spec": spec,
    }


def _namespace_selector(namespace: str) -> Object:
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


def render_network_policy(platform: Platform, model: ModelSpec) -> Object:
    """Only labelled clients (any namespace), the ingress controller and Prometheus reach the vLLM port."""
    peers = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(model.exposure.client_labels)}},
        {
            "namespaceSelector": _namespace_selector(platform.ingress_controller_namespace),
            "podSelector": {"matchLabels": dict(platform.ingress_controller_pod_labels)},
        },
        {
            "namespaceSelector": _namespace_selector(platform.prometheus_namespace),
            "podSelector": {"matchLabels": dict(platform.prometheus_pod_labels)},
        },
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(model)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": DEFAULT_PORT}]}],
        },
    }


def render_weights_pvc(platform: Platform) -> Object:
    """The shared ReadWriteMany model store: download Jobs write it, every vLLM pod mounts it read-only."""
    spec: Object = {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": platform.weights_storage_size}},
    }
    if platform.weights_storage_class is not None:
        spec["storageClassName"] = platform.weights_storage_class
    labels = {"app.kubernetes.io/part-of": "llm-platform", "app.kubernetes.io/managed-by": MANAGER}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(platform.weights_pvc, platform, labels),
        "spec": spec,
    }


def weights_job_name(model: ModelSpec, revision: str) -> str:
    """A Job name per (model, revision): at most 57 characters, so within the 63 a Job's pods need."""
    digest = hashlib.sha256(revision.encode()).hexdigest()[:8]
    return f"weights-{model.name}-{digest}"


def weights_job_args(platform: Platform, model: ModelSpec, revision: str) -> list[str]:
    """Arguments of ``python -m llm_platform.weights``: self-contained, the Job needs no catalog file."""
    if model.source.repo is None:
        raise ValueError(f"model '{model.name}' has a local source and no download Job")
    args = ["--model", model.name, "--repo", model.source.repo, "--revision", revision]
    args += ["--dest", platform.weights_mount_path]
    for pattern in model.source.allow_patterns:
        args += ["--allow-pattern", pattern]
    return args


def render_weights_job(platform: Platform, model: ModelSpec, revision: str) -> Object:
    """The Job that downloads one revision of a Hugging Face model into the RWX model store.

    The token comes only from the Secret (``optional`` so that public models need none); it is never an argument
    or a literal value.
    """
    container: Object = {
        "name": "download",
        "image": platform.platform_image,
        "command": ["python", "-m", "llm_platform.weights"],
        "args": weights_job_args(platform, model, revision),
        "env": [
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": platform.hf_token_secret, "key": HF_TOKEN_KEY, "optional": True}
                },
            },
            {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
            {"name": "HOME", "value": "/tmp"},
            *([{"name": "HF_ENDPOINT", "value": platform.hf_endpoint}] if platform.hf_endpoint else []),
        ],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
        "volumeMounts": [
            {"name": "weights", "mountPath": platform.weights_mount_path},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": {**_restricted_container_security(), "readOnlyRootFilesystem": True},
    }
    labels = model_labels(model, component="weights-download")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(weights_job_name(model, revision), platform, labels),
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
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def benchmark_job_name(model: ModelSpec, revision: str, fingerprint: str, run_key: str) -> str:
    """One Job per benchmark run: ``run_key`` (the Dagster run id) keeps reruns of one config apart."""
    digest = hashlib.sha256(f"{revision}/{fingerprint}/{run_key}".encode()).hexdigest()[:8]
    return f"bench-{model.name}-{digest}"


def benchmark_script(
    platform: Platform, model: ModelSpec, revision: str, plan: BenchmarkPlan, against: str | None = None
) -> str:
    """The benchmark container's shell script: serve the candidate, wait for health, ``vllm bench serve`` each level.

    With ``against`` (a base URL, e.g. the model's Service) nothing is served: the levels run against that server.
    vLLM's own log goes to a file (shown on failure) so that it never interleaves with the result lines: each
    level prints one ``LLM_PLATFORM_BENCH_RESULT <concurrency> <json>`` line, which the target reads from the pod
    log and hands to the same parser as the local benchmark.
    """
    result_dir = f"{CACHE_DIR}/bench"
    lines = ["set -u", f"mkdir -p {result_dir}"]
    base_url = against or f"http://127.0.0.1:{DEFAULT_PORT}"
    if against is None:
        invocation = serving_invocation(platform, model, revision)
        server_log = f"{CACHE_DIR}/vllm-server.log"
        probe = f'import urllib.request as u; u.urlopen("{base_url}/health", timeout=5)'
        timeout = model.serving.startup_timeout_s
        lines += [
            f"{shlex.join(['python3', '-m', VLLM_SERVER_MODULE, *invocation.args])} >{server_log} 2>&1 &",
            "server=$!",
            f"deadline=$(( $(date +%s) + {timeout} ))",
            f"until python3 -c {shlex.quote(probe)} 2>/dev/null; do",
            '  if ! kill -0 "$server" 2>/dev/null; then',
            f'    echo "error: vLLM exited before it became healthy" >&2; tail -n 40 {server_log} >&2; exit 3',
            "  fi",
            '  if [ "$(date +%s)" -ge "$deadline" ]; then',
            f'    echo "error: vLLM not healthy after {timeout} s" >&2; tail -n 40 {server_log} >&2; exit 4',
            "  fi",
            "  sleep 5",
            "done",
        ]
    dump = "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))"
    for concurrency in plan.concurrency_levels:
        args = bench_serve_args(
            plan,
            concurrency,
            base_url=base_url,
            served_model_name=model.name,
            tokenizer=weights_path(platform, model, revision),
            result_dir=result_dir,
            result_filename=level_filename(concurrency),
        )
        lines += [
            f"{shlex.join(['vllm', 'bench', 'serve', *args])} || "
            f'{{ echo "error: vllm bench serve failed at concurrency {concurrency}" >&2; exit 5; }}',
            f"printf '%s ' {BENCH_RESULT_MARKER} {concurrency}; "
            f"python3 -c {shlex.quote(dump)} {result_dir}/{level_filename(concurrency)}",
        ]
    if against is None:
        lines += ['kill "$server"', 'wait "$server" 2>/dev/null']
    return "\n".join([*lines, "exit 0"]) + "\n"


def render_benchmark_job(
    platform: Platform,
    model: ModelSpec,
    revision: str,
    plan: BenchmarkPlan,
    run_key: str,
    against: str | None = None,
) -> Object:
    """The GPU smoke benchmark: one pod serves the candidate config from the PVC and benchmarks it on localhost.

    Same image, engine arguments, GPUs, /dev/shm and scheduling as the Deployment, so the numbers describe what a
    promotion would serve. ``backoffLimit: 0``: a failed benchmark is a result to report, not to retry. With
    ``against`` (the live benchmark of a deployed model) the pod only runs the client: no GPU, no server.
    """
    invocation = serving_invocation(platform, model, revision)
    container: Object = {
        **_vllm_container_base(platform, model, invocation),
        "command": ["/bin/sh", "-c", benchmark_script(platform, model, revision, plan, against)],
    }
    pod_spec: Object = {**_vllm_pod_base(platform), "restartPolicy": "Never", "containers": [container]}
    if against is not None:
        container["resources"] = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
        for key in ("tolerations", "nodeSelector"):
            pod_spec.pop(key, None)
    labels = model_labels(model, component="live-benchmark" if against else "smoke-benchmark")
    if against is not None:
        labels.update(model.exposure.client_labels)  # the model's NetworkPolicy admits labelled clients only
    name = benchmark_job_name(model, revision, invocation.fingerprint + (against or ""), run_key)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(name, platform, labels),
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


def render_model(platform: Platform, model: ModelSpec, revision: str | None = None) -> list[Object]:
    """Every object that serves ``model``, in apply order. ``revision`` defaults to the catalog's revision."""
    revision = revision or model.source.revision
    objects = [
        render_service(platform, model),
        render_deployment(platform, model, revision),
        render_pod_disruption_budget(platform, model),
        render_scaled_object(platform, model),
        render_network_policy(platform, model),
        render_ingress(platform, model),
    ]
    return [obj for obj in objects if obj is not None]


def render_platform(platform: Platform) -> list[Object]:
    """Objects the catalog defines once for all models (the weights store)."""
    return [render_weights_pvc(platform)]


def render_files(catalog: Catalog, names: Sequence[str] | None = None) -> dict[str, list[Object]]:
    """Objects grouped by the file ``llm-platform render --out`` writes them to.

    ``platform.yaml`` holds the shared weights store; ``<model>.yaml`` the serving objects (applied together on a
    promotion); ``<model>.weights-job.yaml`` the download Job for Hugging Face sources (launched, not applied).
    """
    files: dict[str, list[Object]] = {"platform.yaml": render_platform(catalog.platform)}
    models = [catalog.model(name) for name in names] if names else list(catalog.models)
    for model in models:
        files[f"{model.name}.yaml"] = render_model(catalog.platform, model)
        if model.source.repo is not None:
            files[f"{model.name}.weights-job.yaml"] = [
                render_weights_job(catalog.platform, model, model.source.revision)
            ]
    return files


def dump_yaml(objects: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """Objects as one multi-document YAML text, keys in render order (the order a reader expects)."""
    body = yaml.safe_dump_all([dict(obj) for obj in objects], sort_keys=False, default_flow_style=False, width=120)
    return (f"# {header}\n" if header else "") + body
