"""The local target with real vLLM on CPU: serving, benchmark, SLO gate, blue/green promotion, failures."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.catalog import Catalog
from llm_platform.defs.jobs import LIFECYCLE_ASSETS, PROMOTE_ASSETS
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.errors import BenchmarkError, TargetError
from llm_platform.processes import children_of, command_line, process_alive
from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings
from tests.conftest import ServedTiny, tiny_catalog

pytestmark = pytest.mark.integration

SMALL_PLAN = {"prompts_per_level": 12, "input_len": 64, "output_len": 16, "concurrency_levels": [1, 4],
              "num_warmups": 1}  # fmt: skip


def _complete(endpoint: str, api_key: str | None, prompt: str = "hello", max_tokens: int = 8) -> dict[str, object]:
    body = json.dumps({"model": "tiny-llama", "prompt": prompt, "max_tokens": max_tokens}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    request = urllib.request.Request(f"{endpoint}/v1/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        result: dict[str, object] = json.loads(response.read())
        return result


def _lifecycle(served: ServedTiny, catalog: Catalog, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        lifecycle_assets(catalog),
        selection=LIFECYCLE_ASSETS,
        partition_key="tiny-llama",
        resources=served.resources(),
        run_config={"ops": {"smoke_benchmark": {"config": SMALL_PLAN}}},
        instance=instance,
        raise_on_error=False,
    )


def test_promoted_model_answers_at_its_endpoint_and_is_listed_for_prometheus(served_tiny: ServedTiny) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:  # the endpoint requires the API key
        _complete(served_tiny.endpoint, None)
    assert refused.value.code == 401
    result = _complete(served_tiny.endpoint, served_tiny.api_key)
    choices = result["choices"]
    assert isinstance(choices, list) and choices[0]["finish_reason"] == "length"
    file_sd = json.loads((Path(served_tiny.local_target.file_sd_dir) / "tiny-llama.json").read_text())
    assert [group["labels"]["role"] for group in file_sd] == ["active"]
    assert file_sd[0]["labels"]["fingerprint"] == served_tiny.fingerprint


def test_a_restarted_process_finds_the_running_server(served_tiny: ServedTiny) -> None:
    fresh = served_tiny.local_target.target()  # a new object, as after a restart of Dagster
    status = fresh.status("tiny-llama")
    assert status.healthy and status.active is not None
    assert status.active.fingerprint == served_tiny.fingerprint and process_alive(status.active.pid)


def test_a_one_device_server_is_two_engine_processes(served_tiny: ServedTiny) -> None:
    """The gate, its vLLM API server, and one engine core that runs the model: no third vLLM process for a worker
    (on CPU vLLM starts one unless told otherwise, and it busy-polls a core of the machine)."""
    active = served_tiny.local_target.target().status("tiny-llama").active
    assert active is not None
    (api_server,) = children_of(active.pid)
    assert "vllm.entrypoints.openai.api_server" in command_line(api_server)
    descendants, parents = [], [api_server]
    while parents:
        children = [child for parent in parents for child in children_of(parent)]
        descendants += children
        parents = children
    # vLLM retitles its processes (VLLM::EngineCore, VLLM::Worker_...); the others are multiprocessing's helpers.
    titles = [command_line(pid).strip() for pid in descendants]
    assert [title for title in titles if title.startswith("VLLM::")] == ["VLLM::EngineCore"]


def test_loose_slos_pass_and_the_config_is_promoted(served_tiny: ServedTiny, tmp_path: Path) -> None:
    catalog = tiny_catalog()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = _lifecycle(served_tiny, catalog, instance)
        assert result.success
        outcome = result.output_for_node("smoke_benchmark")
        frame = outcome.frame
        assert outcome.slo_passed and outcome.config_fingerprint == result.output_for_node("serving_config").fingerprint
        assert list(frame["concurrency"]) == [1.0, 4.0]
        assert (frame["completed"] == 12).all() and (frame["failed"] == 0).all()
        assert (frame["output_throughput"] > 0).all()
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {
            "slo_ttft_p95_ms": True,
            "slo_itl_p95_ms": True,
            "slo_min_output_tokens_per_s": True,
            "slo_max_error_rate": True,
            "slo_peak_rate": True,  # no measured traffic profile: no peak-rate run (a note)
            "slo_adapters": True,  # no adapters: nothing to judge
            "slo_feasible": True,  # serving_plan's: no platform.gpu_type here, nothing to judge (a note)
        }
        (bench,) = result.asset_materializations_for_node("smoke_benchmark")
        assert "data:image/png;base64," in str(bench.metadata["plot"].value)
        (deployment,) = result.asset_materializations_for_node("vllm_deployment")
        assert deployment.metadata["endpoint"].value == served_tiny.endpoint
        assert deployment.metadata["server_fingerprint"].value == served_tiny.fingerprint  # reused, not restarted


def test_a_too_strict_slo_fails_its_check_and_blocks_promotion(served_tiny: ServedTiny, tmp_path: Path) -> None:
    catalog = tiny_catalog(
        slo={"ttft_p95_ms": 0.001, "itl_p95_ms": 5000, "min_output_tokens_per_s": 1, "max_error_rate": 0}
    )
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = _lifecycle(served_tiny, catalog, instance)
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert checks["slo_ttft_p95_ms"].passed is False
        assert checks["slo_ttft_p95_ms"].metadata["threshold"].value == 0.001
        assert checks["slo_itl_p95_ms"].passed is True
        assert result.asset_materializations_for_node("vllm_deployment") == []
    # The model keeps serving with its previous config.
    status = served_tiny.local_target.target().status("tiny-llama")
    assert status.healthy and status.active is not None and status.active.fingerprint == served_tiny.fingerprint


def _fake_interpreter(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-python"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_a_server_that_never_becomes_healthy_fails_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    python = _fake_interpreter(tmp_path, 'echo "loading weights, slowly"; exec sleep 600')
    target = LocalServers(
        LocalTargetSettings(
            state_dir=tmp_path / "state", file_sd_dir=tmp_path / "sd", python=python, startup_timeout_s=3
        )
    )
    model = tiny_catalog().model("tiny-llama")
    with pytest.raises(TargetError) as caught:
        target.ensure_server(model, "/nowhere", log=lambda _: None)
    message = str(caught.value)
    assert message.startswith("model 'tiny-llama': vLLM did not become healthy within 3 s; last lines of ")
    assert "loading weights, slowly" in message
    assert target.servers("tiny-llama") == []
    logs = list((tmp_path / "state" / "logs").glob("tiny-llama-*.log"))
    assert len(logs) == 1
    assert json.loads((tmp_path / "sd" / "tiny-llama.json").read_text()) == []
    # The process group is gone: no sleeping child survived.
    assert not any(
        "sleep 600" in p.read_bytes().decode(errors="replace").replace("\0", " ")
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if p.exists()
    )


def test_a_server_that_crashes_reports_its_exit_code_and_log(tmp_path: Path) -> None:
    python = _fake_interpreter(tmp_path, 'echo "ValueError: no config.json in /nowhere" >&2; exit 3')
    target = LocalServers(
        LocalTargetSettings(
            state_dir=tmp_path / "state", file_sd_dir=tmp_path / "sd", python=python, startup_timeout_s=30
        )
    )
    with pytest.raises(TargetError, match=r"vLLM exited with code 3 while starting(.|\n)*no config.json"):
        target.ensure_server(tiny_catalog().model("tiny-llama"), "/nowhere", log=lambda _: None)
    assert target.servers("tiny-llama") == []


def test_cli_local_status_and_stop_of_an_unknown_state(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    status = subprocess.run(
        [sys.executable, "-m", "llm_platform.cli", "local", "status"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0 and status.stdout.strip() == "no model is served by the local target"


@dataclass
class Calls:
    answered: int = 0
    failures: list[str] = field(default_factory=list)


@contextmanager
def _kept_calling(served: ServedTiny) -> Iterator[Calls]:
    """A steady trickle of requests at the endpoint while the body runs (not a flood: a new server must start on the
    same two cores); what they met."""
    calls = Calls()
    stop = threading.Event()

    def keep_calling() -> None:
        while not stop.wait(0.5):
            try:
                _complete(served.endpoint, served.api_key, max_tokens=4)
                calls.answered += 1
            except Exception as error:
                calls.failures.append(repr(error))

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        yield calls
    finally:
        stop.set()
        caller.join()


@pytest.mark.slow(seconds=135)
def test_an_override_is_promoted_blue_green_benchmarked_live_and_promoted_back(
    served_tiny: ServedTiny, tmp_path: Path
) -> None:
    """promote with an override (serving_config diff in metadata), then the benchmark_live job against the endpoint,
    compared with the promotion's benchmark, then the catalog's config promoted back: two blue/green switches while
    a caller keeps calling the endpoint. No request fails, and each switch leaves exactly one server."""
    catalog = tiny_catalog()
    assets = lifecycle_assets(catalog)
    resources = served_tiny.resources()
    plan = {"config": SMALL_PLAN}
    target = served_tiny.local_target.target()
    original = target.active("tiny-llama")
    assert original is not None and original.fingerprint == served_tiny.fingerprint
    with _kept_calling(served_tiny) as calls:
        try:
            with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
                dg.materialize(assets, selection=["model_weights"], partition_key="tiny-llama", resources=resources,
                               instance=instance)  # fmt: skip
                promoted = dg.materialize(
                    assets,
                    selection=PROMOTE_ASSETS,
                    partition_key="tiny-llama",
                    resources=resources,
                    instance=instance,
                    run_config={
                        "ops": {
                            "serving_config": {"config": {"overrides": {"max_num_seqs": "8"}, "reason": "test"}},
                            "smoke_benchmark": plan,
                        }
                    },
                )
                overridden = target.status("tiny-llama")
                live = dg.materialize(
                    assets,
                    selection=["live_benchmark"],
                    partition_key="tiny-llama",
                    resources=resources,
                    instance=instance,
                )
        finally:
            restored = target.promote(catalog.model("tiny-llama"), served_tiny.weights_path, log=lambda _: None)

    (config_event,) = promoted.asset_materializations_for_node("serving_config")
    diff = config_event.metadata["diff_vs_catalog"]
    assert isinstance(diff, dg.TableMetadataValue)
    assert [(r.data["field"], r.data["catalog"], r.data["effective"]) for r in diff.records] == [
        ("max_num_seqs", "32", "8")
    ]
    assert "--max-num-seqs" in str(config_event.metadata["engine_args"].value)
    new_server = promoted.asset_materializations_for_node("vllm_deployment")[0].metadata["server_fingerprint"]
    assert new_server.value != served_tiny.fingerprint
    (check,) = live.get_asset_check_evaluations()
    assert check.check_name == "no_regression"
    assert check.metadata["max_regression_pct"].value == 20.0
    frame = live.output_for_node("live_benchmark")
    assert list(frame["concurrency"]) == [1.0, 4.0] and (frame["failed"] == 0).all()
    (live_event,) = live.asset_materializations_for_node("live_benchmark")
    assert live_event.metadata["endpoint"].value == served_tiny.endpoint
    # Both switches: the endpoint answered throughout, and the server switched away from stopped each time.
    assert calls.failures == []
    assert calls.answered > 10
    assert overridden.active is not None and overridden.active.fingerprint == new_server.value
    assert [s.fingerprint for s in overridden.servers] == [new_server.value] and not process_alive(original.pid)
    assert restored.active is not None and restored.active.fingerprint == served_tiny.fingerprint
    assert [s.fingerprint for s in restored.servers] == [served_tiny.fingerprint]
    assert not process_alive(overridden.active.pid) and restored.endpoint == served_tiny.endpoint


def test_a_bad_override_fails_with_the_catalogs_message(served_tiny: ServedTiny, tmp_path: Path) -> None:
    catalog = tiny_catalog()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.materialize(
            lifecycle_assets(catalog),
            selection=["model_weights", "adapter_weights", "serving_config"],
            partition_key="tiny-llama",
            resources=served_tiny.resources(),
            instance=instance,
            run_config={"ops": {"serving_config": {"config": {"overrides": {"max_num_seq": "8"}}}}},
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None  # a dg.Failure with our one line, not a crash with a traceback
    assert user_failure.description == (
        "serving_config run config: model 'tiny-llama': serving.max_num_seq: unknown field; did you mean "
        "'max_num_seqs'?"
    )


def test_deployment_refuses_a_config_that_was_not_benchmarked(served_tiny: ServedTiny, tmp_path: Path) -> None:
    catalog = tiny_catalog()
    assets = lifecycle_assets(catalog)
    resources = served_tiny.resources()
    strict = tiny_catalog(slo={"ttft_p95_ms": 0.001})
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        failed = dg.materialize(
            lifecycle_assets(strict), selection=LIFECYCLE_ASSETS, partition_key="tiny-llama", resources=resources,
            instance=instance, run_config={"ops": {"smoke_benchmark": {"config": SMALL_PLAN}}}, raise_on_error=False,
        )  # fmt: skip
        assert not failed.asset_materializations_for_node("vllm_deployment")
        # Materializing the deployment alone afterwards must not promote the config that missed its SLOs.
        alone = dg.materialize(
            assets, selection=["vllm_deployment"], partition_key="tiny-llama", resources=resources,
            instance=instance, raise_on_error=False,
        )  # fmt: skip
    failure = next(e for e in alone.all_events if e.is_step_failure)
    assert failure.step_failure_data.error is not None
    assert "the last smoke_benchmark missed its SLOs; run the promote job" in failure.step_failure_data.error.message
    status = served_tiny.local_target.target().status("tiny-llama")
    assert status.active is not None and status.active.fingerprint == served_tiny.fingerprint


def _replayed(served_tiny: ServedTiny, work_dir: Path, **plan: Any) -> dict[str, Any]:
    """One level of a replaying plan (``plan``: its fields) sent to the session's server by the platform's runner:
    vLLM's result."""
    from llm_platform.benchmark.plan import BenchmarkPlan
    from llm_platform.benchmark.runner import run_plan
    from llm_platform.engine.vllm import VLLM

    replay = BenchmarkPlan(prompts_per_level=len(plan["requests"]), num_warmups=0, workload="test", **plan)
    _, raw = run_plan(
        replay, engine=VLLM, model="tiny-llama", base_url=served_tiny.endpoint, tokenizer=served_tiny.weights_path,
        work_dir=work_dir, api_key=served_tiny.api_key,
    )  # fmt: skip
    (result,) = raw.values()
    return dict(result)


