"""Pure rollout logic: is a Deployment's rollout done, still progressing, or failed - and why.

Reads the Deployment the way ``kubectl rollout status`` does (observedGeneration, updated/available replicas, the
Progressing and ReplicaFailure conditions), then looks at the pods of the new revision for the reasons that never
resolve on their own (image pulls, crash loops, OOM kills, unschedulable GPUs), so that a promotion fails in
seconds with the cause instead of after the progress deadline. No I/O here: the target feeds it API objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Object = Mapping[str, Any]

#: On the Deployment (metadata): what is promoted - image, engine fingerprint, weights sha, time.
PROMOTED_REVISION_ANNOTATION = "llm-platform/promoted-revision"
CANARY_OWNER_ANNOTATION = "llm-platform/canary-owner"
"""On a canary's Deployment: the run driving the rollout."""
CANARY_HEARTBEAT_ANNOTATION = "llm-platform/canary-heartbeat"
"""On a canary's Deployment: Unix time of its driver's last step or judgement (stale: the driver died)."""
CANARY_WEIGHT_ANNOTATION = "llm-platform/canary-weight"
"""On a canary's Deployment: the percent of the model's requests the edge sends it now."""

#: Container waiting reasons that mean the pod will not start without a change to the spec or the cluster.
_FATAL_WAITING = {
    "ErrImagePull": "the image cannot be pulled",
    "ImagePullBackOff": "the image cannot be pulled",
    "InvalidImageName": "the image name is invalid",
    "CreateContainerConfigError": "the container configuration is invalid (a missing Secret or ConfigMap?)",
    "CrashLoopBackOff": "the server keeps crashing",
}


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout stands. ``detail`` is a readable sentence for logs and errors."""

    phase: Literal["progressing", "done", "failed"]
    detail: str


@dataclass(frozen=True)
class Revision:
    """What one promotion put in place; recorded on the Deployment and in the asset's metadata."""

    image: str
    engine_fingerprint: str
    weights_sha: str
    promoted_at: str

    def same_config(self, other: Revision) -> bool:
        """Whether ``other`` serves exactly this: image, engine invocation and weights (promotion times aside)."""
        return (self.image, self.engine_fingerprint, self.weights_sha) == (
            other.image, other.engine_fingerprint, other.weights_sha,
        )  # fmt: skip

    def label(self) -> str:
        """Short human form: ``vllm/vllm-openai:v0.32.0 engine 1a2b3c4d weights 0123456789ab``."""
        return f"{self.image} engine {self.engine_fingerprint} weights {self.weights_sha[:12]}"

    def to_annotation(self) -> str:
        return json.dumps(
            {
                "image": self.image,
                "engineFingerprint": self.engine_fingerprint,
                "weightsSha": self.weights_sha,
                "promotedAt": self.promoted_at,
            },
            sort_keys=True,
        )

    @classmethod
    def from_deployment(cls, deployment: Object | None) -> Revision | None:
        """The revision recorded on a live Deployment; None if there is none (or it is not ours)."""
        if not deployment:
            return None
        raw = deployment.get("metadata", {}).get("annotations", {}).get(PROMOTED_REVISION_ANNOTATION)
        try:
            data = json.loads(raw) if raw else None
            if not isinstance(data, dict):
                return None
            return cls(data["image"], data["engineFingerprint"], data["weightsSha"], data["promotedAt"])
        except (ValueError, KeyError, TypeError):
            return None


def _conditions(obj: Object) -> dict[str, Object]:
    return {str(c.get("type")): c for c in obj.get("status", {}).get("conditions") or []}


def _pod_problem(pod: Object) -> str | None:
    """Why this pod will not become ready on its own, or None."""
    name = pod.get("metadata", {}).get("name", "?")
    scheduled = _conditions(pod).get("PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return f"pod {name} cannot be scheduled: {scheduled.get('message', 'no node fits')}"
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state", {})
        last = status.get("lastState", {}).get("terminated") or {}
        terminated = state.get("terminated") or {}
        if "OOMKilled" in (last.get("reason"), terminated.get("reason")):
            return (
                f"pod {name}: container {status.get('name')} was OOMKilled (memory limit too small for the model "
                "and its CPU-side buffers): raise resources.memory in the catalog"
            )
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in _FATAL_WAITING:
            detail = waiting.get("message") or ""
            if reason == "CrashLoopBackOff" and last:
                detail = f"last exit code {last.get('exitCode')} ({last.get('reason', 'Error')}) {detail}".strip()
            return f"pod {name}: {reason}, {_FATAL_WAITING[reason]}" + (f": {detail}" if detail else "")
    return None


def pod_is_ready(pod: Object) -> bool:
    return _conditions(pod).get("Ready", {}).get("status") == "True"


def rollout_state(deployment: Object, new_pods: Sequence[Object]) -> RolloutState:
    """The state of ``deployment``'s rollout; ``new_pods`` are the pods of the revision being rolled out."""
    name = deployment.get("metadata", {}).get("name", "?")
    generation = deployment.get("metadata", {}).get("generation", 0)
    status = deployment.get("status", {})
    if status.get("observedGeneration", 0) < generation:
        return RolloutState("progressing", f"waiting for the controller to observe generation {generation}")
    conditions = _conditions(deployment)
    failure = conditions.get("ReplicaFailure")
    if failure and failure.get("status") == "True":
        return RolloutState("failed", f"Deployment {name} cannot create pods: {failure.get('message', '')}")
    progressing = conditions.get("Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return RolloutState(
            "failed", f"Deployment {name} exceeded its progress deadline: {progressing.get('message', '')}"
        )
    for pod in new_pods:
        problem = _pod_problem(pod)
        if problem:
            return RolloutState("failed", problem)
    desired = deployment.get("spec", {}).get("replicas", 1)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < desired:
        return RolloutState("progressing", f"{updated} of {desired} new replicas created")
    if total > updated:
        return RolloutState("progressing", f"{total - updated} old replicas still terminating")
    if available < updated:
        return RolloutState("progressing", f"{available} of {updated} new replicas available (loading the model)")
    return RolloutState("done", f"{available} of {desired} replicas of the new revision available")


def restorable(live: Object) -> dict[str, Any]:
    """A live object reduced to what we apply: identity, labels, annotations and spec (no status, no replicas).

    ``spec.replicas`` of a Deployment is owned by KEDA's HPA; applying a snapshot of it would take ownership and
    fight the autoscaler.
    """
    meta = live.get("metadata", {})
    restored: dict[str, Any] = {
        "apiVersion": live.get("apiVersion"),
        "kind": live.get("kind"),
        "metadata": {key: meta[key] for key in ("name", "namespace", "labels", "annotations") if key in meta},
    }
    for key, value in live.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            restored[key] = json.loads(json.dumps(value))
    if live.get("kind") == "Deployment":
        restored.get("spec", {}).pop("replicas", None)
    return restored
