"""The local target's CPU settings, from the environment ``make run`` and the run pods read, reach every server's
invocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_platform.defs.resources import WeightsResource, local_target_from_env
from llm_platform.targets.local_servers import half_the_cores
from tests.conftest import tiny_catalog


@pytest.mark.parametrize(
    ("omp_num_threads", "expected"), [("3", "3"), (None, str(half_the_cores())), ("4,2", str(half_the_cores()))]
)
def test_each_server_runs_the_environments_thread_count_or_half_the_cores(
    omp_num_threads: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers at once (blue/green, a canary) must not run more OpenMP threads than there are cores; a plain
    ``OMP_NUM_THREADS`` is the operator's choice, and what OpenMP alone understands (nested lists) is left to it."""
    for name in ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE"):
        monkeypatch.delenv(name, raising=False)
    if omp_num_threads is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    resource = local_target_from_env(WeightsResource(store_path=str(tmp_path / "store"))).model_copy(
        update={"state_dir": str(tmp_path / "state"), "file_sd_dir": str(tmp_path / "file_sd")}
    )
    invocation = resource.target().invocation(tiny_catalog().model("tiny-llama"), "/w")
    assert invocation.env["OMP_NUM_THREADS"] == expected
