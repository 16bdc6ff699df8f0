"""A protocol-level Prometheus for the sensor's tests: ``/api/v1/query`` answering the snapshot's combined query
with scripted per-model values, one series per model and field named in the query (a model without a value has no
series, as when Prometheus has no data). With ``recording`` set it plays a Prometheus that runs the drift
snapshot's recording rules: the recorded snapshot is answered too (every scripted field, evaluated at
``evaluated_at``), on the federation endpoint and to the query API; without, neither has its series, as where the
rules are not loaded. With ``federation`` off, ``/federate`` is not served (HTTP 404), as behind a query frontend."""

from __future__ import annotations

import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from llm_platform.conventions import CANARY_TRACK, STABLE_TRACK, TRACK_METRIC_LABEL
from llm_platform.prometheus import EVALUATED_AT, FEDERATION_PATH, FIELD_LABEL, RECORDED_SNAPSHOT

#: The fields a combined snapshot query asks for (each sub-expression tags its series with one).
_FIELD = re.compile(rf'"{FIELD_LABEL}", "(\w+)"')


class FakePrometheus:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, float]] = {}
        self.tracks: dict[str, dict[str, float]] = {}
        self.canary_models: set[str] = set()
        """Models whose canary track is being scraped (the abandoned-canary sensor's query)."""
        """A canary step's figures by track (``requests``, ``ttft_p95_ms``, ...), for the per-track query."""
        self.queries: list[str] = []
        self.recording = False
        self.evaluated_at = math.nan
        self.federation = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePrometheus:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, query: str) -> list[dict[str, object]]:
        self.queries.append(query)
        if query.startswith(RECORDED_SNAPSHOT):
            return self._recorded() if self.recording else []
        if f'{TRACK_METRIC_LABEL}="{CANARY_TRACK}"' in query:
            return [{"metric": {"model_name": model}, "value": [0, "1"]} for model in sorted(self.canary_models)]
        if f'"{TRACK_METRIC_LABEL}", "{STABLE_TRACK}"' in query:  # the canary judge's per-track query
            return [
                {"metric": {TRACK_METRIC_LABEL: track, FIELD_LABEL: field}, "value": [0, str(values[field])]}
                for field in _FIELD.findall(query)
                for track, values in self.tracks.items()
                if field in values
            ]
        return [
            {"metric": {"model_name": model, FIELD_LABEL: field}, "value": [0, str(values[field])]}
            for field in _FIELD.findall(query)
            for model, values in self.models.items()
            if field in values and not math.isnan(values[field])
        ]

    def federate(self, match: str) -> str:
        """The recorded snapshot's series, as ``/federate`` writes them (each sample with its evaluation time)."""
        self.queries.append(match)
        if not (self.recording and match.startswith(RECORDED_SNAPSHOT)):
            return ""
        stamp = "" if math.isnan(self.evaluated_at) else f" {int(self.evaluated_at * 1000)}"
        return "".join(
            f'{RECORDED_SNAPSHOT}{{{FIELD_LABEL}="{field}",model_name="{model}"}} {value!r}{stamp}\n'
            for model, values in self.models.items()
            for field, value in values.items()
            if not math.isnan(value)
        )

    def _recorded(self) -> list[dict[str, object]]:
        series: list[dict[str, object]] = [
            {"metric": {"__name__": RECORDED_SNAPSHOT, "model_name": model, FIELD_LABEL: field}, "value": [0, str(v)]}
            for model, values in self.models.items()
            for field, v in values.items()
            if not math.isnan(v)
        ]
        if series and not math.isnan(self.evaluated_at):
            series.append({"metric": {FIELD_LABEL: EVALUATED_AT}, "value": [0, str(self.evaluated_at)]})
        return series


def _handler(prometheus: FakePrometheus) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            parameters = parse_qs(url.query)
            body: dict[str, object]
            content_type = "application/json"
            if url.path == FEDERATION_PATH and prometheus.federation:
                payload, status = prometheus.federate(parameters.get("match[]", [""])[0]).encode(), 200
                content_type = "text/plain; version=0.0.4; charset=utf-8"
            elif url.path != "/api/v1/query":
                payload, status = json.dumps({"status": "error", "error": "not found"}).encode(), 404
            else:
                result = prometheus.answer(parameters.get("query", [""])[0])
                body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                payload, status = json.dumps(body).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