def test_a_replay_sends_every_request_with_its_own_prompt_and_output_length(
    served_tiny: ServedTiny, tmp_path: Path
) -> None:
    """What only vLLM's benchmark shows: the runner writes a prompt of each drawn length with the model's
    tokenizer, and vLLM's custom dataset sends each request with its own output length (EOS ignored)."""
    lengths = ((20, 5), (300, 40), (64, 12), (700, 3), (150, 25))
    result = _replayed(served_tiny, tmp_path, requests=lengths, concurrency_levels=(2,))
    assert result["completed"] == len(lengths)
    assert result["total_output_tokens"] == sum(output for _, output in lengths)
    # A decode/encode round trip may merge a token or two, and the tokenizer adds BOS: within 3 % of the lengths.
    assert result["total_input_tokens"] == pytest.approx(sum(prompt for prompt, _ in lengths), rel=0.03)
    dataset = [json.loads(line) for line in (tmp_path / "replay-dataset.jsonl").read_text().splitlines()]
    assert [row["output_tokens"] for row in dataset] == [output for _, output in lengths]
    assert len({row["prompt"] for row in dataset}) == len(lengths)


def test_a_trace_replay_sends_each_request_at_its_own_time_with_its_exact_lengths(
    served_tiny: ServedTiny, tmp_path: Path
) -> None:
    """What only vLLM's benchmark shows: a trace (lengths and arrival times) written as vLLM's ``timed_trace`` is
    sent request by request at its own times (the run lasts at least until the last arrival, however high the
    concurrency) with exactly its prompt and output lengths."""
    lengths, arrivals = ((20, 5), (300, 8), (64, 4)), (0.0, 0.2, 3.0)
    result = _replayed(served_tiny, tmp_path, requests=lengths, arrivals_s=arrivals, concurrency_levels=(64,))
    assert result["completed"] == len(lengths)
    assert result["total_input_tokens"] == sum(prompt for prompt, _ in lengths)  # token ids: no round trip
    assert result["total_output_tokens"] == sum(output for _, output in lengths)
    assert float(result["duration"]) >= arrivals[-1]


