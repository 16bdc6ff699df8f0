"""The route probe against a real vLLM on the embedded default: every route the running server itself publishes
(its own ``/openapi.json``, read through its private socket) is called without the key, at the server's gate and
at the model's endpoint. Only ``GET /health`` answers; ``/metrics`` only on the metrics listener."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ServedTiny

pytestmark = pytest.mark.integration


def _over_socket(socket_path: str, path: str) -> bytes:
    """GET ``path`` from vLLM itself, over its Unix socket (what only this user can do)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(socket_path)
        client.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split()[1] == b"200", head[:200]
    return body


def _status(url: str, method: str, headers: dict[str, str] | None = None) -> int:
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_no_route_of_the_running_server_answers_without_the_key(served_tiny: ServedTiny) -> None:
    target = served_tiny.local_target.target()
    (server,) = target.servers("tiny-llama")
    spec = json.loads(_over_socket(server.socket_path, "/openapi.json"))
    routes = [
        (re.sub(r"\{[^}]+\}", "x", path), method.upper()) for path, item in spec["paths"].items() for method in item
    ]
    assert len(routes) >= 20 and ("/invocations", "POST") in routes and ("/tokenize", "POST") in routes
    answered = {}
    for base in (server.base_url, served_tiny.endpoint):
        for path, method in routes:
            status = _status(f"{base}{path}", method)
            if status != 401:
                answered[f"{method} {base}{path}"] = status
    assert answered == {f"GET {server.base_url}/health": 200, f"GET {served_tiny.endpoint}/health": 200}
    # With the key the API answers, and what is not an API route stays closed.
    key = {"Authorization": f"Bearer {served_tiny.api_key}"}
    assert _status(f"{served_tiny.endpoint}/v1/models", "GET", key) == 200
    for path in ("/metrics", "/openapi.json", "/invocations", "/scale_elastic_ep", "/load"):
        assert _status(f"{server.base_url}{path}", "GET", key) == 404, path


def test_metrics_only_on_the_metrics_listener(served_tiny: ServedTiny) -> None:
    (server,) = served_tiny.local_target.target().servers("tiny-llama")
    with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=30) as response:
        assert b"vllm:num_requests_waiting" in response.read()
    assert _status(f"{server.metrics_url}/v1/models", "GET", {"Authorization": f"Bearer {served_tiny.api_key}"}) == 404
    file_sd = json.loads((Path(served_tiny.local_target.file_sd_dir) / "tiny-llama.json").read_text())
    assert file_sd[0]["targets"] == [f"{server.host}:{server.metrics_port}"]
