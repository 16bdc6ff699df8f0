"""The Dagster code location loads the catalog; a bad catalog fails the load with the catalog's own message."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import yaml

from tests.conftest import EXAMPLE_CATALOG, REPO_ROOT

pytestmark = pytest.mark.integration


def _validate(catalog: Path, dagster_home: Path) -> subprocess.CompletedProcess[str]:
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "LLM_PLATFORM_CATALOG": str(catalog), "DAGSTER_HOME": str(dagster_home)}
    return subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_code_location_loads_with_one_partition_per_model(tmp_path: Path) -> None:
    result = _validate(EXAMPLE_CATALOG, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful for code location llm_platform" in result.stdout + result.stderr


def test_partitions_are_the_catalog_model_names() -> None:
    from llm_platform.catalog_files import load_catalog
    from llm_platform.definitions import build_definitions

    catalog = load_catalog(EXAMPLE_CATALOG)
    definitions = build_definitions(catalog)
    assert definitions.metadata["models"].value == ", ".join(catalog.model_names)


def test_bad_catalog_fails_the_load_with_readable_lines(tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text(yaml.safe_dump({"models": [{"name": "Llama", "source": {"repo": "a/b"}}]}))
    result = _validate(bad, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{bad}: model 'Llama': name: 'Llama' is not a DNS-1123 label" in output


def test_jobs_and_one_live_benchmark_schedule_per_model() -> None:
    from llm_platform.catalog_files import load_catalog
    from llm_platform.definitions import build_definitions

    catalog = load_catalog(EXAMPLE_CATALOG)
    repository = build_definitions(catalog).get_repository_def()
    jobs = {name: repository.get_job(name) for name in ("lifecycle", "promote", "benchmark_live")}
    assert {node.name for node in jobs["promote"].nodes_in_topological_order} == {
        "adapter_weights",  # the catalog's adapters now (verified; a new one fetched): part of what is promoted
        "serving_config",
        "smoke_benchmark",
        "vllm_deployment",
    }
    assert "model_weights" in {node.name for node in jobs["lifecycle"].nodes_in_topological_order}
    schedules = {schedule.name: schedule for schedule in repository.schedule_defs}
    assert set(schedules) == {f"benchmark_live_{name.replace('-', '_')}" for name in catalog.model_names}
    for schedule in schedules.values():
        assert schedule.cron_schedule == catalog.platform.live_benchmark_cron
        assert schedule.execution_timezone == catalog.platform.live_benchmark_timezone
        assert schedule.job_name == "benchmark_live"


def test_live_benchmark_schedule_skips_a_model_never_deployed_and_requests_a_deployed_one() -> None:
    import dagster as dg

    from llm_platform.catalog import parse_catalog
    from llm_platform.definitions import build_definitions

    catalog = parse_catalog(
        {
            "platform": {"live_benchmark_cron": "30 2 * * *", "live_benchmark_timezone": "Europe/Berlin"},
            "models": [{"name": "tiny", "source": {"repo": "a/b"}}],
        }
    )
    repository = build_definitions(catalog).get_repository_def()
    (schedule,) = repository.schedule_defs
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 2 * * *", "Europe/Berlin")
    with dg.instance_for_test() as instance:
        at = datetime(2026, 11, 28, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
        with dg.build_schedule_context(instance, scheduled_execution_time=at, repository_def=repository) as context:
            skipped = schedule.evaluate_tick(context)
            assert skipped.skip_message == "model 'tiny' has never been deployed; nothing to benchmark"
            instance.report_runless_asset_event(dg.AssetMaterialization("vllm_deployment", partition="tiny"))
            (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key == "tiny"
    assert request.run_key == "tiny:2026-11-28T02:30:00+01:00"  # one run per tick, even if evaluated twice
    assert request.tags["llm-platform/trigger"] == "schedule"


def test_no_schedule_when_the_catalog_disables_it() -> None:
    from llm_platform.catalog import parse_catalog
    from llm_platform.definitions import build_definitions

    catalog = parse_catalog(
        {"platform": {"live_benchmark_cron": None}, "models": [{"name": "tiny", "source": {"repo": "a/b"}}]}
    )
    assert list(build_definitions(catalog).get_repository_def().schedule_defs) == []


def test_promotion_request_picks_the_job_and_run_config() -> None:
    from llm_platform.defs.jobs import promotion_request

    job, config = promotion_request(overrides={"max_num_seqs": "64"}, reason="why")
    assert job == "promote"
    assert config == {"ops": {"serving_config": {"config": {"overrides": {"max_num_seqs": "64"}, "reason": "why"}}}}
    job, config = promotion_request(revision="v2", benchmark={"prompts_per_level": 8})
    assert job == "lifecycle"
    assert config["ops"]["model_weights"] == {"config": {"revision": "v2"}}
    assert config["ops"]["smoke_benchmark"] == {"config": {"prompts_per_level": 8}}


def _kubernetes_load(tmp_path: Path, platform: dict[str, object], artifacts: str | None) -> str:
    """`dagster definitions validate` of a one-model catalog on the kubernetes target; its combined output."""
    catalog = tmp_path / "models.yaml"
    catalog.write_text(yaml.safe_dump({"platform": platform, "models": [{"name": "m", "source": {"repo": "a/m"}}]}))
    env = {key: value for key, value in os.environ.items() if key not in ("LLM_PLATFORM_PROMETHEUS_URL",)}
    env.update(
        {"LLM_PLATFORM_CATALOG": str(catalog), "DAGSTER_HOME": str(tmp_path), "LLM_PLATFORM_TARGET": "kubernetes"}
    )
    env.pop("LLM_PLATFORM_ARTIFACTS", None)
    if artifacts is not None:
        env["LLM_PLATFORM_ARTIFACTS"] = artifacts
    result = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    return ("ok " if result.returncode == 0 else "failed ") + result.stdout + result.stderr


def test_kubernetes_target_reads_prometheus_from_the_catalog_and_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_platform.catalog_files import load_catalog
    from llm_platform.defs.resources import PrometheusResource, resources_from_env

    catalog = load_catalog(EXAMPLE_CATALOG)
    monkeypatch.delenv("LLM_PLATFORM_PROMETHEUS_URL", raising=False)
    resources = resources_from_env(catalog.platform, "local")
    with dg.build_resources({"prometheus": resources["prometheus"]}) as built:  # sealed: built as a run builds it
        prometheus = built.prometheus
    assert isinstance(prometheus, PrometheusResource) and prometheus.url == catalog.platform.prometheus_url

    assert _kubernetes_load(tmp_path, {}, "/artifacts").startswith("ok ")
    missing = _kubernetes_load(tmp_path, {"prometheus_url": None}, "/artifacts")
    assert missing.startswith("failed ")
    assert "models.yaml: platform.prometheus_url: input should be a valid string (got None)" in missing
    no_artifacts = _kubernetes_load(tmp_path, {}, None)
    assert no_artifacts.startswith("failed ") and "LLM_PLATFORM_ARTIFACTS is not set" in no_artifacts


def test_materialize_all_of_the_lifecycle_group_spends_no_search_or_live_benchmark() -> None:
    from llm_platform.catalog_files import load_catalog
    from llm_platform.definitions import build_definitions

    repository = build_definitions(load_catalog(EXAMPLE_CATALOG)).get_repository_def()
    groups: dict[str, set[str]] = {}
    for node in repository.asset_graph.asset_nodes:
        groups.setdefault(node.group_name, set()).add(node.key.to_user_string())
    assert groups == {
        "model_lifecycle": {
            "model_weights",
            "adapter_weights",
            "serving_plan",
            "serving_config",
            "smoke_benchmark",
            "vllm_deployment",
        },
        "live_benchmark": {"live_benchmark"},
        "auto_tune": {"tuned_serving_config"},
        "traffic": {"traffic_profile"},
    }
