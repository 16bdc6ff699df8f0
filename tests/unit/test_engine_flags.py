"""The engine's command line as the installed vLLM's own parser reads it: the invocations we render, and
``serving.extra_args`` by allow-list (every flag we name exists with the arity we give it, what we accept changes
exactly what we say, and a corpus of the spellings that walked around the old deny-list). The tests that import vLLM
live in this one module, so that `make test-fast` (``--dist loadfile``) imports it in one worker only."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from llm_platform.catalog import ModelPatch, Serving, parse_catalog
from llm_platform.engine import LoraAdapters
from llm_platform.engine.vllm import VLLM
from llm_platform.engine.vllm_flags import (
    ALLOWED_FLAGS,
    MANAGED_FLAGS,
    REFUSED_FLAGS,
    SWITCH,
    canonical,
    parse_extra_args,
)
from llm_platform.errors import CatalogError
from tests.unit.test_engine import engine_invocation

BASE = ["--model", "/w", "--served-model-name", "m", "--port", "8002"]


@pytest.fixture
def vllm_parser() -> argparse.ArgumentParser:
    """A fresh parser for each test (10 ms once vLLM is imported): ``_changed`` swaps its defaults."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser: argparse.ArgumentParser = make_arg_parser(FlexibleArgumentParser())
    return parser


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


UNSET = object()


def _changed(parser: argparse.ArgumentParser, extra: list[str]) -> dict[str, Any]:
    """The settings vLLM's parser sets from ``extra`` (after the base arguments), even to their default value."""
    defaults = {action.dest: action.default for action in parser._actions}
    parser.set_defaults(**dict.fromkeys(defaults, UNSET))
    try:
        before, after = vars(parser.parse_args(BASE)), vars(parser.parse_args([*BASE, *extra]))
    finally:
        parser.set_defaults(**defaults)
    return {key: value for key, value in after.items() if value is not UNSET and before.get(key) is UNSET}


def test_every_flag_we_name_is_vllms_with_the_arity_we_give_it(vllm_parser: argparse.ArgumentParser) -> None:
    options = _options(vllm_parser)
    for flag in [*MANAGED_FLAGS, *REFUSED_FLAGS, *ALLOWED_FLAGS]:
        if flag == "--custom-histogram-buckets":
            continue  # vLLM's name for its metrics buckets, checked by the engine tests
        assert flag in options, f"{flag} is not a flag of the installed vLLM"
    for flag, arity in ALLOWED_FLAGS.items():
        nargs = options[flag].nargs
        assert (nargs == 0) == (arity == SWITCH), (flag, nargs)
        assert nargs in (0, None), (flag, nargs)  # exactly no value or one value


ACCEPTED = [
    ["--seed", "7"],
    ["--seed=7", "--enforce-eager"],
    ["--kv_cache_dtype", "fp8", "--block-size", "32"],
    ["--override-generation-config", '{"temperature": 0.5}', "--no-enable-log-requests"],
    ["--tool-call-parser", "hermes", "--enable-auto-tool-choice", "--max-logprobs=5"],
    ["--model-impl", "vllm", "--scheduling-policy", "priority", "--disable-log-stats"],
]


@pytest.mark.parametrize("extra", ACCEPTED)
def test_accepted_args_change_exactly_what_we_read(vllm_parser: argparse.ArgumentParser, extra: list[str]) -> None:
    flags, problems = parse_extra_args(extra)
    assert problems == []
    options = _options(vllm_parser)
    assert set(_changed(vllm_parser, extra)) == {options[item.flag].dest for item in flags}


#: (extra_args, a fragment of the refusal). Each walked around the deny-list, or loads code, changes what is
#: served, or writes users' data somewhere.
HOSTILE: list[tuple[list[str], str]] = [
    (["--api-key.x", "foo"], "dotted keys"),
    (["--trust-remote-code.x", "true"], "dotted keys"),
    (["--max-model-len.a=1"], "dotted keys"),
    (["-t", "2"], "short flag"),
    (["-tp", "2"], "short flag"),
    (["-pp", "2"], "short flag"),
    (["-O3"], "short flag"),
    (["-q", "awq"], "short flag"),
    (["--max-model", "8192"], "did you mean '--max-model-len'"),
    (["--max_model_len=8192"], "serving.max_model_len"),
    (["--api_key", "k"], "a Secret"),
    (["--trust-remote"], "did you mean '--trust-remote-code'"),
    (["--trust-remote-code"], "serving.trust_remote_code"),
    (["--tensor-parallel-size", "64"], "serving.tensor_parallel_size"),
    (["--pipeline-parallel-size=2"], "GPU quota"),
    (["--data-parallel-size", "4"], "autoscaling"),
    (["--tool-parser-plugin", "/tmp/x.py"], "imports a Python file"),
    (["--reasoning-parser-plugin=/tmp/x.py"], "imports a Python file"),
    (["--logging-config", "/tmp/l.json"], "logging config"),
    (["--worker-extension-cls", "evil.Ext"], "imports a class"),
    (["--load-format", "dummy"], "random weights"),
    (["--otlp-traces-endpoint", "http://x:4317"], "another host"),
    (["--enable-log-outputs"], "generated text"),
    (["--uds", "/tmp/s"], "behind the gate"),
    (["--host=0.0.0.0"], "the target"),
    (["--port", "1"], "the target"),
    (["--middleware", "evil.M"], "arbitrary Python"),
    (["--allowed-local-media-path=/"], "read files"),
    (["--config", "/tmp/x.yaml"], "config file"),
    (["--speculative-config", "{}"], "draft model"),
    (["--hf-overrides", '{"auto_map": {}}'], "rewrites the model's config"),
    (["--no-disable-uvicorn-access-log"], "access log"),
    (["--"], "bare '--'"),
    (["--seed", "1", "--", "/other/model"], "bare '--'"),
    (["model-path"], "value without a flag"),
    (["--enforce-eager=false"], "takes no value"),
    (["--seed"], "needs a value"),
    (["--seed", "--enforce-eager"], "needs a value"),
    (["--seed", "1", "--seed", "2"], "given twice"),
    (["--seed=" + "9" * 2000], "1 to 1024"),
    (["--tool-call-parser", "hermes\nx"], "printable ASCII"),
    (["--seеd", "1"], "printable ASCII"),  # a Cyrillic 'е'
    (["--some-future-flag", "1"], "not on the extra_args allow-list"),
    (["--compilation-config", "{}"], "not on the extra_args allow-list"),
]


