"""The one interface every deployment target implements: where weights go, how a candidate is benchmarked, how a
config is promoted (and rolled back), stopped and inspected, and where artefacts go.

``defs/`` talks to a :class:`ServingTarget` only and never asks which one it has; the local target (vLLM on CPU on
this machine), the kubernetes target (Jobs and a Deployment in a cluster) and the tests' in-process fake implement
it. Benchmark results cross the interface as the raw ``vllm bench serve`` result JSON of each concurrency level, so
that one parser and one SLO evaluation read every target's measurements.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.catalog import Adapter, ModelSpec
from llm_platform.errors import TargetError
from llm_platform.tuning.policy import Crash
from llm_platform.tuning.search import TrialRunner
from llm_platform.weights.plan import DownloadResult, SnapshotManifest

Log = Callable[[str], None]
LevelResults = dict[int, dict[str, Any]]
"""The result JSON of ``vllm bench serve`` for each concurrency level of a plan."""


def no_log(_: str) -> None:
    """The default log: nothing."""


@dataclass(frozen=True)
class Deployment:
    """What serves a model after a promotion."""

    endpoint: str
    """The URL clients call (the local endpoint, the Ingress host or the in-cluster Service)."""
    benchmark_url: str
    """Where the live benchmark reaches the model from inside the target."""
    revision: str
    """One line naming what serves: image or server, engine fingerprint, weights commit."""
    details: Mapping[str, str | int | list[str]] = field(default_factory=dict)
    """Target-specific facts for the asset's metadata (previous revision, applied objects, server pid, …)."""


@dataclass(frozen=True)
class TargetStatus:
    model: str
    healthy: bool
    endpoint: str | None
    detail: str


@dataclass(frozen=True)
class TrialSettings:
    """How a trial measures a candidate: the benchmark request shape and the load range it searches."""

    plan: BenchmarkPlan
    load_low: int
    load_high: int
    prompts_per_load: int
    """Requests per probe per unit of concurrency (at least ``plan.prompts_per_level``)."""


