"""Canary promotions on the embedded default with real parts only: the session's vLLM server as the stable version,
a second real vLLM server as the canary, the real nginx edge splitting by weight, a real Prometheus scraping both
with their track, and a bounded traffic generator at the endpoint from one client. The promote job runs the
candidate's smoke benchmark and then ``vllm_deployment``'s canary steps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from llm_platform.catalog import Catalog
from llm_platform.defs.jobs import PROMOTE_ASSETS
from llm_platform.defs.lifecycle import lifecycle_assets
from llm_platform.dev.traffic import Traffic
from llm_platform.processes import process_alive
from llm_platform.targets.local_servers import LocalServers
from tests.conftest import ServedTiny, running_prometheus, tiny_catalog

pytestmark = [pytest.mark.integration, pytest.mark.slow(seconds=200), pytest.mark.timing]

#: Two engines share two cores here, and a closed loop piles its callers up at the slower server: the stable server's
#: p95 TTFT in a step swung from 331 to 3,550 ms across runs (and its ITL from 19 to 578 ms), so no margin against it
#: told these two configs apart reliably. The canary's own figure does, judged against an absolute SLO (the comparison
#: with stable is left wide open; the unit tests pin the margins down). The judge reads vLLM's TTFT histogram, whose
#: buckets around here are 1, 2.5, 5 and 7.5 s: a p95 within a bucket is interpolated, so an SLO inside one (4,000 ms
#: once) fails a good config whose slowest 13 % land in (2.5 s, 5 s] -- CI saw it. The SLO sits on the 5 s bound: a
#: config passes when 95 % of its first tokens came within 5 s, which max_num_seqs 16 does with a wide margin (p95
#: 2.2-3.5 s), and one sequence at a time queues 7 callers behind
#: MAX_TOKENS-token generations.
#: The deadline for evidence is long: one sequence at a time finishes few 512-token requests on a loaded machine, and
#: a run on two shared cores once saw 2 of the 4 needed in 90 s: an abort for that (now "too slow to serve its
#: share"), not on its TTFT.
#: A config that serves its share reaches ``min_requests`` within ``step_seconds`` and never waits for it.
ROLLOUT = {"strategy": "canary", "steps": [50, 100], "step_seconds": 30, "min_requests": 4, "max_wait_seconds": 240,
           "max_ttft_regression_pct": 1000, "max_itl_regression_pct": 1000}  # fmt: skip
SLO = {"ttft_p95_ms": 5000, "itl_p95_ms": 5000, "min_output_tokens_per_s": 1, "max_error_rate": 0}
#: Exposed (a canary needs a host in the catalog), with a rate limit the generator's 8 callers stay under.
EXPOSURE = {"host": "tiny.llm.example.com", "tls_secret": "tiny-tls", "rate_limit_rps": 200}
#: Output tokens per request of the traffic (and of the good candidate's benchmark): long enough that the queue
#: behind one sequence at a time is far past the SLO however fast the engine decodes. At 64 the flawed config's p95
#: read 4.4-5.1 s; at 128 about 9 s, until the model moved into vLLM's engine process (no polling worker beside it):
#: one sequence then decodes at ~3 ms a token and the flawed config read 4.6-5.0 s in a fresh-clone run. At 512,
#: seven callers wait behind 512-token generations: 7 x 512 x 3 ms, about 11 s on an idle machine, more when loaded.
MAX_TOKENS = 512
#: The smoke benchmark of a candidate: a light synthetic load, one request at a time (what one sequence at a time
#: passes however loaded the machine: at concurrency 2 the second request's TTFT is the first one's whole
#: generation, which crossed the SLO in CI while the traffic loaded both cores) ...
LIGHT_PLAN = {"prompts_per_level": 8, "input_len": 32, "output_len": 8, "concurrency_levels": [1], "num_warmups": 0}
#: ... or the traffic's concurrency, which also warms the server for the batches it will see. Its first batch on the
#: fresh server is not what is judged (vLLM's benchmark sends warm-up requests first, at the same concurrency): with
#: 16 prompts the p95 is the slowest, and a cold first batch beside the live traffic read 5 s in CI. Its generations
#: are shorter than the traffic's: a batch's TTFT does not depend on them, and 24 requests of 512 tokens beside the
#: live traffic took two minutes of the test.
TRAFFIC_PLAN = {"prompts_per_level": 16, "input_len": 32, "output_len": 128, "concurrency_levels": [8],
                "num_warmups": 8}  # fmt: skip


def _traffic(served: ServedTiny) -> Traffic:
    """Eight callers, each generation long enough that one sequence at a time queues the others behind it (a tiny
    model on two cores decodes one sequence about as fast as a batch: only the queue shows the config's flaw). Each
    waits for an answer as long as the edge does: a request queued on the flawed canary waited 144 s once, past the
    generator's default 120 s, and counted as a failure the platform did not make."""
    timeout_s = _catalog().model("tiny-llama").exposure.timeout_s
    return Traffic(served.endpoint, served.api_key, "tiny-llama", callers=8, max_tokens=MAX_TOKENS, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def prometheus(served_tiny: ServedTiny, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prometheus(Path(served_tiny.local_target.file_sd_dir), tmp_path_factory.mktemp("prom")) as url:
        yield url


def _catalog() -> Catalog:
    return tiny_catalog(rollout=ROLLOUT, exposure=EXPOSURE, slo=SLO)


@pytest.fixture
def stable(served_tiny: ServedTiny) -> LocalServers:
    """The session's server as this module's stable version, its edge enforcing this catalog's exposure (the same
    config: the server is reused, only the edge reloads); the next test that uses the session's server gets the
    session's catalog back first (a server start after a promoted canary: none when this test is the run's last)."""
    servers = served_tiny.local_target.target()
    served_tiny.reconfigured = True
    servers.promote(_catalog().model("tiny-llama"), served_tiny.weights_path, log=lambda _: None)
    return servers


def _promote(
    served: ServedTiny, prometheus: str, instance: dg.DagsterInstance, max_num_seqs: int, plan: dict[str, Any]
) -> dg.ExecuteInProcessResult:
    catalog = _catalog()
    assets = lifecycle_assets(catalog)
    resources = served.resources(prometheus)
    dg.materialize(assets, selection=["model_weights"], partition_key="tiny-llama", resources=resources,
                   instance=instance)  # fmt: skip
    overrides = {"overrides": {"max_num_seqs": str(max_num_seqs)}, "reason": "canary test"}
    return dg.materialize(
        assets, selection=PROMOTE_ASSETS, partition_key="tiny-llama", resources=resources, instance=instance,
        run_config={"ops": {"serving_config": {"config": overrides}, "smoke_benchmark": {"config": plan}}},
        raise_on_error=False,
    )  # fmt: skip


def _why_failed(result: dg.ExecuteInProcessResult) -> str:
    """The failed step and its reason, so a CI log says which gate stopped the promotion and on what figures."""
    failure = next(event for event in result.all_events if event.is_step_failure)
    data = failure.step_failure_data
    reason = data.user_failure_data.description if data.user_failure_data else data.error
    return f"step {failure.step_key}: {reason}"


def test_a_worse_canary_is_aborted_at_its_first_step_and_the_stable_server_keeps_serving(
    served_tiny: ServedTiny, stable: LocalServers, prometheus: str, tmp_path: Path
) -> None:
    """One sequence at a time passes a light synthetic benchmark (concurrency 1), but under the live traffic's
    concurrency 8 the canary's requests queue: its p95 TTFT passes the SLO and the judge aborts at the 50 % step,
    naming both tracks' figures; every request of the generator was answered."""
    servers = stable
    stable_pid = servers.active("tiny-llama").pid  # type: ignore[union-attr]
    with (
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
        _traffic(served_tiny) as traffic,
    ):
        result = _promote(served_tiny, prometheus, instance, max_num_seqs=1, plan=LIGHT_PLAN)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    user_failure = failure.step_failure_data.user_failure_data
    assert user_failure is not None, failure.step_failure_data.error
    description = str(user_failure.description)
    assert description.startswith("model 'tiny-llama': canary aborted at step 50 % after ")
    assert "canary p95 TTFT" in description and "> SLO 5000 ms" in description
    assert description.endswith("the stable version serves as before")
    steps = user_failure.metadata["canary_steps"]
    assert isinstance(steps, dg.TableMetadataValue)
    assert [row.data["weight_pct"] for row in steps.records][-1] == 50.0
    assert steps.records[-1].data["verdict"] == "abort"
    # Every request answered, none by an error: the canary's were slow, not failed; the stable server never moved.
    assert set(traffic.outcomes) == {"200"}, traffic.outcomes
    status = servers.status("tiny-llama")
    assert status.active is not None and status.active.pid == stable_pid and process_alive(stable_pid)
    assert [s.fingerprint for s in status.servers] == [served_tiny.fingerprint] and servers.canary("tiny-llama") is None
    file_sd = json.loads((Path(served_tiny.local_target.file_sd_dir) / "tiny-llama.json").read_text())
    assert [group["labels"]["track"] for group in file_sd] == ["stable"]


def test_a_good_canary_goes_through_every_step_and_serves_alone(
    served_tiny: ServedTiny, stable: LocalServers, prometheus: str, tmp_path: Path
) -> None:
    """The canary takes all the traffic step by step and then serves alone, the stable server stopped."""
    stable_pid = stable.active("tiny-llama").pid  # type: ignore[union-attr]
    with (
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
        _traffic(served_tiny) as traffic,
    ):
        result = _promote(served_tiny, prometheus, instance, max_num_seqs=16, plan=TRAFFIC_PLAN)
    assert result.success, _why_failed(result)
    (deployed,) = result.asset_materializations_for_node("vllm_deployment")
    steps = deployed.metadata["canary_steps"]
    assert isinstance(steps, dg.TableMetadataValue)
    passed = [row.data["weight_pct"] for row in steps.records if row.data["verdict"] == "pass"]
    assert passed == [50.0, 100.0]
    assert deployed.metadata["canary_outcome"].value == "promoted"
    assert str(deployed.metadata["canary_plot"].value).startswith("![both tracks")
    assert set(traffic.outcomes) == {"200"}, traffic.outcomes
    status = stable.status("tiny-llama")
    assert status.active is not None and status.active.fingerprint == deployed.metadata["server_fingerprint"].value
    assert [s.fingerprint for s in status.servers] == [status.active.fingerprint]  # the new server serves alone
    assert not process_alive(stable_pid) and status.endpoint == served_tiny.endpoint
