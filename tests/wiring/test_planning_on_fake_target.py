"""The serving plan, predicted-vs-measured and simulated auto-tune trials through Dagster, on the fake target with
AIConfigurator's real performance data (Llama-3.1-8B on h100_sxm is bundled with aiconfigurator-core)."""

# ruff: noqa: F811 - the fixtures imported from the lifecycle tests are parameters here

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import dagster as dg
import pytest
import yaml

from llm_platform.catalog import parse_catalog
from llm_platform.cli import main
from llm_platform.conventions import PLAN_ASSET, TRAFFIC_PROFILE_ASSET, TUNED_ASSET
from llm_platform.defs.planning import PLAN_CHECK
from llm_platform.defs.storage import VALUE_METADATA_KEY
from llm_platform.defs.values import encode_value
from llm_platform.perfmodel import model_reference, open_perf_model, plan_model
from llm_platform.planning.plan import PlanAxes
from llm_platform.weights.hub import MAX_CONFIG_BYTES
from llm_platform.weights.plan import architecture_of
from llm_platform.workload import MeasuredTraffic, build_profile
from tests.fakehub import FakeHub, FakeRepo
from tests.faketarget import FakeCluster
from tests.wiring.test_lifecycle_on_fake_target import (  # noqa: F401 - fixtures
    MODEL,
    Platform,
    _failure,
    cluster,
)

LLAMA = "meta-llama/Meta-Llama-3.1-8B"


def _catalog(gpu_type: str | None, slo: dict[str, float], repo: str = LLAMA):  # type: ignore[no-untyped-def]
    return parse_catalog({
        "platform": {"gpu_type": gpu_type},
        "models": [{"name": MODEL, "source": {"repo": repo}, "serving": {"max_model_len": 4096, "max_num_seqs": 64},
                    "slo": {**slo, "min_output_tokens_per_s": 1, "max_error_rate": 0},
                    "traffic": {"input_tokens": 1024, "output_tokens": 128}}],
    })  # fmt: skip


def test_llama_8b_on_an_h100_plans_like_the_measurements_published_for_it() -> None:
    model = _catalog("h100_sxm", {"ttft_p95_ms": 500, "itl_p95_ms": 30}).model(MODEL)
    plan = plan_model(model, "h100_sxm", 8, None, PlanAxes(tensor_parallel_size=(1, 2)))
    best = plan.best
    assert best is not None and best.tensor_parallel_size == 1  # an 8B model needs no second GPU for this SLO
    assert 2_000 < best.output_tokens_per_s < 20_000 and best.ttft_ms <= 500 and best.tpot_ms <= 30
    assert all(e.fits and e.kv_cache_tokens > 100_000 for e in plan.estimates)
    perf = open_perf_model(model_reference(LLAMA, None), "h100_sxm", 1)
    assert perf.kv_cache_tokens(0.5, 256, 8192) < perf.kv_cache_tokens(0.9, 256, 8192)


def test_a_model_that_does_not_fit_and_an_unknown_model_are_notes_not_failures() -> None:
    seventy = _catalog("l40s", {"ttft_p95_ms": 500, "itl_p95_ms": 30}, "meta-llama/Meta-Llama-3.1-70B").model(MODEL)
    plan = plan_model(seventy, "l40s", 8, None, PlanAxes(tensor_parallel_size=(1,), max_num_seqs=(64,),
                                                        max_num_batched_tokens=(2048,)))  # fmt: skip
    assert plan.best is None and not plan.estimates[0].fits and "does not fit on l40s" in plan.verdict
    unknown = _catalog("h100_sxm", {"ttft_p95_ms": 500, "itl_p95_ms": 30}, "acme/secret").model(MODEL)
    assert "no config for 'acme/secret'" in plan_model(unknown, "h100_sxm", 8, None, PlanAxes()).verdict


