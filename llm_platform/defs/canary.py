"""A canary promotion from ``vllm_deployment``: the target's :class:`~llm_platform.targets.base.CanaryRollout`
moved by :func:`~llm_platform.canary.run_canary`, judged on Prometheus' per-track figures, and the rollout's table
and plot as metadata (on the materialization, or on the failure of an aborted canary).

No ``from __future__ import annotations`` here: Dagster reads the resource annotations at runtime.
"""

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dagster as dg

from llm_platform.canary import CanaryResult, StepRecord, TrackFigures, run_canary
from llm_platform.canary_report import plot_png, steps_frame
from llm_platform.catalog import Catalog, ModelSpec, Rollout
from llm_platform.conventions import CANARY_TRACK, STABLE_TRACK
from llm_platform.defs.failures import platform_errors_as_failure
from llm_platform.defs.metadata import table_metadata
from llm_platform.defs.resources import TargetResource
from llm_platform.engine import engine_for
from llm_platform.errors import PlatformError
from llm_platform.prometheus import PrometheusClient
from llm_platform.targets.base import CanaryRollout, CanaryState, Deployment

ABANDONED_GRACE_S = 60
CANARY_ROLLBACK_JOB = "roll_back_canary"


def abandoned_after_s(rollout: Rollout) -> float:
    """How long a canary's driver may be silent before its canary counts as abandoned: it judges at least every
    ``step_seconds``, so two of those and a minute of slack."""
    return 2 * rollout.step_seconds + ABANDONED_GRACE_S


def abandoned_judge(instance: dg.DagsterInstance, rollout: Rollout) -> Callable[[CanaryState], bool]:
    """Whether a canary found on the target is abandoned: the run that drives it has finished (failed, canceled:
    its pod was evicted and run monitoring said so) or it has been silent past :func:`abandoned_after_s` (a run
    that died unnoticed)."""

    def abandoned(state: CanaryState) -> bool:
        if state.silent_s >= abandoned_after_s(rollout):
            return True
        run = instance.get_run_by_id(state.owner)
        return run is not None and run.is_finished

    return abandoned


def build_canary_rollback_job(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.JobDefinition:
    """``roll_back_canary``: withdraws the abandoned canary of one model (its partition), in a run of its own (a run
    pod holds the serving namespace's rights; the sensor that requests it does not)."""

    @dg.op(name="roll_back_abandoned_canary")
    def roll_back_abandoned_canary(context: dg.OpExecutionContext, target: TargetResource) -> None:
        model = catalog.model(context.partition_key)
        with platform_errors_as_failure():
            done = target.serving_target(catalog.platform).roll_back_abandoned_canary(
                model, abandoned=abandoned_judge(context.instance, model.rollout), log=context.log.info
            )
        context.log.info(f"model '{model.name}': {done or 'no canary left behind'}")

    @dg.job(
        name=CANARY_ROLLBACK_JOB,
        partitions_def=partitions,
        description="Withdraw a canary whose promotion run died: the weight back to 0, the canary removed, the "
        "stable version untouched. Requested by abandoned_canary_sensor.",
    )
    def roll_back_canary() -> None:
        roll_back_abandoned_canary()

    return roll_back_canary


@dataclass
class LiveTracks:
    """The judge's view of a rollout: the target's split, and each track's figures from Prometheus."""

    rollout: CanaryRollout
    prometheus: PrometheusClient
    model: ModelSpec

    def set_canary_weight(self, percent: int) -> None:
        self.rollout.set_weight(percent)

    def track_figures(self, window_s: int) -> Mapping[str, TrackFigures]:
        self.rollout.keep_alive()
        return self.prometheus.track_figures(self.model.name, window_s, engine_for(self.model.serving).metrics)


def rollout_metadata(model: ModelSpec, result: CanaryResult) -> dict[str, dg.MetadataValue]:
    """The rollout's table (a row per judgement) and the plot of both tracks."""
    frame = steps_frame(result)
    image = base64.b64encode(plot_png(model.name, frame)).decode()
    return {
        "canary_steps": table_metadata(frame),
        "canary_outcome": dg.MetadataValue.text("promoted" if result.promoted else f"aborted at {result.reason}"),
        "canary_plot": dg.MetadataValue.md(f"![both tracks over the canary rollout](data:image/png;base64,{image})"),
    }


def promote_as_canary(
    rollout: CanaryRollout,
    model: ModelSpec,
    prometheus: PrometheusClient,
    log: Callable[[str], None],
) -> tuple[Deployment, dict[str, dg.MetadataValue]]:
    """Take the canary through the model's steps; promoted, the deployment and the rollout's metadata. Aborted (or
    interrupted by any error), the canary is withdrawn and the run fails with the judge's reason; the stable
    version serves as before."""

    def logged(record: StepRecord) -> None:
        log(f"model '{model.name}': canary at {record.weight} % after {record.elapsed_s:.0f} s: "
            f"{record.verdict.outcome}: {record.verdict.reason}")  # fmt: skip

    log(f"model '{model.name}': canary {rollout.canary_revision}: steps {list(model.rollout.steps)} %, "
        f"{model.rollout.step_seconds} s each")  # fmt: skip
    try:
        result = run_canary(
            LiveTracks(rollout, prometheus, model), model.rollout, model.slo, canary_track=CANARY_TRACK,
            stable_track=STABLE_TRACK, clock=rollout.now, sleep=rollout.wait, on_step=logged,
        )  # fmt: skip
    except BaseException as error:  # the run is stopping or Prometheus failed: never leave a canary behind
        rollout.abort(log)
        if isinstance(error, PlatformError):
            raise dg.Failure(
                description=f"model '{model.name}': canary withdrawn, the stable version serves as before: {error}",
                allow_retries=False,
            ) from None
        raise
    metadata = rollout_metadata(model, result)
    if not result.promoted:
        rollout.abort(log)
        raise dg.Failure(
            description=f"model '{model.name}': canary aborted at {result.reason}; the stable version serves as before",
            metadata=metadata,
            allow_retries=False,
        )
    return rollout.promote(log), metadata