def test_a_failing_level_is_named_and_the_later_levels_never_run(tmp_path: Path) -> None:
    """One child process runs every level of a plan in order: the level vLLM's benchmark fails at (here the first:
    the tokenizer directory is empty) is the one the error names, with vLLM's own lines and never the key, and
    nothing after it is measured."""
    from llm_platform.benchmark.plan import BenchmarkPlan, bench_serve_args, level_filename
    from llm_platform.benchmark.runner import run_plan
    from llm_platform.conventions import BENCH_LOG_FILE, BENCH_RUNS_FILE
    from llm_platform.engine.vllm import VLLM

    key, tokenizer, work_dir = "sk-secret-0123456789", tmp_path / "empty-weights", tmp_path / "bench"
    tokenizer.mkdir()
    plan = BenchmarkPlan(input_len=16, output_len=4, prompts_per_level=2, concurrency_levels=(1, 2), num_warmups=0)
    with pytest.raises(BenchmarkError) as failed:
        run_plan(plan, engine=VLLM, model="tiny-llama", base_url="http://127.0.0.1:9", tokenizer=str(tokenizer),
                 work_dir=work_dir, api_key=key)  # fmt: skip
    message = str(failed.value)
    assert message.startswith("model 'tiny-llama': vllm bench serve failed at concurrency 1 (exit 1)"), message
    assert "tokenizer" in message.split("\n", 1)[1] and key not in message  # vLLM's own lines follow
    expected = [
        bench_serve_args(VLLM, plan, level, base_url="http://127.0.0.1:9", served_model_name="tiny-llama",
                         tokenizer=str(tokenizer), result_dir=str(work_dir), result_filename=level_filename(level))
        for level in (1, 2)
    ]  # fmt: skip
    assert json.loads((work_dir / BENCH_RUNS_FILE).read_text()) == expected
    assert not (work_dir / level_filename(1)).exists() and not (work_dir / level_filename(2)).exists()
    assert "tokenizer" in (work_dir / BENCH_LOG_FILE).read_text()  # the child's output, kept beside its runs


