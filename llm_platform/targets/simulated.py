"""The simulated GPU server as a trial backend: the auto-tuner's trials answered by the simulated vLLM scheduler,
driven by AIConfigurator's step times for the plan's GPU type. No GPU, no server; what the real targets' trials
answer (a :class:`~llm_platform.tuning.search.Trial` per candidate), so the search cannot tell them apart."""

from __future__ import annotations

from pathlib import Path

from llm_platform.catalog import ModelSpec
from llm_platform.errors import PlatformError
from llm_platform.perfmodel import engine_defaults, open_perf_model
from llm_platform.planning.plan import ServingPlan
from llm_platform.planning.trials import SimulatedTrials
from llm_platform.targets.base import Log, TrialBackend, TrialSettings, no_log
from llm_platform.tuning.search import TrialRunner
from llm_platform.weights.plan import SnapshotManifest


class SimulatedGpuTrials(TrialBackend):
    """Trials on the simulated GPU server of ``plan`` (the model's serving plan), with seeded measurement noise."""

    def __init__(self, plan: object, *, noise: float, seed: int) -> None:
        self.plan = plan
        self.noise = noise
        self.seed = seed

    def trial_runner(
        self, model: ModelSpec, weights: SnapshotManifest, settings: TrialSettings, *, run_key: str, work_dir: Path,
        log: Log = no_log,
    ) -> TrialRunner:  # fmt: skip
        plan = self.plan
        if not isinstance(plan, ServingPlan) or plan.note or not plan.model_ref:
            why = plan.note if isinstance(plan, ServingPlan) and plan.note else "no serving_plan materialized"
            raise PlatformError(
                f"model '{model.name}': simulated trials need a serving plan with a performance model ({why}); set "
                "platform.gpu_type and materialize serving_plan, or run with trials: target"
            )
        perf = open_perf_model(plan.model_ref, plan.gpu_type, model.serving.tensor_parallel_size)
        return SimulatedTrials(
            perf, model.slo, engine_defaults(model, plan.gpu_type), settings.plan.input_len, settings.plan.output_len,
            load_low=settings.load_low, load_high=settings.load_high, prompts_per_load=settings.prompts_per_load,
            noise=self.noise, seed=self.seed, lengths=settings.plan.requests,
        )  # fmt: skip
