"""Canary rollouts on the kubernetes target over real HTTP against the API emulator, with the tests playing the
Deployment controller: the objects and weights after every step, promotion as Flagger does it (the stable Deployment
takes the canary's spec, then the canary goes), an abort restoring exactly what served before, a canary that never
becomes ready, and the roll-back of a canary left behind by a dead run."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llm_platform.catalog import Catalog
from llm_platform.errors import RolloutError, TargetError
from llm_platform.manifests.pods import ENGINE_FINGERPRINT_ANNOTATION, WEIGHTS_REVISION_ANNOTATION
from llm_platform.rollout import CANARY_HEARTBEAT_ANNOTATION, CANARY_OWNER_ANNOTATION, CANARY_WEIGHT_ANNOTATION
from llm_platform.targets.base import CanaryState
from llm_platform.targets.kube_api import INGRESSES, RESOURCES
from llm_platform.targets.kubernetes import KubernetesCanary, KubernetesTarget
from llm_platform.targets.kubernetes_cluster import KubernetesCluster, KubernetesTargetSettings
from llm_platform.weights.plan import ManifestFile, SnapshotManifest
from tests.conftest import tiny_catalog
from tests.kubeemu import DEPLOYMENTS, OWNER_LABEL, PODS, FakeDeploymentController, RunningCluster, role_rules

pytestmark = pytest.mark.integration

FIRST = "1" * 40
SECOND = "2" * 40
SETTINGS = KubernetesTargetSettings(poll_interval_s=0.02, rollout_timeout_s=3)
ROLLOUT = {"strategy": "canary", "steps": [10, 50, 100], "step_seconds": 60, "canary_replicas": 1}
SERVICES = RESOURCES["v1", "Service"]
POLICIES = RESOURCES["networking.k8s.io/v1", "NetworkPolicy"]
ROUTES = RESOURCES["gateway.networking.k8s.io/v1", "HTTPRoute"]
CANARY = "vllm-tiny-llama-canary"


def _catalog(kind: str = "ingress") -> Catalog:
    exposure = {"host": "tiny.example.com", "tls_secret": "tiny-example-com-tls", "kind": kind}
    return tiny_catalog(exposure=exposure, rollout=ROLLOUT)


def _weights(sha: str) -> SnapshotManifest:
    return SnapshotManifest(
        model="tiny-llama", repo="llm-platform/tiny-llama", requested_revision="main", sha=sha,
        files=(ManifestFile(path="config.json", size=2, sha256="0" * 64),), total_bytes=2, downloaded_bytes=0,
        duration_s=0.0, completed_at=datetime.now(UTC),
    )  # fmt: skip


class WallClock:
    """The heartbeats' clock, stepped by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A model served at FIRST, a controller making every new revision ready unless told otherwise."""

    def __init__(self, cluster: RunningCluster, catalog: Catalog, outcome: dict[str, str]) -> None:
        self.cluster, self.catalog = cluster, catalog
        self.namespace = catalog.platform.namespace
        self.wall = WallClock()
        api = cluster.api(sleep=lambda _: None)
        self.kube = KubernetesCluster(api, catalog.platform, SETTINGS, sleep=lambda _: None, wall_clock=self.wall)
        self.target = KubernetesTarget(self.kube, Path("/unused"))
        self.stable = catalog.model("tiny-llama")
        # The candidate: another engine config (and other weights).
        serving = self.stable.serving.model_copy(update={"max_num_seqs": 16})
        self.candidate = self.stable.model_copy(update={"serving": serving})
        self.outcome = outcome
        self.target.promote(self.stable, _weights(FIRST))

    def stored(self) -> dict[str, dict[str, Any]]:
        """Every object of the namespace but pods and events, keyed ``Kind/name``, as stored."""
        found = {}
        for resource in (DEPLOYMENTS, SERVICES, POLICIES, INGRESSES, ROUTES):
            for name, obj in self.cluster.emulator.stored(resource, self.namespace).items():
                found[f"{resource.kind}/{name}"] = obj
        return found

    def pods(self, settle_s: float = 2.0) -> dict[str, dict[str, Any]]:
        """The pods once the controller's garbage collection has settled (pods of deleted Deployments go, a little
        later, as in a cluster)."""
        deadline = time.monotonic() + settle_s
        while True:
            pods = self.cluster.emulator.stored(PODS, self.namespace)
            owners = {d["metadata"]["uid"] for d in self.cluster.emulator.stored(DEPLOYMENTS, self.namespace).values()}
            if all(p["metadata"]["labels"].get(OWNER_LABEL) in owners for p in pods.values()):
                return pods
            if time.monotonic() > deadline:
                return pods
            time.sleep(0.02)


