"""The kubernetes target over real HTTP against the emulator, with the tests playing the Deployment controller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from llm_platform.catalog import Catalog, ModelSpec
from llm_platform.errors import (
    KubernetesAccessError,
    KubernetesConflictError,
    KubernetesInvalidError,
    KubernetesNotServedError,
    KubernetesUnavailableError,
    RolloutError,
)
from llm_platform.manifests.pods import WEIGHTS_REVISION_ANNOTATION
from llm_platform.manifests.serving import render_model, serving_pod_labels
from llm_platform.rollout import PROMOTED_REVISION_ANNOTATION, Revision
from llm_platform.targets.kube_api import resource_of
from llm_platform.targets.kubernetes_cluster import KubernetesCluster, KubernetesTargetSettings, Promotion
from tests.conftest import tiny_catalog
from tests.kubeemu import DEPLOYMENTS, KEDA, PODS, FakeDeploymentController, Fault, RunningCluster

pytestmark = pytest.mark.integration

FIRST = "1" * 40
SECOND = "2" * 40
SETTINGS = KubernetesTargetSettings(poll_interval_s=0.02, rollout_timeout_s=3)


@pytest.fixture
def catalog() -> Catalog:
    return tiny_catalog(exposure={"host": "tiny.example.com", "tls_secret": "tiny-example-com-tls"})


@pytest.fixture
def model(catalog: Catalog) -> ModelSpec:
    return catalog.model("tiny-llama")


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _target(cluster: RunningCluster, catalog: Catalog, sleeps: Sleeps | None = None) -> KubernetesCluster:
    api = cluster.api(sleep=sleeps) if sleeps is not None else cluster.api(sleep=lambda _: None)
    return KubernetesCluster(api, catalog.platform, SETTINGS)


def _weights_of(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["annotations"][WEIGHTS_REVISION_ANNOTATION])


def _outcome_by_weights(outcomes: dict[str, str]) -> Callable[[dict[str, Any]], str]:
    return lambda deployment: outcomes.get(_weights_of(deployment), "ready")


def _promote(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec, sha: str, outcomes: dict[str, str] | None = None
) -> Promotion:
    namespace = catalog.platform.namespace
    with FakeDeploymentController(cluster.raw(), namespace, _outcome_by_weights(outcomes or {})):
        return _target(cluster, catalog).promote(model, sha)


def _live(cluster: RunningCluster, catalog: Catalog) -> dict[str, dict[str, Any]]:
    """Every live object of the namespace, keyed ``Kind/name``."""
    found: dict[str, dict[str, Any]] = {}
    for obj in render_model(catalog.platform, catalog.model("tiny-llama")):
        resource = resource_of(obj)
        for name, live in cluster.emulator.stored(resource, catalog.platform.namespace).items():
            found[f"{resource.kind}/{name}"] = live
    return found


def test_first_promotion_applies_every_object_and_records_the_revision(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    promotion = _promote(cluster, catalog, model, FIRST)

    live = _live(cluster, catalog)
    expected = {f"{obj['kind']}/{obj['metadata']['name']}" for obj in render_model(catalog.platform, model)}
    assert set(live) == expected  # Service, Deployment, PDB, ScaledObject, NetworkPolicy, Ingress
    deployment = live["Deployment/vllm-tiny-llama"]
    assert _weights_of(deployment) == FIRST
    recorded = Revision.from_deployment(deployment)
    assert recorded == promotion.revision and recorded.weights_sha == FIRST
    assert promotion.previous is None
    applies = [call for call in cluster.emulator.our_calls() if call.verb == "patch"]
    assert len(applies) == len(expected)


def test_update_rolls_the_deployment_to_the_new_revision(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    first = _promote(cluster, catalog, model, FIRST)
    second = _promote(cluster, catalog, model, SECOND)

    deployment = _live(cluster, catalog)["Deployment/vllm-tiny-llama"]
    assert _weights_of(deployment) == SECOND
    assert deployment["metadata"]["generation"] == 2
    assert second.previous == first.revision
    pods = cluster.emulator.stored(PODS, catalog.platform.namespace)
    assert [_weights_of({"spec": {"template": pod}}) for pod in pods.values()] == [SECOND]


FAILURES = {
    "image_pull": "ImagePullBackOff, the image cannot be pulled",
    "crash_loop": "CrashLoopBackOff, the server keeps crashing: last exit code 1",
    "oom": "OOMKilled",
    "unschedulable": "Insufficient nvidia.com/gpu",
    "quota": "exceeded quota: gpu-quota",
    "deadline": "exceeded its progress deadline",
    "never_ready": "the new pods never became ready",
}


@pytest.mark.parametrize("outcome", sorted(FAILURES))
def test_failed_rollout_rolls_back_to_the_previous_revision(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec, outcome: str
) -> None:
    first = _promote(cluster, catalog, model, FIRST)

    with pytest.raises(RolloutError) as failure:
        _promote(cluster, catalog, model, SECOND, {SECOND: outcome})

    message = str(failure.value)
    assert FAILURES[outcome] in message
    assert f"rolled back to {first.revision.label()}" in message
    assert "\n" not in message
    deployment = _live(cluster, catalog)["Deployment/vllm-tiny-llama"]
    assert _weights_of(deployment) == FIRST
    assert Revision.from_deployment(deployment) == first.revision
    # The restored revision was rolled out again and is what serves.
    assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"] == 3
    assert deployment["status"]["availableReplicas"] == 1


def test_image_pull_failure_quotes_the_pod_event(cluster: RunningCluster, catalog: Catalog, model: ModelSpec) -> None:
    _promote(cluster, catalog, model, FIRST)
    with pytest.raises(RolloutError, match=r'Failed to pull image "vllm/vllm-openai:v\S+": not found'):
        _promote(cluster, catalog, model, SECOND, {SECOND: "image_pull"})


def test_failure_without_previous_revision_removes_the_new_objects(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    with pytest.raises(RolloutError, match="no previous revision, so the new objects were removed"):
        _promote(cluster, catalog, model, FIRST, {FIRST: "crash_loop"})

    assert _live(cluster, catalog) == {}


def test_missing_keda_fails_before_anything_is_applied(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    cluster.emulator.undeclare(KEDA)

    with pytest.raises(KubernetesNotServedError, match="KEDA is not installed") as failure:
        _promote(cluster, catalog, model, FIRST)

    assert "ScaledObject (keda.sh/v1alpha1)" in str(failure.value)
    assert not [call for call in cluster.emulator.our_calls() if call.verb == "patch"]
    assert _live(cluster, catalog) == {}


def test_forbidden_apply_names_the_missing_verb_and_leaves_nothing_half_applied(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    cluster.emulator.faults.append(
        Fault(
            "patch",
            "deployments",
            403,
            reason="Forbidden",
            message='deployments.apps "vllm-tiny-llama" is forbidden: User "system:serviceaccount:dagster:dagster" '
            'cannot patch resource "deployments" in API group "apps" in the namespace "llm-serving"',
        )
    )

    with pytest.raises(RolloutError) as failure:
        _promote(cluster, catalog, model, FIRST)

    message = str(failure.value)
    assert "not allowed to patch deployments.apps in namespace llm-serving" in message
    assert "to the Role llm-platform-dagster" in message
    # The Service applied before the refused Deployment was removed again.
    assert _live(cluster, catalog) == {}


def test_forbidden_read_is_an_access_error(cluster: RunningCluster, catalog: Catalog, model: ModelSpec) -> None:
    cluster.emulator.faults.append(Fault("get", "services", 403, reason="Forbidden"))
    with pytest.raises(KubernetesAccessError, match="add the verb 'get' on 'services'"):
        _promote(cluster, catalog, model, FIRST)


def test_conflict_is_reported_with_the_servers_message_and_rolled_back(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    first = _promote(cluster, catalog, model, FIRST)
    conflict = 'Apply failed with 1 conflict: conflict with "kubectl-edit": .spec.minReplicaCount'
    cluster.emulator.faults.append(Fault("patch", "scaledobjects", 409, reason="Conflict", message=conflict))

    with pytest.raises(RolloutError) as failure:
        _promote(cluster, catalog, model, SECOND)

    assert conflict in str(failure.value) and "force_conflicts" in str(failure.value)
    assert f"rolled back to {first.revision.label()}" in str(failure.value)
    assert _weights_of(_live(cluster, catalog)["Deployment/vllm-tiny-llama"]) == FIRST


def test_conflict_error_class_from_the_api_adapter(cluster: RunningCluster, catalog: Catalog, model: ModelSpec) -> None:
    cluster.emulator.faults.append(Fault("patch", "services", 409, reason="Conflict", message="conflict"))
    with pytest.raises(KubernetesConflictError):
        cluster.api().apply(render_model(catalog.platform, model)[0])


def test_invalid_object_shows_the_field(cluster: RunningCluster, catalog: Catalog, model: ModelSpec) -> None:
    causes = [{"field": "spec.ports[0].port", "message": "Invalid value: 0: must be between 1 and 65535"}]
    cluster.emulator.faults.append(Fault("patch", "services", 422, reason="Invalid", causes=causes))
    with pytest.raises(KubernetesInvalidError, match=r"spec\.ports\[0\]\.port: Invalid value: 0"):
        cluster.api().apply(render_model(catalog.platform, model)[0])


def test_transient_unavailability_is_retried_with_backoff(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    cluster.emulator.faults.append(Fault("patch", "deployments", 503, reason="ServiceUnavailable", times=2))
    sleeps = Sleeps()
    with FakeDeploymentController(cluster.raw(), catalog.platform.namespace, lambda _: "ready"):
        promotion = _target(cluster, catalog, sleeps).promote(model, FIRST)

    assert promotion.revision.weights_sha == FIRST
    assert sleeps[:2] == [0.5, 1.0]  # exponential backoff, injected sleeper
    patches = [c for c in cluster.emulator.our_calls() if c.verb == "patch" and c.resource == "deployments"]
    assert len(patches) == 3


def test_persistent_unavailability_gives_up_after_the_retries(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    cluster.emulator.faults.append(Fault("get", "deployments", 503, reason="ServiceUnavailable", times=99))
    sleeps = Sleeps()
    with pytest.raises(KubernetesUnavailableError, match=r"503 .*after 5 attempts"):
        _target(cluster, catalog, sleeps).current_revision(model)
    assert sleeps == [0.5, 1.0, 2.0, 4.0]


def test_current_revision_reads_the_deployment_annotation(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    target = _target(cluster, catalog)
    assert target.current_revision(model) is None
    promotion = _promote(cluster, catalog, model, FIRST)
    assert target.current_revision(model) == promotion.revision
    live = cluster.emulator.stored(DEPLOYMENTS, catalog.platform.namespace)["vllm-tiny-llama"]
    assert PROMOTED_REVISION_ANNOTATION in live["metadata"]["annotations"]


def _crashed_pod(name: str, labels: dict[str, str], reason: str, message: str, restarts: int) -> dict[str, Any]:
    last = {"terminated": {"exitCode": 137 if reason == "OOMKilled" else 1, "reason": reason, "message": message}}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
        "status": {"containerStatuses": [{"name": "vllm", "restartCount": restarts, "lastState": last}]},
    }


def test_crashes_are_read_from_the_serving_pods_termination_messages(
    cluster: RunningCluster, catalog: Catalog, model: ModelSpec
) -> None:
    """What the crash diagnosis reads (RBAC: the run pods may read pods): the model's serving pods whose vLLM
    container last ended for another reason than OOMKilled or a clean exit, most restarted first, with the
    message."""
    namespace = catalog.platform.namespace
    labels = serving_pod_labels(model)
    pods = [
        _crashed_pod("vllm-tiny-llama-a", labels, "Error", "torch.OutOfMemoryError: CUDA out of memory.", 4),
        _crashed_pod("vllm-tiny-llama-b", labels, "OOMKilled", "", 9),  # host memory: not a crash to diagnose
        _crashed_pod("vllm-tiny-llama-c", labels, "Error", "ValueError: bad flag", 1),
        _crashed_pod("vllm-tiny-llama-d", labels, "Completed", "", 2),  # a clean exit is no crash
        _crashed_pod("vllm-other-a", {**labels, "llm-platform/model": "other"}, "Error", "elsewhere", 7),
    ]
    raw = cluster.raw()
    for pod in pods:
        raw.create(PODS, namespace, pod)
        raw.patch_status(PODS, namespace, pod["metadata"]["name"], pod["status"])
    crashes = _target(cluster, catalog).crashes(model)
    assert [(c.pod, c.reason, c.exit_code, c.cuda_out_of_memory) for c in crashes] == [
        ("vllm-tiny-llama-a", "Error", 1, True),
        ("vllm-tiny-llama-c", "Error", 1, False),
    ]
    assert crashes[1].message == "ValueError: bad flag"
