"""Rendered Kubernetes objects: the fields that matter, and strict offline validation."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from llm_platform.catalog import Catalog, ModelSpec, Platform, parse_catalog
from llm_platform.errors import ManifestValidationError
from llm_platform.manifests.jobs import render_weights_job, render_weights_pvc, weights_job_name
from llm_platform.manifests.pods import selector_labels
from llm_platform.manifests.serving import (
    render_canary,
    render_canary_ingress,
    render_deployment,
    render_ingress,
    render_model,
    render_network_policy,
    render_pod_disruption_budget,
    render_scaled_object,
    render_service,
    render_split,
)
from llm_platform.manifests.validation import KUBERNETES_VERSIONS, object_problems, validate_objects
from tests.conftest import client_runs

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return parse_catalog(
        {
            "platform": {"namespace": "llm", "gpu_node_selector": {"nvidia.com/gpu.product": "H100"}},
            "models": [
                {
                    "name": "llama",
                    "source": {"repo": "meta/llama"},
                    "serving": {"tensor_parallel_size": 2, "max_num_seqs": 64},
                    "resources": {"cpu": "8", "memory": "64Gi"},
                    "autoscaling": {"max_replicas": 3, "waiting_threshold": 4},
                    "exposure": {"host": "llama.example.com", "tls_secret": "tls", "client_labels": {"team": "a"}},
                },
                {"name": "internal", "source": {"path": "/models/internal"}},
            ],
        }
    )


@pytest.fixture(scope="module")
def platform(catalog: Catalog) -> Platform:
    return catalog.platform


@pytest.fixture(scope="module")
def llama(catalog: Catalog) -> ModelSpec:
    return catalog.model("llama")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _arg(container: dict[str, Any], flag: str) -> str:
    args = container["args"]
    return str(args[args.index(flag) + 1])


def test_deployment_runs_the_pinned_vllm_image_with_engine_args(platform: Platform, llama: ModelSpec) -> None:
    deployment = render_deployment(platform, llama, SHA)
    container = _container(deployment)
    assert container["image"] == f"vllm/vllm-openai:{llama.serving.image_tag}"
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert _arg(container, "--model") == f"/models/llama/{SHA}"
    assert _arg(container, "--served-model-name") == "llama"
    assert _arg(container, "--tensor-parallel-size") == "2"
    assert _arg(container, "--max-num-seqs") == "64"
    # vLLM on the pod's loopback only: the gate is the pod's one listener.
    assert (_arg(container, "--host"), _arg(container, "--port")) == ("127.0.0.1", "8002")
    assert "ports" not in container
    (gate,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert gate["restartPolicy"] == "Always"  # a native sidecar: up before vLLM, down after it
    assert gate["image"] == platform.platform_image and gate["command"] == ["python", "-m", "llm_platform.gate"]
    assert _arg(gate, "--upstream-url") == "http://127.0.0.1:8002"
    assert (_arg(gate, "--port"), _arg(gate, "--metrics-port")) == ("8000", "8001")
    assert _arg(gate, "--max-body-bytes") == str(16 * 1024 * 1024)  # exposure.max_body_size: 16m
    assert [port["containerPort"] for port in gate["ports"]] == [8000, 8001]
    (key,) = gate["env"]
    assert key["name"] == "VLLM_API_KEY" and "secretKeyRef" in key["valueFrom"]
    assert gate["securityContext"]["readOnlyRootFilesystem"] is True
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["llm-platform/weights-revision"] == SHA


def test_deployment_requests_gpus_and_leaves_replicas_to_keda(platform: Platform, llama: ModelSpec) -> None:
    deployment = render_deployment(platform, llama, SHA)
    resources = _container(deployment)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "64Gi"
    assert "cpu" not in resources["limits"]
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_deployment_volumes_weights_read_only_and_8gi_shm(platform: Platform, llama: ModelSpec) -> None:
    deployment = render_deployment(platform, llama, SHA)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": "model-weights", "readOnly": True}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    mounts = {mount["name"]: mount for mount in _container(deployment)["volumeMounts"]}
    assert mounts["weights"] == {"name": "weights", "mountPath": "/models", "readOnly": True}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"


def test_probes_tolerate_model_loading(platform: Platform, llama: ModelSpec) -> None:
    container = _container(render_deployment(platform, llama, SHA))
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= llama.serving.startup_timeout_s
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8000}  # through the gate
        assert "initialDelaySeconds" not in container[probe]


def test_deployment_is_non_root_and_carries_no_secret(platform: Platform, llama: ModelSpec) -> None:
    deployment = render_deployment(platform, llama, SHA)
    container = _container(deployment)
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    env = {item["name"]: item for item in container["env"]}
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert not any("TOKEN" in name for name in env)
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_local_path_source_is_served_from_its_path(catalog: Catalog) -> None:
    container = _container(render_deployment(catalog.platform, catalog.model("internal"), "main"))
    assert _arg(container, "--model") == "/models/internal"


def test_service_and_pdb_select_the_model_pods(platform: Platform, llama: ModelSpec) -> None:
    service = render_service(platform, llama)
    assert service["spec"]["type"] == "ClusterIP"
    serving_pods = {**selector_labels(llama), "app.kubernetes.io/component": "inference-server"}
    assert service["spec"]["selector"] == serving_pods
    assert service["spec"]["ports"][0]["targetPort"] == 8000  # the gate's API port
    pdb = render_pod_disruption_budget(platform, llama)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": serving_pods}}


def test_scaled_object_scales_on_the_model_waiting_queue(platform: Platform, llama: ModelSpec) -> None:
    spec = render_scaled_object(platform, llama)["spec"]
    assert spec["scaleTargetRef"]["name"] == "vllm-llama"
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert metadata["query"] == 'sum(vllm:num_requests_waiting{namespace="llm",model_name="llama"})'
    assert metadata["threshold"] == "4"
    assert metadata["ignoreNullValues"] == "false"
    assert "metricName" not in metadata
    assert spec["fallback"]["behavior"] == "currentReplicasIfHigher"
    assert spec["fallback"]["failureThreshold"] >= 1


def test_ingress_has_long_timeouts_and_per_ip_rate_limit(platform: Platform, llama: ModelSpec) -> None:
    ingress = render_ingress(platform, llama)
    assert ingress is not None
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 600
    assert annotations["nginx.ingress.kubernetes.io/limit-rps"] == "10"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["host"] == "llama.example.com"
    assert ingress["spec"]["tls"] == [{"hosts": ["llama.example.com"], "secretName": "tls"}]


def test_no_ingress_without_a_host(catalog: Catalog) -> None:
    internal = catalog.model("internal")
    assert render_ingress(catalog.platform, internal) is None
    assert "Ingress" not in [obj["kind"] for obj in render_model(catalog.platform, internal)]


def test_network_policy_admits_clients_ingress_controller_and_prometheus(platform: Platform, llama: ModelSpec) -> None:
    spec = render_network_policy(platform, llama)["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {**selector_labels(llama), "app.kubernetes.io/component": "inference-server"}
    }
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    rule, metrics = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]  # the gate's API port
    peers = rule["from"]
    # Clients: labelled pods in labelled namespaces (both must match), or labelled pods of the serving namespace.
    assert peers[0] == {
        "namespaceSelector": {"matchLabels": {"llm-platform/clients": "true"}},
        "podSelector": {"matchLabels": {"team": "a"}},
    }
    assert peers[1] == {"podSelector": {"matchLabels": {"team": "a"}}}
    namespaces = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in peers[2:]]
    assert namespaces == ["ingress-nginx"]
    # The metrics port: Prometheus alone.
    assert metrics["ports"] == [{"protocol": "TCP", "port": 8001}]
    (prometheus,) = metrics["from"]
    assert prometheus["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "monitoring"
    # Serving pods reach DNS and nothing else.
    (egress,) = spec["egress"]
    assert egress["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


@pytest.mark.parametrize(
    ("endpoint", "port"), [(None, 443), ("https://mirror.internal", 443), ("https://mirror.internal:8443/x", 8443),
                           ("http://127.0.0.1:8090", 8090)],
)  # fmt: skip
def test_the_download_jobs_reach_dns_and_the_hubs_port_only(endpoint: str | None, port: int) -> None:
    from llm_platform.manifests.jobs import render_weights_network_policy

    platform = Platform(hf_endpoint=endpoint)
    spec = render_weights_network_policy(platform)["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/component": "weights-download"}}
    assert spec["ingress"] == []
    dns, hub = spec["egress"]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert hub == {"ports": [{"protocol": "TCP", "port": port}]}


def test_weights_pvc_is_read_write_many(platform: Platform) -> None:
    pvc = render_weights_pvc(platform)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["name"] == "model-weights"


def test_weights_job_gets_the_token_from_the_secret_only(platform: Platform, llama: ModelSpec) -> None:
    job = render_weights_job(platform, llama, "main")
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["name"] == weights_job_name(llama, "main") != weights_job_name(llama, SHA)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "llm_platform.weights"]
    assert container["args"][:8] == [
        "--model",
        "llama",
        "--repo",
        "meta/llama",
        "--revision",
        "main",
        "--dest",
        "/models",
    ]
    # The token as a file from the Secret (optional: public models need none), never an environment value.
    env = {item["name"]: item for item in container["env"]}
    assert "HF_TOKEN" not in env
    assert env["HF_TOKEN_PATH"] == {"name": "HF_TOKEN_PATH", "value": "/var/run/secrets/huggingface/token"}
    assert {"name": "hf-token", "mountPath": "/var/run/secrets/huggingface", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "hf-token", "secret": {"secretName": "hf-token", "optional": True, "defaultMode": 0o400}} in pod[
        "volumes"
    ]
    # Every emptyDir is bounded, and so is the container's ephemeral storage.
    assert all(volume["emptyDir"].get("sizeLimit") for volume in pod["volumes"] if "emptyDir" in volume)
    assert container["resources"]["limits"]["ephemeral-storage"]
    assert pod["restartPolicy"] == "Never"
    assert {"name": "weights", "persistentVolumeClaim": {"claimName": "model-weights"}} in pod["volumes"]


def test_rendered_objects_validate_and_agree_with_kubernetes_validate(catalog: Catalog) -> None:
    for model in catalog.models:
        objects = [*render_model(catalog.platform, model, SHA), render_weights_pvc(catalog.platform)]
        if model.source.repo:
            objects.append(render_weights_job(catalog.platform, model, SHA))
        validate_objects(objects)
        for obj in objects:
            if obj["apiVersion"].startswith("keda.sh"):
                continue
            for version in KUBERNETES_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


def test_strict_validation_rejects_unknown_and_mistyped_core_fields(platform: Platform, llama: ModelSpec) -> None:
    deployment = copy.deepcopy(render_deployment(platform, llama, SHA))
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    deployment["spec"]["revisionHistoryLimit"] = "five"
    problems = object_problems(deployment)
    assert any("spec.template.spec.containers[0]" in p and "'gpus' was unexpected" in p for p in problems), problems
    assert any(p.startswith("Deployment/vllm-llama: spec.revisionHistoryLimit:") for p in problems), problems
    # The reference implementation agrees that this object is invalid.
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33", strict=True)


def test_crd_validation_reports_schema_errors_and_unknown_fields(platform: Platform, llama: ModelSpec) -> None:
    scaled = copy.deepcopy(render_scaled_object(platform, llama))
    scaled["spec"]["minReplicaCount"] = "one"
    scaled["spec"]["triggers"][0]["metricName"] = "vllm_waiting"
    scaled["spec"]["fallback"]["behaviour"] = "static"
    with pytest.raises(ManifestValidationError) as caught:
        validate_objects([scaled])
    problems = caught.value.problems
    assert any(p.startswith("ScaledObject/vllm-llama: spec.minReplicaCount:") for p in problems), problems
    assert "ScaledObject/vllm-llama: spec.triggers[0].metricName: unknown field" in "\n".join(problems)
    assert "ScaledObject/vllm-llama: spec.fallback.behaviour: unknown field" in "\n".join(problems)


def test_unknown_kind_is_reported_not_ignored() -> None:
    problems = object_problems({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert problems and all("no schema for example.com/v1 Widget" in p for p in problems)


def test_the_service_and_the_disruption_budget_select_the_serving_pods_and_no_job_pod(
    example_catalog: Catalog,
) -> None:
    from llm_platform.benchmark.plan import BenchmarkPlan
    from llm_platform.manifests.jobs import render_benchmark_job, render_weights_job
    from llm_platform.manifests.serving import render_deployment, render_pod_disruption_budget, render_service

    platform, model = example_catalog.platform, example_catalog.model("tiny-llama")
    weights = render_weights_job(platform, model, "main")
    bench = render_benchmark_job(platform, model, "main", BenchmarkPlan(), "run")
    for selector in (
        render_pod_disruption_budget(platform, model)["spec"]["selector"]["matchLabels"],
        render_service(platform, model)["spec"]["selector"],
    ):

        def selected(labels: dict[str, str], selector: dict[str, str] = selector) -> bool:
            return all(labels.get(key) == value for key, value in selector.items())

        assert selected(render_deployment(platform, model, "main")["spec"]["template"]["metadata"]["labels"])
        assert not selected(weights["spec"]["template"]["metadata"]["labels"])
        assert not selected(bench["spec"]["template"]["metadata"]["labels"])


def test_the_api_key_reaches_vllm_and_the_benchmark_client_only_by_secret_reference(example_catalog: Catalog) -> None:
    from llm_platform.benchmark.plan import BenchmarkPlan
    from llm_platform.manifests.jobs import render_benchmark_job
    from llm_platform.manifests.serving import render_deployment, render_ingress

    platform, model = example_catalog.platform, example_catalog.model("qwen2-5-7b-instruct")
    container = render_deployment(platform, model, "main")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": platform.api_key_secret, "key": "api-key"}},
    }
    assert not any("api-key" in arg or "api_key" in arg for arg in container["args"])
    bench = render_benchmark_job(platform, model, "main", BenchmarkPlan(), "run")
    bench_env = {item["name"]: item for item in bench["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert bench_env["OPENAI_API_KEY"]["valueFrom"] == env["VLLM_API_KEY"]["valueFrom"]
    ingress = render_ingress(platform, model)
    assert ingress is not None
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/v1", "Prefix")  # no /metrics, /docs, /tokenize from outside
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-connections"] == "20"
    assert ingress["spec"]["tls"][0]["secretName"] == model.exposure.tls_secret


def test_an_exposed_model_needs_tls() -> None:
    from llm_platform.errors import CatalogError

    with pytest.raises(CatalogError, match=r"exposure\.tls_secret: required when exposure\.host is set"):
        parse_catalog({"models": [{"name": "m", "source": {"repo": "a/b"}, "exposure": {"host": "m.example.com"}}]})


def test_gateway_exposure_renders_a_valid_httproute_with_the_timeouts_and_no_ingress() -> None:
    from llm_platform.manifests.serving import render_http_route, render_ingress, render_model
    from llm_platform.manifests.validation import validate_objects

    catalog = parse_catalog(
        {
            "platform": {"gateway_name": "edge", "gateway_namespace": "gateways"},
            "models": [{"name": "m", "source": {"repo": "a/b"},
                        "exposure": {"kind": "gateway", "host": "m.example.com", "tls_secret": "m-tls"}}],
        }
    )  # fmt: skip
    platform, model = catalog.platform, catalog.model("m")
    route = render_http_route(platform, model)
    assert route is not None and render_ingress(platform, model) is None
    spec = route["spec"]
    assert spec["parentRefs"] == [{"name": "edge", "namespace": "gateways"}]
    assert spec["hostnames"] == ["m.example.com"]
    (rule,) = spec["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
    assert rule["timeouts"] == {"request": "600s", "backendRequest": "600s"}
    assert rule["backendRefs"] == [{"name": "vllm-m", "port": 8000}]
    validate_objects(render_model(platform, model))  # against the Gateway API v1.6.1 schema, strict
    peers = render_network_policy(platform, model)["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}} in peers

    # A canary step: the same route, weighted between the stable and the canary Services.
    split = render_http_route(platform, model, canary_weight=25)
    assert split is not None
    assert split["spec"]["rules"][0]["backendRefs"] == [
        {"name": "vllm-m", "port": 8000, "weight": 75},
        {"name": "vllm-m-canary", "port": 8000, "weight": 25},
    ]
    validate_objects([split])
    assert render_canary_ingress(platform, model, 25) is None  # no Ingress to be a canary of


def test_a_canary_step_behind_ingress_nginx_is_a_canary_ingress_on_the_same_host_and_path(
    platform: Platform, llama: ModelSpec
) -> None:
    main = render_ingress(platform, llama)
    canary = render_canary_ingress(platform, llama, 10)
    assert main is not None and canary is not None
    annotations = canary["metadata"]["annotations"]
    assert annotations == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "10",
    }
    assert canary["metadata"]["name"] == "vllm-llama-canary" != main["metadata"]["name"]
    assert canary["metadata"]["labels"]["llm-platform/track"] == "canary"
    (rule,) = canary["spec"]["rules"]
    assert rule["host"] == main["spec"]["rules"][0]["host"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/v1", "Prefix")
    assert path["backend"] == {"service": {"name": "vllm-llama-canary", "port": {"name": "http"}}}
    # The main Ingress still sends the rest to the stable Service; the canary's takes nothing else of it.
    assert main["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "vllm-llama"
    assert canary["spec"]["tls"] == main["spec"]["tls"] and canary["spec"]["ingressClassName"] == "nginx"
    validate_objects([canary])
    for weight in (-1, 101):
        with pytest.raises(ValueError, match=r"model 'llama': a canary's share of the traffic is 0 to 100 percent"):
            render_canary_ingress(platform, llama, weight)


def test_an_unknown_httproute_field_is_refused() -> None:
    from llm_platform.errors import ManifestValidationError
    from llm_platform.manifests.serving import render_http_route
    from llm_platform.manifests.validation import validate_objects

    exposure = {"kind": "gateway", "host": "m.example.com", "tls_secret": "t"}
    catalog = parse_catalog({"models": [{"name": "m", "source": {"repo": "a/b"}, "exposure": exposure}]})
    route = render_http_route(catalog.platform, catalog.model("m"))
    assert route is not None
    route["spec"]["rules"][0]["timeout"] = "600s"  # misspelled: the API server would drop it silently
    with pytest.raises(ManifestValidationError, match="timeout"):
        validate_objects([route])


def test_a_canarys_objects_select_its_own_pods_only_and_validate(platform: Platform, llama: ModelSpec) -> None:
    """The canary beside the stable version: its pods carry the track and their own component, so the stable
    Service, PDB and NetworkPolicy (whose selectors they would otherwise match) never take them, while the canary's
    Service and NetworkPolicy take only them. Its replicas are fixed (no ScaledObject); every object validates."""
    stepped = llama.model_copy(update={"rollout": llama.rollout.model_copy(update={"canary_replicas": 2})})
    service, deployment, policy = render_canary(platform, stepped, SHA)
    assert [o["metadata"]["name"] for o in (service, deployment, policy)] == ["vllm-llama-canary"] * 3
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert pods["llm-platform/track"] == "canary" and pods["app.kubernetes.io/component"] == "inference-server-canary"
    assert deployment["spec"]["replicas"] == 2 and "replicas" not in render_deployment(platform, llama, SHA)["spec"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pods.items()
    stable_pods = render_deployment(platform, llama, SHA)["spec"]["template"]["metadata"]["labels"]
    for stable_selector in (render_service(platform, llama)["spec"]["selector"],
                            render_pod_disruption_budget(platform, llama)["spec"]["selector"]["matchLabels"],
                            render_network_policy(platform, llama)["spec"]["podSelector"]["matchLabels"]):  # fmt: skip
        assert stable_selector.items() <= stable_pods.items() and not stable_selector.items() <= pods.items()
    for canary_selector in (service["spec"]["selector"], policy["spec"]["podSelector"]["matchLabels"]):
        assert canary_selector.items() <= pods.items() and not canary_selector.items() <= stable_pods.items()
    # The same engine config and clients as the stable version's, under the canary's names.
    assert _container(deployment)["args"] == _container(render_deployment(platform, stepped, SHA))["args"]
    assert policy["spec"]["ingress"] == render_network_policy(platform, llama)["spec"]["ingress"]
    validate_objects([service, deployment, policy])


def test_the_split_is_the_exposures_own_kind(platform: Platform, llama: ModelSpec) -> None:
    split = render_split(platform, llama, 25)
    assert split is not None and split["kind"] == "Ingress" and split["metadata"]["name"] == "vllm-llama-canary"
    routed = llama.model_copy(update={"exposure": llama.exposure.model_copy(update={"kind": "gateway"})})
    route = render_split(platform, routed, 25)
    assert route is not None and route["kind"] == "HTTPRoute" and route["metadata"]["name"] == "vllm-llama"
    weights = {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"vllm-llama": 75, "vllm-llama-canary": 25}


def test_an_adapters_benchmark_job_addresses_it_by_name_and_is_a_job_of_its_own(example_catalog: Catalog) -> None:
    """The benchmark Job of one adapter serves the base with the adapters and sends every request to the adapter's
    name; its Job name differs from the base's, so the base's succeeded Job is never read back for it."""
    from llm_platform.benchmark.plan import BenchmarkPlan
    from llm_platform.engine import LoraAdapters
    from llm_platform.manifests.jobs import render_benchmark_job

    platform, model = example_catalog.platform, example_catalog.model("tiny-llama")
    lora = LoraAdapters({"tiny-sql": "/models/tiny-llama/adapters/tiny-sql/" + "a" * 40}, max_loras=1, max_lora_rank=16)
    base = render_benchmark_job(platform, model, "b" * 40, BenchmarkPlan(), "run", adapters=lora)
    sql = render_benchmark_job(platform, model, "b" * 40, BenchmarkPlan(served_name="tiny-sql"), "run", adapters=lora)
    script = sql["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "--lora-modules tiny-sql=/models/tiny-llama/adapters/tiny-sql/" in script
    for job, name in ((sql, "tiny-sql"), (base, "tiny-llama")):
        runs = client_runs(job["spec"]["template"]["spec"]["containers"][0]["command"][-1])
        assert runs and all(f"--model {name} --served-model-name {name}" in " ".join(args) for args in runs)
    assert sql["metadata"]["name"] != base["metadata"]["name"]


def test_the_peak_rate_run_is_a_benchmark_job_of_its_own_at_the_profiles_rate(example_catalog: Catalog) -> None:
    """The same requests at the traffic's per-server peak (open loop, capped at the top level): its own Job name,
    so the levels' succeeded Job is never read back for it."""
    from llm_platform.benchmark.plan import BenchmarkPlan
    from llm_platform.manifests.jobs import render_benchmark_job

    platform, model = example_catalog.platform, example_catalog.model("tiny-llama")
    plan = BenchmarkPlan(concurrency_levels=(1, 8), requests=((100, 20), (300, 40)), peak_rate_rps=2.25)
    levels = render_benchmark_job(platform, model, "b" * 40, plan, "run")
    peak = render_benchmark_job(platform, model, "b" * 40, plan.at_peak_rate(), "run")
    (run,) = [" ".join(args) for args in client_runs(peak["spec"]["template"]["spec"]["containers"][0]["command"][-1])]
    assert "--request-rate 2.250" in run and "--max-concurrency 8" in run  # the peak run alone, at the top level's cap
    level_runs = client_runs(levels["spec"]["template"]["spec"]["containers"][0]["command"][-1])
    assert len(level_runs) == 2 and all("--request-rate inf" in " ".join(args) for args in level_runs)
    assert peak["metadata"]["name"] != levels["metadata"]["name"]
