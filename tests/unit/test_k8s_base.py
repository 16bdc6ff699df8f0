"""Platform-wide objects in k8s/: valid, and consistent with the catalog and the code."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.catalog import Catalog
from llm_platform.manifests.jobs import render_benchmark_job, render_weights_job
from llm_platform.manifests.render import render_files
from llm_platform.manifests.validation import validate_objects
from tests.conftest import REPO_ROOT

K8S = REPO_ROOT / "k8s"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kustomization_resources(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        target = (directory / entry).resolve()
        objects += _kustomization_resources(target) if target.is_dir() else _documents(target)
    return objects


@pytest.mark.parametrize("directory", ["base", "overlays/dev"])
def test_kustomize_resources_exist_and_validate(directory: str) -> None:
    objects = _kustomization_resources(K8S / directory)
    assert objects
    validate_objects(objects)


def test_quota_matches_the_catalog(example_catalog: Catalog) -> None:
    (quota,) = _documents(K8S / "base" / "resourcequota.yaml")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == str(example_catalog.platform.gpu_quota) == "8"


def test_only_the_run_pods_service_account_holds_the_serving_role() -> None:
    role, binding = _documents(K8S / "base" / "rbac.yaml")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    values = yaml.safe_load((K8S / "dagster" / "values.yaml").read_text())
    runs = values["dagster-user-deployments"]["serviceAccount"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": runs, "namespace": "dagster"}]
    (code_server,) = values["dagster-user-deployments"]["deployments"]
    # Three distinct accounts: webserver/daemon, the code server, the runs (no global override merges them).
    assert len({values["serviceAccount"]["name"], code_server["serviceAccount"]["name"], runs}) == 3
    assert "serviceAccountName" not in values.get("global", {})
    verbs = {rule_resource: set(rule["verbs"]) for rule in role["rules"] for rule_resource in rule["resources"]}
    assert "secrets" not in verbs
    assert "*" not in {verb for granted in verbs.values() for verb in granted}


def test_time_slicing_config_shares_gpus() -> None:
    (config_map,) = _documents(K8S / "overlays" / "dev" / "time-slicing-config.yaml")
    sharing = yaml.safe_load(config_map["data"]["any"])["sharing"]["timeSlicing"]["resources"]
    assert sharing[0]["name"] == "nvidia.com/gpu" and sharing[0]["replicas"] > 1


def test_dagster_instance_limits_one_promotion_per_model() -> None:
    instance = yaml.safe_load((REPO_ROOT / "dagster_home" / "dagster.yaml").read_text())
    assert instance["telemetry"]["enabled"] is False
    limits = instance["concurrency"]["runs"]["tag_concurrency_limits"]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    helm = yaml.safe_load((K8S / "dagster" / "values.yaml").read_text())
    queued = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["tagConcurrencyLimits"] == limits


def test_access_errors_name_the_role_that_is_shipped() -> None:
    from llm_platform.targets.kube_api import ROLE_NAME

    roles = [doc for doc in _documents(K8S / "base" / "rbac.yaml") if doc["kind"] == "Role"]
    assert [role["metadata"]["name"] for role in roles] == [ROLE_NAME]


def test_the_admission_policy_allows_exactly_the_secrets_the_platform_references(example_catalog: Catalog) -> None:
    """Every Secret a rendered Deployment or Job names is in the policy's list (else promotions would be refused),
    and the list names nothing else the platform does not use."""
    policy, binding = _documents(K8S / "base" / "admission-policy.yaml")
    allowed_expression = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "allowed")
    allowed = set(yaml.safe_load(allowed_expression))
    referenced: set[str] = set()
    for objects in render_files(example_catalog).values():
        for obj in objects:
            if obj["kind"] not in ("Deployment", "Job"):
                continue
            pod = obj["spec"]["template"]["spec"]
            for container in pod["containers"]:
                for item in container.get("env", []):
                    if "secretKeyRef" in item.get("valueFrom", {}):
                        referenced.add(item["valueFrom"]["secretKeyRef"]["name"])
            referenced |= {volume["secret"]["secretName"] for volume in pod.get("volumes", []) if "secret" in volume}
    assert referenced == allowed
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    (matched,) = policy["spec"]["matchConditions"]
    role_binding = _documents(K8S / "base" / "rbac.yaml")[1]
    (subject,) = role_binding["subjects"]
    assert f'"system:serviceaccount:{subject["namespace"]}:{subject["name"]}"' in matched["expression"]
    namespace = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    assert namespace == example_catalog.platform.namespace


RUNS_USER = "system:serviceaccount:dagster:llm-platform-runs"


def _denials(
    obj: dict[str, Any] | None,
    username: str = RUNS_USER,
    *,
    policy_file: str = "admission-policy.yaml",
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
) -> list[str] | None:
    """An admission policy's CEL evaluated as the API server does (variables in order, then the validations):
    the messages of the failed validations, or None when the policy does not apply to the request."""
    policy = _documents(K8S / "base" / policy_file)[0]["spec"]
    environment = celpy.Environment()
    variables: dict[str, Any] = {}
    activation: dict[str, Any] = {
        "object": json_to_cel(obj),
        "oldObject": json_to_cel(old),
        "request": json_to_cel({"userInfo": {"username": username}, "operation": operation}),
    }

    def evaluate(expression: str) -> Any:
        activation["variables"] = celtypes.MapType({celtypes.StringType(k): v for k, v in variables.items()})
        return environment.program(environment.compile(expression)).evaluate(activation)

    if not all(evaluate(condition["expression"]) for condition in policy["matchConditions"]):
        return None
    for variable in policy["variables"]:
        variables[variable["name"]] = evaluate(variable["expression"])
    return [check["message"] for check in policy["validations"] if not evaluate(check["expression"])]


def _rendered_workloads(catalog: Catalog) -> list[dict[str, Any]]:
    workloads = [obj for objects in render_files(catalog).values() for obj in objects if obj["kind"] == "Deployment"]
    for model in catalog.models:
        workloads += [
            render_weights_job(catalog.platform, model, "0" * 40),
            render_benchmark_job(catalog.platform, model, "main", BenchmarkPlan(), "run"),
            render_benchmark_job(catalog.platform, model, "main", BenchmarkPlan(), "run", against="http://svc:8000"),
        ]
    return workloads


def test_the_admission_policy_admits_every_workload_the_platform_renders(example_catalog: Catalog) -> None:
    workloads = _rendered_workloads(example_catalog)
    assert {obj["kind"] for obj in workloads} == {"Deployment", "Job"}
    for obj in workloads:
        assert _denials(obj) == [], obj["metadata"]["name"]


SECRET = "an environment variable references a Secret the platform does not use"
VOLUME = "a volume is of a kind the platform does not use, or mounts a Secret it does not use"
TOKEN = "the pod would get a service account token"
WRITABLE = "a volume claim is mounted writable outside the weights download Job"
STOLEN = {"name": "STOLEN", "valueFrom": {"secretKeyRef": {"name": "database-admin", "key": "password"}}}


def _steal(pod: dict[str, Any], where: str) -> None:
    """Reach for a credential the platform does not use, ``where`` says how."""
    volumes = pod.setdefault("volumes", [])
    if where == "env":
        pod["containers"][0].setdefault("env", []).append(STOLEN)
    elif where == "init-env":
        pod["initContainers"] = [{"name": "peek", "image": "busybox", "env": [STOLEN]}]
    elif where == "ephemeral-env":
        pod["ephemeralContainers"] = [{"name": "peek", "image": "busybox", "env": [STOLEN]}]
    elif where == "envFrom":
        pod["containers"][0]["envFrom"] = [{"secretRef": {"name": "database-admin"}}]
    elif where == "volume":
        volumes.append({"name": "peek", "secret": {"secretName": "database-admin"}})
    elif where == "projected secret":
        volumes.append({"name": "peek", "projected": {"sources": [{"secret": {"name": "database-admin"}}]}})
    elif where == "projected token":
        volumes.append({"name": "peek", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}})
    elif where == "csi":
        volumes.append({"name": "peek", "csi": {"driver": "secrets-store.csi.k8s.io",
                                                 "nodePublishSecretRef": {"name": "database-admin"}}})  # fmt: skip
    elif where == "cephfs":
        volumes.append({"name": "peek", "cephfs": {"monitors": ["m"], "secretRef": {"name": "database-admin"}}})
    elif where == "hostPath":
        volumes.append({"name": "peek", "hostPath": {"path": "/var/run/secrets"}})
    elif where == "serviceAccountName":
        pod["serviceAccountName"] = "llm-platform-runs"
    elif where == "automount":
        pod["automountServiceAccountToken"] = True
    elif where == "weights writable":
        weights = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
        weights["persistentVolumeClaim"]["readOnly"] = False
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                if mount["name"] == weights["name"]:
                    mount["readOnly"] = False


@pytest.mark.parametrize(
    ("where", "message"),
    [("env", SECRET), ("init-env", SECRET), ("ephemeral-env", SECRET),
     ("envFrom", "envFrom references a Secret the platform does not use"), ("volume", VOLUME),
     ("projected secret", VOLUME), ("projected token", VOLUME), ("csi", VOLUME), ("cephfs", VOLUME),
     ("hostPath", VOLUME), ("serviceAccountName", TOKEN), ("automount", TOKEN), ("weights writable", WRITABLE)],
)  # fmt: skip
def test_the_admission_policy_refuses_every_way_to_a_credential(
    example_catalog: Catalog, where: str, message: str
) -> None:
    workloads = _rendered_workloads(example_catalog)
    for kind in ("Deployment", "Job"):
        obj = copy.deepcopy(next(o for o in workloads if o["kind"] == kind and "weights" not in o["metadata"]["name"]))
        _steal(obj["spec"]["template"]["spec"], where)
        assert _denials(obj) == [message], (kind, where)
        assert _denials(obj, username="system:serviceaccount:kube-system:deployment-controller") is None


def test_only_the_weights_download_job_writes_the_model_store(example_catalog: Catalog) -> None:
    job = next(o for o in _rendered_workloads(example_catalog) if o["metadata"]["name"].startswith("weights-"))
    mounts = [m for c in job["spec"]["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])]
    assert any(not m.get("readOnly") for m in mounts)  # it writes, and is admitted
    assert _denials(job) == []
    disguised = copy.deepcopy(next(o for o in _rendered_workloads(example_catalog) if o["kind"] == "Deployment"))
    disguised["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = "weights-download"
    _steal(disguised["spec"]["template"]["spec"], "weights writable")
    assert _denials(disguised) == [WRITABLE]  # a Deployment labelled as the download does not pass for it


OWNED = "owned-objects-policy.yaml"


def test_the_platform_may_create_update_and_delete_what_it_renders(example_catalog: Catalog) -> None:
    objects = [obj for objects in render_files(example_catalog).values() for obj in objects]
    objects += _rendered_workloads(example_catalog)
    assert {"Deployment", "Service", "NetworkPolicy", "ScaledObject", "PersistentVolumeClaim", "Job"} <= {
        obj["kind"] for obj in objects
    }
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        assert _denials(obj, policy_file=OWNED) == [], name
        assert _denials(obj, policy_file=OWNED, operation="UPDATE", old=obj) == [], name
        assert _denials(None, policy_file=OWNED, operation="DELETE", old=obj) == [], name


def test_objects_the_platform_does_not_own_are_out_of_its_reach(example_catalog: Catalog) -> None:
    default_deny = _documents(K8S / "base" / "networkpolicy.yaml")[0]
    assert default_deny["metadata"]["name"] == "default-deny"
    not_ours = "the object is not the platform's (no app.kubernetes.io/managed-by=llm-platform)"
    assert _denials(None, policy_file=OWNED, operation="DELETE", old=default_deny) == [not_ours]
    opened = copy.deepcopy(default_deny)
    opened["spec"]["ingress"] = [{}]
    opened["metadata"].setdefault("labels", {})["app.kubernetes.io/managed-by"] = "llm-platform"  # taking it over
    assert _denials(opened, policy_file=OWNED, operation="UPDATE", old=default_deny) == [not_ours]
    unlabelled = copy.deepcopy(next(o for o in render_files(example_catalog)["tiny-llama.yaml"]))
    del unlabelled["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert _denials(unlabelled, policy_file=OWNED) == [
        "the object must carry app.kubernetes.io/managed-by=llm-platform"
    ]
    assert _denials(None, RUNS_USER.replace("llm-platform-runs", "other"), policy_file=OWNED, operation="DELETE",
                    old=default_deny) is None  # fmt: skip


def test_the_platform_never_publishes_pods_or_points_keda_elsewhere(example_catalog: Catalog) -> None:
    objects = render_files(example_catalog)["tiny-llama.yaml"]
    service = copy.deepcopy(next(o for o in objects if o["kind"] == "Service"))
    for change in ({"type": "LoadBalancer"}, {"type": "NodePort"}, {"externalIPs": ["203.0.113.7"]}):
        published = copy.deepcopy(service)
        published["spec"].update(change)
        assert _denials(published, policy_file=OWNED) == [
            "a Service of the platform stays inside the cluster (ClusterIP, no externalIPs)"
        ]
    scaled = next(o for o in objects if o["kind"] == "ScaledObject")
    for path, value in ((("scaleTargetRef", "name"), "dagster-daemon"), (("triggers", 0, "type"), "external")):
        elsewhere = copy.deepcopy(scaled)
        target = elsewhere["spec"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert _denials(elsewhere, policy_file=OWNED) == [
            "a ScaledObject of the platform scales its own Deployment on Prometheus only"
        ]