class TrialBackend(ABC):
    """Where the auto-tuner's trials run: every serving target (a real server per candidate), or the simulated GPU
    server (``targets/simulated.py``)."""

    @abstractmethod
    def trial_runner(
        self, model: ModelSpec, weights: SnapshotManifest, settings: TrialSettings, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> TrialRunner:  # fmt: skip
        """Trials of the auto-tuner for ``model`` (the candidate's knobs are applied on top of its serving)."""


@dataclass(frozen=True)
class CanaryState:
    """A canary found on a target: where it runs, its share of the traffic, and who drives it."""

    where: str
    """What runs it (the local server's fingerprint, the canary Deployment's name)."""
    weight: int
    owner: str
    """The run that started it (its Dagster run id)."""
    silent_s: float
    """Seconds since its driver's last step or judgement."""


class CanaryRollout(ABC):
    """A canary in progress on a target: the candidate's servers beside the stable ones, the edge splitting the
    model's traffic between them. The driver (``canary.run_canary`` with Prometheus' figures) moves the weight;
    :meth:`promote` or :meth:`abort` ends it, and either leaves exactly one version serving."""

    canary_revision: str
    """What the canary runs (as :attr:`Deployment.revision` names it)."""

    def now(self) -> float:
        """The rollout's clock (monotonic seconds); a test's target steps it instead (dagster-k8s' timer)."""
        return time.monotonic()

    def wait(self, seconds: float) -> None:
        """How the rollout waits for a step's traffic; a test's target advances its clock instead (the sleeper)."""
        time.sleep(seconds)

    @abstractmethod
    def set_weight(self, percent: int) -> None:
        """Send ``percent`` of the model's requests to the canary."""

    @abstractmethod
    def keep_alive(self) -> None:
        """The driver is alive (each judgement calls it): a canary whose driver stops calling is rolled back by
        :meth:`ServingTarget.roll_back_abandoned_canary` once it counts as abandoned."""

    @abstractmethod
    def promote(self, log: Log = no_log) -> Deployment:
        """The stable version takes the canary's config, traffic returns to it, the canary is removed."""

    @abstractmethod
    def abort(self, log: Log = no_log) -> None:
        """The weight goes to 0 and the canary is removed; the stable version is never restarted."""


class ServingTarget(TrialBackend):
    """A place models are served: the lifecycle's every side effect goes through these methods."""

    kind: str
    """``local``, ``kubernetes`` or ``fake``: shown in metadata, never branched on."""

    def __init__(self, artifacts_root: Path) -> None:
        self.artifacts_root = artifacts_root

    def artifact_dir(self, model: str, kind: str, run_id: str) -> Path:
        """Where a run's large artefacts go (benchmark CSV/PNG/JSON, trial tables): ``<root>/<model>/<kind>/<run>``,
        a location that outlives the run on every target."""
        directory = self.artifacts_root / model / kind / run_id
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    @abstractmethod
    def weights_location(self) -> str:
        """Where materialized weights live, as metadata names it (a directory, ``pvc://claim/path``)."""

    def readable_weights_dir(self, weights: SnapshotManifest) -> str | None:
        """The snapshot's directory when this process can read it (the local store); None where only the servers
        can (a PVC mounted into the pods, not into the run)."""
        return None

    @abstractmethod
    def materialize_weights(self, model: ModelSpec, revision: str, log: Log = no_log) -> DownloadResult:
        """Download and verify ``revision`` of the model's weights where the servers read them."""

    def materialize_adapter(self, model: ModelSpec, adapter: Adapter, log: Log = no_log) -> DownloadResult:
        """Download and verify one of the model's LoRA adapters beside its weights, where the servers read them."""
        raise TargetError(
            f"model '{model.name}': adapter '{adapter.name}': LoRA adapters are not served on the {self.kind} target "
            "in this release; remove the model's adapters for it"
        )

    @abstractmethod
    def benchmark_candidate(
        self, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        """Serve ``model`` (its serving section is the candidate config) and benchmark it with ``plan``."""

    @abstractmethod
    def release_candidate(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> None:
        """A benchmarked candidate that will not be promoted must not keep holding resources (unless it serves)."""

    @abstractmethod
    def benchmark_deployed(
        self, deployment: Deployment, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *,
        run_key: str, work_dir: Path, log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        """Benchmark what serves, where it serves (the live benchmark)."""

    @abstractmethod
    def promote(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> Deployment:
        """Serve this config; on failure restore what served before (or nothing) and raise with the reason."""

    def start_canary(
        self, model: ModelSpec, weights: SnapshotManifest, *, owner: str, log: Log = no_log
    ) -> CanaryRollout | None:
        """Run this config as a canary beside what serves, at weight 0; None when there is nothing to compare it with
        (nothing serves yet, or this very config serves): the caller promotes it directly."""
        raise TargetError(
            f"model '{model.name}': canary rollouts are not available on the {self.kind} target in this release; "
            "set rollout.strategy: replace for it"
        )

    def canary_state(self, model: ModelSpec) -> CanaryState | None:
        """The model's canary, if one is there (in progress, or left behind by a run that died)."""
        return None

    def crashes(self, model: ModelSpec) -> list[Crash]:
        """The model's crashed engine containers (not OOM-killed) with their termination messages, for the drift
        policy's diagnosis; none where the target keeps no such record (the local target restarts nothing)."""
        return []

    def withdraw_canary(self, model: ModelSpec, log: Log = no_log) -> None:
        """The weight back to 0 and the canary removed, whoever started it (the stable version never restarts)."""

    def roll_back_abandoned_canary(
        self, model: ModelSpec, *, abandoned: Callable[[CanaryState], bool], log: Log = no_log
    ) -> str | None:
        """Withdraw a canary of ``model`` that ``abandoned`` says no live run drives; returns what was done, None when
        there was none. Raises while a live run owns one: two rollouts of one model never overlap."""
        state = self.canary_state(model)
        if state is None:
            return None
        if not abandoned(state):
            raise TargetError(
                f"model '{model.name}': a canary rollout ({state.where} at {state.weight} %, run {state.owner}) is "
                "in progress; wait for it to finish, or stop that run"
            )
        self.withdraw_canary(model, log)
        return (
            f"rolled back the canary {state.where} (at {state.weight} %) left by run {state.owner}, silent for "
            f"{state.silent_s:.0f} s"
        )

    @abstractmethod
    def stop(self, model: ModelSpec) -> None:
        """Stop serving ``model`` entirely."""

    @abstractmethod
    def status(self, model: ModelSpec) -> TargetStatus:
        """Whether ``model`` serves, and where."""
