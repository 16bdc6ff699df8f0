"""The ``serving_config`` asset: the engine configuration a run benchmarks and promotes.

The catalog's serving section plus the overrides of this run (run config, the ``--set`` of ``llm-platform
promote``, or the drift sensor's proposal), validated exactly like the catalog. Its value carries the weights it
applies to, so that the benchmark and the deployment downstream act on one consistent choice.

No ``from __future__ import annotations`` here: Dagster reads the config annotations at runtime.
"""

import dagster as dg
from pydantic import Field

from llm_platform.catalog import Catalog, ModelPatch, ModelSpec, diff_table
from llm_platform.conventions import SERVING_CONFIG_ASSET, TUNED_ASSET
from llm_platform.defs.failures import platform_errors_as_failure, refuse_environment_references
from llm_platform.defs.resources import TargetResource
from llm_platform.defs.tuning import tuned_overrides
from llm_platform.defs.values import ServingChoice
from llm_platform.defs.weights import lifecycle_asset_options
from llm_platform.engine import engine_for
from llm_platform.tuning.policy import crash_decision
from llm_platform.weights.plan import SnapshotManifest


class ServingOverrides(dg.Config):
    """Run configuration of ``serving_config``."""

    overrides: dict[str, str] = Field(
        default_factory=dict,
        description="serving (and autoscaling.*, resources.*) fields to change for this run, e.g. {max_num_seqs: "
        "'64', autoscaling.max_replicas: '3'}; values are read as YAML scalars, as in the catalog file, and "
        "validated like it, with the model's position limit from its weights.",
    )
    reason: str = Field(default="", description="Why this config is tried (the drift sensor states its finding).")
    diagnose_crash: bool = Field(
        default=False,
        description="Read the model's crashed vLLM containers' termination messages first (the drift sensor asks "
        "for it on crash restarts): a CUDA out-of-memory adds the GPU-memory change to the overrides, any other "
        "crash fails the run with the pod and its message, before anything is benchmarked or deployed.",
    )


def build_serving_config_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=SERVING_CONFIG_ASSET,
        kinds={"vllm"},
        **lifecycle_asset_options(catalog, partitions),
        dagster_type=dg.Any,
        deps=[TUNED_ASSET],
        description=(
            "The vLLM engine configuration to benchmark and promote: the catalog's serving section, the adopted "
            "auto_tune result, and this run's overrides (validated like the catalog), on the materialized weights "
            "and adapters. "
            "Metadata shows the diff against the catalog and the engine arguments."
        ),
    )
    def serving_config(
        context: dg.AssetExecutionContext,
        config: ServingOverrides,
        adapter_weights: SnapshotManifest,
        target: TargetResource,
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        refuse_environment_references(context)
        model = catalog.model(context.partition_key)
        limit = adapter_weights.max_position_tokens  # from the weights' config.json: checked on every change
        tuned = tuned_overrides(context.instance, model.name)
        with platform_errors_as_failure():
            adopted = ModelPatch.parse(model, tuned, origin="adopted tuning", position_limit=limit)
            requested = ModelPatch.parse(
                model, config.overrides, origin="serving_config run config", position_limit=limit
            )
            if config.diagnose_crash:
                requested = requested.merged(
                    _crash_patch(context, adopted.merged(requested).apply(model), target, catalog, limit)
                )
            # The run's own overrides win over the adopted tuning.
            effective = adopted.merged(requested).apply(
                model, origin=SERVING_CONFIG_ASSET, position_limit=limit, fleet=catalog
            )
        if adopted:
            context.log.info(f"model '{model.name}': adopted auto-tune overrides: {adopted.describe()}")
        choice = ServingChoice(effective, adapter_weights)  # the weights as served: base and adapters
        diff = diff_table(model, effective)
        if diff:
            changes = ", ".join(f"{key} {old!r} → {new!r}" for key, (old, new) in diff.items())
            context.log.info(f"model '{model.name}': serving overrides: {changes}")
        rows = [
            dg.TableRecord({"field": key, "catalog": repr(old), "effective": repr(new)})
            for key, (old, new) in diff.items()
        ]
        return dg.MaterializeResult(
            value=choice,
            data_version=dg.DataVersion(choice.fingerprint),
            metadata={
                "config_fingerprint": dg.MetadataValue.text(choice.fingerprint),
                "weights_sha": dg.MetadataValue.text(adapter_weights.sha),
                "adapters": dg.MetadataValue.json(adapter_weights.adapter_commits),
                "overridden_fields": dg.MetadataValue.int(len(diff)),
                "diff_vs_catalog": dg.TableMetadataValue(
                    records=rows,
                    schema=dg.TableSchema(
                        columns=[
                            dg.TableColumn("field", "string"),
                            dg.TableColumn("catalog", "string"),
                            dg.TableColumn("effective", "string"),
                        ]
                    ),
                ),
                "engine_args": dg.MetadataValue.json(
                    list(
                        engine_for(effective.serving).server_args(
                            effective.serving, served_model_name=model.name, weights_path="<weights>"
                        )
                    )
                ),
                "serving": dg.MetadataValue.json(effective.serving.model_dump(mode="json")),
                "autoscaling": dg.MetadataValue.json(effective.autoscaling.model_dump(mode="json")),
                "tuned_overrides": dg.MetadataValue.json(tuned),
                "reason": dg.MetadataValue.text(
                    config.reason or ("catalog" if not diff else "run config" if config.overrides else "auto_tune")
                ),
            },
        )

    return serving_config


def _crash_patch(
    context: dg.AssetExecutionContext, deployed: ModelSpec, target: TargetResource, catalog: Catalog, limit: int | None
) -> ModelPatch:
    """The change a crash loop calls for, from the crashed containers' termination messages (this run may read the
    serving namespace's pods; the sensor that asked may not); a crash that no setting cures fails the run."""
    crashes = target.serving_target(catalog.platform).crashes(deployed)
    decision = crash_decision(deployed, crashes)
    context.log.info(f"model '{deployed.name}': crash diagnosis: {decision.reason}")
    if decision.kind != "recommend":
        raise dg.Failure(description=f"model '{deployed.name}': no redeploy: {decision.reason}", allow_retries=False)
    return ModelPatch.parse(deployed, decision.overrides, origin="crash diagnosis", position_limit=limit)
