"""One Dagster partition per catalog model: materializing a partition runs that model's lifecycle."""

from __future__ import annotations

import dagster as dg

from llm_platform.catalog import Catalog


def model_partitions(catalog: Catalog) -> dg.StaticPartitionsDefinition:
    """Static partitions keyed by model name (catalog names are DNS labels, valid partition keys)."""
    return dg.StaticPartitionsDefinition(catalog.model_names)