def test_a_model_known_only_by_its_downloaded_architecture_is_planned() -> None:
    from importlib import resources

    bundled = resources.files("aiconfigurator_core") / "model_configs" / "meta-llama--Meta-Llama-3.1-8B_config.json"
    architecture = architecture_of(json.loads(bundled.read_text()))
    assert architecture is not None
    model = _catalog("h100_sxm", {"ttft_p95_ms": 500, "itl_p95_ms": 30}, "acme/llama-3-8b-finetune").model(MODEL)
    axes = PlanAxes(tensor_parallel_size=(1,), max_num_seqs=(128,), max_num_batched_tokens=(1024,))
    without = plan_model(model, "h100_sxm", 8, None, axes)
    planned = plan_model(model, "h100_sxm", 8, None, axes, architecture)
    assert without.note and not planned.note and planned.best is not None
    assert planned.best.output_tokens_per_s > 1000


def test_the_plan_runs_before_the_benchmark_which_reports_measured_over_predicted(
    cluster: tuple[str, FakeCluster],
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    platform = Platform(_catalog("h100_sxm", {"ttft_p95_ms": 5000, "itl_p95_ms": 300}), cluster[0], instance, tmp_path)
    plan_config = {"tensor_parallel_size": [1], "max_num_seqs": [64], "max_num_batched_tokens": [1024, 8192]}
    result = platform.lifecycle(serving_plan={"config": plan_config})
    assert result.success
    (plan_event,) = result.asset_materializations_for_node(PLAN_ASSET)
    best_start = plan_event.metadata["best_start"].value
    assert isinstance(best_start, dict) and best_start["max_num_seqs"] == 64
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == PLAN_CHECK]
    assert check.passed
    (bench,) = result.asset_materializations_for_node("smoke_benchmark")
    table = bench.metadata["predicted_vs_measured"]
    assert isinstance(table, dg.TableMetadataValue) and len(table.records) == 2  # the levels 1 and 4
    ratio = bench.metadata["measured_over_predicted_output_tok_s"].value
    assert isinstance(ratio, float) and ratio > 0


