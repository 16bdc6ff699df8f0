"""A second engine, defined here and registered only for these tests, is served by everything the platform has:
the catalog accepts it by name and checks its extra_args by its rules, the renderer writes its command, image,
autoscaling query and benchmark client into schema-valid objects, Prometheus is asked for its metrics, the planner
says it has no estimate for it, and the whole lifecycle runs with it on the fake target. Nothing outside
``llm_platform/engine/`` (where an engine is registered) and this file had to know it exists."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.catalog import Catalog, model_warnings, parse_catalog
from llm_platform.cli import definitions_problems
from llm_platform.defs.jobs import LIFECYCLE_ASSETS
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.defs.resources import PrometheusResource, WeightsResource
from llm_platform.defs.storage import InstanceValueIOManager
from llm_platform.engine import (
    BenchmarkWorkload,
    Engine,
    EngineInvocation,
    EngineMetrics,
    LoraAdapters,
    ServingSettings,
    register_engine,
    unregister_engine,
)
from llm_platform.errors import CatalogError
from llm_platform.manifests.jobs import render_benchmark_job
from llm_platform.manifests.render import render_files
from llm_platform.manifests.validation import validate_objects
from llm_platform.perfmodel import plan_model
from llm_platform.planning.plan import PlanAxes
from llm_platform.prometheus import Lookback, snapshot_query
from tests.conftest import NO_PROMETHEUS
from tests.faketarget import CLUSTERS, FakeCluster, FakeTargetResource


class ToyEngine(Engine):
    """A made-up engine with flags, metrics, image and client of its own (nothing like vLLM's)."""

    name = "toyserve"
    metrics = EngineMetrics(
        kv_cache_usage="toy_kv_used_ratio",
        preemptions_total="toy_evictions_total",
        requests_waiting="toy_queue_depth",
        requests_running="toy_batch_size",
        prompt_tokens="toy_prompt_len",
        generation_tokens="toy_output_len",
        generated_tokens_total="toy_tokens_out_total",
        requests_finished="toy_requests_done_total",
        failed_requests='outcome="failed"',
        ttft_seconds="toy_first_byte_seconds",
        itl_seconds="toy_token_gap_seconds",
        renamed={"toy_queue_depth": ("toy_pending",)},
    )
    default_max_num_seqs = 48
    container_home = "/home/toy"
    aiconfigurator_backend = None

    @property
    def image_repository(self) -> str:
        return "ghcr.io/acme/toyserve"

    def server_args(
        self, serving: ServingSettings, *, served_model_name: str, weights_path: str,
        adapters: LoraAdapters | None = None,
    ) -> tuple[str, ...]:  # fmt: skip
        return ("--weights", weights_path, "--alias", served_model_name, "--context", str(serving.max_model_len),
                *serving.extra_args)  # fmt: skip

    def invocation(
        self, serving: ServingSettings, *, served_model_name: str, weights_path: str, host: str, port: int,
        uds: str | None = None, extra_env: Mapping[str, str] | None = None, adapters: LoraAdapters | None = None,
    ) -> EngineInvocation:  # fmt: skip
        listen = ("--socket", uds) if uds else ("--bind", f"{host}:{port}")
        args = (*self.server_args(serving, served_model_name=served_model_name, weights_path=weights_path), *listen)
        return EngineInvocation(self.name, ("-m", "toyserve.server"), args, {**(extra_env or {}), "TOY_OFFLINE": "1"})

    def gpu_scheduler_defaults(self, gpu_memory_bytes: int) -> tuple[int, int]:
        return 48, 4096

    def cpu_environment(
        self, *, kv_cache_space_gib: int, threads_bind: str | None, threads: int | None = None
    ) -> dict[str, str]:
        return {"TOY_CACHE_GIB": str(kv_cache_space_gib)}

    def extra_args_problems(self, args: Sequence[str]) -> list[str]:
        return [f"{arg!r} is not a toyserve flag" for arg in args if arg not in ("--fast", "--slow")]

    def extra_args_warnings(self, args: Sequence[str]) -> list[str]:
        return ["--slow: it is slow"] if "--slow" in args else []

    def image(self, repository: str, tag: str) -> str:
        return f"{repository}:{tag}"

    def benchmark_command(self) -> list[str]:
        return ["toy-bench"]

    def benchmark_args(
        self, workload: BenchmarkWorkload, concurrency: int, *, base_url: str, served_model_name: str,
        tokenizer: str, result_dir: str, result_filename: str, percentile_metrics: Sequence[str],
        percentiles: Sequence[int],
    ) -> list[str]:  # fmt: skip
        return ["--url", base_url, "--clients", str(concurrency), "--out", f"{result_dir}/{result_filename}"]


TOY = ToyEngine()
MODEL = "toy-model"


@pytest.fixture(autouse=True)
def toy_engine() -> Iterator[ToyEngine]:
    register_engine(TOY)
    yield TOY
    unregister_engine(TOY.name)


def _catalog(**serving: Any) -> Catalog:
    return parse_catalog(
        {
            "models": [
                {
                    "name": MODEL,
                    "source": {"repo": "acme/toy"},
                    "serving": {"engine": "toyserve", "image_tag": "1.4.2", "max_model_len": 2048, **serving},
                    "slo": {"ttft_p95_ms": 2000, "itl_p95_ms": 100, "min_output_tokens_per_s": 10},
                },
                {"name": "neighbour", "source": {"repo": "acme/neighbour"}},
            ]
        }
    )


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def test_the_catalog_names_registered_engines_and_checks_extra_args_by_the_engine() -> None:
    assert _catalog().models[0].serving.engine == "toyserve"
    assert _catalog().models[1].serving.engine == "vllm"
    with pytest.raises(CatalogError) as unknown:
        _catalog(engine="sglang")
    assert "serving.engine" in str(unknown.value) and "registered: toyserve, vllm" in str(unknown.value)
    # The toy engine's rules, not vLLM's: a vLLM flag is refused, the toy's own accepted (and warned about).
    with pytest.raises(CatalogError, match="'--seed' is not a toyserve flag"):
        _catalog(extra_args=["--seed", "1"])
    assert ("serving.extra_args", "--slow: it is slow") in model_warnings(_catalog(extra_args=["--slow"]).models[0])
    with pytest.raises(CatalogError, match="not on the extra_args allow-list"):
        parse_catalog({"models": [{"name": "v", "source": {"repo": "a/b"}, "serving": {"extra_args": ["--fast"]}}]})


def test_rendered_objects_carry_the_engine_and_pass_the_schemas() -> None:
    catalog = _catalog(extra_args=["--fast"])
    files = render_files(catalog)
    objects = _by_kind(files[f"{MODEL}.yaml"])
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python3", "-m", "toyserve.server"]
    assert container["args"][-3:] == ["--fast", "--bind", "127.0.0.1:8002"]
    assert container["image"] == "ghcr.io/acme/toyserve:1.4.2"
    assert {"name": "TOY_OFFLINE", "value": "1"} in container["env"]
    assert {"name": "cache", "mountPath": "/home/toy"} in container["volumeMounts"]
    query = objects["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
    assert query.startswith("sum(toy_queue_depth{") and "vllm" not in query
    # The neighbour still gets vLLM, in the same render.
    neighbour = _by_kind(files["neighbour.yaml"])["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert neighbour["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]

    from llm_platform.benchmark.plan import plan_for

    model = catalog.models[0]
    job = render_benchmark_job(catalog.platform, model, "a" * 40, plan_for(model, prompts_per_level=4), "run-1")
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert "python3 -m toyserve.server --weights" in script and "toy-bench --url http://127.0.0.1:8002" in script
    assert "vllm" not in script
    validate_objects([*files[f"{MODEL}.yaml"], job])
    assert definitions_problems(catalog) == []


def test_prometheus_is_asked_for_every_engines_metrics_in_one_query() -> None:
    query = snapshot_query(Lookback())
    assert "toy_queue_depth" in query and "vllm:num_requests_waiting" in query
    assert '__name__=~"toy_queue_depth|toy_pending"' in query  # renamed metrics under both names


def test_the_planner_says_it_has_no_estimate_for_the_engine() -> None:
    catalog = _catalog()
    plan = plan_model(catalog.models[0], "h100_sxm", 8, None, PlanAxes())
    assert plan.note == "AIConfigurator has no estimates for engine 'toyserve'"


def test_the_lifecycle_runs_with_the_engine_on_the_fake_target(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    CLUSTERS["second-engine"] = cluster = FakeCluster()
    try:
        result = dg.materialize(
            lifecycle_assets(_catalog()),
            selection=LIFECYCLE_ASSETS,
            partition_key=MODEL,
            resources={
                "io_manager": InstanceValueIOManager(),
                "target": FakeTargetResource(cluster="second-engine", artifacts_root=str(tmp_path / "a")),
                "weights": WeightsResource(),
                "prometheus": PrometheusResource(url=NO_PROMETHEUS),
            },
            run_config={"ops": {"smoke_benchmark": {"config": {"prompts_per_level": 4, "num_warmups": 0}}}},
            instance=instance,
            raise_on_error=False,
        )
        assert result.success
        command = cluster.commands[MODEL]
        assert command[:3] == ["python3", "-m", "toyserve.server"] and "--alias" in command
    finally:
        del CLUSTERS["second-engine"]
