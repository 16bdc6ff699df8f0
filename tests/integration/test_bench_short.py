"""Every ``bench/`` script in its short mode (``--short``: small sizes, the same code path), so that a bench that
breaks fails the suite instead of rotting until someone quotes it. Each must exit 0 and print its figures line:
our figure, the reference's and the ratio. Goals are not asserted here (sizes this small say nothing about them);
the full mode is what docs/benchmarks.md quotes."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, ServedTiny, running_prometheus

BENCH = REPO_ROOT / "bench"
#: Each script → the keys its last line must carry (``key=value`` pairs), the ratio among them.
FIGURES = {
    "render.py": ("models", "render_validate_s", "reference_ms_per_model", "ratio"),
    "gate.py": ("direct_ttfb_ms", "gate_ttfb_ms", "rps_ratio"),
    "autotune.py": (
        "tuned_vs_defaults",
        "tuned_vs_grid",
        "trials_ratio",
        "tuned_vs_optimum",
        "grid_vs_optimum",
        "flat_adoptions",
        "drift_adoptions",
    ),
    "download.py": ("repo_bytes", "ours_mb_s", "hf_mb_s", "ratio", "redownloaded_bytes_after_kill"),
    "sensor_scale.py": (
        "models",
        "queries",
        "tick_s",
        "instance_s",
        "prometheus_s",
        "policy_s",
        "rules_eval_s",
        "raw_snapshot_s",
        "federation_snapshot_s",
        "query_api_snapshot_s",
        "reference_s",
        "ratio",
    ),
    "benchmark_fidelity.py": ("ours_output_tok_s", "direct_output_tok_s", "ratio"),
    "profile_fidelity.py": (
        "live_p95_ttft_ms",
        "live_output_tok_s",
        "profile_ttft_ratio",
        "profile_tok_ratio",
        "synthetic_ttft_ratio",
        "synthetic_tok_ratio",
        "trace_ttft_ratio",
        "trace_tok_ratio",
    ),
}
HELPERS = {"shortmode.py"}
#: Benches that measure a running tiny-llama server: the short run measures the session's instead of starting one.
SERVER_BENCHES = {"benchmark_fidelity.py", "profile_fidelity.py"}
#: ... and a Prometheus scraping it.
PROMETHEUS_BENCHES = {"profile_fidelity.py"}
#: The short runs that take minutes here (they drive the server at a fixed rate): marked slow, with their time.
SLOW_SECONDS = {"profile_fidelity.py": 150, "benchmark_fidelity.py": 90}


@pytest.fixture(scope="module")
def tiny_prometheus(served_tiny: ServedTiny, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus scraping the session's server."""
    with running_prometheus(Path(served_tiny.local_target.file_sd_dir), tmp_path_factory.mktemp("prom")) as url:
        yield url


def test_every_bench_script_has_a_short_run_here() -> None:
    scripts = {path.name for path in BENCH.glob("*.py")} - HELPERS
    assert scripts == set(FIGURES), f"bench scripts without a short run in this test: {scripts ^ set(FIGURES)}"


@pytest.mark.integration
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "script",
    [pytest.param(name, marks=[pytest.mark.slow(seconds=SLOW_SECONDS[name])] if name in SLOW_SECONDS else [])
     for name in sorted(FIGURES)],
)  # fmt: skip
def test_bench_short_mode_runs_and_prints_its_figures(script: str, request: pytest.FixtureRequest) -> None:
    extra: list[str] = []
    if script in SERVER_BENCHES:  # the session's tiny-llama server: what a start would add is not the bench's path
        served: ServedTiny = request.getfixturevalue("served_tiny")
        extra = ["--base-url", served.endpoint, "--tokenizer", served.weights_path,
                 "--api-key-file", served.local_target.api_key_file]  # fmt: skip
        if script in PROMETHEUS_BENCHES:  # the server itself, not its edge: the drive's rate is the bench's own
            server = served.local_target.target().active("tiny-llama")
            assert server is not None
            extra[1] = server.base_url
            extra += ["--prometheus", request.getfixturevalue("tiny_prometheus")]
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--short", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=840, check=False,
    )  # fmt: skip
    tail = (result.stdout + result.stderr)[-3000:]
    assert result.returncode == 0, f"bench/{script} --short failed:\n{tail}"
    last = result.stdout.strip().splitlines()[-1]
    figures = dict(pair.split("=", 1) for pair in last.split() if "=" in pair)
    missing = [key for key in FIGURES[script] if key not in figures]
    assert not missing, f"bench/{script} --short: {missing} missing from its last line {last!r}"
    for key in FIGURES[script]:
        value = float(figures[key])
        assert math.isfinite(value) and value >= 0, f"bench/{script}: {key}={figures[key]}"
