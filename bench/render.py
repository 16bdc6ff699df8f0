"""Render and validate N generated catalog models; compare with validating through kubernetes-validate directly.

Our figure: parse a generated catalog of N models, render every object (serving objects, weights PVC and
download Job) and validate each strictly for Kubernetes 1.30 and 1.33 (core kinds) and against the KEDA CRD
schema. The reference: the same core objects validated with ``kubernetes_validate.validate(strict=True)``, the
library's own entry point, which reloads its schemas for every object; it takes ~0.18 s a model, so it runs on the
first ``--reference-models`` models and the ratio compares time per model. Goal: ours <= 5 s for 500 models.

    .venv/bin/python bench/render.py [--models 500] [--repeat 5] [--reference-models 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import kubernetes_validate
from shortmode import parse_options

from llm_platform.catalog import parse_catalog
from llm_platform.manifests.jobs import render_weights_job, render_weights_pvc
from llm_platform.manifests.serving import render_model
from llm_platform.manifests.validation import KUBERNETES_VERSIONS, validate_objects


def generated_catalog(count: int) -> dict[str, Any]:
    """``count`` distinct models that vary every section the renderers read."""
    models = []
    for index in range(count):
        models.append(
            {
                "name": f"model-{index:04d}",
                "source": {"repo": f"org/model-{index}", "revision": "main" if index % 2 else f"v{index}"},
                "serving": {
                    "max_model_len": 2048 * (1 + index % 4),
                    "max_num_seqs": 16 * (1 + index % 8),
                    "enable_prefix_caching": bool(index % 3),
                    "extra_args": ["--seed", str(index)],
                },
                "autoscaling": {"max_replicas": 1 + index % 3, "waiting_threshold": 1 + index % 7},
                "exposure": {"host": f"model-{index}.llm.example.com", "tls_secret": f"model-{index}-tls"}
                if index % 2
                else {},
            }
        )
    # The quota check sums every model's minimum; a generated fleet this large gets a quota to match.
    return {"platform": {"gpu_quota": 2 * count}, "models": models}


def render_and_validate(data: dict[str, Any]) -> list[dict[str, Any]]:
    catalog = parse_catalog(data, origin="generated")
    objects = [render_weights_pvc(catalog.platform)]
    for model in catalog.models:
        objects += render_model(catalog.platform, model)
        objects.append(render_weights_job(catalog.platform, model, model.source.revision))
    validate_objects(objects)
    return objects


def reference_validate(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh"):
            continue  # kubernetes-validate has no CRD schemas
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-models", type=int, default=50)
    options = parse_options(parser, {"models": 20, "repeat": 1, "reference_models": 2})

    data = generated_catalog(options.models)
    start = time.perf_counter()
    render_and_validate(generated_catalog(2))  # loads and compiles the schemas, once per process
    cold = time.perf_counter() - start
    ours = []
    for _ in range(options.repeat):
        start = time.perf_counter()
        objects = render_and_validate(data)
        ours.append(time.perf_counter() - start)
    sample = render_and_validate(generated_catalog(options.reference_models))
    start = time.perf_counter()
    reference_validate(sample)
    reference = time.perf_counter() - start
    per_model_ours = statistics.median(ours) / options.models
    per_model_reference = reference / options.reference_models

    ours_median = statistics.median(ours)
    core = sum(1 for obj in objects if not obj["apiVersion"].startswith("keda.sh"))
    print(
        f"models: {options.models}, objects: {len(objects)} ({core} core kinds x {len(KUBERNETES_VERSIONS)} versions)"
    )
    print(
        f"ours (parse + render + validate, median of {options.repeat}): {ours_median:.3f} s  runs: "
        + ", ".join(f"{run:.3f}" for run in ours)
    )
    print(
        f"reference (kubernetes_validate.validate, core objects only, {options.reference_models} models, 1 run): "
        f"{reference:.3f} s = {per_model_reference * 1000:.1f} ms a model"
    )
    print(
        f"models={options.models} render_validate_s={ours_median:.3f} ms_per_model={per_model_ours * 1000:.2f} "
        f"reference_ms_per_model={per_model_reference * 1000:.1f} ratio={per_model_reference / per_model_ours:.0f} "
        f"schema_load_s={cold:.3f} goal_s=5 goal_met={ours_median + cold <= 5}"
    )


if __name__ == "__main__":
    main()
