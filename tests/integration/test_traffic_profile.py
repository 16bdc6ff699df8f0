"""A model's traffic profile read from a real Prometheus: an hour of vLLM series backfilled with promtool (short
chat turns most of the time, long documents for a third of it, a burst of requests), one query, and the profile
built from it — the lengths' shape, the median and peak rate, the fallback for an idle model, and the retention."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from llm_platform.catalog import parse_catalog
from llm_platform.conventions import TRAFFIC_PROFILE_ASSET
from llm_platform.defs.partitions import model_partitions
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.storage import VALUE_METADATA_KEY, InstanceValueIOManager
from llm_platform.defs.values import decode_value
from llm_platform.defs.workload import build_traffic_profile_asset
from llm_platform.dev.promtrace import Behaviour, Episode, backfill, openmetrics
from llm_platform.engine.vllm import VLLM_METRICS
from llm_platform.processes import free_port
from llm_platform.prometheus import PrometheusClient
from llm_platform.services import LocalServices
from llm_platform.workload import TrafficProfile, build_profile, window_problem

pytestmark = pytest.mark.integration

HOUR = 3600
#: 300-token chat turns with 100-token answers at 2 requests/s; for the middle third, 3,000-token documents with
#: 500-token answers; for 10 minutes near the end, 6 requests/s. A quarter of the requests name a LoRA adapter
#: whose first byte takes 1.5 s (the gate's series: vLLM's own are the engine's, whatever name a request carried).
MIXED = Behaviour(
    prompt_tokens=300, generation_tokens=100, requests_per_s=2.0,
    episodes=(Episode(1200, 2400, {"prompt_tokens": 3000, "generation_tokens": 500}),
              Episode(2700, 3300, {"requests_per_s": 6.0})),
    served={"mixed": (0.75, 0.08), "mixed-sql": (0.25, 1.5)},
)  # fmt: skip
CATALOG = parse_catalog({"models": [{"name": name, "source": {"repo": f"org/{name}"},
                                     "serving": {"max_model_len": 4096}} for name in ("mixed", "idle")]})  # fmt: skip


def _materialize(url: str, window_hours: float) -> dg.ExecuteInProcessResult:
    """``traffic_profile`` of the mixed model through Dagster, its value stored as the lifecycle stores values."""
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [build_traffic_profile_asset(CATALOG, model_partitions(CATALOG))], partition_key="mixed", instance=instance,
            resources={"prometheus": PrometheusResource(url=url), "io_manager": InstanceValueIOManager()},
            run_config={"ops": {TRAFFIC_PROFILE_ASSET: {"config": {"window_hours": window_hours}}}},
            raise_on_error=False,
        )  # fmt: skip


def test_the_profile_shows_the_shape_and_the_rate_of_what_was_served(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.fail("prometheus/promtool are not installed (make test installs the Debian package)")
    now = time.time()
    idle = Behaviour(requests_per_s=0.01)
    pair = Behaviour(requests_per_s=4.0, replicas=2)  # two servers sharing 4 requests/s
    trace = openmetrics({"mixed": MIXED, "idle": idle, "pair": pair}, now - HOUR, now - 5, step_s=15)
    backfill(trace, tmp_path / "prometheus" / "data")
    services = LocalServices(tmp_path)
    record = services.start_prometheus(tmp_path / "file_sd", port=free_port())
    try:
        client = PrometheusClient(record.url)
        sent = client.queries_sent
        measured = client.measured_traffic("mixed", HOUR - 60, VLLM_METRICS, at=now)
        assert client.queries_sent == sent + 2  # the figures in one request, the rate over the window in another
        quiet = client.measured_traffic("idle", HOUR - 60, VLLM_METRICS, at=now)
        shared = client.measured_traffic("pair", HOUR - 60, VLLM_METRICS, at=now)
        retention = client.retention_s()
        materialized, refused = _materialize(record.url, 1.0), _materialize(record.url, 24.0 * 8)
    finally:
        services.stop("prometheus")

    profile = build_profile(CATALOG.model("mixed"), HOUR - 60, measured)
    assert profile.source == "prometheus" and not profile.notes
    # About (40 + 10) min at 2/s and 10 min at 6/s: ~9,500 requests.
    assert 8_000 < profile.requests < 11_000
    lengths = profile.quantiles()
    # Two thirds short turns, one third documents: the median is a chat turn, the p90 a document.
    assert lengths["prompt_tokens"]["p50"] <= 500 < 2000 <= lengths["prompt_tokens"]["p90"] <= 5000
    assert lengths["generation_tokens"]["p50"] <= 200 < lengths["generation_tokens"]["p90"]
    assert profile.rate_median_rps == pytest.approx(2.0, rel=0.1)
    assert profile.rate_peak_rps == pytest.approx(6.0, rel=0.1)
    # What one server took at the peak (the smoke benchmark's peak-rate run): all of it with one server, half with two.
    assert profile.rate_peak_per_engine_rps == pytest.approx(6.0, rel=0.1)
    assert shared.rate_peak_rps == pytest.approx(4.0, rel=0.1)
    assert shared.rate_peak_per_engine_rps == pytest.approx(2.0, rel=0.1)
    # The rate over the window, every 5 minutes: the burst near the end, 2/s before it.
    rates = [value for _, value in profile.rate_series]
    assert len(rates) >= 11 and max(rates) == pytest.approx(6.0, rel=0.1) and min(rates) < 2.5
    # Per served name, from the gate: the adapter's quarter of the requests and its slower first byte.
    assert set(profile.served) == {"mixed", "mixed-sql"}
    base, adapter = profile.served["mixed"], profile.served["mixed-sql"]
    assert adapter.requests / (base.requests + adapter.requests) == pytest.approx(0.25, rel=0.02)
    assert base.first_byte_p95_ms <= 100 < 1000 < adapter.first_byte_p95_ms <= 2500
    assert base.error_ratio == adapter.error_ratio == 0
    assert adapter.duration_p95_ms > adapter.first_byte_p95_ms
    assert math.isnan(profile.prefix_cache_hit_ratio)  # the trace has no prefix-cache series: unknown, not zero
    # About 36 requests in the hour: the catalog's traffic section stands in, and says so.
    fallback = build_profile(CATALOG.model("idle"), HOUR - 60, quiet)
    assert fallback.source == "catalog"
    assert "the catalog's traffic section (1024 in / 256 out) stands in" in fallback.notes[0]
    # The local Prometheus keeps 7 days (its --storage.tsdb.retention.time); a window beyond it is one line.
    assert retention == 7 * 86400
    assert str(window_problem(8 * 86400, retention)).startswith(
        "traffic profile window 192 h is longer than Prometheus"
    )
    # Through Dagster: the figures, the plot and the value a benchmark will replay; a window beyond retention fails.
    assert materialized.success
    (event,) = materialized.asset_materializations_for_node(TRAFFIC_PROFILE_ASSET)
    assert str(event.metadata["profile"].value).startswith("prometheus profile of 'mixed' over 1 h: ")
    assert str(event.metadata["lengths_plot"].value).startswith("![request lengths](data:image/png;base64,")
    stored = decode_value(event.metadata[VALUE_METADATA_KEY].value, "traffic_profile")
    assert isinstance(stored, TrafficProfile) and stored.source == "prometheus"
    assert stored.requests == event.metadata["requests"].value and stored.prompt.counts and stored.generation.counts
    table = event.metadata["served_names"]
    assert isinstance(table, dg.TableMetadataValue)
    served_table = {row.data["served_name"]: row.data for row in table.records}
    assert served_table["mixed-sql"]["share"] == pytest.approx(0.25, rel=0.02)
    assert TrafficProfile.from_json(stored.as_json()).served == stored.served
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    description = str(failure.step_failure_data.user_failure_data.description)  # type: ignore[union-attr]
    assert description.startswith("model 'mixed': traffic profile window 192 h is longer than Prometheus keeps")
