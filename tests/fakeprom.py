"""A protocol-level Prometheus for the sensor's tests: ``/api/v1/query`` answering the snapshot's queries with
scripted per-model values (a model without a value has no series, as when Prometheus has no data)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

#: Which snapshot field a query computes, recognised by the metric it reads.
_FIELDS = (
    ("kv_cache_usage", "kv_cache_usage_max"),
    ("num_preemptions", "preemptions_per_s"),
    ("num_requests_waiting", "waiting_avg"),
    ("num_requests_running", "replicas"),
    ("request_prompt_tokens_bucket", "prompt_tokens_p999"),
    ("request_generation_tokens_bucket", "generation_tokens_p999"),
)


class FakePrometheus:
    def __init__(self) -> None:
        self.models: dict[str, dict[str, float]] = {}
        self.queries: list[str] = []
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
        field = next(name for marker, name in _FIELDS if marker in query)
        return [
            {"metric": {"model_name": model}, "value": [0, str(values[field])]}
            for model, values in self.models.items()
            if field in values and not math.isnan(values[field])
        ]


def _handler(prometheus: FakePrometheus) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query).get("query", [""])[0]
            body: dict[str, object]
            if url.path != "/api/v1/query":
                body, status = {"status": "error", "error": "not found"}, 404
            else:
                result = prometheus.answer(query)
                body, status = {"status": "success", "data": {"resultType": "vector", "result": result}}, 200
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
