"""``k8s/dagster/values.yaml`` through Dagster's own config schemas, and the catalog shipped as configuration.

The chart turns ``runLauncher.config.k8sRunLauncher`` and ``dagsterDaemon.runCoordinator.config.queuedRunCoordinator``
into the instance's ``run_launcher`` and ``run_coordinator`` sections (templates ``_run-launcher.tpl`` and
``_run-coordinator.tpl``: camelCase keys renamed, the rest fixed by the chart). The test does the same renaming,
refuses a key the templates do not know (a typo the chart would drop silently), and validates the result with
``K8sRunLauncher.config_type()`` and ``QueuedRunCoordinator.config_type()``.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher

from llm_platform.catalog import parse_catalog
from tests.conftest import EXAMPLE_CATALOG, REPO_ROOT

VALUES = REPO_ROOT / "k8s" / "dagster" / "values.yaml"

#: The K8sRunLauncher template: Helm key → instance key (what _run-launcher.tpl writes).
LAUNCHER_KEYS = {
    "loadInclusterConfig": "load_incluster_config",
    "kubeconfigFile": "kubeconfig_file",
    "jobNamespace": "job_namespace",
    "imagePullPolicy": "image_pull_policy",
    "image": "job_image",
    "envConfigMaps": "env_config_maps",
    "envSecrets": "env_secrets",
    "envVars": "env_vars",
    "volumeMounts": "volume_mounts",
    "volumes": "volumes",
    "labels": "labels",
    "resources": "resources",
    "securityContext": "security_context",
    "schedulerName": "scheduler_name",
    "failPodOnRunFailure": "fail_pod_on_run_failure",
    "runK8sConfig": "run_k8s_config",
}
RUN_K8S_CONFIG_KEYS = {
    "containerConfig": "container_config",
    "podSpecConfig": "pod_spec_config",
    "podTemplateSpecMetadata": "pod_template_spec_metadata",
    "jobMetadata": "job_metadata",
    "jobSpecConfig": "job_spec_config",
}
COORDINATOR_KEYS = {
    "maxConcurrentRuns": "max_concurrent_runs",
    "tagConcurrencyLimits": "tag_concurrency_limits",
    "dequeueIntervalSeconds": "dequeue_interval_seconds",
}


def _renamed(section: dict[str, Any], keys: dict[str, str], where: str) -> dict[str, Any]:
    unknown = sorted(set(section) - set(keys))
    assert not unknown, f"{where}: keys the chart does not know: {unknown}"
    return {keys[key]: value for key, value in section.items()}


def _values() -> dict[str, Any]:
    values = yaml.safe_load(VALUES.read_text())
    assert isinstance(values, dict)
    return values


def _launcher_config(values: dict[str, Any]) -> dict[str, Any]:
    helm = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = _renamed(helm, LAUNCHER_KEYS, "runLauncher.config.k8sRunLauncher")
    if "run_k8s_config" in config:
        config["run_k8s_config"] = _renamed(config["run_k8s_config"], RUN_K8S_CONFIG_KEYS, "runK8sConfig")
    # What the template adds on its own (from the release and the chart's environment variables).
    return {
        **config,
        "service_account_name": values["serviceAccount"]["name"],
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [{"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"}, *config.get("env_config_maps", [])],
    }


def _errors(schema: Any, config: dict[str, Any]) -> list[str]:
    result = process_config(resolve_to_config_type(schema), config)
    return [error.message for error in result.errors or []]


@pytest.fixture
def chart_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the chart sets in the webserver and daemon pods, which the instance config reads."""
    monkeypatch.setenv("DAGSTER_HOME", "/opt/dagster/dagster_home")
    monkeypatch.setenv("DAGSTER_K8S_INSTANCE_CONFIG_MAP", "dagster-instance")
    monkeypatch.setenv("DAGSTER_K8S_PG_PASSWORD_SECRET", "dagster-postgresql-secret")
    monkeypatch.setenv("DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP", "dagster-pipeline-env")


