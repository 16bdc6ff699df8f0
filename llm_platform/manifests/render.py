"""Everything ``llm-platform render`` writes: the serving objects of every model, the shared weights store and
each model's download Job, as files of YAML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from llm_platform.catalog import Catalog, Platform
from llm_platform.manifests.jobs import render_weights_job, render_weights_network_policy, render_weights_pvc
from llm_platform.manifests.pods import Object
from llm_platform.manifests.serving import render_model


def render_platform(platform: Platform) -> list[Object]:
    """Objects the catalog defines once for all models (the weights store and its download Jobs' network policy)."""
    return [render_weights_pvc(platform), render_weights_network_policy(platform)]


def render_files(catalog: Catalog, names: Sequence[str] | None = None) -> dict[str, list[Object]]:
    """Objects grouped by the file ``llm-platform render --out`` writes them to.

    ``platform.yaml`` holds the shared weights store; ``<model>.yaml`` the serving objects (applied together on a
    promotion); ``<model>.weights-job.yaml`` the download Job for Hugging Face sources (launched, not applied).
    """
    files: dict[str, list[Object]] = {"platform.yaml": render_platform(catalog.platform)}
    models = [catalog.model(name) for name in names] if names else list(catalog.models)
    for model in models:
        files[f"{model.name}.yaml"] = render_model(catalog.platform, model)
        if model.source.repo is not None:
            files[f"{model.name}.weights-job.yaml"] = [
                render_weights_job(catalog.platform, model, model.source.revision)
            ]
    return files


def dump_yaml(objects: Sequence[Mapping[str, Any]], header: str = "") -> str:
    """Objects as one multi-document YAML text, keys in render order (the order a reader expects)."""
    body = yaml.safe_dump_all([dict(obj) for obj in objects], sort_keys=False, default_flow_style=False, width=120)
    return (f"# {header}\n" if header else "") + body
