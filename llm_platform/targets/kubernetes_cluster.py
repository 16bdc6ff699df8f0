"""The kubernetes target's cluster work: promote a model with server-side apply, wait, roll back on failure.

A promotion is a small transaction over the model's objects (Service, Deployment, PDB, ScaledObject,
NetworkPolicy, Ingress):

1. render and validate everything, and check that the cluster serves every type (KEDA installed) - before a
   single object is touched;
2. read the live objects (the "before" snapshot) and the revision recorded on the live Deployment;
3. server-side apply each object (field manager ``llm-platform``, force: the catalog is the source of truth);
4. follow the Deployment's rollout, failing fast on causes that never resolve (image pull, crash loop, OOM,
   unschedulable, quota), with a deadline;
5. on any failure in 3-4, restore the snapshot: objects that existed are re-applied as they were, objects that did
   not exist are deleted, and the restored Deployment's rollout is waited for. With no previous revision the new
   objects are therefore removed (not scaled to zero: KEDA would scale them back up to ``min_replicas``), so
   nothing half-deployed keeps serving.

Jobs (weights download, GPU benchmark) are launched and followed with dagster-k8s' ``DagsterKubernetesClient``;
their output comes back through the pod log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster_k8s.client import (
    DagsterK8sAPIRetryLimitExceeded,
    DagsterK8sError,
    DagsterK8sUnrecoverableAPIError,
    DagsterKubernetesClient,
)
from kubernetes.client.rest import ApiException

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.catalog import Adapter, ModelSpec, Platform, is_commit_sha
from llm_platform.conventions import CANARY_TRACK, SERVING_CONTAINER
from llm_platform.engine import LoraAdapters
from llm_platform.errors import (
    BenchmarkError,
    JobFailedError,
    KubernetesUnavailableError,
    PlatformError,
    RolloutError,
    TargetError,
)
from llm_platform.manifests.benchmark_script import rounds_from_log
from llm_platform.manifests.jobs import (
    render_benchmark_job,
    render_weights_job,
    render_weights_network_policy,
    render_weights_pvc,
)
from llm_platform.manifests.pods import (
    ENGINE_FINGERPRINT_ANNOTATION,
    WEIGHTS_REVISION_ANNOTATION,
    engine_image,
    resource_name,
    serving_invocation,
)
from llm_platform.manifests.serving import (
    canary_object_name,
    render_canary,
    render_http_route,
    render_model,
    render_split,
    serving_pod_labels,
)
from llm_platform.manifests.validation import validate_objects
from llm_platform.rollout import (
    CANARY_HEARTBEAT_ANNOTATION,
    CANARY_OWNER_ANNOTATION,
    CANARY_WEIGHT_ANNOTATION,
    PROMOTED_REVISION_ANNOTATION,
    Revision,
    RolloutState,
    restorable,
    rollout_state,
)
from llm_platform.store_layout import snapshot_path
from llm_platform.targets.kube_api import (
    CANARY_FIELD_MANAGER,
    DEPLOYMENTS,
    EVENTS,
    INGRESSES,
    JOBS,
    PODS,
    KubeApi,
    map_api_error,
    resource_of,
)
from llm_platform.tuning.policy import Crash
from llm_platform.weights.plan import DownloadResult, manifest_from_log, reused_in_log

Log = Callable[[str], None]
Object = dict[str, Any]


@dataclass(frozen=True)
class KubernetesTargetSettings:
    """How the kubernetes target waits; every field has a production default."""

    poll_interval_s: float = 2.0
    """Pause between two reads of a rollout or a Job."""
    rollout_timeout_s: float | None = None
    """Give up on a rollout after this long; None: the Deployment's progressDeadlineSeconds plus one minute."""
    job_timeout_s: float = 6 * 3600
    """Give up on a Job (download, benchmark) after this long."""


@dataclass(frozen=True)
class Promotion:
    """The result of a successful promotion."""

    revision: Revision
    previous: Revision | None
    applied: tuple[str, ...]
    detail: str


def _key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(obj["kind"]), obj["metadata"]["namespace"], obj["metadata"]["name"])


#: Last terminations that are no crash: host memory (the drift policy's OOM rule) and a clean exit.
NOT_CRASHES = ("OOMKilled", "Completed")


