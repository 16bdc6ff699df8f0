"""Rollout state, revision records and snapshots (pure), table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from llm_platform.rollout import PROMOTED_REVISION_ANNOTATION, Revision, pod_is_ready, restorable, rollout_state


def _deployment(generation: int = 2, desired: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "vllm-m", "generation": generation},
        "spec": {"replicas": desired},
        "status": {"observedGeneration": generation, **status},
    }


def _pod(state: dict[str, Any] | None = None, last: dict[str, Any] | None = None, **conditions: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": k, **v} for k, v in conditions.items()]}
    if state is not None:
        status["containerStatuses"] = [{"name": "vllm", "state": state, "lastState": last or {}}]
    return {"metadata": {"name": "vllm-m-abc"}, "status": status}


@pytest.mark.parametrize(
    ("deployment", "pods", "phase", "detail"),
    [
        (_deployment(generation=3, observedGeneration=2), [], "progressing", "observe generation 3"),
        (_deployment(updatedReplicas=0, replicas=1), [], "progressing", "0 of 1 new replicas created"),
        (_deployment(updatedReplicas=1, replicas=2, availableReplicas=1), [], "progressing", "1 old replicas"),
        (_deployment(updatedReplicas=1, replicas=1, availableReplicas=0), [], "progressing", "loading the model"),
        (_deployment(updatedReplicas=1, replicas=1, availableReplicas=1), [], "done", "1 of 1 replicas"),
        (
            _deployment(conditions=[{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: q"}]),
            [],
            "failed",
            "cannot create pods: exceeded quota: q",
        ),
        (
            _deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]),
            [],
            "failed",
            "exceeded its progress deadline",
        ),
        (
            _deployment(updatedReplicas=1, replicas=2),
            [_pod({"waiting": {"reason": "ErrImagePull", "message": "not found"}})],
            "failed",
            "pod vllm-m-abc: ErrImagePull, the image cannot be pulled: not found",
        ),
        (
            _deployment(updatedReplicas=1, replicas=2),
            [_pod({"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": {"exitCode": 1, "reason": "Error"}})],
            "failed",
            "CrashLoopBackOff, the server keeps crashing: last exit code 1 (Error)",
        ),
        (
            _deployment(updatedReplicas=1, replicas=2),
            [_pod({"running": {}}, {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
            "failed",
            "was OOMKilled",
        ),
        (
            _deployment(updatedReplicas=1, replicas=2),
            [
                _pod(
                    PodScheduled={
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "Insufficient nvidia.com/gpu",
                    }
                )
            ],
            "failed",
            "cannot be scheduled: Insufficient nvidia.com/gpu",
        ),
        (
            _deployment(updatedReplicas=1, replicas=2, availableReplicas=1),
            [_pod({"waiting": {"reason": "ContainerCreating"}})],
            "progressing",
            "1 old replicas",
        ),
    ],
)
def test_rollout_state(deployment: dict[str, Any], pods: list[dict[str, Any]], phase: str, detail: str) -> None:
    state = rollout_state(deployment, pods)
    assert state.phase == phase
    assert detail in state.detail


def test_revision_round_trips_through_the_annotation() -> None:
    revision = Revision("vllm/vllm-openai:v1", "abcd", "0" * 40, "2026-11-28T00:00:00+00:00")
    deployment = {"metadata": {"annotations": {PROMOTED_REVISION_ANNOTATION: revision.to_annotation()}}}
    assert Revision.from_deployment(deployment) == revision
    assert revision.label() == "vllm/vllm-openai:v1 engine abcd weights 000000000000"
    assert Revision.from_deployment({"metadata": {"annotations": {PROMOTED_REVISION_ANNOTATION: "{bad"}}}) is None
    assert Revision.from_deployment(None) is None


def test_restorable_keeps_what_we_apply_and_drops_what_the_server_and_keda_own() -> None:
    live = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "d",
            "namespace": "n",
            "uid": "u",
            "resourceVersion": "9",
            "managedFields": [],
            "labels": {"a": "b"},
            "annotations": {"x": "y"},
        },
        "spec": {"replicas": 3, "template": {"metadata": {}}},
        "status": {"replicas": 3},
    }
    assert restorable(live) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "n", "labels": {"a": "b"}, "annotations": {"x": "y"}},
        "spec": {"template": {"metadata": {}}},
    }


def test_pod_readiness() -> None:
    assert pod_is_ready(_pod(Ready={"status": "True"}))
    assert not pod_is_ready(_pod(Ready={"status": "False"}))
