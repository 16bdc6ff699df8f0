"""A corpus of hostile and careless catalogs, each through ``llm-platform validate`` as an operator runs it: exit 2,
``error:`` lines that name the model and the field, no traceback, no line longer than a screen; and every catalog
``validate`` accepts loads as the Dagster code location (its checks are the code location's checks)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from llm_platform.catalog_files import load_catalog
from llm_platform.cli import main
from llm_platform.definitions import build_definitions


def _model(**sections: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "m", "source": {"repo": "org/model"}}
    for path, value in sections.items():
        section, _, field = path.partition("__")
        if field:
            model.setdefault(section, {})[field] = value
        else:
            model[section] = value
    return model


def _catalog(platform: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    return {"platform": platform or {}, "models": [_model(**sections)]}


#: (id, catalog data, a fragment of the expected error)
HOSTILE: list[tuple[str, Any, str]] = [
    ("name with newline", _catalog(name="m\n"), "name:"),
    ("benchmark past the context", _catalog(benchmark={"input_len": 4000, "output_len": 200}), "benchmark.input_len"),
    ("benchmark level zero", _catalog(benchmark={"concurrency_levels": [0, 8]}), "benchmark.concurrency_levels"),
    ("benchmark levels empty", _catalog(benchmark={"concurrency_levels": []}), "benchmark.concurrency_levels"),
    ("benchmark level twice", _catalog(benchmark={"concurrency_levels": [8, 8]}), "twice"),
    ("benchmark level huge", _catalog(benchmark={"concurrency_levels": [2**40]}), "benchmark.concurrency_levels"),
    ("benchmark no prompts", _catalog(benchmark={"prompts_per_level": 0}), "benchmark.prompts_per_level"),
    ("benchmark unknown field", _catalog(benchmark={"prompts": 8}), "benchmark.prompts"),
    ("name with trailing newline only", _catalog(name="llama\n"), "printable ASCII"),
    ("name 100k chars", _catalog(name="a" * 100_000), "characters long"),
    ("name non-ascii", _catalog(name="lläma"), "name:"),
    ("owner not an e-mail", _catalog(owners=["alice"]), "is not an owner"),
    ("owner with newline", _catalog(owners=["team:a\n"]), "owners"),
    ("cron 4 fields", _catalog({"live_benchmark_cron": "0 3 * *"}), "5-field cron"),
    ("cron out of range", _catalog({"live_benchmark_cron": "61 3 * * *"}), "5-field cron"),
    ("cron garbage", _catalog({"live_benchmark_cron": "a b c d e"}), "5-field cron"),
    ("repo trailing newline", _catalog(source={"repo": "org/model\n"}), "source.repo"),
    ("repo non-ascii", _catalog(source={"repo": "org/mödel"}), "source.repo"),
    ("revision trailing newline", _catalog(source={"repo": "org/m", "revision": "main\n"}), "source.revision"),
    ("image tag trailing newline", _catalog(serving__image_tag="v0.32.0\n"), "serving.image_tag"),
    ("image tag non-ascii", _catalog(serving__image_tag="v0.32.0é"), "serving.image_tag"),
    ("digest trailing newline", _catalog(serving__image_tag="sha256:" + "a" * 64 + "\n"), "serving.image_tag"),
    ("host trailing newline", _catalog(exposure={"host": "a.example.com\n", "tls_secret": "t"}), "exposure.host"),
    ("label value newline", _catalog(exposure={"client_labels": {"a": "b\n"}}), "exposure.client_labels"),
    ("cpu trailing newline", _catalog(resources__cpu="4\n"), "resources.cpu"),
    ("body size newline", _catalog(exposure={"max_body_size": "16m\n"}), "exposure.max_body_size"),
    ("body size huge", _catalog(exposure={"max_body_size": "99999999999g"}), "exposure.max_body_size"),
    ("int32 overflow max_model_len", _catalog(serving__max_model_len=2**31), "at most 2147483647"),
    ("int32 overflow startup", _catalog(serving__startup_timeout_s=10**12), "at most 2147483647"),
    ("int32 overflow replicas", _catalog(autoscaling__max_replicas=2**40), "at most 2147483647"),
    ("int32 overflow timeout", _catalog(exposure={"timeout_s": 2**33}), "at most 2147483647"),
    ("inf threshold", _catalog(autoscaling__waiting_threshold=float("inf")), "autoscaling.waiting_threshold"),
    ("nan slo", _catalog(slo__ttft_p95_ms=float("nan")), "slo.ttft_p95_ms"),
    ("1e20 slo", _catalog(slo__itl_p95_ms=1e20), "at most 1e+09"),
    ("1e20 rate", _catalog(slo__min_output_tokens_per_s=1e20), "at most 1e+09"),
    ("NUL in source.path", _catalog(source={"path": "w\x00x"}), "source.path"),
    ("source.path dotdot", _catalog(source={"path": "../../etc"}), "source.path"),
    ("weights mount /", _catalog({"weights_mount_path": "/"}), "system directory"),
    ("weights mount /etc", _catalog({"weights_mount_path": "/etc/models"}), "system directory"),
    ("gpu_resource memory", _catalog({"gpu_resource": "memory"}), "platform.gpu_resource"),
    ("gpu_resource k8s domain", _catalog({"gpu_resource": "kubernetes.io/gpu"}), "platform.gpu_resource"),
    ("vllm_image with a tag", _catalog({"vllm_image": "vllm/vllm-openai:v0.32.0"}), "platform.vllm_image"),
    ("vllm_image newline", _catalog({"vllm_image": "vllm/vllm-openai\n"}), "platform.vllm_image"),
    ("empty toleration key", _catalog({"gpu_tolerations": [{"key": ""}]}), "tolerate every taint"),
    ("toleration Exists with value", _catalog({"gpu_tolerations": [{"key": "a", "value": "b"}]}), "takes no value"),
    ("platform image newline", _catalog({"platform_image": "ghcr.io/x/y:1.0\n"}), "platform.platform_image"),
    ("namespace newline", _catalog({"namespace": "llm\n"}), "platform.namespace"),
    ("secret name newline", _catalog(exposure={"api_key_secret": "keys\n"}), "exposure.api_key_secret"),
    ("hub url newline", _catalog({"hf_endpoint": "https://hub.internal\n"}), "platform.hf_endpoint"),
    ("quota exceeded", _catalog(autoscaling__max_replicas=1000), "namespace quota"),
    ("tp quota exceeded", _catalog(serving__tensor_parallel_size=64, resources__gpus=64), "quota"),
    ("unknown field", _catalog(serving__max_num_batchd_tokens=1), "did you mean"),
    ("extra_args dotted", _catalog(serving__extra_args=["--api-key.x", "y"]), "dotted keys"),
    ("extra_args short", _catalog(serving__extra_args=["-t", "2"]), "short flag"),
]

#: (id, raw YAML text, fragment)
HOSTILE_TEXT: list[tuple[str, str, str]] = [
    ("undefined alias as key", "*k : 1\n", "invalid YAML"),
    ("5000-digit integer", "models:\n- name: m\n  source: {repo: a/b}\n  serving: {max_model_len: " + "9" * 5000
     + "}\n", "invalid YAML"),
    ("unhashable key", "? [a, b]\n: 1\nmodels: []\n", "invalid YAML"),
    ("tab indentation", "models:\n\t- name: m\n", "invalid YAML"),
    ("binary garbage", "\x00\x01\x02", "invalid YAML"),
    ("duplicate key", "models: []\nmodels: []\n", "duplicate key"),
    ("billion laughs", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)), "aliases"),
    ("deep nesting", "a: " + "[" * 100 + "]" * 100 + "\n", "nested deeper"),
    ("top level list", "- a\n- b\n", "expected a mapping"),
    ("empty models", "models: []\n", "non-empty list"),
]  # fmt: skip


def _validate(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", *args])
    return code, out.getvalue(), err.getvalue()


def _assert_refused(catalog_file: Path, fragment: str) -> None:
    code, _, err = _validate("--catalog", str(catalog_file))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err[:2000]
    assert "Traceback" not in err
    assert all(len(line) <= 600 for line in lines), max(len(line) for line in lines)
    assert any(fragment in line for line in lines), err[:2000]


@pytest.mark.parametrize(("case", "data", "fragment"), HOSTILE, ids=[case for case, _, _ in HOSTILE])
def test_hostile_catalogs_are_refused_in_one_line_each(tmp_path: Path, case: str, data: Any, fragment: str) -> None:
    catalog_file = tmp_path / "models.yaml"
    catalog_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    _assert_refused(catalog_file, fragment)


@pytest.mark.parametrize(("case", "text", "fragment"), HOSTILE_TEXT, ids=[case for case, _, _ in HOSTILE_TEXT])
def test_hostile_yaml_is_refused_in_one_line(tmp_path: Path, case: str, text: str, fragment: str) -> None:
    catalog_file = tmp_path / "models.yaml"
    catalog_file.write_text(text, encoding="utf-8", errors="surrogateescape")
    _assert_refused(catalog_file, fragment)


@pytest.mark.parametrize("kind", ["device", "fifo", "directory", "missing", "nul in path", "too large"])
def test_only_bounded_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "models.yaml"
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer came
    elif kind == "directory":
        path.mkdir()
    elif kind == "nul in path":
        path = tmp_path / "mod\x00els.yaml"
    elif kind == "too large":
        path.write_text("# " + "x" * (6 * 1024 * 1024))
    code, _, err = _validate("--catalog", str(path))
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err and len(err) < 600, err


def test_render_into_a_file_is_a_clear_error(tmp_path: Path) -> None:
    from tests.conftest import EXAMPLE_CATALOG

    a_file = tmp_path / "out.yaml"
    a_file.write_text("")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["render", "--catalog", str(EXAMPLE_CATALOG), "--out", str(a_file)])
    assert code == 2 and "not a directory" in err.getvalue() and "Traceback" not in err.getvalue()


NEAR_MISSES = [  # valid catalogs close to the hostile ones: validate accepts them, and they load in Dagster
    _catalog(owners=["alice@example.com", "team:ml"], description="Ünïcode is fine in a description.\nTwo lines."),
    _catalog({"live_benchmark_cron": "*/15 0-6 1,15 * 1-5", "gpu_resource": "amd.com/gpu"}),
    _catalog({"gpu_tolerations": [{"key": "gpu", "operator": "Equal", "value": "h100", "effect": "NoSchedule"}]}),
    _catalog(serving__extra_args=["--seed", "7", "--kv-cache-dtype=fp8"], serving__max_model_len=2**31 - 1),
    _catalog({"vllm_image": "registry.internal:5000/vllm/vllm-openai", "weights_mount_path": "/mnt/models"}),
]


@pytest.mark.parametrize("data", NEAR_MISSES)
def test_what_validate_accepts_loads_as_the_code_location(tmp_path: Path, data: dict[str, Any]) -> None:
    catalog_file = tmp_path / "models.yaml"
    catalog_file.write_text(yaml.safe_dump(data, allow_unicode=True))
    code, _, err = _validate("--catalog", str(catalog_file))
    assert code == 0, err
    dg.Definitions.validate_loadable(build_definitions(load_catalog(catalog_file)))


def test_the_corpus_is_large() -> None:
    from tests.unit.test_engine_flags import HOSTILE as HOSTILE_ARGS

    assert len(HOSTILE) + len(HOSTILE_TEXT) + len(HOSTILE_ARGS) >= 60
