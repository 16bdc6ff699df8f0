"""The model catalog (pure core): the schema an operator edits (``schema``), the checks across fields and models
(``checks``), parsing with one readable line per problem (``parsing``) and typed changes (``patches``). Reading the
file and the environment is ``llm_platform.catalog_files``'s job."""

from llm_platform.catalog.checks import (
    QuotaBudget,
    max_replicas_within_quota,
    model_problems,
    model_warnings,
    peak_replicas,
    platform_warnings,
    position_limit,
    quota_problems,
)
from llm_platform.catalog.fingerprint import config_fingerprint
from llm_platform.catalog.parsing import parse_assignments, parse_catalog, parse_catalog_text
from llm_platform.catalog.patches import ModelPatch, apply_serving_overrides, diff_table, patch_between
from llm_platform.catalog.schema import (
    DEFAULT_ALLOW_PATTERNS,
    DEFAULT_VLLM_IMAGE_TAG,
    GPU_TYPES,
    MAX_MODEL_NAME_LENGTH,
    Autoscaling,
    Catalog,
    Exposure,
    ModelSpec,
    Platform,
    Resources,
    Rollout,
    Serving,
    Slo,
    Source,
    Toleration,
    Traffic,
    is_commit_sha,
)

__all__ = [
    "DEFAULT_ALLOW_PATTERNS",
    "DEFAULT_VLLM_IMAGE_TAG",
    "GPU_TYPES",
    "MAX_MODEL_NAME_LENGTH",
    "Autoscaling",
    "Catalog",
    "Exposure",
    "ModelPatch",
    "ModelSpec",
    "Platform",
    "QuotaBudget",
    "Resources",
    "Rollout",
    "Serving",
    "Slo",
    "Source",
    "Toleration",
    "Traffic",
    "apply_serving_overrides",
    "config_fingerprint",
    "diff_table",
    "is_commit_sha",
    "max_replicas_within_quota",
    "model_problems",
    "model_warnings",
    "parse_assignments",
    "parse_catalog",
    "parse_catalog_text",
    "patch_between",
    "peak_replicas",
    "platform_warnings",
    "position_limit",
    "quota_problems",
]