@pytest.fixture
def rig(cluster: RunningCluster) -> Iterator[Rig]:
    outcome: dict[str, str] = {}
    catalog = _catalog()

    def decide(deployment: dict[str, Any]) -> str:
        return outcome.get(deployment["metadata"]["name"], "ready")

    with FakeDeploymentController(cluster.raw(), catalog.platform.namespace, decide):
        yield Rig(cluster, catalog, outcome)


def _start(rig: Rig, owner: str = "run-1") -> KubernetesCanary:
    canary = rig.target.start_canary(rig.candidate, _weights(SECOND), owner=owner)
    assert isinstance(canary, KubernetesCanary)
    return canary


def test_each_step_sets_the_canary_ingress_weight_beside_an_untouched_stable_deployment(rig: Rig) -> None:
    before = rig.stored()
    canary = _start(rig)
    after = rig.stored()
    assert set(after) - set(before) == {f"Deployment/{CANARY}", f"Service/{CANARY}", f"NetworkPolicy/{CANARY}",
                                        f"Ingress/{CANARY}"}  # fmt: skip
    assert after["Deployment/vllm-tiny-llama"] == before["Deployment/vllm-tiny-llama"]  # never restarted
    deployment = after[f"Deployment/{CANARY}"]
    assert deployment["spec"]["replicas"] == 1
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][WEIGHTS_REVISION_ANNOTATION] == SECOND
    assert template["metadata"]["labels"]["llm-platform/track"] == "canary"
    assert after[f"Service/{CANARY}"]["spec"]["selector"]["app.kubernetes.io/component"] == "inference-server-canary"
    annotations = deployment["metadata"]["annotations"]
    assert annotations[CANARY_OWNER_ANNOTATION] == "run-1" and annotations[CANARY_WEIGHT_ANNOTATION] == "0"
    for weight in (10, 50, 100):
        rig.wall.now += 60
        canary.set_weight(weight)
        stored = rig.stored()
        ingress = stored[f"Ingress/{CANARY}"]["metadata"]["annotations"]
        assert ingress["nginx.ingress.kubernetes.io/canary-weight"] == str(weight)
        marks = stored[f"Deployment/{CANARY}"]["metadata"]["annotations"]
        assert marks[CANARY_WEIGHT_ANNOTATION] == str(weight)
        assert marks[CANARY_HEARTBEAT_ANNOTATION] == f"{rig.wall.now:.0f}"
        # The heartbeat's own field manager leaves the canary's spec as it was applied.
        assert stored[f"Deployment/{CANARY}"]["spec"] == deployment["spec"]
        assert stored["Deployment/vllm-tiny-llama"] == before["Deployment/vllm-tiny-llama"]


def test_promotion_gives_the_stable_deployment_the_canarys_spec_then_removes_the_canary(rig: Rig) -> None:
    canary = _start(rig)
    canary.set_weight(100)
    canary_template = rig.stored()[f"Deployment/{CANARY}"]["spec"]["template"]
    deployment = canary.promote()
    stored = rig.stored()
    assert not any(CANARY in key for key in stored)  # Deployment, Service, NetworkPolicy and canary Ingress gone
    stable = stored["Deployment/vllm-tiny-llama"]
    annotations = stable["spec"]["template"]["metadata"]["annotations"]
    assert annotations[WEIGHTS_REVISION_ANNOTATION] == SECOND
    assert (
        annotations[ENGINE_FINGERPRINT_ANNOTATION]
        == canary_template["metadata"]["annotations"][ENGINE_FINGERPRINT_ANNOTATION]
    )
    assert stable["metadata"]["generation"] == 2  # one rolling update
    assert SECOND[:12] in deployment.revision
    pods = rig.pods()
    assert [pod["metadata"]["annotations"][WEIGHTS_REVISION_ANNOTATION] for pod in pods.values()] == [SECOND]
    assert all("llm-platform/track" not in pod["metadata"]["labels"] for pod in pods.values())


def test_an_abort_restores_exactly_what_served_before(rig: Rig) -> None:
    before, pods_before = rig.stored(), rig.pods()
    canary = _start(rig)
    canary.set_weight(10)
    canary.abort()
    assert rig.stored() == before
    assert rig.pods() == pods_before  # the stable pods never restarted, the canary's are gone


