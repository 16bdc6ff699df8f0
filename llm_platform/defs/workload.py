"""The ``traffic_profile`` asset: what a model really served, from Prometheus, for the benchmarks, plans and tuning
that should be judged on it.

No ``from __future__ import annotations`` here: Dagster reads the config annotations at runtime.
"""

import base64

import dagster as dg
from pydantic import Field

from llm_platform.catalog import Catalog, ModelSpec
from llm_platform.conventions import TRAFFIC_PROFILE_ASSET
from llm_platform.defs.failures import refuse_environment_references
from llm_platform.defs.metadata import table_metadata
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.weights import lifecycle_asset_options
from llm_platform.engine import engine_for
from llm_platform.errors import PlatformError
from llm_platform.workload import TrafficProfile, build_profile, window_problem
from llm_platform.workload_report import figures_frame, profile_png

TRAFFIC_GROUP = "traffic"


class ProfileConfig(dg.Config):
    """Run configuration of ``traffic_profile``."""

    window_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="How far back to read the model's traffic (at most what "
        "Prometheus retains; a longer window is refused in one line)."
    )  # fmt: skip


def read_profile(model: ModelSpec, prometheus: PrometheusResource, window_s: int) -> TrafficProfile:
    """The model's profile over the last ``window_s`` seconds; the catalog's traffic section, with the reason as a
    note, when Prometheus cannot say (unreachable, too little traffic). A window longer than Prometheus retains is
    the caller's mistake: a ``Failure`` with one line."""
    client = prometheus.client()
    try:
        retention = client.retention_s()
    except PlatformError as error:
        return TrafficProfile.from_catalog(model, window_s, 0, f"metrics unavailable: {error}")
    problem = window_problem(window_s, retention)
    if problem is not None:
        raise dg.Failure(description=f"model '{model.name}': {problem}", allow_retries=False)
    try:
        measured = client.measured_traffic(model.name, window_s, engine_for(model.serving).metrics)
    except PlatformError as error:
        return TrafficProfile.from_catalog(model, window_s, 0, f"metrics unavailable: {error}")
    return build_profile(model, window_s, measured)


def build_traffic_profile_asset(catalog: Catalog, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=TRAFFIC_PROFILE_ASSET,
        kinds={"prometheus", "pandas"},
        dagster_type=dg.Any,
        # A group of its own: "Materialize all" of the lifecycle reads no traffic it does not use yet.
        **lifecycle_asset_options(catalog, partitions, group=TRAFFIC_GROUP),
        description=(
            "What the model really served over a window (default 24 h), from vLLM's metrics in Prometheus: prompt "
            "and generation length distributions (quantiles and the histogram benchmarks draw from), the median and "
            "peak 5-minute request rate, running and waiting requests, prefix-cache hit ratio, finish reasons. With "
            "too little traffic the catalog's traffic section stands in, and the metadata says so."
        ),
    )
    def traffic_profile(
        context: dg.AssetExecutionContext, config: ProfileConfig, prometheus: PrometheusResource
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        refuse_environment_references(context)
        model = catalog.model(context.partition_key)
        profile = read_profile(model, prometheus, round(config.window_hours * 3600))
        for note in profile.notes:
            context.log.warning(f"model '{model.name}': {note}")
        context.log.info(profile.described)
        png = base64.b64encode(profile_png(profile)).decode()
        return dg.MaterializeResult(
            value=profile,
            metadata={
                "profile": dg.MetadataValue.text(profile.described),
                "source": dg.MetadataValue.text(profile.source),
                "requests": dg.MetadataValue.float(profile.requests),
                "figures": table_metadata(figures_frame(profile)),
                "notes": dg.MetadataValue.md("\n".join(f"- {note}" for note in profile.notes) or "none"),
                "lengths_plot": dg.MetadataValue.md(f"![request lengths](data:image/png;base64,{png})"),
            },
        )

    return traffic_profile