class KubernetesCluster:
    """The kubernetes target's cluster work: applies a model's objects into one namespace (promotion with rollback)
    and runs the platform's Jobs there. Not a target of its own:
    :class:`~llm_platform.targets.kubernetes.KubernetesTarget` is the one ``ServingTarget`` here, built on it."""

    def __init__(
        self,
        api: KubeApi,
        platform: Platform,
        settings: KubernetesTargetSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.wall_clock = wall_clock
        self.platform = platform
        self.settings = settings or KubernetesTargetSettings()
        self.sleep = sleep
        self.clock = clock
        self.jobs = DagsterKubernetesClient(
            batch_api=api.batch_api(),
            core_api=api.core_api(),
            logger=logging.getLogger(__name__).debug,
            sleeper=sleep,
            timer=clock,
        )

    @property
    def namespace(self) -> str:
        return self.platform.namespace

    # -- promotion --------------------------------------------------------------------------------------------

    def desired_objects(
        self, model: ModelSpec, revision: Revision, canary_weight: int | None = None,
        adapters: LoraAdapters | None = None,
    ) -> list[Object]:  # fmt: skip
        """The rendered objects with the revision recorded on the Deployment; with ``canary_weight``, an HTTPRoute
        keeps that share on a canary while the stable Deployment rolls (a canary's promotion)."""
        objects = render_model(self.platform, model, revision.weights_sha, adapters)
        if canary_weight is not None:
            objects = [
                render_http_route(self.platform, model, canary_weight=canary_weight) or obj
                if obj["kind"] == "HTTPRoute" else obj
                for obj in objects
            ]  # fmt: skip
        for obj in objects:
            if obj["kind"] == "Deployment":
                obj["metadata"].setdefault("annotations", {})[PROMOTED_REVISION_ANNOTATION] = revision.to_annotation()
        return objects

    def revision_for(self, model: ModelSpec, weights_sha: str, adapters: LoraAdapters | None = None) -> Revision:
        invocation = serving_invocation(self.platform, model, weights_sha, adapters)
        return Revision(
            image=engine_image(self.platform, model),
            engine_fingerprint=invocation.fingerprint,
            weights_sha=weights_sha,
            promoted_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def current_revision(self, model: ModelSpec) -> Revision | None:
        """What the model serves now, from the annotation on its Deployment."""
        return Revision.from_deployment(self.api.get(DEPLOYMENTS, self.namespace, resource_name(model)))

    def promote(
        self, model: ModelSpec, weights_sha: str, log: Log = lambda _: None, *, canary_weight: int | None = None,
        adapters: LoraAdapters | None = None,
    ) -> Promotion:  # fmt: skip
        """Apply ``model`` at weights ``weights_sha`` (with ``adapters``), wait until it serves; restore the previous
        state on failure. ``canary_weight``: a canary's promotion, whose share the HTTPRoute keeps until the canary is
        removed."""
        revision = self.revision_for(model, weights_sha, adapters)
        desired = self.desired_objects(model, revision, canary_weight, adapters)
        validate_objects(desired)
        for resource in {resource_of(obj) for obj in desired}:
            if not self.api.serves(resource):
                # Mapped like the 404 an apply would get, before anything is changed.
                raise map_api_error(
                    ApiException(status=404, reason="Not Found"), "patch", resource, self.namespace, None
                )
        before = {_key(obj): self.api.get(resource_of(obj), self.namespace, obj["metadata"]["name"]) for obj in desired}
        deployment_key = next(key for key in before if key[0] == "Deployment")
        previous = Revision.from_deployment(before[deployment_key])
        log(
            f"model '{model.name}': promoting {revision.label()}"
            + (f" (now serving {previous.label()})" if previous else " (first promotion)")
        )
        applied: list[Object] = []
        try:
            for obj in desired:
                self.api.apply(obj)
                applied.append(obj)
                log(f"model '{model.name}': applied {obj['kind']} {obj['metadata']['name']}")
            state = self.wait_for_rollout(model, revision, log)
        except PlatformError as error:
            state = RolloutState("failed", str(error))
        if state.phase == "done":
            return Promotion(revision, previous, tuple(f"{k} {n}" for k, _, n in map(_key, applied)), state.detail)
        outcome = self._restore(model, before, applied, previous, log)
        raise RolloutError(f"model '{model.name}': promotion of {revision.label()} failed: {state.detail}; {outcome}")

    def _restore(
        self,
        model: ModelSpec,
        before: Mapping[tuple[str, str, str], Object | None],
        applied: Sequence[Object],
        previous: Revision | None,
        log: Log,
    ) -> str:
        """Put back what was there before the promotion; returns what the model serves now, for the message."""
        try:
            for obj in reversed(applied):
                live = before[_key(obj)]
                if live is None:
                    self.api.delete(resource_of(obj), self.namespace, obj["metadata"]["name"])
                    log(f"model '{model.name}': removed {obj['kind']} {obj['metadata']['name']}")
                else:
                    self.api.apply(restorable(live))
                    log(f"model '{model.name}': restored {obj['kind']} {obj['metadata']['name']}")
            deployment_before = next(live for key, live in before.items() if key[0] == "Deployment")
            if deployment_before is None:
                return "no previous revision, so the new objects were removed (nothing of this model is serving)"
            if previous is None:
                return "restored the previous objects (they carry no llm-platform revision)"
            state = self.wait_for_rollout(model, previous, log)
        except PlatformError as error:
            return f"rolling back failed too: {error}; inspect the namespace {self.namespace}"
        if state.phase != "done":
            return f"rolled back to {previous.label()}, but that rollout failed too: {state.detail}"
        return f"rolled back to {previous.label()}"

    def _new_pods(self, model: ModelSpec, revision: Revision) -> list[Object]:
        """Pods of ``revision``: same weights and engine fingerprint annotations, same image."""
        # The serving pods of this track only: a canary's pods carry the stable selector's labels too.
        selector = ",".join(f"{key}={value}" for key, value in serving_pod_labels(model).items())
        pods = []
        for pod in self.api.list(PODS, self.namespace, label_selector=selector):
            annotations = pod.get("metadata", {}).get("annotations") or {}
            images = {c.get("image") for c in pod.get("spec", {}).get("containers") or []}
            if (
                annotations.get(WEIGHTS_REVISION_ANNOTATION) == revision.weights_sha
                and annotations.get(ENGINE_FINGERPRINT_ANNOTATION) == revision.engine_fingerprint
                and revision.image in images
                and not pod.get("metadata", {}).get("deletionTimestamp")
            ):
                pods.append(pod)
        return pods

    def crashes(self, model: ModelSpec) -> list[Crash]:
        """The model's serving vLLM containers whose last termination was a crash (not ``OOMKilled``, not
        ``Completed``), most restarted first: the pod, the reason, the exit code and the termination message (the
        log's tail: ``terminationMessagePolicy: FallbackToLogsOnError``)."""
        selector = ",".join(f"{key}={value}" for key, value in serving_pod_labels(model).items())
        found: list[tuple[int, Crash]] = []
        for pod in self.api.list(PODS, self.namespace, label_selector=selector):
            for status in pod.get("status", {}).get("containerStatuses") or []:
                last = (status.get("lastState") or {}).get("terminated") or {}
                if status.get("name") != SERVING_CONTAINER or not last or last.get("reason") in NOT_CRASHES:
                    continue
                crash = Crash(
                    pod=str(pod.get("metadata", {}).get("name", "?")),
                    reason=str(last.get("reason") or "Error"),
                    exit_code=last.get("exitCode"),
                    message=str(last.get("message") or ""),
                )
                found.append((int(status.get("restartCount") or 0), crash))
        return [crash for _, crash in sorted(found, key=lambda item: -item[0])]

    def _latest_warning(self, pod_name: str) -> str | None:
        events = self.api.list(EVENTS, self.namespace, field_selector=f"involvedObject.name={pod_name}")
        warnings = [event for event in events if event.get("type") == "Warning" and event.get("message")]
        if not warnings:
            return None
        latest = max(warnings, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
        return f"{latest.get('reason', 'Warning')}: {latest['message']}"

    def wait_for_rollout(self, model: ModelSpec, revision: Revision, log: Log) -> RolloutState:
        """Poll the Deployment and its new pods until the rollout is done, failed or past its deadline."""
        name = resource_name(model)
        started = self.clock()
        timeout = self.settings.rollout_timeout_s
        last_detail = ""
        while True:
            deployment = self.api.get(DEPLOYMENTS, self.namespace, name)
            if deployment is None:
                return RolloutState("failed", f"Deployment {self.namespace}/{name} disappeared during the rollout")
            if timeout is None:
                timeout = float(deployment.get("spec", {}).get("progressDeadlineSeconds", 600)) + 60
            pods = self._new_pods(model, revision)
            state = rollout_state(deployment, pods)
            if state.phase == "failed":
                failing = next((p for p in pods if p["metadata"]["name"] in state.detail), None)
                warning = self._latest_warning(failing["metadata"]["name"]) if failing else None
                return RolloutState("failed", f"{state.detail} ({warning})" if warning else state.detail)
            if state.phase == "done":
                log(f"model '{model.name}': rollout done: {state.detail}")
                return state
            if state.detail != last_detail:
                log(f"model '{model.name}': rollout: {state.detail}")
                last_detail = state.detail
            if self.clock() - started > timeout:
                return RolloutState(
                    "failed", f"not ready after {timeout:.0f} s ({state.detail}); the new pods never became ready"
                )
            self.sleep(self.settings.poll_interval_s)

    # -- a canary rollout beside the stable version (Flagger's way) ------------------------------------------------

    def live_canary(self, model: ModelSpec) -> Object | None:
        """The model's canary Deployment, if one is there (a rollout in progress, or left by a dead run)."""
        return self.api.get(DEPLOYMENTS, self.namespace, canary_object_name(model))

    def start_canary(
        self, model: ModelSpec, weights_sha: str, *, owner: str, log: Log, adapters: LoraAdapters | None = None
    ) -> Revision | None:
        """Apply the candidate as the canary track (its Service, Deployment and NetworkPolicy) beside the stable
        version, wait until it is ready, and put the split in place at 0 %. None when nothing serves yet or this
        revision serves already. A canary that never becomes ready is removed again; the stable version is never
        touched."""
        current = self.current_revision(model)
        revision = self.revision_for(model, weights_sha, adapters)
        if current is None or current.same_config(revision):
            return None
        objects = render_canary(self.platform, model, weights_sha, adapters)
        split = render_split(self.platform, model, 0)
        if split is None:
            raise TargetError(f"model '{model.name}': a canary needs exposure.host (an Ingress or HTTPRoute to split)")
        validate_objects([*objects, split])
        annotations = {PROMOTED_REVISION_ANNOTATION: revision.to_annotation(), CANARY_OWNER_ANNOTATION: owner}
        for obj in objects:
            if obj["kind"] == "Deployment":
                obj["metadata"].setdefault("annotations", {}).update(annotations)
        log(f"model '{model.name}': canary {revision.label()} beside {current.label()}")
        try:
            for obj in objects:
                self.api.apply(obj)
                log(f"model '{model.name}': applied {obj['kind']} {obj['metadata']['name']}")
            self.mark_canary(model, 0)
            state = self.wait_for_rollout(model.as_track(CANARY_TRACK), revision, log)
            if state.phase != "done":
                raise RolloutError(f"model '{model.name}': the canary {revision.label()} failed: {state.detail}")
            self.set_canary_weight(model, 0)
        except PlatformError:
            self.remove_canary(model, log)
            raise
        return revision

    def mark_canary(self, model: ModelSpec, weight: int | None = None) -> None:
        """Record the driver's heartbeat (and the weight) on the canary's Deployment (metadata only: no restart)."""
        annotations = {CANARY_HEARTBEAT_ANNOTATION: f"{self.wall_clock():.0f}"}
        if weight is not None:
            annotations[CANARY_WEIGHT_ANNOTATION] = str(weight)
        marker = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": canary_object_name(model), "namespace": self.namespace, "annotations": annotations},
        }  # fmt: skip
        self.api.apply(marker, field_manager=CANARY_FIELD_MANAGER)

    def set_canary_weight(self, model: ModelSpec, weight: int) -> None:
        """Send ``weight`` percent of the model's requests to the canary (the edge's split object, applied)."""
        split = render_split(self.platform, model, weight)
        assert split is not None  # start_canary refused a model without one
        self.api.apply(split)
        self.mark_canary(model, weight)

    def remove_canary(self, model: ModelSpec, log: Log) -> None:
        """The split back to the stable version alone, then the canary's objects deleted (stable never touched)."""
        route = render_http_route(self.platform, model)
        if route is not None:
            self.api.apply(route)  # the stable backend alone
        else:
            self.api.delete(INGRESSES, self.namespace, canary_object_name(model))
        for obj in reversed(render_canary(self.platform, model, "0" * 40)):
            if self.api.delete(resource_of(obj), self.namespace, obj["metadata"]["name"]):
                log(f"model '{model.name}': removed {obj['kind']} {obj['metadata']['name']}")

    # -- Jobs ---------------------------------------------------------------------------------------------------

    def download_weights(self, model: ModelSpec, revision: str, log: Log = lambda _: None) -> DownloadResult:
        """Run the weights download Job for ``revision``; the result carries the manifest it wrote to the PVC.

        A succeeded Job for a commit sha is reused (its snapshot is immutable); for a branch or tag a new Job runs,
        which verifies what is already on the PVC and downloads only what the branch now points at.
        """
        return self._download(model, render_weights_job(self.platform, model, revision), is_commit_sha(revision), log)

    def download_adapter(self, model: ModelSpec, adapter: Adapter, log: Log = lambda _: None) -> DownloadResult:
        """Run the download Job of one of the model's adapters (into its directory beside the base's snapshots, on
        the same PVC): nothing of the base is fetched or verified."""
        job = render_weights_job(self.platform, model, adapter.source.revision, adapter)
        return self._download(model, job, is_commit_sha(adapter.source.revision), log)

    def _download(self, model: ModelSpec, job: Object, immutable: bool, log: Log) -> DownloadResult:
        # The Job mounts the claim and needs its egress policy (the namespace denies by default); applying both here
        # makes the first download self-contained.
        for obj in (render_weights_pvc(self.platform), render_weights_network_policy(self.platform)):
            self.api.apply(obj)
        output = self.run_job(job, log, reuse_succeeded=immutable)
        manifest = manifest_from_log(output)
        if manifest is None:
            raise JobFailedError(
                f"model '{model.name}': the download Job {job['metadata']['name']} succeeded but printed no manifest"
            )
        on_pvc = snapshot_path(self.platform.weights_mount_path, manifest.model, manifest.sha)
        return DownloadResult(manifest, Path(on_pvc), reused=reused_in_log(output))

    def smoke_benchmark(
        self,
        model: ModelSpec,
        weights_sha: str,
        plan: BenchmarkPlan,
        run_key: str,
        log: Log = lambda _: None,
        against: str | None = None,
        adapters: LoraAdapters | None = None,
    ) -> dict[int, dict[str, Any]]:
        """Run the GPU benchmark Job and return the result JSON of each concurrency level (``against``: only the
        client, against a deployed model's URL)."""
        (results,) = self.benchmark_rounds(model, weights_sha, plan, run_key, log, against, adapters=adapters)
        return results

    def benchmark_rounds(
        self,
        model: ModelSpec,
        weights_sha: str,
        plan: BenchmarkPlan,
        run_key: str,
        log: Log = lambda _: None,
        against: str | None = None,
        rounds: int = 1,
        adapters: LoraAdapters | None = None,
    ) -> list[dict[int, dict[str, Any]]]:
        """One benchmark Job measuring every level ``rounds`` times against one server: each round's results."""
        job = render_benchmark_job(self.platform, model, weights_sha, plan, run_key, against, rounds, adapters)
        measured = rounds_from_log(self.run_job(job, log, reuse_succeeded=True))
        name = job["metadata"]["name"]
        if len(measured) != rounds:
            raise BenchmarkError(
                f"model '{model.name}': the benchmark Job {name} printed {len(measured)} of {rounds} rounds"
            )
        for index, results in enumerate(measured):
            missing = sorted(set(plan.concurrency_levels) - set(results))
            if missing:
                where = f" in round {index + 1}" if rounds > 1 else ""
                raise BenchmarkError(
                    f"model '{model.name}': the benchmark Job {name} printed no result for "
                    f"concurrency {', '.join(map(str, missing))}{where}"
                )
        return measured

    def run_job(
        self,
        job: Mapping[str, Any],
        log: Log = lambda _: None,
        timeout_s: float | None = None,
        *,
        reuse_succeeded: bool = True,
    ) -> str:
        """Launch ``job`` (or reuse a succeeded one of the same name), wait for it, return its pod's log."""
        name = job["metadata"]["name"]
        existing = self.api.get(JOBS, self.namespace, name)
        if reuse_succeeded and existing is not None and existing.get("status", {}).get("succeeded"):
            log(f"Job {self.namespace}/{name} already succeeded; reading its log")
        else:
            if existing is not None:
                log(f"Job {self.namespace}/{name} exists from an earlier attempt; replacing it")
                self.api.delete(JOBS, self.namespace, name)
            self._dagster_k8s(
                "create", lambda: self.jobs.create_namespaced_job_with_retries(body=dict(job), namespace=self.namespace)
            )
            log(f"Job {self.namespace}/{name} created")
            try:
                self._dagster_k8s(
                    "get",
                    lambda: self.jobs.wait_for_job_success(
                        name,
                        self.namespace,
                        wait_timeout=timeout_s or self.settings.job_timeout_s,
                        wait_time_between_attempts=self.settings.poll_interval_s,
                    ),
                )
            except DagsterK8sError as error:
                reason = self._job_failure(name, error, log)
                raise JobFailedError(f"Job {self.namespace}/{name} failed: {reason}") from None
        pod = self._succeeded_pod(name)
        return str(self._dagster_k8s("get", lambda: self.jobs.retrieve_pod_logs(pod, self.namespace)))

    def _dagster_k8s(self, verb: str, call: Callable[[], Any]) -> Any:
        """dagster-k8s wraps API errors in its own exceptions; unwrap them into ours."""
        try:
            return call()
        except (DagsterK8sUnrecoverableAPIError, DagsterK8sAPIRetryLimitExceeded) as error:
            cause = error.__cause__
            if isinstance(cause, ApiException):
                raise map_api_error(cause, verb, JOBS, self.namespace) from None
            raise KubernetesUnavailableError(
                f"kubernetes: {verb} jobs.batch in namespace {self.namespace} failed: {type(cause).__name__}"
            ) from None

    def _job_pods(self, name: str) -> list[Object]:
        return self.api.list(PODS, self.namespace, label_selector=f"job-name={name}")

    def _succeeded_pod(self, name: str) -> str:
        succeeded = [pod for pod in self._job_pods(name) if pod.get("status", {}).get("phase") == "Succeeded"]
        if not succeeded:
            raise TargetError(
                f"Job {self.namespace}/{name} succeeded but none of its pods is left to read the log from"
            )
        return str(max(succeeded, key=_created)["metadata"]["name"])

    def _job_failure(self, name: str, error: DagsterK8sError, log: Log) -> str:
        """The reason of a failed Job: its last pod's exit and the error line it printed (the log's tail goes to
        ``log``, for the run's event log)."""
        pods = self._job_pods(name)
        if not pods:
            return str(error).splitlines()[0]
        pod = max(pods, key=_created)
        pod_name = pod["metadata"]["name"]
        problem = job_pod_state(pod)
        tail = self.api.read_log(self.namespace, pod_name, tail_lines=40)
        log(f"Job {self.namespace}/{name}: last lines of pod {pod_name}:\n{tail.rstrip()}")
        errors = [line for line in tail.splitlines() if line.startswith("error:")]
        last = errors[-1] if errors else (tail.strip().splitlines() or ["(no log)"])[-1]
        return f"pod {pod_name}: {problem}: {last}"


def _created(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("creationTimestamp", ""))


def job_pod_state(pod: Mapping[str, Any]) -> str:
    """A one-phrase state of a Job's pod: its exit code, or why it is still waiting."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        terminated = status.get("state", {}).get("terminated")
        if terminated:
            return f"exit code {terminated.get('exitCode')} ({terminated.get('reason', 'Error')})"
        waiting = status.get("state", {}).get("waiting")
        if waiting:
            return f"waiting: {waiting.get('reason')}"
    return f"phase {pod.get('status', {}).get('phase', 'Unknown')}"
