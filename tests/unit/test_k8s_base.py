"""Platform-wide objects in k8s/: valid, and consistent with the catalog and the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_platform.catalog import Catalog
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
    from llm_platform.manifests.render import render_files

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
