"""The local target behind the :class:`~llm_platform.targets.base.ServingTarget` interface: weights in a model
store directory, candidates and deployments as vLLM-on-CPU servers on this machine (``targets/local_servers.py``), the
benchmark as ``vllm bench serve`` against them, trials as a load bisection against one server.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from llm_platform.benchmark.plan import BenchmarkPlan
from llm_platform.benchmark.runner import run_level, run_plan
from llm_platform.benchmark.trials import as_overrides, candidate_model, failed_trial, probe_from_result
from llm_platform.catalog import Adapter, ModelSpec
from llm_platform.engine import EngineInvocation, LoraAdapters, engine_for
from llm_platform.errors import PlatformError
from llm_platform.manifests.pods import lora_adapters
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
from llm_platform.targets.local_servers import LocalServers, ModelStatus
from llm_platform.targets.local_state import ServerRecord
from llm_platform.tuning.search import Candidate, Probe, Trial, TrialRunner, bisect_load
from llm_platform.weights.download import DEFAULT_WORKERS, DownloadRequest, download_snapshot
from llm_platform.weights.hub import HubClient
from llm_platform.weights.plan import DownloadResult, SnapshotManifest
from llm_platform.weights.progress import LogProgress
from llm_platform.weights.store import ModelStore


class LocalTarget(ServingTarget):
    """vLLM on CPU on this machine, weights in ``store``, fetched from ``hub``."""

    kind = "local"

    def __init__(
        self,
        servers: LocalServers,
        store: ModelStore,
        hub: HubClient,
        artifacts_root: Path,
        *,
        workers: int = DEFAULT_WORKERS,
        keep_revisions: int = 0,
    ) -> None:
        super().__init__(artifacts_root)
        self.servers = servers
        self.store = store
        self.hub = hub
        self.workers = workers
        self.keep_revisions = keep_revisions

    def weights_path(self, weights: SnapshotManifest) -> str:
        return str(self.store.snapshot_dir(weights.model, weights.sha))

    def adapters(self, model: ModelSpec, weights: SnapshotManifest) -> LoraAdapters | None:
        """The adapters served on ``weights``, from this store."""
        return lora_adapters(model, weights, str(self.store.root))

    def weights_location(self) -> str:
        return str(self.store.root)

    def readable_weights_dir(self, weights: SnapshotManifest) -> str | None:
        return self.weights_path(weights)

    def materialize_adapter(self, model: ModelSpec, adapter: Adapter, log: Log = no_log) -> DownloadResult:
        return download_snapshot(
            DownloadRequest.for_adapter(model, adapter), self.store, self.hub, workers=self.workers,
            progress=LogProgress(log),
        )  # fmt: skip

    def materialize_weights(self, model: ModelSpec, revision: str, log: Log = no_log) -> DownloadResult:
        request = DownloadRequest.for_model(model, revision)
        # The commits the model's servers read are never pruned, whatever keep_revisions says.
        serving = tuple(Path(server.weights_path).name for server in self.servers.servers(model.name))
        return download_snapshot(
            request, self.store, self.hub, workers=self.workers, progress=LogProgress(log),
            keep_revisions=self.keep_revisions, protected=serving,
        )  # fmt: skip

    def benchmark_candidate(
        self, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        server = self.servers.ensure_server(
            model, self.weights_path(weights), log=log, adapters=self.adapters(model, weights)
        )
        return self._measure(model, weights, plan, server.base_url, work_dir, log)

    def _measure(
        self, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, base_url: str, work_dir: Path, log: Log
    ) -> LevelResults:
        _, raw = run_plan(
            plan, engine=engine_for(model.serving), model=plan.served_name or model.name, base_url=base_url,
            tokenizer=self.weights_path(weights), work_dir=work_dir,
            log=log, api_key=self.servers.api_key,
        )  # fmt: skip
        return raw

    def release_candidate(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> None:
        fingerprint = self._invocation(model, weights).fingerprint
        for server in self.servers.servers(model.name):
            if server.fingerprint == fingerprint:
                release_server(self.servers, model.name, server, log)

    def benchmark_deployed(
        self, deployment: Deployment, model: ModelSpec, weights: SnapshotManifest, plan: BenchmarkPlan, *,
        run_key: str, work_dir: Path, log: Log = no_log,
    ) -> LevelResults:  # fmt: skip
        return self._measure(model, weights, plan, deployment.benchmark_url, work_dir, log)

    def trial_runner(
        self, model: ModelSpec, weights: SnapshotManifest, settings: TrialSettings, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> TrialRunner:  # fmt: skip
        return LocalTrials(
            self.servers, model, self.weights_path(weights), settings, work_dir, weights.max_position_tokens, log,
            self.adapters(model, weights),
        )  # fmt: skip

    def promote(self, model: ModelSpec, weights: SnapshotManifest, log: Log = no_log) -> Deployment:
        adapters = self.adapters(model, weights)
        status = self.servers.promote(model, self.weights_path(weights), log=log, adapters=adapters)
        return self._deployment(model, weights, status)

    def _invocation(self, model: ModelSpec, weights: SnapshotManifest) -> EngineInvocation:
        return self.servers.invocation(model, self.weights_path(weights), adapters=self.adapters(model, weights))

    def _deployment(self, model: ModelSpec, weights: SnapshotManifest, status: ModelStatus) -> Deployment:
        if status.active is None or status.endpoint is None:
            raise PlatformError(f"model '{model.name}': promoted, but the endpoint does not answer")
        label = f"local server {status.active.fingerprint} weights {weights.sha[:12]}"
        details: dict[str, str | int | list[str]] = {
            "target": "local",
            "server_fingerprint": status.active.fingerprint,
            "server_pid": status.active.pid,
            "server_log": status.active.log_path,
            "engine_args": list(self._invocation(model, weights).args),
        }
        return Deployment(status.endpoint, status.endpoint, label, details)

    def start_canary(
        self, model: ModelSpec, weights: SnapshotManifest, *, owner: str, log: Log = no_log
    ) -> LocalCanary | None:
        active = self.servers.active(model.name)
        if active is None or active.fingerprint == self._invocation(model, weights).fingerprint:
            return None
        server = self.servers.start_canary(
            model, self.weights_path(weights), owner=owner, log=log, adapters=self.adapters(model, weights)
        )
        return LocalCanary(self, model, weights, f"local server {server.fingerprint} weights {weights.sha[:12]}")

    def canary_state(self, model: ModelSpec) -> CanaryState | None:
        canary = self.servers.canary(model.name)
        if canary is None:
            return None
        return CanaryState(f"server {canary.fingerprint}", canary.weight, canary.owner, time.time() - canary.heartbeat)

    def withdraw_canary(self, model: ModelSpec, log: Log = no_log) -> None:
        if self.servers.canary(model.name) is not None:
            self.servers.finish_canary(model, promoted=False, log=log)

    def stop(self, model: ModelSpec) -> None:
        self.servers.stop(model.name)

    def status(self, model: ModelSpec) -> TargetStatus:
        status = self.servers.status(model.name)
        servers = ", ".join(f"{s.fingerprint} (pid {s.pid}, port {s.port})" for s in status.servers) or "none"
        return TargetStatus(model.name, status.healthy, status.endpoint, f"servers: {servers}")


@dataclasses.dataclass
class LocalCanary(CanaryRollout):
    """A canary on this machine: a second server beside the stable one, nginx splitting the endpoint's requests."""

    target: LocalTarget
    model: ModelSpec
    weights: SnapshotManifest
    canary_revision: str

    def set_weight(self, percent: int) -> None:
        self.target.servers.set_canary_weight(self.model, percent)

    def keep_alive(self) -> None:
        self.target.servers.touch_canary(self.model.name)

    def promote(self, log: Log = no_log) -> Deployment:
        self.target.servers.finish_canary(self.model, promoted=True, log=log)
        return self.target._deployment(self.model, self.weights, self.target.servers.status(self.model.name))

    def abort(self, log: Log = no_log) -> None:
        self.target.servers.finish_canary(self.model, promoted=False, log=log)


