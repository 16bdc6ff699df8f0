"""The reader of Prometheus' text exposition format (what ``/federate`` answers the drift sensor): checked against
the format as ``prometheus_client`` (the official Python client) writes it, hostile label values included, and
against answers that are not the format."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from llm_platform.prometheus import PrometheusError, parse_exposition

HOSTILE_VALUES = [
    "model-0001",
    "",
    'a "quoted" name',
    "back\\slash\\",
    "new\nline",
    'x",model_name="evil',
    "braces} 1 2",
    "=",
]


def test_what_the_official_client_writes_reads_back_label_for_label() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("llm_platform_drift_snapshot", "recorded", ["model_name", "llm_platform_field"], registry=registry)
    expected = {}
    for index, hostile in enumerate(HOSTILE_VALUES):
        gauge.labels(model_name=hostile, llm_platform_field=f"f{index}").set(index + 0.5)
        expected[(hostile, f"f{index}")] = index + 0.5
    gauge.labels(model_name="inf", llm_platform_field="kv").set(math.inf)

    samples = parse_exposition(generate_latest(registry).decode(), "test")

    read = {(s.labels["model_name"], s.labels["llm_platform_field"]): s.value for s in samples}
    assert read == {**expected, ("inf", "kv"): math.inf}
    assert all(math.isnan(s.time_s) for s in samples)  # the client writes no timestamps


def test_federation_lines_with_and_without_labels_timestamps_and_special_values() -> None:
    text = "\n".join(
        [
            "# TYPE llm_platform:drift_snapshot untyped",
            'llm_platform:drift_snapshot{llm_platform_field="age_s",model_name="m",instance=""} 12.5 1796686532676',
            'llm_platform:drift_snapshot{llm_platform_field="kv",model_name="m",} NaN 1796686532676',
            "up 1 1796686532000",
            "",
            'with_spaces{a="x y"} -Inf',
        ]
    )
    age, kv, up, spaced = parse_exposition(text, "test")
    assert age.labels == {"llm_platform_field": "age_s", "model_name": "m", "instance": ""}
    assert (age.value, age.time_s) == (12.5, 1796686532.676)
    assert kv.labels == {"llm_platform_field": "kv", "model_name": "m"} and math.isnan(kv.value)
    assert (up.labels, up.value, up.time_s) == ({}, 1.0, 1796686532.0)
    assert spaced.labels == {"a": "x y"} and spaced.value == -math.inf and math.isnan(spaced.time_s)


@pytest.mark.parametrize(
    "line",
    [
        "<html><body>Sign in</body></html>",
        'm{model_name="x"} not-a-number 1',
        'm{model_name="x"} 1 12.5.6',
        'm{model_name"x"} 1',
        'm{model_name="x\\"} 1',
        'm{model_name="x\\" ,y="z"} 1',
        "m",
    ],
)
def test_an_answer_in_another_form_names_the_endpoint_and_the_line(line: str) -> None:
    with pytest.raises(PrometheusError) as error:
        parse_exposition(f"# TYPE m untyped\nm 1\n{line}\n", "Prometheus at http://p:9090 (/federate)")
    message = str(error.value)
    assert message.startswith("Prometheus at http://p:9090 (/federate) answered line 3 in a form that is not")
    assert "\n" not in message
