"""The kubernetes target behind the :class:`~llm_platform.targets.base.ServingTarget` interface: weights through
the download Job onto the RWX PVC, candidates benchmarked by the GPU benchmark Job, promotion with rollback
(``targets/kubernetes_cluster.py``). A trial is one benchmark Job measuring a geometric ladder of loads against one
server: a bisection would need a Job, and so a server start, per probe.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.benchmark.trials import candidate_model, failed_trial, ladder_trial, load_ladder
from llm_platform.catalog import Adapter, ModelSpec, config_fingerprint
from llm_platform.conventions import API_PORT
from llm_platform.engine import LoraAdapters
from llm_platform.errors import PlatformError
from llm_platform.manifests.pods import lora_adapters, resource_name, serving_invocation
from llm_platform.manifests.serving import render_model
from llm_platform.rollout import CANARY_HEARTBEAT_ANNOTATION, CANARY_OWNER_ANNOTATION, CANARY_WEIGHT_ANNOTATION
from llm_platform.targets.base import (
    CanaryRollout,
    CanaryState,
    Deployment,
    LevelResults,
    Log,
    ServingTarget,
    TargetStatus,
    TrialSettings,
    no_log,
)
from llm_platform.targets.kube_api import DEPLOYMENTS, resource_of
from llm_platform.targets.kubernetes_cluster import KubernetesCluster
from llm_platform.tuning.policy import Crash
from llm_platform.tuning.search import Candidate, Trial, TrialRunner
from llm_platform.weights.plan import DownloadResult, SnapshotManifest


class KubernetesTarget(ServingTarget):
    """The catalog's namespace in a cluster."""

    kind = "kubernetes"

    def __init__(self, cluster: KubernetesCluster, artifacts_root: Path) -> None:
        super().__init__(artifacts_root)
        self.cluster = cluster
        self.platform = cluster.platform

    def service_url(self, model: ModelSpec) -> str:
        return f"http://{resource_name(model)}.{self.platform.namespace}.svc.cluster.local:{API_PORT}"

    def endpoint(self, model: ModelSpec) -> str:
        """The model's URL: its Ingress host when exposed, else the in-cluster Service address."""
        if model.exposure.host is not None:
            scheme = "https" if model.exposure.tls_secret else "http"
            return f"{scheme}://{model.exposure.host}"
        return self.service_url(model)

    def weights_location(self) -> str:
        return f"pvc://{self.platform.weights_pvc}{self.platform.weights_mount_path}"

    def materialize_weights(self, model: ModelSpec, revision: str, log: Log = no_log) -> DownloadResult:
        return self.cluster.download_weights(model, revision, log=log)

    def materialize_adapter(self, model: ModelSpec, adapter: Adapter, log: Log = no_log) -> DownloadResult:
        return self.cluster.download_adapter(model, adapter, log=log)

    def adapters(self, model: ModelSpec, weights: SnapshotManifest) -> LoraAdapters | None:
        """The adapters served on ``weights``, on the PVC as the pods mount it."""
        return lora_adapters(model, weights, self.platform.weights_mount_path)

    def benchmark_candidate(
        self, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        return self.cluster.smoke_benchmark(
            model, weights.sha, plan, run_key=run_key, log=log, adapters=self.adapters(model, weights)
        )

    def release_candidate(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> None:
        """Nothing to release: the benchmark Job's server ended with its pod."""

    def benchmark_deployed(
        self, deployment: Deployment, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *,
        run_key: str, work_dir: Path, log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        return self.cluster.smoke_benchmark(
            model, weights.sha, plan, run_key=run_key, log=log, against=deployment.benchmark_url
        )

    def trial_runner(
        self, model: ModelSpec, weights: SnapshotManifest, settings: TrialSettings, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> TrialRunner:  # fmt: skip
        return KubernetesTrials(self.cluster, model, weights, settings, run_key, log)

    def promote(
        self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log, *, canary_weight: int | None = None
    ) -> Deployment:
        adapters = self.adapters(model, weights)
        promotion = self.cluster.promote(model, weights.sha, log=log, canary_weight=canary_weight, adapters=adapters)
        revision = promotion.revision
        details: dict[str, str | int | list[str]] = {
            "target": f"kubernetes ({self.platform.namespace})",
            "previous_revision": promotion.previous.label() if promotion.previous else "none",
            "image": revision.image,
            "server_fingerprint": revision.engine_fingerprint,
            "engine_args": list(serving_invocation(self.platform, model, weights.sha, adapters).args),
            "applied": list(promotion.applied),
            "rollout": promotion.detail,
        }
        return Deployment(self.endpoint(model), self.service_url(model), revision.label(), details)

    def start_canary(
        self, model: ModelSpec, weights: SnapshotManifest, *, owner: str, log: Log = no_log
    ) -> KubernetesCanary | None:
        revision = self.cluster.start_canary(
            model, weights.sha, owner=owner, log=log, adapters=self.adapters(model, weights)
        )
        if revision is None:
            return None
        return KubernetesCanary(self, model, weights, revision.label())

    def crashes(self, model: ModelSpec) -> list[Crash]:
        return self.cluster.crashes(model)

    def canary_state(self, model: ModelSpec) -> CanaryState | None:
        live = self.cluster.live_canary(model)
        if live is None:
            return None
        annotations = live.get("metadata", {}).get("annotations") or {}
        try:
            silent_s = self.cluster.wall_clock() - float(annotations.get(CANARY_HEARTBEAT_ANNOTATION, "0"))
            weight = int(annotations.get(CANARY_WEIGHT_ANNOTATION, "0"))
        except ValueError:  # unreadable: nobody keeps it alive
            silent_s, weight = float("inf"), 0
        owner = annotations.get(CANARY_OWNER_ANNOTATION, "unknown")
        return CanaryState(f"Deployment {live['metadata']['name']}", weight, owner, silent_s)

    def withdraw_canary(self, model: ModelSpec, log: Log = no_log) -> None:
        self.cluster.remove_canary(model, log)

    def stop(self, model: ModelSpec) -> None:
        """Delete the model's serving objects (the weights on the PVC stay)."""
        for obj in render_model(self.platform, model):
            if obj["kind"] in ("PersistentVolumeClaim", "Job"):
                continue
            self.cluster.api.delete(resource_of(obj), self.platform.namespace, obj["metadata"]["name"])

    def status(self, model: ModelSpec) -> TargetStatus:
        deployment = self.cluster.api.get(DEPLOYMENTS, self.platform.namespace, resource_name(model))
        if deployment is None:
            return TargetStatus(model.name, False, None, "not deployed")
        available = int(deployment.get("status", {}).get("availableReplicas") or 0)
        revision = self.cluster.current_revision(model)
        label = revision.label() if revision else "no llm-platform revision"
        return TargetStatus(model.name, available > 0, self.endpoint(model), f"{label}; {available} available")


@dataclasses.dataclass
class KubernetesCanary(CanaryRollout):
    """A canary in the cluster, the Flagger way: a second Deployment (and Service) beside the stable one, the edge's
    split object stepping the weight; promotion copies the canary's spec to the stable Deployment (a normal rolling
    update, while the canary still serves), then sends the traffic back to it and removes the canary."""

    target: KubernetesTarget
    model: ModelSpec
    weights: SnapshotManifest
    canary_revision: str

    def now(self) -> float:
        return self.target.cluster.clock()

    def wait(self, seconds: float) -> None:
        self.target.cluster.sleep(seconds)

    def set_weight(self, percent: int) -> None:
        self.target.cluster.set_canary_weight(self.model, percent)

    def keep_alive(self) -> None:
        self.target.cluster.mark_canary(self.model)

    def promote(self, log: Log = no_log) -> Deployment:
        try:
            # The canary keeps all traffic while the stable Deployment rolls to its spec.
            deployment = self.target.promote(self.model, self.weights, log, canary_weight=100)
        finally:  # promoted or rolled back: the stable Deployment serves either way, the canary goes
            self.target.cluster.remove_canary(self.model, log)
        return deployment

    def abort(self, log: Log = no_log) -> None:
        self.target.cluster.remove_canary(self.model, log)


@dataclasses.dataclass
class KubernetesTrials(TrialRunner):
    """One benchmark Job per candidate (the smoke benchmark's, with the candidate's arguments) measuring the load
    ladder; the goodput is that of the highest load before the first that misses the SLO. Repeats of a config are
    rounds of the ladder in one Job: one server start, each round its own measurement."""

    cluster: KubernetesCluster
    model: ModelSpec
    weights: SnapshotManifest
    settings: TrialSettings
    run_key: str
    log: Log = no_log
    #: Measurements so far per engine config: every call is a new Job (a succeeded Job of the same name would only be
    #: read back, and the search's repeats exist to measure the noise).
    measurements: dict[str, int] = dataclasses.field(default_factory=dict)

    def __call__(self, candidate: Candidate) -> Trial:
        return self.repeated(candidate, 1)[0]

    def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
        ladder = load_ladder(self.settings.load_low, self.settings.load_high)
        # One prompt count for every level of the ladder: enough for its highest load.
        prompts = max(self.settings.plan.prompts_per_level, self.settings.prompts_per_load * self.settings.load_high)
        plan = dataclasses.replace(self.settings.plan, concurrency_levels=ladder, prompts_per_level=prompts)
        try:
            model = candidate_model(self.model, candidate, self.weights.max_position_tokens)
            fingerprint = config_fingerprint(model.serving, self.weights.sha)[:8]
            first = self.measurements.get(fingerprint, 0) + 1
            self.measurements[fingerprint] = first + times - 1
            run_key = f"{self.run_key}-{fingerprint}-{first}" + (f"x{times}" if times > 1 else "")
            rounds = self.cluster.benchmark_rounds(
                model, self.weights.sha, plan, run_key=run_key, log=self.log, rounds=times
            )
        except PlatformError as error:
            return [failed_trial(self.model, candidate, error, self.log)] * times
        return [ladder_trial(candidate, results, ladder, self.model.slo) for results in rounds]
