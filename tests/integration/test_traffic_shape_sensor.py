"""``traffic_shape_sensor`` against a real Prometheus: six hours of vLLM series backfilled with promtool, one model
whose prompts stay short chat turns, one whose prompts became long documents two hours ago. Both were benchmarked on
a profile measured while they were short; the sensor retunes the one whose shape moved, once, and never the other;
a retune that adopted a new config is promoted."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import dagster as dg
import pytest

from llm_platform.catalog import parse_catalog
from llm_platform.conventions import TRAFFIC_PROFILE_ASSET, TUNED_ASSET
from llm_platform.defs.jobs import PROMOTE_JOB, lifecycle_jobs
from llm_platform.defs.resources import PrometheusResource
from llm_platform.defs.storage import VALUE_METADATA_KEY
from llm_platform.defs.tuning import RETUNE_JOB, retune_job
from llm_platform.defs.values import encode_value
from llm_platform.defs.workload import build_shape_sensor
from llm_platform.dev.promtrace import Behaviour, Episode, backfill, openmetrics
from llm_platform.engine.vllm import VLLM_METRICS
from llm_platform.processes import free_port
from llm_platform.prometheus import PrometheusClient
from llm_platform.services import LocalServices
from llm_platform.workload import build_profile
from tests.deployments import record_deployment, record_materialization

pytestmark = pytest.mark.integration

HOUR = 3600
TRACE_S = 6 * HOUR
STEADY = Behaviour(prompt_tokens=300, generation_tokens=100, requests_per_s=1.0)
#: The same chat turns for four hours, then 3,000-token documents for the last two.
SHIFTING = Behaviour(prompt_tokens=300, generation_tokens=100, requests_per_s=1.0,
                     episodes=(Episode(4 * HOUR, TRACE_S + 60, {"prompt_tokens": 3000}),))  # fmt: skip
CATALOG = parse_catalog(
    {"models": [{"name": name, "source": {"repo": f"org/{name}"}, "serving": {"max_model_len": 4096}}
                for name in ("steady", "shifting")]}
)  # fmt: skip


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float]]:
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        pytest.fail("prometheus/promtool are not installed (make test installs the Debian package)")
    root = tmp_path_factory.mktemp("shape")
    now = time.time()
    backfill(openmetrics({"steady": STEADY, "shifting": SHIFTING}, now - TRACE_S, now - 5, step_s=30),
             root / "prometheus" / "data")  # fmt: skip
    services = LocalServices(root)
    record = services.start_prometheus(root / "file_sd", port=free_port())
    try:
        yield record.url, now
    finally:
        services.stop("prometheus")


def _benchmarked_on_the_short_shape(instance: dg.DagsterInstance, url: str, now: float) -> None:
    """Each model deployed three hours ago, on the profile measured over the three hours before the shift."""
    client = PrometheusClient(url)
    for model in CATALOG.models:
        measured = client.measured_traffic(model.name, 3 * HOUR, VLLM_METRICS, at=now - 2 * HOUR - 60)
        profile = build_profile(model, 3 * HOUR, measured)
        assert profile.source == "prometheus"
        record_materialization(instance, TRAFFIC_PROFILE_ASSET, model.name,
                               {VALUE_METADATA_KEY: dg.MetadataValue.json(encode_value(profile))},
                               age_s=3 * HOUR)  # fmt: skip
        record_deployment(instance, model.name, model.serving.model_dump(mode="json"), age_s=3 * HOUR)


def _tick(instance: dg.DagsterInstance, url: str, now: float, cursor: str | None) -> dg.SensorResult:
    promote = next(job for job in lifecycle_jobs() if job.name == PROMOTE_JOB)
    sensor = build_shape_sensor(CATALOG, [retune_job(), promote], clock=lambda: now)
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"prometheus": PrometheusResource(url=url)})  # fmt: skip
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_moved_shape_is_retuned_once_and_a_stationary_one_never(prometheus: tuple[str, float]) -> None:
    url, now = prometheus
    with dg.instance_for_test() as instance:
        _benchmarked_on_the_short_shape(instance, url, now)
        first = _tick(instance, url, now, None)
        (request,) = first.run_requests or []
        assert (request.job_name, request.partition_key) == (RETUNE_JOB, "shifting")
        # The stationary model's line says how far it is from moving.
        cursor = first.cursor
        # The retune is pending: a later tick (the data end where the trace ends: the same time) does not ask again.
        again = _tick(instance, url, now, cursor)
        assert not again.run_requests
        assert "shifting: a retune or its promotion is in progress" in str(again.skip_reason)
        assert "steady: the shape holds over the last 2 h" in str(again.skip_reason)
        # The retune measured the new profile and adopted a config: the next tick promotes it.
        client = PrometheusClient(url)
        shifted = build_profile(CATALOG.model("shifting"), 2 * HOUR,
                                client.measured_traffic("shifting", 2 * HOUR, VLLM_METRICS, at=now))  # fmt: skip
        record_materialization(instance, TRAFFIC_PROFILE_ASSET, "shifting",
                               {VALUE_METADATA_KEY: dg.MetadataValue.json(encode_value(shifted))}, age_s=0)  # fmt: skip
        record_materialization(instance, TUNED_ASSET, "shifting", {"adopted": dg.MetadataValue.bool(True)}, age_s=0)
        promoted = _tick(instance, url, now, again.cursor)
        (promotion,) = promoted.run_requests or []
        assert (promotion.job_name, promotion.partition_key) == (PROMOTE_JOB, "shifting")
        assert "adopted retune" in promotion.run_config["ops"]["serving_config"]["config"]["reason"]
        # Against its new profile the shifted model holds still; the stationary one never moved.
        after = _tick(instance, url, now, promoted.cursor)
        assert not after.run_requests
        assert "shifting: the shape holds" in str(after.skip_reason)