def test_a_canary_that_never_becomes_ready_is_removed_and_the_stable_version_serves_on(rig: Rig) -> None:
    before = rig.stored()
    rig.outcome[CANARY] = "crash_loop"
    with pytest.raises(RolloutError, match=r"model 'tiny-llama': the canary .* failed: .*CrashLoopBackOff"):
        _start(rig)
    assert rig.stored() == before


def test_a_canary_left_by_a_dead_run_is_rolled_back_and_a_live_one_is_not(rig: Rig) -> None:
    before = rig.stored()
    canary = _start(rig, owner="run-that-died")
    canary.set_weight(50)

    def silent(state: CanaryState) -> bool:
        return state.silent_s >= 180

    with pytest.raises(TargetError, match=r"a canary rollout \(Deployment vllm-tiny-llama-canary at 50 %, run "
                                          r"run-that-died\) is in progress"):  # fmt: skip
        rig.target.roll_back_abandoned_canary(rig.stable, abandoned=silent)
    rig.wall.now += 181
    done = rig.target.roll_back_abandoned_canary(rig.stable, abandoned=silent)
    assert done == (
        "rolled back the canary Deployment vllm-tiny-llama-canary (at 50 %) left by run run-that-died, silent for 181 s"
    )
    assert rig.stored() == before
    assert rig.target.roll_back_abandoned_canary(rig.stable, abandoned=silent) is None


def test_nothing_to_compare_with_is_a_plain_promotion(cluster: RunningCluster) -> None:
    catalog = _catalog()
    kube = KubernetesCluster(cluster.api(sleep=lambda _: None), catalog.platform, SETTINGS, sleep=lambda _: None)
    target = KubernetesTarget(kube, Path("/unused"))
    model = catalog.model("tiny-llama")
    assert target.start_canary(model, _weights(FIRST), owner="run-1") is None  # nothing serves yet
    with FakeDeploymentController(cluster.raw(), catalog.platform.namespace, lambda _: "ready"):
        target.promote(model, _weights(FIRST))
    assert target.start_canary(model, _weights(FIRST), owner="run-1") is None  # this very revision serves


def test_behind_a_gateway_the_route_weights_step_and_stay_on_the_canary_until_it_is_removed(
    cluster: RunningCluster,
) -> None:
    catalog = _catalog("gateway")
    with FakeDeploymentController(cluster.raw(), catalog.platform.namespace, lambda _: "ready"):
        rig = Rig(cluster, catalog, {})
        canary = _start(rig)

        def weights() -> dict[str, int]:
            route = rig.stored()["HTTPRoute/vllm-tiny-llama"]
            return {ref["name"]: ref.get("weight", 1) for ref in route["spec"]["rules"][0]["backendRefs"]}

        assert weights() == {"vllm-tiny-llama": 100, CANARY: 0}
        canary.set_weight(50)
        assert weights() == {"vllm-tiny-llama": 50, CANARY: 50}
        canary.set_weight(100)
        applied: list[dict[str, Any]] = []
        original_apply = rig.kube.api.apply

        def recording_apply(obj: Any, **kwargs: Any) -> Any:
            applied.append(copy.deepcopy(obj))
            return original_apply(obj, **kwargs)

        rig.kube.api.apply = recording_apply  # type: ignore[method-assign,assignment]
        canary.promote()
        routes = [obj for obj in applied if obj["kind"] == "HTTPRoute"]
        # While the stable Deployment rolled to the canary's spec the route kept the canary at 100 %; then alone.
        canary_share = [{r["name"]: r.get("weight") for r in o["spec"]["rules"][0]["backendRefs"]} for o in routes]
        assert canary_share == [{"vllm-tiny-llama": 0, CANARY: 100}, {"vllm-tiny-llama": None}]
        assert weights() == {"vllm-tiny-llama": 1}


def test_the_role_grants_every_call_a_canary_makes(rig: Rig) -> None:
    promoted = _start(rig)
    promoted.set_weight(100)
    promoted.promote()
    rig.candidate = rig.stable  # and one more, aborted
    aborted = _start(rig)
    aborted.set_weight(10)
    aborted.abort()
    used = {(call.group, call.resource, call.verb) for call in rig.cluster.emulator.our_calls()}
    assert used - role_rules() == set(), "calls the Role does not grant"
