"""What the lifecycle assets hand each other (stored by Dagster's IO manager between steps and runs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from llm_platform.catalog import ModelSpec
from llm_platform.engine import config_fingerprint
from llm_platform.weights.plan import SnapshotManifest


@dataclass(frozen=True)
class ServingChoice:
    """``serving_config``: the model with its effective serving section, on one weights commit."""

    model: ModelSpec
    weights: SnapshotManifest
    overrides: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return config_fingerprint(self.model.serving, self.weights.sha)


@dataclass(frozen=True)
class BenchmarkOutcome:
    """``smoke_benchmark``: the results table and the verdict, tied to the config they were measured on."""

    frame: pd.DataFrame
    config_fingerprint: str
    slo_passed: bool
    concurrency_levels: tuple[int, ...]


@dataclass(frozen=True)
class DeploymentRecord:
    """``vllm_deployment``: what serves now, and the benchmark of its promotion (the live benchmark's baseline)."""

    choice: ServingChoice
    endpoint: str
    baseline: BenchmarkOutcome
    revision_label: str
