"""The ``serving_plan`` asset: AIConfigurator's estimate of every candidate engine config on the cluster's GPU type,
before the smoke benchmark spends GPU time. An unknown GPU type or model is a note in the plan, never a failure.

No ``from __future__ import annotations`` here: Dagster reads the config and resource annotations at runtime.
"""

import base64

import dagster as dg
from pydantic import Field

from llm_platform.catalog import Catalog
from llm_platform.conventions import PLAN_ASSET, TRAFFIC_PROFILE_ASSET
from llm_platform.defs.failures import refuse_environment_references
from llm_platform.defs.metadata import table_metadata
from llm_platform.defs.resources import TargetResource
from llm_platform.defs.storage import latest_value
from llm_platform.defs.weights import lifecycle_asset_options
from llm_platform.perfmodel import plan_model
from llm_platform.planning.plan import PlanAxes, ServingPlan
from llm_platform.planning.report import plan_png
from llm_platform.weights.plan import SnapshotManifest
from llm_platform.workload import TrafficProfile, planned_traffic

PLAN_CHECK = "slo_feasible"


class PlanConfig(dg.Config):
    """Run configuration of ``serving_plan``: the candidate values per engine argument."""

    tensor_parallel_size: list[int] = Field(
        default=list(PlanAxes.tensor_parallel_size), description="Candidate TP sizes (those above the quota or 8 are "
        "skipped)."
    )  # fmt: skip
    max_num_seqs: list[int] = Field(default=list(PlanAxes.max_num_seqs), description="Candidate max_num_seqs.")
    max_num_batched_tokens: list[int] = Field(
        default=list(PlanAxes.max_num_batched_tokens), description="Candidate max_num_batched_tokens."
    )
    gpu_memory_utilization: list[float] = Field(default=[], description="Empty: the catalog's value.")
    max_model_len: list[int] = Field(default=[], description="Empty: the catalog's value.")

    def axes(self) -> PlanAxes:
        return PlanAxes(
            tuple(self.tensor_parallel_size), tuple(self.max_num_seqs), tuple(self.max_num_batched_tokens),
            tuple(self.gpu_memory_utilization), tuple(self.max_model_len),
        )  # fmt: skip


def plan_metadata(plan: ServingPlan) -> dict[str, dg.MetadataValue]:
    """The plan in the UI: the verdict, the table of candidates, the best start and a plot."""
    metadata: dict[str, dg.MetadataValue] = {
        "verdict": dg.MetadataValue.text(plan.verdict),
        "gpu_type": dg.MetadataValue.text(plan.gpu_type or "unset"),
    }
    if plan.note:
        return metadata
    frame = plan.frame()
    metadata["candidates"] = table_metadata(frame)
    best = plan.best
    if best is not None:
        metadata["best_start"] = dg.MetadataValue.json(
            {"tensor_parallel_size": best.tensor_parallel_size, **best.overrides}
        )
        metadata["best_output_tok_s"] = dg.MetadataValue.float(best.output_tokens_per_s)
        metadata["best_concurrency"] = dg.MetadataValue.int(best.concurrency)
    png = base64.b64encode(plan_png(plan.model, frame)).decode()
    metadata["plot"] = dg.MetadataValue.md(f"![output tok/s per GPU at the SLO](data:image/png;base64,{png})")
    return metadata


def build_serving_plan_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=PLAN_ASSET,
        kinds={"nvidia", "pandas"},
        dagster_type=dg.Any,  # the value is a ServingPlan (see smoke_benchmark on annotations with checks)
        **lifecycle_asset_options(catalog, partitions),
        deps=[TRAFFIC_PROFILE_ASSET],  # planned for the measured traffic when there is a profile
        check_specs=[
            dg.AssetCheckSpec(
                PLAN_CHECK,
                asset=PLAN_ASSET,
                blocking=False,
                description="some planned engine config meets the model's SLO on platform.gpu_type (a warning: "
                "the estimate is not a measurement)",
            )
        ],
        description=(
            "Before any GPU hour: NVIDIA AIConfigurator's estimate of the model on platform.gpu_type for each "
            "candidate tensor-parallel size, max_num_seqs, max_num_batched_tokens, gpu_memory_utilization and "
            "max_model_len, at the measured traffic_profile's mean lengths (else the catalog's traffic): does it "
            "fit, its KV cache, the highest concurrency meeting the SLO, and the best start for the auto-tuner. An "
            "SLO no config meets is reported with the nearest option."
        ),
    )
    def serving_plan(
        context: dg.AssetExecutionContext, config: PlanConfig, model_weights: SnapshotManifest, target: TargetResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]  # Dagster rejects a parametrized one with checks
        refuse_environment_references(context)
        model = catalog.model(context.partition_key)
        # The architecture: AIConfigurator's bundled config of the repository, else the weights' config.json where
        # this process can read it (the local store), else what the download recorded in the manifest.
        local_dir = model.source.path or target.serving_target(catalog.platform).readable_weights_dir(model_weights)
        profile = latest_value(context.instance, TRAFFIC_PROFILE_ASSET, model.name)
        planned, planned_for = planned_traffic(model, profile if isinstance(profile, TrafficProfile) else None)
        plan = plan_model(planned, catalog.platform.gpu_type, catalog.platform.gpu_quota, local_dir, config.axes(),
                          model_weights.architecture)  # fmt: skip
        context.log.info(f"{plan.verdict} (planned for {planned_for})")
        # Without a performance model there is nothing to judge: the check passes and says why.
        check = dg.AssetCheckResult(
            check_name=PLAN_CHECK, passed=bool(plan.note) or plan.best is not None,
            severity=dg.AssetCheckSeverity.WARN, metadata={"verdict": dg.MetadataValue.text(plan.verdict)},
        )  # fmt: skip
        metadata = {**plan_metadata(plan), "planned_for": dg.MetadataValue.text(planned_for)}
        if model.adapters:
            # AIConfigurator models the base alone; an adapter's extra matmuls and slots are not in the estimate.
            caveat = (
                f"the estimate does not model the overhead of the model's {len(model.adapters)} LoRA adapter(s) "
                "(AIConfigurator plans the base alone): the smoke benchmark measures it"
            )
            context.log.info(f"model '{model.name}': {caveat}")
            metadata["lora_caveat"] = dg.MetadataValue.text(caveat)
        return dg.MaterializeResult(value=plan, metadata=metadata, check_results=[check])

    return serving_plan
