"""Dagster resources: typed configuration of the outside systems the assets use, secrets from the environment."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg
from pydantic import Field

from llm_platform.catalog import ModelSpec, Platform
from llm_platform.errors import PlatformError
from llm_platform.prometheus import PROMETHEUS_URL_ENV_VAR, PrometheusClient
from llm_platform.targets.base import ServingTarget, TrialBackend
from llm_platform.targets.kube_api import KubeApi
from llm_platform.targets.kubernetes import KubernetesTarget
from llm_platform.targets.kubernetes_cluster import KubernetesCluster, KubernetesTargetSettings
from llm_platform.targets.local import LocalTarget
from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings
from llm_platform.targets.simulated import SimulatedGpuTrials
from llm_platform.weights.download import DEFAULT_WORKERS, DownloadRequest, download_snapshot
from llm_platform.weights.hub import HubClient
from llm_platform.weights.plan import DownloadResult, SnapshotManifest
from llm_platform.weights.progress import ProgressSink
from llm_platform.weights.store import ModelStore

STORE_ENV_VAR = "LLM_PLATFORM_MODEL_STORE"
TARGET_ENV_VAR = "LLM_PLATFORM_TARGET"
TARGET_KINDS = ("local", "kubernetes")
"""What ``$LLM_PLATFORM_TARGET`` may name; the code location builds that one target and no other."""
LOCAL_HOME_ENV_VAR = "LLM_PLATFORM_LOCAL_HOME"
LOCAL_DEFAULTS = LocalTargetSettings(state_dir=Path(), file_sd_dir=Path())
"""The local target's defaults, written once (in :class:`LocalTargetSettings`, with why each is what it is)."""
ARTIFACTS_ENV_VAR = "LLM_PLATFORM_ARTIFACTS"


def local_home_path(*parts: str) -> str:
    """A path under the local target's durable directory: ``$LLM_PLATFORM_LOCAL_HOME``, else ``$DAGSTER_HOME``.

    The local target's servers, model store and artefacts belong to the machine, like a cluster's objects and
    volumes, not to a run: when each run has its own fresh ``DAGSTER_HOME`` (as each pod does on Kubernetes), this
    variable points every run at the same directory.
    """
    home = os.environ.get(LOCAL_HOME_ENV_VAR) or os.environ.get("DAGSTER_HOME")
    return str(Path(home, *parts) if home else Path(*parts).resolve())


def default_store_path() -> str:
    """``$LLM_PLATFORM_MODEL_STORE``, else ``model-store`` under the local home (:func:`local_home_path`)."""
    return os.environ.get(STORE_ENV_VAR) or local_home_path("model-store")


class WeightsResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Downloads model weights from a Hugging Face hub into the model store (the local target's directory)."""

    store_path: str = Field(default_factory=default_store_path, description="Root of the model store.")
    hf_endpoint: str | None = Field(
        default=None, description="Hub URL (a mirror or the local hub); None for huggingface.co."
    )
    hf_token: str | None = Field(
        default=None, description="Hugging Face token, bound to EnvVar('HF_TOKEN'); never logged or recorded."
    )
    keep_revisions: int = Field(
        default=0,
        description="Complete snapshots to keep per model; 0 keeps all (the default: nothing is deleted "
        "that a deployment might still point at).",
    )
    workers: int = Field(default=DEFAULT_WORKERS, description="Files downloaded in parallel.")

    def store(self) -> ModelStore:
        return ModelStore(self.store_path)

    def hub(self) -> HubClient:
        return HubClient(self.hf_endpoint, self.hf_token)

    def snapshot_path(self, manifest: SnapshotManifest) -> str:
        """Where a completed snapshot lives (what vLLM is pointed at)."""
        return str(self.store().snapshot_dir(manifest.model, manifest.sha))

    def download(
        self, model: ModelSpec, revision: str, progress: ProgressSink | None = None, protected: tuple[str, ...] = ()
    ) -> DownloadResult:
        return download_snapshot(
            DownloadRequest.for_model(model, revision),
            self.store(),
            self.hub(),
            workers=self.workers,
            progress=progress,
            keep_revisions=self.keep_revisions,
            protected=protected,
        )


HF_ENDPOINT_ENV_VAR = "HF_ENDPOINT"


def effective_platform(platform: Platform) -> Platform:
    """The catalog's platform section with the code location's overrides: ``$HF_ENDPOINT``, when set, replaces
    ``platform.hf_endpoint`` for everything that asks a hub (the local downloads, the kubernetes download Job and the
    revision sensor alike: one hub, whichever names it), validated like the catalog's own value."""
    endpoint = os.environ.get(HF_ENDPOINT_ENV_VAR)
    if not endpoint:
        return platform
    try:
        return Platform.model_validate({**platform.model_dump(), "hf_endpoint": endpoint})
    except ValueError as error:
        raise PlatformError(f"${HF_ENDPOINT_ENV_VAR}: {str(error).splitlines()[-1].strip()[:200]}") from None


def weights_resource_from_env(platform: Platform | None = None) -> WeightsResource:
    """The resource as the code location configures it: the catalog's hub (:func:`effective_platform`) and the token
    from its own environment (resolved here: the code location's resources are sealed, see :func:`sealed`, so no
    run config can name a variable)."""
    hub = effective_platform(platform or Platform()).hf_endpoint
    return WeightsResource(hf_endpoint=hub, hf_token=os.environ.get("HF_TOKEN") or None)


def default_artifacts_root() -> str:
    """``$LLM_PLATFORM_ARTIFACTS``, else ``artifacts`` under the local home."""
    return os.environ.get(ARTIFACTS_ENV_VAR) or local_home_path("artifacts")


class TargetResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where models are served. The code location has exactly one (``$LLM_PLATFORM_TARGET``), and the assets only
    see the :class:`~llm_platform.targets.base.ServingTarget` it builds."""

    artifacts_root: str = Field(
        default_factory=default_artifacts_root,
        description="Where large artefacts go (benchmark CSV/PNG/JSON, trial tables): a directory that outlives "
        f"the runs; on Kubernetes a volume mounted into every run pod (${ARTIFACTS_ENV_VAR}).",
    )

    def serving_target(self, platform: Platform) -> ServingTarget:
        raise NotImplementedError(f"{type(self).__name__} does not build a serving target")

    def trial_backend(
        self, platform: Platform, kind: str, *, serving_plan: object = None, noise: float = 0.0, seed: int = 0
    ) -> TrialBackend:
        """Where the auto-tuner's trials run: ``target`` — this target serves each candidate; ``simulated`` — the
        simulated GPU server of the model's ``serving_plan`` (no GPU used)."""
        if kind == "simulated":
            return SimulatedGpuTrials(serving_plan, noise=noise, seed=seed)
        return self.serving_target(platform)

    def prometheus_url(self, platform: Platform) -> str:
        """The Prometheus that scrapes this target's models: ``$LLM_PLATFORM_PROMETHEUS_URL`` if set, else the
        catalog's ``platform.prometheus_url`` (the one KEDA queries: one source of truth)."""
        url = os.environ.get(PROMETHEUS_URL_ENV_VAR) or platform.prometheus_url
        if not url:
            raise PlatformError(
                "platform.prometheus_url is not set: the target needs the Prometheus that scrapes the vLLM "
                f"servers (KEDA and the drift sensor query it); set it in the catalog (or ${PROMETHEUS_URL_ENV_VAR})"
            )
        return url


class LocalTargetResource(TargetResource):
    """The embedded default target: vLLM on CPU as supervised subprocesses on this machine, weights in the model
    store of ``weights``."""

    weights: WeightsResource = Field(description="The hub and the model store the servers read.")

    state_dir: str = Field(
        default_factory=lambda: local_home_path("local-target"),
        description="Server records, logs and the active pointer of each model (local-target under the local home).",
    )
    file_sd_dir: str = Field(
        default_factory=lambda: local_home_path("prometheus", "file_sd"),
        description="Where the Prometheus file_sd target file of each model is written.",
    )
    python: str = Field(default=sys.executable, description="Interpreter with vLLM installed.")
    kv_cache_space_gib: int = Field(
        default=LOCAL_DEFAULTS.kv_cache_space_gib, description="VLLM_CPU_KVCACHE_SPACE per server, in GiB."
    )
    omp_threads_bind: str | None = Field(
        default=LOCAL_DEFAULTS.omp_threads_bind,
        description="VLLM_CPU_OMP_THREADS_BIND (see LocalTargetSettings.omp_threads_bind for why 'nobind').",
    )
    cpu_threads: int | None = Field(
        default=LOCAL_DEFAULTS.cpu_threads,
        ge=1,
        description="OpenMP threads of each unpinned server (None: one per core); half the cores by default, see "
        "LocalTargetSettings.cpu_threads for why.",
    )
    startup_timeout_s: float | None = Field(
        default=None, description="Overrides the catalog's serving.startup_timeout_s."
    )
    api_key_file: str = Field(
        default_factory=lambda: local_home_path("api-key"),
        description="File with the API key every local server requires (created, mode 0600, when missing).",
    )

    def target(self) -> LocalServers:
        """The servers on this machine (what ``llm-platform local status|stop`` inspects)."""
        return LocalServers(
            LocalTargetSettings(
                state_dir=Path(self.state_dir),
                file_sd_dir=Path(self.file_sd_dir),
                python=self.python,
                kv_cache_space_gib=self.kv_cache_space_gib,
                omp_threads_bind=self.omp_threads_bind,
                cpu_threads=self.cpu_threads,
                startup_timeout_s=self.startup_timeout_s,
                api_key_file=Path(self.api_key_file),
            )
        )

    def serving_target(self, platform: Platform) -> LocalTarget:
        weights = self.weights
        return LocalTarget(
            self.target(), weights.store(), weights.hub(), Path(self.artifacts_root),
            workers=weights.workers, keep_revisions=weights.keep_revisions,
        )  # fmt: skip


def local_target_from_env(weights: WeightsResource | None = None) -> LocalTargetResource:
    """KV cache size, thread binding and thread count from ``VLLM_CPU_KVCACHE_SPACE``,
    ``VLLM_CPU_OMP_THREADS_BIND`` and ``OMP_NUM_THREADS`` (a plain count; OpenMP's nested lists are left to it)."""
    threads = os.environ.get("OMP_NUM_THREADS", "")
    return LocalTargetResource(
        weights=weights or weights_resource_from_env(),
        kv_cache_space_gib=int(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or LOCAL_DEFAULTS.kv_cache_space_gib),
        omp_threads_bind=os.environ.get("VLLM_CPU_OMP_THREADS_BIND") or LOCAL_DEFAULTS.omp_threads_bind,
        cpu_threads=int(threads) if threads.isdigit() and int(threads) > 0 else LOCAL_DEFAULTS.cpu_threads,
    )


class KubernetesTargetResource(TargetResource):
    """The production target: the catalog's namespace in a Kubernetes cluster (connects only when used)."""

    kube_context: str | None = Field(
        default=None,
        description="kubeconfig context; None: in-cluster credentials (Dagster on the cluster), else the current "
        "context of $KUBECONFIG.",
    )
    poll_interval_s: float = Field(default=2.0, description="Pause between two reads of a rollout or a Job.")
    rollout_timeout_s: float | None = Field(
        default=None, description="Give up on a rollout after this long; None: progressDeadlineSeconds + 60 s."
    )
    job_timeout_s: float = Field(default=6 * 3600, description="Give up on a download or benchmark Job after this.")

    def target(self, platform: Platform) -> KubernetesCluster:
        settings = KubernetesTargetSettings(
            poll_interval_s=self.poll_interval_s,
            rollout_timeout_s=self.rollout_timeout_s,
            job_timeout_s=self.job_timeout_s,
        )
        return KubernetesCluster(KubeApi.from_kubeconfig(self.kube_context), platform, settings)

    def serving_target(self, platform: Platform) -> KubernetesTarget:
        return KubernetesTarget(self.target(effective_platform(platform)), Path(self.artifacts_root))


def kubernetes_target_from_env() -> KubernetesTargetResource:
    """``LLM_PLATFORM_KUBE_CONTEXT`` picks the kubeconfig context if set; ``$LLM_PLATFORM_ARTIFACTS`` is required,
    since no directory of a run pod outlives the run."""
    if not os.environ.get(ARTIFACTS_ENV_VAR):
        raise PlatformError(
            f"{ARTIFACTS_ENV_VAR} is not set: on the kubernetes target the benchmark and tuning artefacts need a "
            "volume mounted into every run pod (k8s/dagster/values.yaml mounts one at /artifacts)"
        )
    return KubernetesTargetResource(kube_context=os.environ.get("LLM_PLATFORM_KUBE_CONTEXT") or None)


def target_kind_from_env() -> str:
    """``$LLM_PLATFORM_TARGET``: where the code location deploys models, ``local`` (default) or ``kubernetes``."""
    kind = os.environ.get(TARGET_ENV_VAR) or "local"
    if kind not in TARGET_KINDS:
        raise PlatformError(f"{TARGET_ENV_VAR}={kind!r} is not a target; use one of: {', '.join(TARGET_KINDS)}")
    return kind


def target_from_env(kind: str, weights: WeightsResource) -> TargetResource:
    """The one target of the code location, configured from the environment."""
    return kubernetes_target_from_env() if kind == "kubernetes" else local_target_from_env(weights)


class PrometheusResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Prometheus that scrapes the serving models: the catalog's ``platform.prometheus_url`` (the one KEDA
    queries), or ``$LLM_PLATFORM_PROMETHEUS_URL`` where the code location reaches it elsewhere (``make run``'s)."""

    url: str = Field(description="Base URL of Prometheus' HTTP API.")
    timeout_s: float = Field(default=10.0, description="Per-query timeout.")

    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url, timeout_s=self.timeout_s)