def test_an_unmeetable_slo_is_a_warning_before_any_gpu_and_without_gpu_type_there_is_only_a_note(
    cluster: tuple[str, FakeCluster],
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    strict = Platform(_catalog("h100_sxm", {"ttft_p95_ms": 1, "itl_p95_ms": 0.1}), cluster[0], instance, tmp_path)
    assert strict.run(["model_weights"]).success
    planned = strict.run([PLAN_ASSET], {PLAN_ASSET: {"config": {"tensor_parallel_size": [1, 2]}}})
    (check,) = planned.get_asset_check_evaluations()
    assert planned.success and not check.passed
    (event,) = planned.asset_materializations_for_node(PLAN_ASSET)
    assert "set slo.ttft_p95_ms >=" in str(event.metadata["verdict"].value)
    unplanned = Platform(_catalog(None, {"ttft_p95_ms": 1, "itl_p95_ms": 0.1}), cluster[0], instance, tmp_path)
    result = unplanned.run([PLAN_ASSET])
    (event,) = result.asset_materializations_for_node(PLAN_ASSET)
    assert result.success and "platform.gpu_type is not set" in str(event.metadata["verdict"].value)


def test_auto_tune_on_the_simulated_gpu_server_starts_at_the_plan_and_needs_one(
    cluster: tuple[str, FakeCluster],
    instance: dg.DagsterInstance,
    tmp_path: Path,
) -> None:
    platform = Platform(_catalog("h100_sxm", {"ttft_p95_ms": 500, "itl_p95_ms": 30}), cluster[0], instance, tmp_path)
    assert platform.run(["model_weights"]).success
    search = {"max_num_seqs": [32, 64, 128], "max_num_batched_tokens": [512, 2048, 8192], "load_high": 64,
              "input_len": 1024, "output_len": 64, "trials": "simulated", "seed": 7}  # fmt: skip
    without_plan = platform.run([TUNED_ASSET], {TUNED_ASSET: {"config": search}})
    assert not without_plan.success
    assert "simulated trials need a serving plan with a performance model" in _failure(without_plan)
    assert platform.run([PLAN_ASSET], {PLAN_ASSET: {"config": {"tensor_parallel_size": [1]}}}).success

    tuned = platform.run([TUNED_ASSET], {TUNED_ASSET: {"config": search}})

    assert tuned.success
    (event,) = tuned.asset_materializations_for_node(TUNED_ASSET)
    assert event.metadata["trial_backend"].value == "simulated"
    assert event.metadata["trials"].value >= 6  # type: ignore[operator]  # repeats of the current and the start
    low, high = event.metadata["gain_interval_pct"].value  # type: ignore[misc]
    assert low <= event.metadata["gain_pct"].value <= high  # type: ignore[operator]
    assert event.metadata["noise_spread_pct"].value > 0  # type: ignore[operator]
    # An adopted winner was confirmed against the current config measured again after it (three more trials).
    assert len(event.metadata["current_goodputs_after"].value) == (3 if event.metadata["adopted"].value else 0)  # type: ignore[arg-type]
    assert not cluster[1].deployed  # no server was started for a trial
    assert str(event.metadata["workload"].value).startswith("random dataset: 1024 prompt tokens")

    # With a measured profile (short chat turns) the trials send its lengths: other figures than 1024-token prompts.
    chat = build_profile(platform.catalog.model(MODEL), 3600, MeasuredTraffic(
        {50.0: 0.0, 200.0: 1000.0, math.inf: 1000.0}, {20.0: 0.0, 100.0: 1000.0, math.inf: 1000.0},
        1.0, 2.0, 4.0, 0.0, math.nan, math.nan, {}))  # fmt: skip
    instance.report_runless_asset_event(dg.AssetMaterialization(
        TRAFFIC_PROFILE_ASSET, partition=MODEL,
        metadata={VALUE_METADATA_KEY: dg.MetadataValue.json(encode_value(chat))}))  # fmt: skip
    replayed = platform.run([TUNED_ASSET], {TUNED_ASSET: {"config": search}})
    (replay,) = replayed.asset_materializations_for_node(TUNED_ASSET)
    assert replayed.success
    assert str(replay.metadata["workload"].value).startswith(
        "replay of 256 requests drawn from the prometheus profile of 'tiny'"  # load_high 64 x 4 prompts per load
    )
    assert replay.metadata["current_goodputs"].value != event.metadata["current_goodputs"].value


def _hub_with(files: dict[str, bytes]) -> FakeHub:
    hub = FakeHub().start()
    hub.repos["acme/llama-8b-chat"] = FakeRepo(files)
    return hub


def _plan_cli(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    catalog = tmp_path / "models.yaml"
    catalog.write_text(yaml.safe_dump({
        "platform": {"hf_endpoint": hub.endpoint},
        "models": [{"name": MODEL, "source": {"repo": "acme/llama-8b-chat"},
                    "serving": {"max_model_len": 4096, "max_num_seqs": 64},
                    "slo": {"ttft_p95_ms": 500, "itl_p95_ms": 30, "min_output_tokens_per_s": 1, "max_error_rate": 0}}],
    }))  # fmt: skip
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    return main(["plan", MODEL, "--gpu-type", "h100_sxm", "--catalog", str(catalog)])


def test_a_hub_model_aiconfigurator_does_not_bundle_is_planned_from_its_config_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before any download: the platform's hub client fetches config.json alone (pinned to the commit the revision
    resolves to), and AIConfigurator plans from it; no weight file is asked for."""
    config = resources.files("aiconfigurator_core") / "model_configs" / f"{LLAMA.replace('/', '--')}_config.json"
    hub = _hub_with({"config.json": config.read_bytes(), "model.safetensors": b"\0" * 4096})
    try:
        assert _plan_cli(hub, tmp_path, monkeypatch) == 0, capsys.readouterr().err
        fetched = {path for method, path, _ in hub.requests if "/resolve/" in path}
    finally:
        hub.stop()
    verdict = capsys.readouterr().out.splitlines()[-1]
    assert verdict.startswith(f"model '{MODEL}' on h100_sxm: best start TP=1 "), verdict
    assert fetched and all(path.endswith("/config.json") for path in fetched)
    assert f"/resolve/{hub.repos['acme/llama-8b-chat'].sha}/" in next(iter(fetched))


def test_a_hostile_or_missing_config_is_one_line_and_no_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for files, expected in (
        ({"README.md": b"hi"}, "config.json of 'acme/llama-8b-chat' at "),
        ({"config.json": b"[1, 2]"}, "not a JSON object of at most 1048576 bytes"),
        ({"config.json": b" " * (MAX_CONFIG_BYTES + 1)}, "bytes, more than the 1048576 a config may have"),
    ):
        hub = _hub_with(files)
        try:
            assert _plan_cli(hub, tmp_path, monkeypatch) == 1
        finally:
            hub.stop()
        err = capsys.readouterr().err
        assert err.startswith(f"error: model '{MODEL}': ") and expected in err and err.count("\n") == 1, err


def test_only_tensor_parallel_sizes_that_divide_the_attention_heads_are_planned(tmp_path: Path) -> None:
    """vLLM splits the heads over the GPUs: a model with 4 heads is planned on 1, 2 and 4 GPUs, never 8 (which
    AIConfigurator refuses outright, and which used to turn the whole plan into a note)."""
    bundled = resources.files("aiconfigurator_core") / "model_configs" / f"{LLAMA.replace('/', '--')}_config.json"
    config = json.loads(bundled.read_text())
    config.update(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64)  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = _catalog("h100_sxm", {"ttft_p95_ms": 500, "itl_p95_ms": 30}, repo="acme/tiny").model(MODEL)
    plan = plan_model(model, "h100_sxm", 8, str(tmp_path), PlanAxes(max_num_seqs=(64,), max_num_batched_tokens=(512,)))
    assert not plan.note, plan.note
    assert sorted({e.tensor_parallel_size for e in plan.estimates}) == [1, 2, 4]


def test_the_plan_sizes_the_engine_for_the_measured_traffic(
    cluster: tuple[str, FakeCluster], instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """With a measured traffic profile the plan takes its mean lengths instead of the catalog's two numbers, and
    says which it planned for; long documents need more KV cache per request than the catalog's chat turns."""
    catalog = _catalog("h100_sxm", {"ttft_p95_ms": 2000, "itl_p95_ms": 50})
    platform = Platform(catalog, cluster[0], instance, tmp_path / "artifacts")
    assert platform.run(["model_weights"]).success
    before = platform.run([PLAN_ASSET])
    (catalog_plan,) = before.asset_materializations_for_node(PLAN_ASSET)
    assert catalog_plan.metadata["planned_for"].value == "the catalog's traffic: 1024 in / 128 out"
    documents = build_profile(catalog.model(MODEL), 3600, MeasuredTraffic(
        {2000.0: 0.0, 3000.0: 1000.0, math.inf: 1000.0}, {200.0: 0.0, 400.0: 1000.0, math.inf: 1000.0},
        1.0, 2.0, 4.0, 0.0, math.nan, math.nan, {}))  # fmt: skip
    instance.report_runless_asset_event(dg.AssetMaterialization(
        TRAFFIC_PROFILE_ASSET, partition=MODEL,
        metadata={VALUE_METADATA_KEY: dg.MetadataValue.json(encode_value(documents))}))  # fmt: skip

    after = platform.run([PLAN_ASSET])

    (measured_plan,) = after.asset_materializations_for_node(PLAN_ASSET)
    # Each bucket at the mean of what a replay draws from it (log-uniform: below the midpoints 2,500 and 300).
    assert str(measured_plan.metadata["planned_for"].value).startswith(
        "the measured traffic's means (2467 in / 289 out) of the prometheus profile of 'tiny'"
    )
    assert measured_plan.metadata["best_output_tok_s"].value != catalog_plan.metadata["best_output_tok_s"].value
