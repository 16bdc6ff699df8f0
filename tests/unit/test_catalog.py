"""Catalog schema: defaults, and one readable line per problem for malformed catalogs."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_platform.catalog import (
    DEFAULT_ALLOW_PATTERNS,
    Catalog,
    is_commit_sha,
    parse_catalog,
    parse_catalog_text,
    position_limit,
)
from llm_platform.catalog_files import load_catalog
from llm_platform.errors import CatalogError, UnknownModelError


def _model(**overrides: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "llama", "source": {"repo": "org/llama"}}
    model.update(overrides)
    return model


def _problems(data: object, **kwargs: Any) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(data, origin="models.yaml", **kwargs)
    return caught.value.problems


def test_defaults_follow_the_seed_architecture() -> None:
    catalog = parse_catalog({"models": [_model()]})
    model = catalog.model("llama")
    assert model.serving.gpu_memory_utilization == 0.9
    assert model.serving.max_model_len == 4096
    assert model.serving.enable_chunked_prefill is True
    assert model.serving.image_tag.startswith("v")
    assert (model.autoscaling.min_replicas, model.autoscaling.max_replicas) == (1, 5)
    assert model.exposure.rate_limit_rps == 10
    assert model.exposure.timeout_s >= 600
    assert model.source.revision == "main"
    assert model.source.allow_patterns == DEFAULT_ALLOW_PATTERNS
    assert model.gpus_per_replica == 1
    assert catalog.platform.gpu_quota == 8


def test_example_catalog_is_valid(example_catalog: Catalog) -> None:
    assert "tiny-llama" in example_catalog.model_names
    assert len(set(example_catalog.model_names)) == len(example_catalog.models)


def test_unknown_model_lists_known_ones() -> None:
    catalog = parse_catalog({"models": [_model()]})
    with pytest.raises(UnknownModelError, match=r"model 'nope' is not in the catalog \(known models: llama\)"):
        catalog.model("nope")


def _with(path: str, value: Any, model: dict[str, Any] | None = None) -> dict[str, Any]:
    """A one-model catalog with ``value`` set at the dotted ``path`` of the model."""
    data = copy.deepcopy(model or _model())
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return {"models": [data]}


MALFORMED: list[tuple[str, object, str]] = [
    ("not a mapping", ["models"], "models.yaml: expected a mapping with 'models'"),
    ("no models", {"platform": {}}, "models.yaml: models: must be a non-empty list of models"),
    ("empty models", {"models": []}, "models.yaml: models: must be a non-empty list of models"),
    ("unknown top level", {"models": [_model()], "modles": 1}, "models.yaml: modles: unknown top-level field"),
    ("model not a mapping", {"models": ["llama"]}, "models.yaml: models[0]: expected a mapping with 'name'"),
    ("missing name", {"models": [{"source": {"repo": "a/b"}}]}, "models.yaml: models[0]: name: required field"),
    ("missing source", {"models": [{"name": "llama"}]}, "model 'llama': source: required field is missing"),
    ("upper-case name", _with("name", "Llama3"), "model 'Llama3': name: 'Llama3' is not a DNS-1123 label"),
    ("underscore name", _with("name", "llama_3"), "model 'llama_3': name: 'llama_3' is not a DNS-1123 label"),
    ("name too long", _with("name", "a" * 41), "name: '" + "a" * 41 + "' is 41 characters long; at most 40"),
    ("bad repo id", _with("source.repo", "not a repo"), "source.repo: 'not a repo' is not a Hugging Face repo"),
    ("bad revision", _with("source.revision", "main..dev"), "source.revision: 'main..dev' is not a branch, tag"),
    ("repo and path", _with("source.path", "/m"), "source: set exactly one of 'repo'"),
    ("neither repo nor path", _with("source", {"revision": "main"}), "source: set exactly one of 'repo'"),
    ("empty allow patterns", _with("source.allow_patterns", []), "source.allow_patterns: must list at least one"),
    ("utilization above 1", _with("serving.gpu_memory_utilization", 1.2), "must be > 0 and <= 1 (got 1.2)"),
    ("utilization zero", _with("serving.gpu_memory_utilization", 0), "serving.gpu_memory_utilization: must be > 0"),
    (
        "typo in serving",
        _with("serving.max_model_length", 4096),
        "serving.max_model_length: unknown field; did you mean 'max_model_len'?",
    ),
    (
        "max_model_len not an int",
        _with("serving.max_model_len", "long"),
        "serving.max_model_len: input should be a valid integer",
    ),
    (
        "managed flag in extra args",
        _with("serving.extra_args", ["--max-model-len=8192"]),
        "'--max-model-len' is set by serving.max_model_len; remove it from extra_args",
    ),
    (
        "token in extra args",
        _with("serving.extra_args", ["--tokenizer-token", "hf_" + "a" * 30]),
        "looks like a Hugging Face token",
    ),
    ("latest image", _with("serving.image_tag", "latest"), "serving.image_tag: 'latest' is not a pinned image tag"),
    ("bad dtype", _with("serving.dtype", "fp8"), "serving.dtype: input should be 'auto'"),
    ("bad memory quantity", _with("resources.memory", "32GB"), "resources.memory: '32GB' is not a Kubernetes quantity"),
    (
        "gpus differ from tp",
        _with("resources.gpus", 2),
        "resources.gpus: vLLM uses exactly serving.tensor_parallel_size=1 GPUs per replica but 2 are requested",
    ),
    (
        "max below min replicas",
        _with("autoscaling", {"min_replicas": 3, "max_replicas": 2}),
        "autoscaling.max_replicas: must be >= autoscaling.min_replicas (2 < 3)",
    ),
    (
        "scale to zero",
        _with("autoscaling.min_replicas", 0),
        "autoscaling.min_replicas: input should be greater than or equal to 1",
    ),
    ("negative error rate", _with("slo.max_error_rate", -0.1), "slo.max_error_rate: input should be greater than"),
    (
        "short ingress timeout",
        _with("exposure.timeout_s", 60),
        "exposure.timeout_s: input should be greater than or equal to 600",
    ),
    ("bad host", _with("exposure.host", "LLM Host"), "exposure.host: 'LLM Host' is not a DNS host name"),
    ("no client labels", _with("exposure.client_labels", {}), "exposure.client_labels: must name at least one label"),
    ("bad client label", _with("exposure.client_labels", {"team": "a b"}), "'a b' (label 'team') is not a valid"),
    (
        "batched tokens below max_model_len without chunking",
        _with("serving", {"enable_chunked_prefill": False, "max_num_batched_tokens": 2048}),
        "serving.max_num_batched_tokens: must be >= serving.max_model_len (2048 < 4096) when chunked prefill is off",
    ),
    (
        "batched tokens below max_num_seqs",
        _with("serving", {"max_num_seqs": 256, "max_num_batched_tokens": 128}),
        "serving.max_num_batched_tokens: must be >= serving.max_num_seqs (128 < 256)",
    ),
    ("duplicate names", {"models": [_model(), _model()]}, "model 'llama': name: duplicate model name"),
    (
        "over quota at max replicas",
        _with("serving.tensor_parallel_size", 2),
        "model 'llama': autoscaling.max_replicas: needs 12 GPUs at 5 replicas plus 1 rolling-update surge (2 per "
        "replica) but the namespace quota is 8",
    ),
    (
        "minimums over quota",
        {
            "platform": {"gpu_quota": 2},
            "models": [_model(name=f"m{i}", autoscaling={"max_replicas": 1}) for i in range(3)],
        },
        "models.yaml: platform.gpu_quota: the models' min_replicas together need 3 GPUs but the namespace quota is 2",
    ),
    (
        "bad platform namespace",
        {"platform": {"namespace": "LLM"}, "models": [_model()]},
        "models.yaml: platform.namespace: 'LLM' is not a DNS-1123 label",
    ),
    (
        "relative mount path",
        {"platform": {"weights_mount_path": "models"}, "models": [_model()]},
        "platform.weights_mount_path: 'models' is not a plain absolute path",
    ),
]


@pytest.mark.parametrize(("data", "expected"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_malformed_catalog_names_model_and_field(data: object, expected: str) -> None:
    problems = _problems(data)
    assert any(expected in problem for problem in problems), problems
    for problem in problems:
        assert "\n" not in problem and "Traceback" not in problem
        assert problem.startswith("models.yaml")


def test_every_problem_is_reported_at_once() -> None:
    data = {"models": [_model(name="Bad"), _model(name="ok", serving={"gpu_memory_utilization": 2})]}
    problems = _problems(data)
    assert len(problems) == 2
    assert str(CatalogError(problems)).count("\n") == 1


def test_max_model_len_is_checked_against_the_known_position_limit() -> None:
    problems = _problems({"models": [_model()]}, model_configs={"llama": {"max_position_embeddings": 2048}})
    assert problems == [
        "models.yaml: model 'llama': serving.max_model_len: 4096 exceeds the model's position limit of 2048 tokens; "
        "set it to 2048 or less"
    ]
    parse_catalog({"models": [_model()]}, model_configs={"llama": {"max_position_embeddings": 8192}})


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        ({"max_position_embeddings": 4096}, 4096),
        ({"n_positions": 1024}, 1024),
        ({"max_position_embeddings": 32768, "seq_length": 8192}, 8192),
        ({"text_config": {"max_position_embeddings": 2048}}, 2048),
        ({"max_position_embeddings": 4096, "rope_scaling": {"type": "linear", "factor": 2.0}}, 8192),
        (  # YaRN configs already state the scaled length
            {
                "max_position_embeddings": 131072,
                "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
            },
            131072,
        ),
        ({"max_position_embeddings": 2048, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, 4096),
        ({"max_position_embeddings": 8192, "rope_parameters": {"rope_type": "default"}}, 8192),
        ({"max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, 131072),
        ({"vocab_size": 10}, None),
    ],
)
def test_position_limit(config: dict[str, Any], limit: int | None) -> None:
    assert position_limit(config) == limit


def test_yaml_errors_have_a_position() -> None:
    with pytest.raises(CatalogError, match=r"^c.yaml:3:3: invalid YAML: duplicate key 'name'$"):
        parse_catalog_text("models:\n- name: a\n  name: b\n", origin="c.yaml")
    with pytest.raises(CatalogError, match=r"^c.yaml:\d+:\d+: invalid YAML: "):
        parse_catalog_text("models: [\n", origin="c.yaml")


def test_load_catalog_reads_local_model_config(tmp_path: Path) -> None:
    model_dir = tmp_path / "weights"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"max_position_embeddings": 1024}')
    catalog_file = tmp_path / "models.yaml"
    catalog_file.write_text(yaml.safe_dump({"models": [{"name": "local", "source": {"path": "weights"}}]}))
    with pytest.raises(CatalogError, match="4096 exceeds the model's position limit of 1024"):
        load_catalog(catalog_file)
    catalog_file.write_text(
        yaml.safe_dump(
            {"models": [{"name": "local", "source": {"path": "weights"}, "serving": {"max_model_len": 512}}]}
        )
    )
    assert load_catalog(catalog_file).model("local").source.path == str(model_dir)


def test_missing_catalog_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="catalog file not found; pass --catalog PATH or set LLM_PLATFORM_CATALOG"):
        load_catalog(tmp_path / "missing.yaml")


def test_catalog_env_var_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog_file = tmp_path / "other.yaml"
    catalog_file.write_text(yaml.safe_dump({"models": [_model(name="from-env")]}))
    monkeypatch.setenv("LLM_PLATFORM_CATALOG", str(catalog_file))
    assert load_catalog().model_names == ["from-env"]


def test_commit_sha_detection() -> None:
    assert is_commit_sha("0123456789abcdef0123456789abcdef01234567")
    assert not is_commit_sha("main")
    assert not is_commit_sha("0123456789ABCDEF0123456789ABCDEF01234567")


def test_the_catalog_reference_documents_every_catalog_field() -> None:
    from llm_platform.catalog import ModelSpec, Platform
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "docs" / "catalog.md").read_text()
    sections = {name: field.annotation for name, field in ModelSpec.model_fields.items()}
    missing = []
    for section, annotation in sections.items():
        fields = getattr(annotation, "model_fields", None)
        names = [f"{section}.{name}" for name in fields] if fields else [section]
        missing += [name for name in names if f"`{name}`" not in readme and f"`{name}," not in readme]
    missing += [name for name in Platform.model_fields if f"`{name}`" not in readme]
    assert not missing, f"docs/catalog.md lacks {missing}"


def test_serving_overrides_are_read_as_yaml_and_validated_like_the_catalog() -> None:
    from llm_platform.catalog import apply_serving_overrides, diff_table, parse_assignments
    from tests.conftest import EXAMPLE_CATALOG

    model = load_catalog(EXAMPLE_CATALOG).model("tiny-llama")
    assignments = ["max_num_seqs=64", "serving.enable_prefix_caching=true", "extra_args=[--seed, '1']"]
    overrides = parse_assignments(assignments)
    effective = apply_serving_overrides(model, overrides)
    assert effective.serving.max_num_seqs == 64 and effective.serving.enable_prefix_caching is True
    assert effective.serving.extra_args == ("--seed", "1")
    assert set(diff_table(model, effective)) == {
        "max_num_seqs",
        "enable_prefix_caching",
        "extra_args",
    }
    assert model.serving.max_num_seqs == 32  # the catalog's model is untouched
    with pytest.raises(CatalogError) as cross_field:
        apply_serving_overrides(model, {"max_num_batched_tokens": "8"}, origin="--set")
    assert str(cross_field.value) == (
        "--set: model 'tiny-llama': serving.max_num_batched_tokens: must be >= serving.max_num_seqs (8 < 32)"
    )
    with pytest.raises(CatalogError, match="expected FIELD=VALUE"):
        parse_assignments(["max_num_seqs"])


def test_a_patch_is_typed_once_round_trips_through_run_config_and_knows_the_position_limit() -> None:
    from llm_platform.catalog import ModelPatch, patch_between
    from tests.conftest import EXAMPLE_CATALOG

    model = load_catalog(EXAMPLE_CATALOG).model("tiny-llama")
    patch = ModelPatch.parse(
        model, {"max_num_seqs": "64", "autoscaling.max_replicas": 3, "extra_args": "[--seed, '1']"}
    )
    assert dict(patch.items()) == {"max_num_seqs": 64, "autoscaling.max_replicas": 3, "extra_args": ("--seed", "1")}
    assert patch.as_overrides() == {
        "autoscaling.max_replicas": "3", "extra_args": '["--seed", "1"]', "max_num_seqs": "64",
    }  # fmt: skip
    again = ModelPatch.parse(model, patch.as_overrides())
    assert again == patch
    patched = patch.apply(model)
    assert patched.autoscaling.max_replicas == 3 and patched.serving.max_num_seqs == 64
    assert patch_between(model, patched) == patch
    assert ModelPatch.parse(model, {"max_num_seqs": "16"}).merged(patch).describe() == (
        "autoscaling.max_replicas=3, extra_args=('--seed', '1'), max_num_seqs=64"
    )
    # A max_model_len within the schema but past what the model's config.json allows: refused where it enters.
    with pytest.raises(CatalogError) as too_long:
        ModelPatch.parse(model, {"max_model_len": "8192"}, origin="drift sensor", position_limit=4096)
    assert str(too_long.value) == (
        "drift sensor: model 'tiny-llama': serving.max_model_len: 8192 exceeds the model's position limit of 4096 "
        "tokens; set it to 4096 or less"
    )
    with pytest.raises(CatalogError, match=r"autoscaling.max_replicas: must be >= autoscaling.min_replicas"):
        ModelPatch.parse(model, {"autoscaling.min_replicas": "3"})
    with pytest.raises(CatalogError, match=r"serving.max_num_seqz: unknown field; did you mean 'max_num_seqs'\?"):
        ModelPatch.parse(model, {"max_num_seqz": "8"})


def _billion_laughs() -> str:
    text, previous = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n', "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        previous = name
    return text + "models: [*i]\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (_billion_laughs(), "bad.yaml: refused: the YAML expands to more than 200000 values through aliases"),
        ("a: " + "[" * 100_000 + "]" * 100_000, "bad.yaml: refused: the YAML nested deeper than 32 levels"),
        ("# " + "x" * (5 * 1024 * 1024), "bad.yaml: 5242882 characters; a catalog may have at most 5242880"),
    ],
)
@pytest.mark.timeout(60)  # a guard against a hang (an expansion that was not refused), not a timing
def test_hostile_yaml_is_refused_in_one_line_without_echoing_it(text: str, line: str) -> None:
    """Each bound is named in the refusal: the limit was hit while composing, before the expansion or the recursion
    it guards against (a wall-clock bound here failed CI on a loaded machine: speed is for benchmarks)."""
    with pytest.raises(CatalogError) as refused:
        parse_catalog_text(text, origin="bad.yaml")
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)
    assert len(str(refused.value)) < 200


@pytest.mark.parametrize(
    ("platform", "exposure", "message"),
    [
        ({"weights_mount_path": "/dev/shm"}, {}, "platform.weights_mount_path: '/dev/shm' overlaps /dev/shm"),
        ({"weights_mount_path": "/home"}, {}, "platform.weights_mount_path: '/home' overlaps /home/vllm"),
        ({"prometheus_url": "prometheus:9090"}, {}, "platform.prometheus_url: 'prometheus:9090' is not an http(s) URL"),
        (
            {"hf_endpoint": "http://mirror.internal"},
            {},
            "platform.hf_endpoint: 'http://mirror.internal' must use https",
        ),
        ({"hf_endpoint": "https://user:pw@hub.internal"}, {}, "credentials do not belong in the URL"),
        ({}, {"tls_secret": "Bad_Secret"}, "exposure.tls_secret: 'Bad_Secret' is not a Secret name"),
    ],
)
def test_what_validate_accepts_the_api_server_accepts_too(
    platform: dict[str, str], exposure: dict[str, str], message: str
) -> None:
    data = {"platform": platform, "models": [{"name": "m", "source": {"repo": "a/b"}, "exposure": exposure}]}
    with pytest.raises(CatalogError) as refused:
        parse_catalog(data, origin="models.yaml")
    assert message in str(refused.value)
    loopback = {
        "platform": {"hf_endpoint": "http://127.0.0.1:8090"},
        "models": [{"name": "m", "source": {"repo": "a/b"}}],
    }
    assert parse_catalog(loopback).platform.hf_endpoint == "http://127.0.0.1:8090"  # a hub on this machine


def test_legitimate_extra_args_pass_and_risky_ones_warn() -> None:
    from llm_platform.catalog import model_warnings

    data = {"models": [{"name": "m", "source": {"repo": "a/b"},
                        "serving": {"extra_args": ["--seed", "1", "--model-impl", "vllm", "--enable-log-requests"],
                                    "trust_remote_code": True}}]}  # fmt: skip
    model = parse_catalog(data).model("m")
    assert [path for path, _ in model_warnings(model)] == [
        "serving.extra_args",
        "serving.image_tag",
        "serving.trust_remote_code",
    ]
    from llm_platform.engine.vllm import VLLM

    args = VLLM.server_args(model.serving, served_model_name="m", weights_path="/w")
    assert "--trust-remote-code" in args and args[-5:] == (
        "--seed",
        "1",
        "--model-impl",
        "vllm",
        "--enable-log-requests",
    )


def test_images_can_be_pinned_by_digest_and_tags_draw_a_warning() -> None:
    from llm_platform.catalog import model_warnings, platform_warnings
    from llm_platform.manifests.pods import engine_image

    digest = "sha256:" + "a" * 64
    data = {
        "platform": {"platform_image": f"ghcr.io/acme/llm-platform@{digest}"},
        "models": [{"name": "m", "source": {"repo": "a/b"}, "serving": {"image_tag": digest}}],
    }
    catalog = parse_catalog(data)
    model = catalog.model("m")
    assert engine_image(catalog.platform, model) == f"vllm/vllm-openai@{digest}"
    assert model_warnings(model) == [] and platform_warnings(catalog.platform) == []
    tagged = parse_catalog({"models": [{"name": "m", "source": {"repo": "a/b"}}]})
    assert [path for path, _ in model_warnings(tagged.model("m"))] == ["serving.image_tag"]
    assert [path for path, _ in platform_warnings(tagged.platform)] == ["platform.platform_image"]
    with pytest.raises(CatalogError, match="is not a pinned image reference"):
        parse_catalog({"platform": {"platform_image": "ghcr.io/acme/x:latest"}, "models": data["models"]})


@pytest.mark.parametrize(
    "overrides",
    [{"autoscaling.max_replicas": "1000"}, {"tensor_parallel_size": "64"}, {"tensor_parallel_size": "4"}],
)
def test_a_change_passes_the_same_quota_check_as_the_catalog(overrides: dict[str, str]) -> None:
    from llm_platform.catalog import ModelPatch
    from tests.conftest import EXAMPLE_CATALOG

    catalog = load_catalog(EXAMPLE_CATALOG)
    model = catalog.model("llama-3-1-8b-instruct")
    patch = ModelPatch.parse(model, overrides, origin="--set")  # valid for the model alone
    with pytest.raises(CatalogError, match="quota"):
        patch.apply(model, origin="--set", fleet=catalog)
    assert ModelPatch.parse(model, {"max_num_seqs": "64"}).apply(model, fleet=catalog).serving.max_num_seqs == 64


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([10, 5, 100], "must be strictly increasing (got [10, 5, 100])"),
        ([10, 10, 100], "must be strictly increasing (got [10, 10, 100])"),
        ([10, 50], "must end at 100, where the canary serves all traffic (got [10, 50])"),
        ([0, 100], "each step is a percent of the traffic, 1 to 100 (got [0, 100])"),
        ([50, 150], "each step is a percent of the traffic, 1 to 100 (got [50, 150])"),
        ([], "needs at least one step, ending at 100"),
    ],
)
def test_rollout_steps_are_percents_that_rise_to_100(steps: list[int], message: str) -> None:
    (problem,) = _problems({"models": [_model(rollout={"steps": steps})]})
    assert problem == f"models.yaml: model 'llama': rollout.steps: {message}"


def test_the_platform_rollout_is_every_models_default_field_by_field() -> None:
    catalog = parse_catalog(
        {
            "platform": {"rollout": {"step_seconds": 60, "min_requests": 20}},
            "models": [_model(), _model(name="other", rollout={"min_requests": 5})],
        }
    )
    assert (catalog.model("llama").rollout.step_seconds, catalog.model("llama").rollout.min_requests) == (60, 20)
    assert (catalog.model("other").rollout.step_seconds, catalog.model("other").rollout.min_requests) == (60, 5)
    assert catalog.model("other").rollout.steps == (10, 25, 50, 100)
    # A bad platform default is reported once, at the platform, not once per model.
    problems = _problems({"platform": {"rollout": {"steps": [10]}}, "models": [_model(), _model(name="other")]})
    assert problems == ["models.yaml: platform.rollout.steps: must end at 100, where the canary serves all traffic "
                        "(got [10])"]  # fmt: skip


def test_a_canary_needs_an_edge_that_splits_traffic() -> None:
    exposed = {"host": "llama.example.com", "tls_secret": "llama-tls"}
    catalog = parse_catalog({"models": [_model(exposure=exposed, rollout={"strategy": "canary"})]})
    assert catalog.model("llama").rollout.strategy == "canary"
    (problem,) = _problems({"models": [_model(rollout={"strategy": "canary"})]})
    assert problem.startswith("models.yaml: model 'llama': rollout.strategy: a canary needs exposure.host")


def test_a_canarys_replicas_count_in_the_gpu_quota() -> None:
    from llm_platform.catalog import QuotaBudget, peak_replicas

    scaling = {"min_replicas": 1, "max_replicas": 5}
    replace = parse_catalog({"models": [_model(autoscaling=scaling)]}).model("llama")
    assert peak_replicas(replace) == 6
    stepped = replace.rollout.model_copy(update={"strategy": "canary", "canary_replicas": 2})
    canary = replace.model_copy(update={"rollout": stepped})
    assert peak_replicas(canary) == 8
    platform = parse_catalog({"models": [_model()]}).platform
    assert QuotaBudget.of(platform, [replace]).max_replicas(replace) == 7  # 8 GPUs: 7 + the surge
    assert QuotaBudget.of(platform, [canary]).max_replicas(canary) == 5  # 5 + the surge + 2 canary
    rollout = {"strategy": "canary", "canary_replicas": 2}
    problems = _problems({"models": [_model(autoscaling={"max_replicas": 6}, rollout=rollout)]})
    assert any("needs 9 GPUs at 6 replicas plus 1 rolling-update surge and 2 canary" in p for p in problems)


@pytest.mark.parametrize(
    "scaling",
    [
        {"min_replicas": 1, "max_replicas": 2},  # fits
        {"min_replicas": 1, "max_replicas": 8},  # peak 9 x 2 GPUs: over
        {"min_replicas": 6, "max_replicas": 6},  # fits alone (14), the fleet's minimums (12 + 6) do not
        {"min_replicas": 6, "max_replicas": 9},  # both
    ],
)
def test_the_budget_says_of_one_changed_model_what_the_whole_catalog_check_says(scaling: dict[str, int]) -> None:
    from llm_platform.catalog import QuotaBudget, quota_problems

    fleet = parse_catalog(
        {
            "platform": {"gpu_quota": 16},
            "models": [_model(resources={"gpus": 2}, serving={"tensor_parallel_size": 2}),
                       _model(name="other", autoscaling={"min_replicas": 6, "max_replicas": 6})],
        }
    )  # fmt: skip
    model = fleet.model("llama")
    changed = model.model_copy(update={"autoscaling": model.autoscaling.model_copy(update=scaling)})
    whole = quota_problems(fleet.platform, [changed, fleet.model("other")])
    expected = [(path, message) for name, path, message in whole if name in ("llama", None)]
    assert len(expected) == [0, 1, 1, 2][[2, 8, 6, 9].index(scaling["max_replicas"])]
    assert QuotaBudget.of(fleet.platform, fleet.models).problems_with(changed) == expected


SQL = {"name": "llama-sql", "source": {"repo": "org/llama-sql-lora"}}


def _adapter_problems(*models: dict[str, Any]) -> list[str]:
    try:
        parse_catalog({"models": list(models)}, origin="models.yaml")
    except CatalogError as error:
        return error.problems
    return []


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (_model(adapters=[{**SQL, "name": "Llama_SQL"}]),
         "adapters[0].name: 'Llama_SQL' is not a served name: a DNS-1123 label of at most 63 characters"),
        (_model(adapters=[SQL, SQL]), "adapters: adapter names must differ: llama-sql more than once"),
        (_model(adapters=[{**SQL, "name": "llama"}]), "adapters: adapter 'llama' has the model's own name"),
        (_model(adapters=[{**SQL, "base_revision": "main"}]),
         "adapters[0].base_revision: 'main' is not a commit id (40 hex characters): a branch can move"),
        (_model(adapters=[{**SQL, "source": {"repo": "org/a", "track_revision": True}}]),
         "adapters[0].source: an adapter follows its base's promotions: track_revision is for models only"),
        (_model(adapters=[SQL], serving={"max_loras": 2}),
         "serving.max_loras: 2 slots for 1 adapters: each slot reserves GPU memory"),
        (_model(adapters=[SQL], serving={"max_lora_rank": 24}),
         "serving.max_lora_rank: vllm serves ranks 1, 8, 16, 32, 64, 128, 256, 320, 512; 24 is none of them"),
        (_model(serving={"max_lora_rank": 16}), "serving.max_lora_rank: set without adapters: remove it"),
    ],
)  # fmt: skip
def test_adapters_and_their_engine_knobs_are_checked_one_line_each(model: dict[str, Any], problem: str) -> None:
    (found,) = _adapter_problems(model)
    assert found.startswith(f"models.yaml: model 'llama': {problem}"), found


def test_served_names_are_unique_across_models_and_adapters() -> None:
    first = _adapter_problems(_model(adapters=[SQL]), _model(name="other", adapters=[SQL]))
    assert first == ["models.yaml: model 'other': adapters[0].name: 'llama-sql' is served by adapter of model 'llama' "
                     "already: served names are unique"]  # fmt: skip
    assert _adapter_problems(_model(adapters=[SQL]), _model(name="llama-sql")) == [
        "models.yaml: model 'llama-sql': name: 'llama-sql' is the adapter of model 'llama' already: served names are "
        "unique"
    ]
    assert _adapter_problems(_model(name="llama-sql"), _model(adapters=[SQL])) == [
        "models.yaml: model 'llama': adapters[0].name: 'llama-sql' is served by model 'llama-sql' already: served "
        "names are unique"
    ]


def test_adapters_download_no_pickles_and_leave_configs_without_them_as_they_were() -> None:
    from llm_platform.catalog import ModelSpec

    model = ModelSpec.model_validate(_model(adapters=[SQL]))
    assert model.adapters[0].source.allow_patterns == ("adapter_config.json", "*.safetensors")
    assert _adapter_problems(_model(adapters=[SQL])) == []
    # Unset, the LoRA knobs leave a config's identity as it was (its benchmarks stay valid).
    from llm_platform.catalog.fingerprint import config_fingerprint

    plain = ModelSpec.model_validate(_model()).serving
    # What the fingerprint hashed before the LoRA knobs existed.
    fields = plain.model_dump(mode="json", exclude={"engine", "max_loras", "max_lora_rank"})
    before = json.dumps({"serving": fields, "weights": "a" * 40}, sort_keys=True).encode()
    assert config_fingerprint(plain, "a" * 40) == hashlib.sha256(before).hexdigest()[:16]
    ranked = ModelSpec.model_validate(_model(adapters=[SQL], serving={"max_lora_rank": 64})).serving
    assert config_fingerprint(ranked, "a" * 40) != config_fingerprint(plain, "a" * 40)
    # The adapters served on the weights are part of a config; none leaves it as it was.
    assert config_fingerprint(plain, "a" * 40, {}) == config_fingerprint(plain, "a" * 40)
    with_sql = config_fingerprint(plain, "a" * 40, {"llama-sql": "b" * 40})
    assert with_sql not in (
        config_fingerprint(plain, "a" * 40),
        config_fingerprint(plain, "a" * 40, {"llama-sql": "c" * 40}),
    )


@pytest.mark.parametrize(
    ("config", "serving", "problem"),
    [
        ({"peft_type": "LORA", "r": 16, "base_model_name_or_path": "org/llama"}, {}, None),
        ({"r": 8, "base_model_name_or_path": "/home/me/llama"}, {}, None),  # trained from a local copy: unknown
        ({"r": 64, "base_model_name_or_path": "ORG/Llama"}, {"max_lora_rank": 64}, None),
        ({"peft_type": "IA3", "r": 8}, {}, "peft_type 'IA3' is not LORA: only LoRA adapters are served"),
        ({"base_model_name_or_path": "org/llama"}, {}, "its rank 'r' is missing or not a positive integer"),
        ({"r": True}, {}, "its rank 'r' is missing or not a positive integer"),
        ({"r": 1024}, {}, "rank 1024 is above any vllm serves (at most 512)"),
        ({"r": 48}, {"max_lora_rank": 32}, "rank 48 exceeds serving.max_lora_rank 32: set it to 64 or more"),
        ({"r": 8, "base_model_name_or_path": "org/mistral"}, {},
         "trained on 'org/mistral', not on the model's 'org/llama'"),
    ],
)  # fmt: skip
def test_an_adapters_config_is_checked_against_its_base_and_the_engine(
    config: dict[str, Any], serving: dict[str, Any], problem: str | None
) -> None:
    from llm_platform.catalog import ModelSpec, adapter_config_problems

    model = ModelSpec.model_validate(_model(adapters=[SQL], serving=serving))
    problems = adapter_config_problems(model, model.adapters[0], config)
    assert problems == ([f"model 'llama': adapter 'llama-sql': {problem}"] if problem else [])


def test_lora_slots_and_rank_are_derived_when_left_out() -> None:
    from llm_platform.catalog import ModelSpec, lora_rank, max_loras

    adapters = [{**SQL, "name": f"llama-{index}"} for index in range(10)]
    model = ModelSpec.model_validate(_model(adapters=adapters))
    assert max_loras(model) == 8 and max_loras(model.model_copy(update={"adapters": model.adapters[:3]})) == 3
    assert lora_rank(model, [8, 8]) == 16  # the engine's default covers them
    assert lora_rank(model, [8, 48]) == 64  # the next rank vLLM serves above the largest adapter's
    pinned = ModelSpec.model_validate(_model(adapters=adapters[:2], serving={"max_lora_rank": 128, "max_loras": 1}))
    assert (lora_rank(pinned, [8]), max_loras(pinned)) == (128, 1)
