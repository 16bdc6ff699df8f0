"""The code location ``workspace.yaml`` loads: the catalog, validated, turned into Dagster definitions.

A bad catalog stops the load with the catalog's own one-line-per-problem message, which the Dagster UI and
``dagster definitions validate`` show as the code location's error (without our frames: the message says it all).
"""

from __future__ import annotations

import dagster as dg

from llm_platform.catalog import Catalog, load_catalog
from llm_platform.defs.benchmark import build_benchmark_asset
from llm_platform.defs.deployment import build_deployment_asset
from llm_platform.defs.partitions import model_partitions
from llm_platform.defs.resources import local_target_from_env, weights_resource_from_env
from llm_platform.defs.weights import build_weights_asset
from llm_platform.errors import CatalogError


def build_definitions(catalog: Catalog) -> dg.Definitions:
    """All definitions for ``catalog``."""
    partitions = model_partitions(catalog)
    return dg.Definitions(
        assets=[
            build_weights_asset(catalog, partitions),
            build_benchmark_asset(catalog, partitions),
            build_deployment_asset(catalog, partitions),
        ],
        resources={"weights": weights_resource_from_env(), "local_target": local_target_from_env()},
        metadata={"models": dg.MetadataValue.text(", ".join(partitions.get_partition_keys()))},
    )


def _load_catalog() -> Catalog:
    try:
        return load_catalog()
    except CatalogError as error:
        raise error.with_traceback(None) from None


defs = build_definitions(_load_catalog())