@pytest.mark.usefixtures("chart_env")
def test_run_launcher_values_pass_dagsters_k8s_run_launcher_schema() -> None:
    config = _launcher_config(_values())
    assert _errors(K8sRunLauncher.config_type(), config) == []  # type: ignore[no-untyped-call]
    # The schema does catch a wrong type where the renaming cannot (the test would miss nothing it should see).
    assert _errors(K8sRunLauncher.config_type(), {**config, "load_incluster_config": "yes"})  # type: ignore[no-untyped-call]


def test_run_coordinator_values_pass_dagsters_queued_run_coordinator_schema() -> None:
    coordinator = _values()["dagsterDaemon"]["runCoordinator"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    config = _renamed(coordinator["config"]["queuedRunCoordinator"], COORDINATOR_KEYS, "queuedRunCoordinator")
    assert _errors(QueuedRunCoordinator.config_type(), config) == []
    assert config["tag_concurrency_limits"][0]["key"] == "dagster/partition"  # one run per model at a time


def test_a_typo_in_the_helm_keys_fails() -> None:
    values = _values()
    values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamspace"] = "dagster"
    with pytest.raises(AssertionError, match="jobNamspace"):
        _launcher_config(values)


def test_postgres_password_comes_from_an_existing_secret() -> None:
    values = _values()
    assert values["generatePostgresqlPasswordSecret"] is False
    secret = values["global"]["postgresqlSecretName"]
    assert values["postgresql"]["existingSecret"] == secret
    assert "postgresqlPassword" not in values["postgresql"]


def test_the_catalog_is_a_configmap_mounted_into_the_code_location_and_the_runs() -> None:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True  # env and volumes reach the run pods
    assert "codeServerArgs" in deployment and "dagsterApiGrpcArgs" not in deployment  # "Reload" re-reads it
    volumes = {volume["name"]: volume for volume in deployment["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in deployment["volumeMounts"]}
    kustomization = yaml.safe_load((REPO_ROOT / "catalog" / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["files"] == ["models.yaml"] and kustomization["generatorOptions"]["disableNameSuffixHash"]
    assert volumes["catalog"]["configMap"]["name"] == generator["name"]
    assert env["LLM_PLATFORM_CATALOG"] == f"{mounts['catalog']}/models.yaml"
    assert env["LLM_PLATFORM_TARGET"] == "kubernetes"
    assert env["LLM_PLATFORM_ARTIFACTS"] == mounts["artifacts"]
    claim = yaml.safe_load((REPO_ROOT / "k8s" / "dagster" / "artifacts-pvc.yaml").read_text())
    assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    dagster_kustomization = yaml.safe_load((REPO_ROOT / "k8s" / "dagster" / "kustomization.yaml").read_text())
    assert set(dagster_kustomization["resources"]) == {"artifacts-pvc.yaml", "networkpolicy.yaml", "../../catalog"}
    # What ships is the catalog the repository validates, not a copy baked into the image.
    parse_catalog(yaml.safe_load(EXAMPLE_CATALOG.read_text()))
    assert "COPY catalog" not in (REPO_ROOT / "Dockerfile").read_text()


def test_every_dagster_pod_has_a_network_policy_and_postgresql_admits_dagster_only() -> None:
    policies = {
        doc["metadata"]["name"]: doc["spec"]
        for doc in yaml.safe_load_all((REPO_ROOT / "k8s" / "dagster" / "networkpolicy.yaml").read_text())
    }
    selected = [spec["podSelector"]["matchLabels"] for spec in policies.values()]
    for pod in ({"component": "dagster-webserver"}, {"component": "dagster-daemon"}, {"component": "user-deployments"},
                {"app.kubernetes.io/name": "postgresql"}, {"app.kubernetes.io/component": "run_worker"}):  # fmt: skip
        assert pod in selected, pod
    (rule,) = policies["dagster-postgresql"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert all("namespaceSelector" not in peer for peer in rule["from"])  # this namespace's Dagster pods only
    assert "ingress" not in policies["dagster-daemon"] and "ingress" not in policies["dagster-run-pods"]