#: The config schema of a sealed resource: nothing (an empty dict is accepted, any key refused).
NO_CONFIG = dg.Shape({})  # type: ignore[no-untyped-call]


def sealed(resource: dg.ConfigurableResource, description: str) -> dg.ResourceDefinition:  # type: ignore[type-arg]
    """``resource`` as a definition whose run config must be empty: a run's ``resources:`` section can no longer
    point the target at another interpreter, API-key file or hub, or change what the platform keeps. Settings belong
    to the code location (its environment and the catalog), which operators control; runs are launched by anyone
    with access to the UI or the API. Dagster answers an attempt with "Received unexpected config entry …"."""
    return dg.ResourceDefinition(resource_fn=lambda _: resource, config_schema=NO_CONFIG, description=description)


def resources_from_env(platform: Platform, target_kind: str) -> dict[str, object]:
    """Every resource of the code location, configured from the environment and the catalog's platform section,
    and sealed against run config."""
    from llm_platform.defs.storage import InstanceValueIOManager

    weights = weights_resource_from_env(platform)
    target = target_from_env(target_kind, weights)
    return {
        "io_manager": dg.IOManagerDefinition(
            resource_fn=lambda _: InstanceValueIOManager(),
            config_schema=NO_CONFIG,
            description="Lifecycle values as JSON with their materializations.",
        ),
        "target": sealed(target, f"Where models are served: the {target_kind} target."),
        "weights": sealed(weights, "The hub and the model store."),
        "prometheus": sealed(
            PrometheusResource(url=target.prometheus_url(platform)), "The Prometheus that scrapes vLLM."
        ),
    }