def release_server(servers: LocalServers, model: str, server: ServerRecord, log: Log) -> None:
    """Stop ``server`` unless the model's endpoint routes to it: the one candidate-stop rule (a rejected
    benchmark candidate and every finished trial)."""
    active = servers.active(model)
    if active is None or active.fingerprint != server.fingerprint:
        servers.stop_server(model, server.fingerprint)
        log(f"model '{model}': stopped candidate server {server.fingerprint}")


@dataclasses.dataclass
class LocalTrials(TrialRunner):
    """Trials on this machine: one vLLM server per candidate and the load found by
    :func:`~llm_platform.tuning.search.bisect_load`, each probe a ``vllm bench serve`` run at one concurrency, in
    this process so that vLLM's benchmark is imported once per search, not once per probe. Repeats of a config
    bisect again against the same server. A config vLLM refuses or cannot start is a failed trial with vLLM's own
    line."""

    servers: LocalServers
    model: ModelSpec
    weights_path: str
    settings: TrialSettings
    work_dir: Path
    position_limit: int | None = None
    log: Log = no_log
    adapters: LoraAdapters | None = None

    def __call__(self, candidate: Candidate) -> Trial:
        return self.repeated(candidate, 1)[0]

    def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
        label = ", ".join(f"{k}={v}" for k, v in as_overrides(candidate).items())
        try:
            model = candidate_model(self.model, candidate, self.position_limit)
            server = self.servers.ensure_server(model, self.weights_path, log=self.log, adapters=self.adapters)
        except PlatformError as error:
            return [failed_trial(self.model, candidate, error, self.log)] * times
        work_dir = self.work_dir / server.fingerprint
        settings = self.settings
        trials = []
        try:
            for _ in range(times):
                try:
                    found = bisect_load(
                        lambda load: self._probe(server.base_url, load, work_dir), settings.load_low,
                        settings.load_high,
                    )  # fmt: skip
                except PlatformError as error:
                    trials.append(failed_trial(self.model, candidate, error, self.log))
                    continue
                best = (
                    f"{found.goodput:.1f} output tok/s at concurrency {found.best.load}"
                    if found.best
                    else "no load met the SLO"
                )
                self.log(f"model '{self.model.name}': trial {label}: {best} ({len(found.probes)} probes)")
                trials.append(dataclasses.replace(found, candidate=dict(candidate)))
        finally:
            release_server(self.servers, self.model.name, server, self.log)
        return trials

    def _probe(self, base_url: str, load: int, work_dir: Path) -> Probe:
        plan = self.settings.plan
        prompts = max(plan.prompts_per_level, self.settings.prompts_per_load * load)
        plan = dataclasses.replace(plan, prompts_per_level=prompts)
        result = run_level(plan, load, engine=engine_for(self.model.serving), model=self.model.name, base_url=base_url,
                           tokenizer=self.weights_path, work_dir=work_dir, api_key=self.servers.api_key)  # fmt: skip
        return probe_from_result(result, load, self.model.slo)
