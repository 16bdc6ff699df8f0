"""An in-process fake target implementing :class:`~llm_platform.targets.base.ServingTarget`, for the wiring tests.

No vLLM, no Kubernetes: weights are manifests made up from the repository and revision, a benchmark answers with
``vllm bench serve``-shaped result JSON from a small performance model of the candidate config, and promotion
records what serves (or fails, rolling back, when told to). The state lives in a :class:`FakeCluster` that every
run of a test shares, as a real cluster would; ``FakeTargetResource`` names it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.benchmark.trials import as_overrides, candidate_model, failed_trial, ladder_trial, load_ladder
from llm_platform.catalog import Adapter, ModelSpec, Platform, Serving, config_fingerprint
from llm_platform.defs.resources import TargetResource
from llm_platform.engine import engine_for
from llm_platform.errors import PlatformError, RolloutError
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
from llm_platform.tuning.policy import Crash
from llm_platform.tuning.search import Candidate, Trial, TrialFunction, TrialRunner
from llm_platform.weights.plan import DownloadResult, ManifestFile, SnapshotManifest


def default_performance(serving: Serving, concurrency: int, plan: BenchmarkPlan) -> dict[str, float]:
    """A toy engine: a step serves min(concurrency, max_num_seqs) sequences; bigger batches make each token slower,
    and requests beyond the batch wait for a slot (time to first token grows)."""
    slots = serving.max_num_seqs or 256
    batch = min(concurrency, slots)
    itl_ms = 5.0 + 0.5 * batch
    waiting = max(0, concurrency - slots)
    ttft_ms = 40.0 + waiting / slots * plan.output_len * itl_ms
    e2el_ms = ttft_ms + plan.output_len * itl_ms
    return {"itl_ms": itl_ms, "ttft_ms": ttft_ms, "e2el_ms": e2el_ms, "output_throughput": batch * 1000.0 / itl_ms}


def result_json(perf: dict[str, float], concurrency: int, plan: BenchmarkPlan, failed: int = 0) -> dict[str, Any]:
    """The keys of a ``vllm bench serve`` result the parser reads."""
    completed = plan.prompts_per_level - failed
    result: dict[str, Any] = {
        "completed": completed,
        "failed": failed,
        "num_prompts": plan.prompts_per_level,
        "max_concurrency": concurrency,
        "duration": completed * plan.output_len / perf["output_throughput"],
        "output_throughput": perf["output_throughput"],
        "request_throughput": perf["output_throughput"] / plan.output_len,
        "total_token_throughput": perf["output_throughput"] * (1 + plan.input_len / plan.output_len),
    }
    for metric, value in (("ttft", perf["ttft_ms"]), ("itl", perf["itl_ms"]), ("tpot", perf["itl_ms"]),
                          ("e2el", perf["e2el_ms"])):  # fmt: skip
        for stat in ("mean", "median", "p50", "p90", "p95", "p99"):
            result[f"{stat}_{metric}_ms"] = value
    return result


@dataclass
class FakeCluster:
    """What the fake target serves and remembers across runs."""

    performance: Callable[[Serving, int, BenchmarkPlan], dict[str, float]] = default_performance
    hub: dict[str, str] = field(default_factory=dict)
    """``repo@revision`` → commit sha; unknown revisions get a sha made from the name."""
    failing_promotions: set[str] = field(default_factory=set)
    """Models whose next promotions fail their rollout (and roll back)."""
    refused: Callable[[Serving], str | None] = lambda _: None
    """Why the engine would refuse to start a config (None: it starts)."""
    deployed: dict[str, tuple[str, Serving]] = field(default_factory=dict)
    canaries: dict[str, FakeCanary] = field(default_factory=dict)
    """Canary rollouts in progress (or left behind), by model."""
    canary_weights: dict[str, list[int]] = field(default_factory=dict)
    """Every weight the edge was set to, by model, over the cluster's life."""
    clock: list[float] = field(default_factory=lambda: [0.0])
    """The rollouts' clock: waiting advances it (no test sleeps through a canary's steps)."""
    benchmark_plans: list[BenchmarkPlan] = field(default_factory=list)
    """Every candidate benchmark's plan, in order."""
    crashed: dict[str, list[Crash]] = field(default_factory=dict)
    """model → its crashed containers, as the pods' statuses would tell."""
    """model → (engine fingerprint, serving) of what serves."""
    candidates: dict[str, set[str]] = field(default_factory=dict)
    """model → fingerprints of benchmarked candidates still holding resources."""
    calls: list[str] = field(default_factory=list)
    commands: dict[str, list[str]] = field(default_factory=dict)
    """model → the engine command line of what serves (the engine seam's answer, as a real target would run it)."""

    def sha(self, repo: str, revision: str) -> str:
        return self.hub.get(f"{repo}@{revision}") or hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


