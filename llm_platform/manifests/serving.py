"""The objects that serve a model: Deployment, Service, PodDisruptionBudget, KEDA ScaledObject, Ingress and
NetworkPolicy, applied together on a promotion."""

from __future__ import annotations

from llm_platform.catalog import ModelSpec, Platform
from llm_platform.catalog.schema import nginx_size_bytes
from llm_platform.conventions import (
    API_KEY_ENV,
    API_PORT,
    CANARY_TRACK,
    ENGINE_LOOPBACK_PORT,
    GATE_CONTAINER,
    GATE_HEALTH_PATH,
    GATE_MODULE,
    METRICS_PATH,
    METRICS_PORT,
)
from llm_platform.engine import LoraAdapters, engine_for
from llm_platform.manifests.pods import (
    DNS_EGRESS,
    ENGINE_FINGERPRINT_ANNOTATION,
    PORT_NAME,
    WEIGHTS_REVISION_ANNOTATION,
    Object,
    api_key_env,
    engine_command,
    engine_container_base,
    engine_pod_base,
    http_probe,
    model_labels,
    object_metadata,
    resource_name,
    restricted_container_security,
    selector_labels,
    serving_component,
    serving_invocation,
)

METRICS_PORT_NAME = "metrics"


def gate_args(model: ModelSpec) -> list[str]:
    """The gate's arguments in a serving pod (the key comes from the environment, never an argument)."""
    all_interfaces = "0.0.0.0"  # noqa: S104 - the pod's listener; the NetworkPolicy decides who reaches it
    return [
        "--host", all_interfaces, "--port", str(API_PORT), "--metrics-port", str(METRICS_PORT),
        "--upstream-url", f"http://127.0.0.1:{ENGINE_LOOPBACK_PORT}",
        "--max-body-bytes", str(nginx_size_bytes(model.exposure.max_body_size)),
        "--body-timeout-s", str(model.exposure.timeout_s),
        *(f"--served-name={name}" for name in model.served_names),
    ]  # fmt: skip


def gate_container(platform: Platform, model: ModelSpec) -> Object:
    """The gate (``llm_platform/gate.py``), the pod's only listener: the key on every route but ``/health``, API
    routes only, ``/metrics`` on its own port, the body limit, header and body timeouts.

    A native sidecar (an init container that keeps running, Kubernetes >= 1.29): it is up before vLLM starts and
    stops only after vLLM has exited, so requests in flight during a drain still have their way out."""
    return {
        "name": GATE_CONTAINER,
        "image": platform.platform_image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": ["python", "-m", GATE_MODULE],
        "args": gate_args(model),
        "env": [api_key_env(platform, model, API_KEY_ENV)],
        "ports": [
            {"name": PORT_NAME, "containerPort": API_PORT, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "startupProbe": http_probe(period_s=1, failures=30, timeout_s=2, path=GATE_HEALTH_PATH),
        "livenessProbe": http_probe(period_s=10, failures=3, timeout_s=5, path=GATE_HEALTH_PATH),
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "100Mi"},
            "limits": {"memory": "512Mi", "ephemeral-storage": "200Mi"},
        },
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
    }


