"""The gate in process, in front of a stand-in upstream that records what reaches it: the key on every route,
the route allow-list, the metrics listener, the edge limits and an access log without query strings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from llm_platform.gate import (
    API_ROUTES,
    UPSTREAM_KEEPALIVE_S,
    GateSettings,
    Upstream,
    key_matches,
    route_allowed,
    serve,
)
from llm_platform.processes import free_port

KEY = "test-key-0123456789"
pytestmark = pytest.mark.asyncio


@dataclass
class Running:
    api: str
    metrics: str
    port: int
    reached: list[str] = field(default_factory=list)
    peers: list[int] = field(default_factory=list)
    """The gate's source port of each request that reached the upstream: which connection carried it."""


@pytest_asyncio.fixture
async def gate() -> AsyncIterator[Running]:
    reached: list[str] = []
    peers: list[int] = []

    async def upstream_handler(request: web.Request) -> web.Response:
        reached.append(f"{request.method} {request.path_qs}")
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        await request.read()
        if request.path == "/metrics":  # the engine's, in the format the gate asked for
            assert (
                request.headers["Accept"].startswith("text/plain") and request.headers["Accept-Encoding"] == "identity"
            )
            return web.Response(text="# TYPE engine_requests gauge\nengine_requests 3")
        return web.Response(text="upstream")

    upstream_app = web.Application(client_max_size=1024**3)
    upstream_app.router.add_route("*", "/{tail:.*}", upstream_handler)
    upstream_runner = web.AppRunner(upstream_app, access_log=None)  # the gate's log is what is checked
    await upstream_runner.setup()
    upstream_port = free_port()
    await web.TCPSite(upstream_runner, "127.0.0.1", upstream_port).start()
    port, metrics_port = free_port(), free_port()
    settings = GateSettings(
        api_key=KEY,
        max_body_bytes=1024,
        header_timeout_s=1.0,
        body_timeout_s=1.0,
        idle_timeout_s=3.0,
        served_names=("base", "base-sql"),
    )
    runners = await serve(
        Upstream(url=f"http://127.0.0.1:{upstream_port}"), settings, ("127.0.0.1", port), ("127.0.0.1", metrics_port)
    )
    yield Running(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", port, reached, peers)
    for runner in [*runners, upstream_runner]:
        await runner.cleanup()


AUTH = {"Authorization": f"Bearer {KEY}"}
#: vLLM 0.32's routes that are not API routes: each must stay unreachable with or without the key.
NOT_API = ["/invocations", "/scale_elastic_ep", "/is_scaling_elastic_ep", "/docs", "/redoc", "/openapi.json",
           "/load", "/ping", "/generative_scoring", "/metrics", "/v1/load_lora_adapter", "/v1/unload_lora_adapter",
           "/inference/v1/generate", "/v1/chat/completions/render", "/collective_rpc", "/reset_prefix_cache",
           "/v1/responses/x/y/z", "/v1/models/../../metrics", "/v1//completions"]  # fmt: skip


async def test_every_route_but_health_needs_the_key_and_only_api_routes_are_forwarded(gate: Running) -> None:
    async with ClientSession() as client:
        for path in ["/v1/completions", "/tokenize", *NOT_API]:
            for method in ("GET", "POST"):
                async with client.request(method, f"{gate.api}{path}") as response:
                    assert response.status == 401, (method, path)
                async with client.request(method, f"{gate.api}{path}", headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401, (method, path)
        for path in NOT_API:
            async with client.post(f"{gate.api}{path}", headers=AUTH) as response:
                assert response.status == 404, path
        assert gate.reached == []  # nothing above reached the server
        async with client.get(f"{gate.api}/health") as response:
            assert response.status == 200
        async with client.post(f"{gate.api}/v1/completions", headers=AUTH, json={"prompt": "hi"}) as response:
            assert response.status == 200 and await response.text() == "upstream"
        assert gate.reached == ["GET /health", "POST /v1/completions"]


async def test_metrics_only_on_the_metrics_listener(gate: Running) -> None:
    async with ClientSession() as client:
        async with client.get(f"{gate.metrics}/metrics") as response:
            assert response.status == 200
        for path in ("/v1/completions", "/tokenize", "/invocations"):
            async with client.post(f"{gate.metrics}{path}", headers=AUTH) as response:
                assert response.status == 404, path
    assert gate.reached == ["GET /metrics"]


async def test_requests_are_counted_per_served_name_beside_the_engines_metrics(gate: Running) -> None:
    """vLLM labels its metrics with the engine's name whatever adapter a request names: the gate counts each served
    name itself; names the server does not serve are one ``other`` series, whatever a client sends."""
    async with ClientSession() as client:
        for body in ({"model": "base"}, {"model": "base-sql"}, {"model": "base-sql"}, {"model": "x" * 50},
                     {"model": "y"}, {"prompt": "no model"}, [1, 2]):  # fmt: skip
            async with client.post(f"{gate.api}/v1/completions", headers=AUTH, json=body) as response:
                assert response.status == 200
        async with client.post(f"{gate.api}/v1/completions", json={"model": "base"}) as response:
            assert response.status == 401  # refused by the gate: never reached the engine, not counted
        async with client.get(f"{gate.metrics}/metrics", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["engine_requests"].samples[0].value == 3  # the engine's metrics first, unchanged
    requests = {
        sample.labels["served_name"]: sample.value
        for sample in families["llm_platform_gate_requests"].samples
        if sample.name.endswith("_total")
    }
    assert requests == {"base": 1, "base-sql": 2, "other": 4}
    assert {sample.labels["model_name"] for sample in families["llm_platform_gate_requests"].samples} == {"base"}
    durations = {
        sample.labels["served_name"]: sample.value
        for sample in families["llm_platform_gate_request_seconds"].samples
        if sample.name.endswith("_count")
    }
    assert durations == requests


async def test_an_oversized_body_is_refused_before_it_is_read(gate: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n")  # fmt: skip
    writer.write(head.encode())  # and not one byte of the 60 MB
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.split()[1] == b"413"
    writer.close()
    async with ClientSession() as client:  # a chunked body past the limit is cut off too
        chunks = (b"x" * 512 for _ in range(8))

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async with client.post(f"{gate.api}/v1/completions", headers=AUTH, data=body()) as response:
            assert response.status == 413
    assert gate.reached == []


async def test_slow_headers_are_cut_off_and_do_not_hold_the_gate(gate: Running) -> None:
    slow = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        await writer.drain()
        slow.append((reader, writer))
    async with ClientSession() as client, client.get(f"{gate.api}/health") as response:  # others are answered
        assert response.status == 200
    for reader, writer in slow:  # and closes the slow ones after the header timeout (1 s here)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_an_idle_connection_outlives_the_header_timeout_and_a_head_begun_after_it_does_not(
    gate: Running,
) -> None:
    """A proxy keeps idle connections for reuse (ingress-nginx: 60 s): the gate must not close them at the header
    timeout, or a request sent at that instant is a 502; a head begun on such a connection still has a deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    request = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
    for _ in range(2):
        writer.write(request)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 5)  # a chunked body's end
        assert answer.startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.5)  # idle past the header timeout (1 s), within the idle limit (3 s)
    writer.write(b"GET /v1/models HTTP/1.1\r\n")  # a head begun after the idle spell, never finished
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert asyncio.get_running_loop().time() - began < 2.5  # the header timeout, not the idle limit
    writer.close()


async def test_an_idle_connection_is_closed_after_the_idle_limit(gate: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    writer.write(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), 5)
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert asyncio.get_running_loop().time() - began > 2  # the idle limit (3 s), not the header timeout (1 s)
    writer.close()


async def test_the_gate_lets_go_of_an_idle_engine_connection_before_the_engine_would(gate: Running) -> None:
    """A connection to the engine serves the next request at once, and is closed by the gate after
    UPSTREAM_KEEPALIVE_S idle, below the engine's 5 s: the engine never closes one the gate is about to reuse."""
    async with ClientSession(headers=AUTH) as client:
        for pause_s in (0.0, 0.0, UPSTREAM_KEEPALIVE_S + 0.5):
            await asyncio.sleep(pause_s)
            async with client.get(f"{gate.api}/v1/models") as response:
                assert response.status == 200
    first, reused, after_idle = gate.peers
    assert reused == first and after_idle != first
    assert UPSTREAM_KEEPALIVE_S < 5


async def test_the_access_log_has_no_query_strings(gate: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    url = f"{gate.api}/v1/completions?api_key=leaked-secret"
    async with ClientSession() as client, client.post(url, headers=AUTH) as response:
        assert response.status == 200
    assert gate.reached == ["POST /v1/completions?api_key=leaked-secret"]  # forwarded as sent
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "POST /v1/completions" in logged and "leaked-secret" not in logged


@pytest.mark.filterwarnings("ignore::pytest.PytestWarning")
def test_the_key_and_route_rules() -> None:
    assert key_matches(f"Bearer {KEY}", KEY) and key_matches(f"bearer {KEY}", KEY)
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", f"Bearer {KEY[:-1]}"):
        assert not key_matches(header, KEY), header
    assert all(route_allowed(route) for route in API_ROUTES if "[" not in route)
    assert route_allowed("/v1/responses/resp_123") and route_allowed("/v1/responses/resp_123/cancel")
    for path in NOT_API:
        assert not route_allowed(path), path
