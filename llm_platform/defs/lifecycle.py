"""The lifecycle asset graph of every catalog model, for one target."""

from __future__ import annotations

import dagster as dg

from llm_platform.catalog import Catalog
from llm_platform.defs.benchmark import build_benchmark_asset, build_live_benchmark_asset
from llm_platform.defs.deployment import build_deployment_asset
from llm_platform.defs.partitions import model_partitions
from llm_platform.defs.planning import build_serving_plan_asset
from llm_platform.defs.serving import build_serving_config_asset
from llm_platform.defs.tuning import build_tuned_serving_config_asset
from llm_platform.defs.weights import build_adapter_weights_asset, build_weights_asset
from llm_platform.defs.workload import build_traffic_profile_asset


def lifecycle_assets(catalog: Catalog) -> list[dg.AssetsDefinition]:
    """model_weights → serving_plan (AIConfigurator's estimate, before the GPU hour) and adapter_weights (the
    model's LoRA adapters) → serving_config →
    smoke_benchmark (blocking SLO checks) → vllm_deployment → live_benchmark,
    partitioned by model, with model_weights → tuned_serving_config (auto_tune) feeding serving_config; and
    traffic_profile (what the model really served, from Prometheus)."""
    partitions = model_partitions(catalog)
    return [
        build_weights_asset(catalog, partitions),
        build_adapter_weights_asset(catalog, partitions),
        build_serving_plan_asset(catalog, partitions),
        build_tuned_serving_config_asset(catalog, partitions),
        build_serving_config_asset(catalog, partitions),
        build_benchmark_asset(catalog, partitions),
        build_deployment_asset(catalog, partitions),
        build_live_benchmark_asset(catalog, partitions),
        build_traffic_profile_asset(catalog, partitions),
    ]