def render_deployment(
    platform: Platform, model: ModelSpec, revision: str, adapters: LoraAdapters | None = None
) -> Object:
    """The vLLM Deployment. ``revision`` is the weights' commit sha (the snapshot directory on the PVC); the
    ``adapters`` are on the same PVC, mounted once for all."""
    invocation = serving_invocation(platform, model, revision, adapters)
    startup_period_s = 10
    container: Object = {
        **engine_container_base(platform, model, invocation),
        **engine_command(invocation),
        # No ports: vLLM listens on the pod's loopback; the gate's ports are the pod's. The probes ask vLLM's
        # /health through the gate.
        # Loading weights takes from seconds to tens of minutes depending on size and storage. A fixed
        # initialDelaySeconds (the seed's 60 s) is wrong both ways: too short for a 70B model (the kubelet kills it
        # in a crash loop) and a needless wait for a small one. A startupProbe (as KServe does) holds liveness and
        # readiness back until /health first answers, for up to serving.startup_timeout_s; after that liveness
        # restarts a wedged engine quickly and readiness takes an overloaded pod out of the Service.
        "startupProbe": http_probe(
            period_s=startup_period_s, failures=-(-model.serving.startup_timeout_s // startup_period_s), timeout_s=5
        ),
        "readinessProbe": http_probe(period_s=5, failures=3, timeout_s=5),
        "livenessProbe": http_probe(period_s=15, failures=4, timeout_s=10),
        # Give the endpoints controller time to take the pod out of the Service before vLLM stops accepting.
        "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
    }
    pod_spec: Object = {
        **engine_pod_base(platform),
        "terminationGracePeriodSeconds": 60,
        "initContainers": [gate_container(platform, model)],
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            # No `replicas`: KEDA's HPA owns the count, and applying one here would fight it on every promotion; a
            # rollout track's (a canary's) count is fixed, not autoscaled.
            **({"replicas": model.rollout.canary_replicas} if model.identity.kind == "track" else {}),
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
                        "prometheus.io/port": str(METRICS_PORT),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def serving_pod_labels(model: ModelSpec) -> dict[str, str]:
    """Labels that select the Deployment's pods and nothing else: the benchmark Job's pod serves the same model on
    the same port, and must never receive the model's traffic nor count in its disruption budget."""
    return {**selector_labels(model), "app.kubernetes.io/component": serving_component(model)}


def render_service(platform: Platform, model: ModelSpec) -> Object:
    """ClusterIP Service in front of the ready vLLM pods of the Deployment (not a benchmark Job's)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            "type": "ClusterIP",
            "selector": serving_pod_labels(model),
            # The gate's API port (numeric: the gate is an init container, whose named ports not every Kubernetes
            # release resolves for a Service). /metrics is not on it.
            "ports": [{"name": PORT_NAME, "port": API_PORT, "targetPort": API_PORT, "protocol": "TCP"}],
        },
    }


def render_pod_disruption_budget(platform: Platform, model: ModelSpec) -> Object:
    """Voluntary evictions (node drains) take at most one replica at a time.

    ``maxUnavailable: 1`` rather than ``minAvailable: 1``: with a single replica the latter blocks every drain
    forever, which cluster operators then work around by force. It selects the serving pods only (their component
    label): the weights and benchmark Jobs' pods carry the model's labels too, and a budget over them would keep
    node drains waiting for as long as the Jobs are kept.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(resource_name(model), platform, model_labels(model)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": serving_pod_labels(model)}},
    }


def waiting_queue_query(platform: Platform, model: ModelSpec) -> str:
    """PromQL for the requests waiting in all of this model's pods (vLLM labels its metrics with model_name)."""
    return engine_for(model.serving).autoscaling_query(namespace=platform.namespace, model_name=model.name)


def render_scaled_object(platform: Platform, model: ModelSpec) -> Object:
    """KEDA ScaledObject on the waiting queue, averaged per replica against the catalog threshold."""
    scaling = model.autoscaling
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": object_metadata(resource_name(model), platform, model_labels(model)),
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
    """ingress-nginx Ingress for ``exposure.host``; None when the model is not exposed that way."""
    exposure = model.exposure
    if exposure.host is None or exposure.kind != "ingress":
        return None
    timeout = str(exposure.timeout_s)
    annotations = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-body-size": exposure.max_body_size,
        # Stream tokens (server-sent events) as they are generated instead of buffering whole responses.
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        # Per client IP (ingress-nginx keys limit-rps and limit-connections on the remote address).
        "nginx.ingress.kubernetes.io/limit-rps": str(exposure.rate_limit_rps),
        "nginx.ingress.kubernetes.io/limit-connections": str(exposure.max_connections_per_ip),
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
    }
    spec: Object = {
        "ingressClassName": platform.ingress_class,
        "rules": [
            {
                "host": exposure.host,
                "http": {
                    # Only the OpenAI API: /metrics, /docs, /openapi.json, /tokenize stay inside the cluster.
                    "paths": [
                        {
                            "path": "/v1",
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
        "metadata": object_metadata(resource_name(model), platform, model_labels(model), annotations=annotations),
        "spec": spec,
    }


def _namespace_selector(namespace: str) -> Object:
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace}}


def render_network_policy(platform: Platform, model: ModelSpec) -> Object:
    """The serving pods: reached on the gate's API port only by labelled client pods in labelled namespaces (and the
    serving namespace's own labelled pods, such as the live benchmark) and the ingress controller, on its metrics
    port only by Prometheus; they
    reach nothing but DNS (weights are on the PVC, the hub is offline). The namespace's default deny
    (``k8s/base/networkpolicy.yaml``) covers every other pod."""
    exposure = model.exposure
    peers = [
        {
            "namespaceSelector": {"matchLabels": dict(exposure.client_namespace_labels)},
            "podSelector": {"matchLabels": dict(exposure.client_labels)},
        },
        {"podSelector": {"matchLabels": dict(exposure.client_labels)}},
        (
            {"namespaceSelector": _namespace_selector(platform.gateway_namespace)}
            if exposure.kind == "gateway"
            else {
                "namespaceSelector": _namespace_selector(platform.ingress_controller_namespace),
                "podSelector": {"matchLabels": dict(platform.ingress_controller_pod_labels)},
            }
        ),
    ]
    prometheus = {
        "namespaceSelector": _namespace_selector(platform.prometheus_namespace),
        "podSelector": {"matchLabels": dict(platform.prometheus_pod_labels)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            "podSelector": {"matchLabels": serving_pod_labels(model)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                # Clients and the edge reach the gate's API port; Prometheus alone its metrics port.
                {"from": peers, "ports": [{"protocol": "TCP", "port": API_PORT}]},
                {"from": [prometheus], "ports": [{"protocol": "TCP", "port": METRICS_PORT}]},
            ],
            "egress": [DNS_EGRESS],
        },
    }


def canary_object_name(model: ModelSpec) -> str:
    """The canary track's objects' name (its Deployment, Service and, behind ingress-nginx, canary Ingress)."""
    return model.identity.track(CANARY_TRACK).object_name


def _canary_weight(model: ModelSpec, weight: int) -> int:
    if not 0 <= weight <= 100:
        raise ValueError(f"model '{model.name}': a canary's share of the traffic is 0 to 100 percent, not {weight}")
    return weight


def render_canary_ingress(platform: Platform, model: ModelSpec, weight: int) -> Object | None:
    """ingress-nginx's canary Ingress for a canary rollout step: the same host and path as the model's Ingress,
    ``weight`` percent of its requests to the canary's Service (``canary-weight``; ingress-nginx applies the main
    Ingress' rate limits and timeouts to both). None when the model is not exposed through an Ingress (a gateway
    route splits by :func:`render_http_route`'s ``canary_weight``)."""
    main = render_ingress(platform, model)
    if main is None:
        return None
    canary = model.identity.track(CANARY_TRACK)
    name = canary.object_name
    rule = main["spec"]["rules"][0]
    path = {**rule["http"]["paths"][0], "backend": {"service": {"name": name, "port": {"name": PORT_NAME}}}}
    annotations = {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": str(_canary_weight(model, weight)),
    }
    labels = {**model_labels(model), **canary.labels()}
    return {
        **main,
        "metadata": object_metadata(name, platform, labels, annotations=annotations),
        "spec": {**main["spec"], "rules": [{**rule, "http": {"paths": [path]}}]},
    }


def render_http_route(platform: Platform, model: ModelSpec, canary_weight: int | None = None) -> Object | None:
    """Gateway API HTTPRoute for ``exposure.host`` on the platform's Gateway (``exposure.kind: gateway``); None
    otherwise. Only ``/v1`` is routed; the 10-minute timeouts are the route's own (``timeouts``, standard channel).
    TLS terminates at the Gateway's HTTPS listener (``exposure.tls_secret`` is its certificate); per-client rate and
    connection limits are the Gateway implementation's policy (see docs/kubernetes.md). ``canary_weight``: during a
    canary rollout, the percent of the requests the canary's Service gets (weighted ``backendRefs``)."""
    exposure = model.exposure
    if exposure.host is None or exposure.kind != "gateway":
        return None
    timeout = f"{exposure.timeout_s}s"
    backends: list[Object] = [{"name": resource_name(model), "port": API_PORT}]
    if canary_weight is not None:
        weight = _canary_weight(model, canary_weight)
        backends = [{**backends[0], "weight": 100 - weight},
                    {"name": canary_object_name(model), "port": API_PORT, "weight": weight}]  # fmt: skip
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": object_metadata(resource_name(model), platform, model_labels(model)),
        "spec": {
            "parentRefs": [{"name": platform.gateway_name, "namespace": platform.gateway_namespace}],
            "hostnames": [exposure.host],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                    "backendRefs": backends,
                    "timeouts": {"request": timeout, "backendRequest": timeout},
                }
            ],
        },
    }


def render_canary(
    platform: Platform, model: ModelSpec, revision: str, adapters: LoraAdapters | None = None
) -> list[Object]:
    """The canary track's own objects beside the stable version's, in apply order: its Service, its Deployment
    (``rollout.canary_replicas``, fixed) and its NetworkPolicy (the same clients). ``model`` is the candidate config;
    the split is :func:`render_split`'s."""
    canary = model.as_track(CANARY_TRACK)
    return [
        render_service(platform, canary),
        render_deployment(platform, canary, revision, adapters),
        render_network_policy(platform, canary),
    ]


def render_split(platform: Platform, model: ModelSpec, canary_weight: int) -> Object | None:
    """What makes the edge send ``canary_weight`` percent of the model's requests to the canary: the canary Ingress
    (``exposure.kind: ingress``) or the HTTPRoute with weighted backends (``gateway``)."""
    if model.exposure.kind == "gateway":
        return render_http_route(platform, model, canary_weight=canary_weight)
    return render_canary_ingress(platform, model, canary_weight)


def render_model(
    platform: Platform, model: ModelSpec, revision: str | None = None, adapters: LoraAdapters | None = None
) -> list[Object]:
    """Every object that serves ``model``, in apply order. ``revision`` defaults to the catalog's revision."""
    revision = revision or model.source.revision
    objects = [
        render_service(platform, model),
        render_deployment(platform, model, revision, adapters),
        render_pod_disruption_budget(platform, model),
        render_scaled_object(platform, model),
        render_network_policy(platform, model),
        render_ingress(platform, model),
        render_http_route(platform, model),
    ]
    return [obj for obj in objects if obj is not None]