def test_every_plan_of_a_process_forks_its_client_from_one_warm_server(tmp_path: Path) -> None:
    """vLLM's benchmark is imported once per process that benchmarks, by a fork server the first plan starts; every
    plan's client is a fork of it that runs in the caller's environment as it is at that plan: each plan's key is
    the one its requests carry (the server started with the first)."""
    import contextlib
    import http.server
    import os

    from llm_platform.benchmark.plan import BenchmarkPlan
    from llm_platform.benchmark.runner import run_plan
    from llm_platform.conventions import BENCH_LOG_FILE
    from llm_platform.dev.tiny_model import make_tiny_model
    from llm_platform.engine.vllm import VLLM

    bearers: list[str] = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.startswith("/v1/"):  # (vLLM's prompt alignment asks /tokenize, without a key)
                bearers.append(self.headers.get("Authorization", ""))
            self.send_error(503)

        def log_message(self, *_: object) -> None:
            pass

    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    tokenizer = make_tiny_model(tmp_path / "tiny")
    plan = BenchmarkPlan(input_len=16, output_len=4, prompts_per_level=1, concurrency_levels=(1,), num_warmups=0)
    keys, servers = ("sk-first-0123456789", "sk-second-0123456789"), []
    try:
        for run, key in enumerate(keys):
            with contextlib.suppress(BenchmarkError):  # every request refused: a level of errors, or none at all
                run_plan(plan, engine=VLLM, model="tiny-llama", base_url=f"http://127.0.0.1:{endpoint.server_port}",
                         tokenizer=str(tokenizer), work_dir=tmp_path / str(run), api_key=key)  # fmt: skip
            servers.append([pid for pid in children_of(os.getpid()) if "forkserver" in command_line(pid)])
            assert key not in (tmp_path / str(run) / BENCH_LOG_FILE).read_text()
    finally:
        endpoint.shutdown()
    assert sorted(set(bearers)) == [f"Bearer {key}" for key in keys]
    assert len(servers[0]) == 1 and servers[1] == servers[0]
    maps = Path(f"/proc/{servers[0][0]}/maps").read_text()
    assert "libtorch" in maps  # vLLM's benchmark (and the torch under it) imported in the server, not per plan