CLUSTERS: dict[str, FakeCluster] = {}


class FakeServingTarget(ServingTarget):
    kind = "fake"

    def __init__(self, cluster: FakeCluster, artifacts_root: Path) -> None:
        super().__init__(artifacts_root)
        self.cluster = cluster

    def crashes(self, model: ModelSpec) -> list[Crash]:
        return list(self.cluster.crashed.get(model.name, []))

    def weights_location(self) -> str:
        return "fake://store"

    def materialize_weights(self, model: ModelSpec, revision: str, log: Log = no_log) -> DownloadResult:
        self.cluster.calls.append(f"weights {model.name}@{revision}")
        repo = model.source.repo or str(model.source.path)
        sha = self.cluster.sha(repo, revision)
        manifest = SnapshotManifest(
            model=model.name, repo=repo, requested_revision=revision, sha=sha,
            files=(ManifestFile(path="config.json", size=2, sha256="0" * 64),), total_bytes=2, downloaded_bytes=2,
            duration_s=0.0, completed_at=datetime.now(UTC),
        )  # fmt: skip
        return DownloadResult(manifest, Path(f"/fake/{model.name}/{sha}"), reused=False)

    def materialize_adapter(self, model: ModelSpec, adapter: Adapter, log: Log = no_log) -> DownloadResult:
        self.cluster.calls.append(f"adapter {model.name}/{adapter.name}@{adapter.source.revision}")
        repo = str(adapter.source.repo)
        sha = self.cluster.sha(repo, adapter.source.revision)
        manifest = SnapshotManifest(
            model=f"{model.name}/adapters/{adapter.name}", repo=repo, requested_revision=adapter.source.revision,
            sha=sha, files=(ManifestFile(path="adapter_config.json", size=2, sha256="0" * 64),), total_bytes=2,
            downloaded_bytes=2, duration_s=0.0, completed_at=datetime.now(UTC),
            adapter_config={"peft_type": "LORA", "r": 8, "base_model_name_or_path": model.source.repo},
        )  # fmt: skip
        return DownloadResult(manifest, Path(f"/fake/{manifest.model}/{sha}"), reused=False)

    def _fingerprint(self, model: ModelSpec, weights: SnapshotManifest) -> str:
        return config_fingerprint(model.serving, weights.sha, weights.adapter_commits)

    def _command(self, model: ModelSpec, weights: SnapshotManifest) -> list[str]:
        invocation = engine_for(model.serving).invocation(
            model.serving, served_model_name=model.name, weights_path=f"/fake/{model.name}/{weights.sha}",
            host="127.0.0.1", port=8000,
        )  # fmt: skip
        return invocation.command()

    def _measure(self, serving: Serving, plan: BenchmarkPlan) -> LevelResults:
        return {
            level: result_json(self.cluster.performance(serving, level, plan), level, plan)
            for level in plan.concurrency_levels
        }

    def benchmark_candidate(
        self, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        refusal = self.cluster.refused(model.serving)
        if refusal:
            raise PlatformError(f"model '{model.name}': vLLM did not start: {refusal}")
        fingerprint = self._fingerprint(model, weights)
        self.cluster.calls.append(f"benchmark {model.name} {fingerprint}")
        self.cluster.benchmark_plans.append(plan)
        self.cluster.candidates.setdefault(model.name, set()).add(fingerprint)
        return self._measure(model.serving, plan)

    def release_candidate(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> None:
        fingerprint = self._fingerprint(model, weights)
        self.cluster.calls.append(f"release {model.name} {fingerprint}")
        self.cluster.candidates.get(model.name, set()).discard(fingerprint)

    def benchmark_deployed(
        self, deployment: Deployment, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *,
        run_key: str, work_dir: Path, log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        _, serving = self.cluster.deployed[model.name]
        self.cluster.calls.append(f"live {model.name}")
        self.cluster.benchmark_plans.append(plan)
        return self._measure(serving, plan)

    def trial_runner(
        self, model: ModelSpec, weights: SnapshotManifest, settings: TrialSettings, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> TrialRunner:  # fmt: skip
        def trial(candidate: Candidate) -> Trial:
            ladder = load_ladder(settings.load_low, settings.load_high)
            try:
                candidate_spec = candidate_model(model, candidate, weights.max_position_tokens)
                refusal = self.cluster.refused(candidate_spec.serving)
                if refusal:
                    raise PlatformError(f"vLLM did not start: {refusal}")
            except PlatformError as error:
                return failed_trial(model, candidate, error, log)
            self.cluster.calls.append(f"trial {model.name} {as_overrides(candidate)}")
            plan = BenchmarkPlan(**{**settings.plan.__dict__, "concurrency_levels": ladder})
            return ladder_trial(candidate, self._measure(candidate_spec.serving, plan), ladder, model.slo)

        return TrialFunction(trial)

    def promote(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> Deployment:
        fingerprint = self._fingerprint(model, weights)
        if model.name in self.cluster.failing_promotions:
            previous = self.cluster.deployed.get(model.name)
            restored = f"rolled back to {previous[0]}" if previous else "no previous revision, nothing serves"
            raise RolloutError(f"model '{model.name}': promotion of {fingerprint} failed: never ready; {restored}")
        self.cluster.deployed[model.name] = (fingerprint, model.serving)
        self.cluster.commands[model.name] = self._command(model, weights)
        self.cluster.candidates.get(model.name, set()).discard(fingerprint)
        self.cluster.calls.append(f"promote {model.name} {fingerprint}")
        url = f"http://{model.name}.fake"
        return Deployment(url, url, f"fake {fingerprint} weights {weights.sha[:12]}", {"target": "fake"})

    def start_canary(
        self, model: ModelSpec, weights: SnapshotManifest, *, owner: str, log: Log = no_log
    ) -> FakeCanary | None:
        fingerprint = self._fingerprint(model, weights)
        served = self.cluster.deployed.get(model.name)
        if served is None or served[0] == fingerprint:
            return None
        canary = FakeCanary(self, model, weights, f"fake {fingerprint}", owner, heartbeat=self.cluster.clock[0])
        self.cluster.canaries[model.name] = canary
        self.cluster.calls.append(f"canary {model.name} {fingerprint}")
        return canary

    def canary_state(self, model: ModelSpec) -> CanaryState | None:
        canary = self.cluster.canaries.get(model.name)
        if canary is None:
            return None
        weights = self.cluster.canary_weights.get(model.name) or [0]
        return CanaryState("fake canary", weights[-1], canary.owner, self.cluster.clock[0] - canary.heartbeat)

    def withdraw_canary(self, model: ModelSpec, log: Log = no_log) -> None:
        canary = self.cluster.canaries.get(model.name)
        if canary is not None:
            canary.abort(log)

    def stop(self, model: ModelSpec) -> None:
        self.cluster.deployed.pop(model.name, None)

    def status(self, model: ModelSpec) -> TargetStatus:
        served = self.cluster.deployed.get(model.name)
        return TargetStatus(model.name, served is not None, f"http://{model.name}.fake" if served else None, "fake")


@dataclass
class FakeCanary(CanaryRollout):
    """A canary on the fake cluster: weights recorded, promotion as the fake target's, time on the cluster's clock."""

    target: FakeServingTarget
    model: ModelSpec
    weights: SnapshotManifest
    canary_revision: str
    owner: str
    heartbeat: float

    def now(self) -> float:
        return self.target.cluster.clock[0]

    def wait(self, seconds: float) -> None:
        self.target.cluster.clock[0] += seconds

    def set_weight(self, percent: int) -> None:
        self.target.cluster.canary_weights.setdefault(self.model.name, []).append(percent)
        self.heartbeat = self.now()

    def keep_alive(self) -> None:
        self.heartbeat = self.now()

    def promote(self, log: Log = no_log) -> Deployment:
        self.target.cluster.canaries.pop(self.model.name)
        return self.target.promote(self.model, self.weights, log)

    def abort(self, log: Log = no_log) -> None:
        weights = self.target.cluster.canary_weights.setdefault(self.model.name, [])
        if weights[-1:] != [0]:
            weights.append(0)
        self.target.cluster.canaries.pop(self.model.name)
        self.target.cluster.calls.append(f"abort {self.model.name}")


class FakeTargetResource(TargetResource):
    """The fake target of the test cluster named ``cluster`` (a key of :data:`CLUSTERS`)."""

    cluster: str

    def serving_target(self, platform: Platform) -> FakeServingTarget:
        return FakeServingTarget(CLUSTERS[self.cluster], Path(self.artifacts_root))

    def prometheus_url(self, platform: Platform) -> str:
        return platform.prometheus_url