@pytest.mark.parametrize(("extra", "fragment"), HOSTILE, ids=[" ".join(extra)[:40] for extra, _ in HOSTILE])
def test_hostile_extra_args_are_refused_on_every_entry(extra: list[str], fragment: str) -> None:
    _, problems = parse_extra_args(extra)
    assert any(fragment in problem for problem in problems), problems
    data = {"models": [{"name": "m", "source": {"repo": "a/b"}, "serving": {"extra_args": extra}}]}
    with pytest.raises(CatalogError) as refused:
        parse_catalog(data, origin="models.yaml")
    (line,) = str(refused.value).splitlines()
    assert line.startswith("models.yaml: model 'm': serving.extra_args: ") and fragment in line and len(line) < 600
    model = parse_catalog({"models": [{"name": "m", "source": {"repo": "a/b"}}]}).model("m")
    with pytest.raises(CatalogError, match=r"serving\.extra_args"):  # the same check on --set, run config, sensors
        ModelPatch.parse(model, {"extra_args": list(extra)}, origin="--set")


@pytest.mark.parametrize("extra", [["--api-key.x", "foo"], ["-t", "2"], ["--max-model", "8192"], ["--trust-remote"]])
def test_those_spellings_really_reach_the_managed_settings_in_vllm(
    vllm_parser: argparse.ArgumentParser, extra: list[str]
) -> None:
    """Why the spellings above are refused: vLLM's own parser reads each as a setting the platform manages."""
    changed = set(_changed(vllm_parser, extra))
    managed = {_options(vllm_parser)[flag].dest for flag in MANAGED_FLAGS if flag in _options(vllm_parser)}
    assert changed & managed, changed


def test_names_are_read_with_underscores_as_dashes() -> None:
    assert canonical("--kv_cache_dtype") == "--kv-cache-dtype"
    flags, problems = parse_extra_args(["--kv_cache_dtype=fp8"])
    assert problems == [] and flags[0].flag == "--kv-cache-dtype" and flags[0].value == "fp8"


def test_vllm_own_parser_accepts_the_arguments(vllm_parser: argparse.ArgumentParser) -> None:
    serving = Serving(
        max_num_seqs=8,
        max_num_batched_tokens=2048,
        enable_prefix_caching=False,
        enable_chunked_prefill=False,
        max_model_len=2048,
    )
    invocation = engine_invocation(serving, served_model_name="m", weights_path="/w", port=8123)
    parsed = vllm_parser.parse_args(list(invocation.args))
    assert (parsed.model, parsed.max_num_seqs, parsed.max_model_len, parsed.port) == ("/w", 8, 2048, 8123)
    assert parsed.enable_chunked_prefill is False and parsed.enable_prefix_caching is False
    # The LoRA flags as vLLM reads them: each adapter a served name with its directory.
    adapters = {"m-sql": "/w/adapters/sql", "m-chat": "/w/adapters/chat"}
    lora = VLLM.invocation(
        serving, served_model_name="m", weights_path="/w", host="127.0.0.1", port=8123,
        adapters=LoraAdapters(adapters, max_loras=2, max_lora_rank=32),
    )  # fmt: skip
    assert (
        lora.env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "0" and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in invocation.env
    )
    parsed = vllm_parser.parse_args(list(lora.args))
    assert parsed.enable_lora is True and (parsed.max_loras, parsed.max_lora_rank) == (2, 32)
    assert {module.name: module.path for module in parsed.lora_modules} == adapters
    assert VLLM.lora_args(LoraAdapters({}, max_loras=1, max_lora_rank=16)) == ()  # no adapters: LoRA stays off
