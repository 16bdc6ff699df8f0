"""The local edge for real: nginx (the Debian package) in front of two small HTTP servers standing in for the stable
and the canary vLLM server, so that what is measured is nginx's behaviour with the configuration the platform
renders: the per-client rate and connection limits, the read timeout, the weighted split and its graceful reload."""

from __future__ import annotations

import http.client
import http.server
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llm_platform.edge import NginxEdge, accepting_workers, edge_generation, nginx_binary
from llm_platform.errors import TargetError
from llm_platform.manifests.edge_conf import WORKER_PROCESSES, EdgeLimits, EdgeRoutes
from llm_platform.processes import free_port, process_alive

pytestmark = pytest.mark.integration


class _Upstream(http.server.BaseHTTPRequestHandler):
    """``/who``: the server's name; ``/stream?chunks=N&gap=S``: N chunks, S seconds apart (a token stream)."""

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.send_response(200)
        self.end_headers()
        if url.path.endswith("/stream"):
            try:
                for index in range(int(query["chunks"][0])):
                    time.sleep(float(query["gap"][0]))
                    self.wfile.write(f"data: {index}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                # nginx cut a stalled stream (what a test asks of it): ending quietly, not with socketserver's
                # traceback on stderr, which a later test of this worker redirecting stderr would read as its own.
                pass
            return
        self.wfile.write(self.server.name.encode())  # type: ignore[attr-defined]

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, str]]:
    try:
        nginx_binary()
    except TargetError:
        pytest.skip("nginx is not installed (make test installs the Debian package)")
    servers = {}
    for name in ("stable", "canary"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
        server.daemon_threads = True
        server.name = name  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[name] = server
    yield {name: f"127.0.0.1:{server.server_port}" for name, server in servers.items()}
    for server in servers.values():
        server.shutdown()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[NginxEdge]:
    running = NginxEdge(tmp_path / "edge", ("127.0.0.1", free_port()))
    yield running
    running.stop()


def _limits(**overrides: object) -> EdgeLimits:
    settings: dict[str, object] = {"rate_limit_rps": 1000, "max_connections_per_ip": 50, "timeout_s": 600,
                                   "max_body_size": "16m"}  # fmt: skip
    return EdgeLimits(**{**settings, **overrides})  # type: ignore[arg-type]


def _get(url: str, timeout_s: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def test_the_edge_answers_429_past_the_per_client_rate(edge: NginxEdge, upstreams: dict[str, str]) -> None:
    edge.apply(_limits(rate_limit_rps=2), EdgeRoutes(stable=upstreams["stable"]))
    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(status for status, _ in pool.map(lambda _: _get(f"{edge.url}/v1/who"), range(40)))
    # 2 r/s with ingress-nginx's burst of 5 x the rate: about 10 pass at once, the rest are told to slow down.
    assert set(statuses) == {200, 429}
    assert 10 <= statuses[200] <= 14, statuses
    access_log = (edge.directory / "access.log").read_text()
    assert '"GET /v1/who" 429' in access_log


def test_connections_past_the_per_client_limit_are_refused(edge: NginxEdge, upstreams: dict[str, str]) -> None:
    edge.apply(_limits(max_connections_per_ip=2), EdgeRoutes(stable=upstreams["stable"]))
    with ThreadPoolExecutor(3) as pool:
        slow = [pool.submit(_get, f"{edge.url}/v1/stream?chunks=3&gap=1") for _ in range(2)]
        time.sleep(0.5)  # both streams are open
        assert _get(f"{edge.url}/v1/who")[0] == 429
        assert [future.result()[0] for future in slow] == [200, 200]
    assert _get(f"{edge.url}/v1/who") == (200, "stable")


def test_a_stream_outlives_the_read_timeout_while_tokens_flow_and_a_stalled_one_is_cut(
    edge: NginxEdge, upstreams: dict[str, str]
) -> None:
    """The configured timeout is nginx's read timeout between two chunks (a short one here; the catalog's is 600 s
    and more): a generation longer than the timeout is kept open, a silent upstream is cut at the timeout."""
    edge.apply(_limits(timeout_s=2), EdgeRoutes(stable=upstreams["stable"]))
    started = time.monotonic()
    status, body = _get(f"{edge.url}/v1/stream?chunks=5&gap=1")
    assert status == 200 and body.count("data:") == 5
    assert time.monotonic() - started >= 4.5  # longer than the timeout, and whole
    started = time.monotonic()
    with urllib.request.urlopen(f"{edge.url}/v1/stream?chunks=2&gap=3", timeout=30) as response:
        assert response.status == 200  # the stream had begun (headers sent) ...
        with pytest.raises(http.client.IncompleteRead):
            response.read()  # ... and is cut when nothing arrives within the timeout
    assert time.monotonic() - started < 3  # at 2 s, before the upstream's first chunk at 3 s


def test_the_split_follows_the_weight_and_a_reload_keeps_a_stream_open(
    edge: NginxEdge, upstreams: dict[str, str]
) -> None:
    pid = edge.apply(_limits(), EdgeRoutes(stable=upstreams["stable"], canary=upstreams["canary"], canary_weight=30))
    served = Counter(_get(f"{edge.url}/v1/who")[1] for _ in range(400))
    assert set(served) == {"stable", "canary"}
    assert 0.22 <= served["canary"] / 400 <= 0.38, served  # each request drawn on its own: 30 % within noise
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(_get, f"{edge.url}/v1/stream?chunks=4&gap=0.5")
        time.sleep(0.5)
        # The canary takes everything: nginx reloads gracefully, the stream in flight finishes on the old worker.
        assert edge.apply(_limits(), EdgeRoutes(stable=upstreams["stable"], canary=upstreams["canary"],
                                                canary_weight=100)) == pid  # fmt: skip
        # Done means only the new workers take connections (the old one, told to stop, accepts none) ...
        assert accepting_workers(pid) == WORKER_PROCESSES
        assert {_get(f"{edge.url}/v1/who")[1] for _ in range(20)} == {"canary"}
        # ... while the old worker still streams to the stable server: a drain must not stop it yet.
        assert edge.retiring_workers() == 1
        status, body = stream.result()
    assert status == 200 and body.count("data:") == 4
    assert edge_generation(edge.url) == 2
    deadline = time.monotonic() + 10
    while edge.retiring_workers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert edge.retiring_workers() == 0  # the old worker exited with its last request


def test_a_configuration_nginx_refuses_is_never_loaded(edge: NginxEdge, upstreams: dict[str, str]) -> None:
    pid = edge.apply(_limits(), EdgeRoutes(stable=upstreams["stable"]))
    with pytest.raises(TargetError, match="refused, the running one kept"):
        edge.apply(_limits(max_body_size="16 megabytes"), EdgeRoutes(stable=upstreams["stable"]))
    assert edge_generation(edge.url) == 1 and _get(f"{edge.url}/v1/who") == (200, "stable")
    edge.stop()
    assert not process_alive(pid) and edge.pid() is None
