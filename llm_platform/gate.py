"""The gate: the authenticating edge in front of every vLLM server the platform runs.

vLLM checks its API key only under ``/v1`` (and ``/v2``, ``/inference``, ``/cohere``): ``/invocations`` generates
text, ``/tokenize`` and ``/detokenize`` take megabytes, ``/docs``, ``/openapi.json``, ``/version`` and ``/load``
answer anyone, and every vLLM release adds routes. So vLLM never listens where a client can reach it: it is bound
to a Unix socket (locally) or to the pod's loopback (on Kubernetes), and this gate is the only listener.

- **Every request but ``GET /health`` needs the key**, whatever vLLM's own list is: ``Authorization: Bearer
  <key>`` compared in constant time; the key comes from an environment variable, never an argument. The check
  comes first, so a caller without the key learns nothing about the routes (401 for every path).
- **Routes are an allow-list** (:data:`API_ROUTES`): what a client of an OpenAI-compatible server calls. Admin
  routes (``/scale_elastic_ep``, LoRA loading, cache resets, ``/collective_rpc``, …) and documentation are 404
  even with the key. ``/metrics`` is served only on the separate metrics listener, which the NetworkPolicy opens
  to the monitoring namespace alone.
- **Limits at the edge:** a header timeout (a request head must be complete within ``header_timeout_s`` of its
  first byte, and a new connection's first head within ``header_timeout_s`` of opening: no slow-loris), an idle
  keep-alive longer than every proxy's in front (``idle_timeout_s``: the proxy, never the gate, closes an idle
  connection, or a request sent at that instant is a 502), a body timeout, the body size (refused by
  ``Content-Length`` before a byte of it is read), and an access log without query strings (a key sent as
  ``?api_key=`` is never written).
- **Requests and latency per served name** (:class:`ServedNameMetrics`), which vLLM does not export (it labels its
  metrics with the engine's name whatever LoRA adapter a request names): appended to the engine's ``/metrics`` on
  the metrics listener, so one scrape has both.

With a command after ``--``, the same process is the supervisor of the vLLM server it fronts (it exits with the
server's exit code, and a SIGTERM reaches both). The local target's endpoint in front of the gates is nginx
(``llm_platform/edge.py``): the exposure's limits and a canary's split, as ingress-nginx applies them in a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import (
    BaseConnector,
    ClientConnectionError,
    ClientSession,
    ClientTimeout,
    TCPConnector,
    UnixConnector,
    web,
)
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llm_platform.conventions import (
    API_KEY_ENV,
    ENGINE_HEALTH_PATH,
    GATE_DURATION_METRIC,
    GATE_FIRST_BYTE_METRIC,
    GATE_HEALTH_PATH,
    GATE_LATENCY_BUCKETS,
    GATE_MODULE,
    GATE_REQUESTS_METRIC,
    METRICS_PATH,
    MODEL_NAME_LABEL,
    SERVED_NAME_LABEL,
)

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}  # fmt: skip


#: What a client of an OpenAI-compatible (and Anthropic-compatible) server may call: vLLM 0.32's routes of that
#: kind, matched whole. Every other path is 404 with the key and 401 without it;
#: ``tests/integration/test_gate.py`` reads the running server's own ``/openapi.json`` and calls every route.
API_ROUTES: tuple[str, ...] = (
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/responses/[A-Za-z0-9_-]{1,128}",
    "/v1/responses/[A-Za-z0-9_-]{1,128}/cancel",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/score",
    "/v1/rerank",
    "/tokenize",
    "/detokenize",
    "/version",
)
_API_ROUTE = re.compile("|".join(f"(?:{route})" for route in API_ROUTES))

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_HEADER_TIMEOUT_S = 15.0
DEFAULT_IDLE_TIMEOUT_S = 75.0
"""Above the upstream keep-alive of every proxy that may front a gate: ingress-nginx keeps idle upstream
connections 60 s (``upstream-keepalive-timeout``), AWS's load balancers 60 s by default."""
DEFAULT_BODY_TIMEOUT_S = 60.0
UPSTREAM_KEEPALIVE_S = 2.0
"""How long the gate keeps an idle connection to the engine for the next request: below the engine's own keep-alive
(uvicorn's, 5 s in vLLM), so the engine never closes an idle connection at the moment the gate reuses it (the request
would fail with a reset, and a POST is not retried); the same rule as :data:`DEFAULT_IDLE_TIMEOUT_S`, the other way
round."""

UNREACHABLE = (OSError, ClientConnectionError)
"""What the engine's connection fails with before an answer: refused, reset, or closed (aiohttp's
``ServerDisconnectedError`` is not an ``OSError``)."""

log = logging.getLogger("llm_platform.gate")


def route_allowed(path: str) -> bool:
    """Whether ``path`` is an API route a keyed client may call."""
    return _API_ROUTE.fullmatch(path) is not None


def key_matches(header: str | None, key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    scheme, _, presented = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), key.encode())


class Upstream:
    """Where the gate forwards to: the engine's Unix socket (locally) or a URL (its loopback port in a pod)."""

    def __init__(self, url: str | None = None, uds: str | None = None) -> None:
        if (url is None) == (uds is None):
            raise ValueError("exactly one of url and uds")
        self._url = url.rstrip("/") if url else None
        self.uds = uds

    def base_url(self) -> str | None:
        return "http://localhost" if self.uds is not None else self._url

    def connector(self) -> BaseConnector:
        if self.uds is not None:
            return UnixConnector(path=self.uds, keepalive_timeout=UPSTREAM_KEEPALIVE_S)
        return TCPConnector(keepalive_timeout=UPSTREAM_KEEPALIVE_S)


@dataclass(frozen=True)
class GateSettings:
    """What the gate enforces; the defaults are the catalog's exposure defaults."""

    api_key: str | None
    """The key every request but ``GET /health`` must carry; None: no key (only for the tests of the limits)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    """A request head must be complete within this of its first byte (and of the connection's opening)."""
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    """How long a connection may stay idle between requests: longer than any proxy in front keeps it."""
    served_names: tuple[str, ...] = ()
    """The names the server behind serves (the model's first, then its adapters'): the label values of
    :class:`ServedNameMetrics`; empty: no per-name metrics."""


OTHER_SERVED_NAME = "other"
"""The label of requests that named no model, or one this server does not serve (the engine refuses those)."""
#: Prometheus' classic text format: what the engine is asked for, and what the gate's own metrics are written in.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
#: The largest body the gate parses for its ``model`` field; a larger one is counted as :data:`OTHER_SERVED_NAME`.
MAX_PARSED_BODY_BYTES = 1024 * 1024


class ServedNameMetrics:
    """Requests, time to the first byte and duration per served name, as the gate sees them.

    The label values are the names the server serves (:attr:`GateSettings.served_names`); any other ``model`` a
    client sends is :data:`OTHER_SERVED_NAME`, so a caller cannot mint series (bounded cardinality)."""

    def __init__(self, served_names: Sequence[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._names = frozenset(served_names)
        self._model = served_names[0] if served_names else ""
        labels = (MODEL_NAME_LABEL, SERVED_NAME_LABEL)
        self._requests = Counter(
            GATE_REQUESTS_METRIC.removesuffix("_total"), "Requests the gate forwarded, by the served name they "
            "addressed and the answer's status", (*labels, "code"), registry=self.registry,
        )  # fmt: skip
        self._first_byte = Histogram(
            GATE_FIRST_BYTE_METRIC, "From a request's arrival to the first byte of its answer's body", labels,
            buckets=GATE_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._duration = Histogram(
            GATE_DURATION_METRIC, "From a request's arrival to the end of its answer", labels,
            buckets=GATE_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip

    @property
    def enabled(self) -> bool:
        return bool(self._names)

    def served_name(self, body: bytes) -> str:
        """The body's ``model`` when it is a name this server serves, else :data:`OTHER_SERVED_NAME`."""
        if not body or len(body) > MAX_PARSED_BODY_BYTES or b'"model"' not in body:
            return OTHER_SERVED_NAME
        try:
            name = json.loads(body).get("model")
        except (ValueError, RecursionError, AttributeError):
            return OTHER_SERVED_NAME
        return name if isinstance(name, str) and name in self._names else OTHER_SERVED_NAME

    def observe(self, served_name: str, status: int, first_byte_s: float | None, duration_s: float) -> None:
        self._requests.labels(self._model, served_name, str(status)).inc()
        if first_byte_s is not None:
            self._first_byte.labels(self._model, served_name).observe(first_byte_s)
        self._duration.labels(self._model, served_name).observe(duration_s)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format (0.0.4), to append to the engine's."""
        return generate_latest(self.registry)


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Method, path without the query string, status, size and duration: a key in a query never reaches a log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, duration: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %s %.3f',
            request.remote, request.method, request.path, response.status, response.body_length, duration,
        )  # fmt: skip


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": status}}, status=status)


def _unreachable() -> web.Response:
    return _error(503, "the model server is not reachable (starting, or stopped)")


def build_app(
    upstream: Upstream, settings: GateSettings, *, metrics_only: bool = False,
    served_metrics: ServedNameMetrics | None = None,
) -> web.Application:  # fmt: skip
    """The gate's application: the API listener, or (``metrics_only``) the metrics listener; both share
    ``served_metrics`` (the API listener records, the metrics listener exposes)."""
    session: dict[str, ClientSession] = {}
    served = served_metrics or ServedNameMetrics(settings.served_names)

    async def startup(app: web.Application) -> None:
        session["client"] = ClientSession(
            connector=upstream.connector(), timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )

    async def cleanup(app: web.Application) -> None:
        await session["client"].close()

    async def own_health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def forward(request: web.Request) -> web.StreamResponse:
        began = asyncio.get_running_loop().time()
        path = request.path
        reading = request.method in ("GET", "HEAD")
        open_path = reading and (path == ENGINE_HEALTH_PATH or (metrics_only and path == METRICS_PATH))
        if metrics_only and not open_path:
            return _error(404, "the metrics listener serves /metrics and /health only")
        if not open_path:
            if settings.api_key is not None and not key_matches(request.headers.get("Authorization"), settings.api_key):
                return _error(401, "Unauthorized")
            if not route_allowed(path):
                return _error(404, f"{request.method} {path[:100]} is not an API route of this server")
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            return _error(413, f"request body of {length} bytes exceeds the limit of {settings.max_body_bytes}")
        backend = upstream.base_url()
        if backend is None:
            return _error(503, "no server is promoted for this model yet")
        try:
            body = await asyncio.wait_for(request.read(), settings.body_timeout_s)
        except TimeoutError:
            return _error(408, f"the request body did not arrive within {settings.body_timeout_s:.0f} s")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body exceeds the limit of {settings.max_body_bytes} bytes")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if metrics_only and path == METRICS_PATH:
            return await engine_and_gate_metrics(backend, headers)
        measured = served.enabled and request.method == "POST"
        served_name = served.served_name(body) if measured else OTHER_SERVED_NAME
        try:
            upstream_response = await session["client"].request(
                request.method, f"{backend}{request.rel_url}", headers=headers, data=body or None
            )
        except UNREACHABLE:
            return _unreachable()
        first_byte_s: float | None = None
        try:
            async with upstream_response:
                response = web.StreamResponse(
                    status=upstream_response.status,
                    headers={k: v for k, v in upstream_response.headers.items() if k.lower() not in HOP_BY_HOP},
                )
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_any():
                    if first_byte_s is None:
                        first_byte_s = asyncio.get_running_loop().time() - began
                    await response.write(chunk)
                await response.write_eof()
                return response
        finally:
            if measured:
                duration_s = asyncio.get_running_loop().time() - began
                served.observe(served_name, upstream_response.status, first_byte_s, duration_s)

    async def engine_and_gate_metrics(backend: str, headers: dict[str, str]) -> web.Response:
        """The engine's metrics in the text format (never OpenMetrics, whose ``# EOF`` must end the answer, nor
        compressed), then the gate's own."""
        headers = {k: v for k, v in headers.items() if k.lower() not in ("accept", "accept-encoding")}
        headers.update({"Accept": TEXT_FORMAT, "Accept-Encoding": "identity"})
        try:
            async with session["client"].get(f"{backend}{METRICS_PATH}", headers=headers) as engine:
                text = await engine.read()
                if engine.status != 200:
                    return web.Response(status=engine.status, body=text)
        except UNREACHABLE:
            return _unreachable()
        if text and not text.endswith(b"\n"):
            text += b"\n"
        return web.Response(body=text + served.exposition(), headers={"Content-Type": TEXT_FORMAT})

    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[_request_began])
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_get(GATE_HEALTH_PATH, own_health)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


class HeadDeadlineHandler(RequestHandler):
    """aiohttp's connection handler with a deadline per request head, apart from the idle keep-alive.

    aiohttp has one timer for both (``keepalive_timeout``): a header timeout short enough to stop a slow-loris also
    closes idle connections a proxy still holds for reuse. Here the keep-alive is the idle limit, and a head that
    has begun (or a connection's first) must be complete within ``head_timeout_s``; :func:`_request_began` (a
    middleware) marks a head complete.
    """

    __slots__ = ("_head_timeout_s", "_head_timer", "_heads", "_in_request")

    def __init__(self, manager: web.Server, *, head_timeout_s: float, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self._head_timeout_s = head_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads = 0
        self._in_request = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and not self._in_request:
            self._arm_head_deadline()  # the first byte of a new head after an idle spell
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def request_began(self) -> None:
        """A complete head was parsed: its deadline is met; the next one starts with its first byte."""
        self._heads += 1
        self._in_request = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def request_ended(self) -> None:
        self._in_request = False

    def _arm_head_deadline(self) -> None:
        heads = self._heads
        self._head_timer = asyncio.get_running_loop().call_later(self._head_timeout_s, self._head_late, heads)

    def _head_late(self, heads: int) -> None:
        self._head_timer = None
        if self._heads == heads and not self._in_request:
            self.force_close()


@web.middleware
async def _request_began(request: web.Request, handler: Handler) -> web.StreamResponse:
    protocol = request.protocol
    if not isinstance(protocol, HeadDeadlineHandler):
        return await handler(request)
    protocol.request_began()
    try:
        return await handler(request)
    finally:
        protocol.request_ended()


class GateSite(web.TCPSite):
    """A TCP listener whose connections are :class:`HeadDeadlineHandler`\\ s."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, settings: GateSettings) -> None:
        super().__init__(runner, host, port)
        self._settings = settings

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (which stops it)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def connection() -> HeadDeadlineHandler:
            return HeadDeadlineHandler(
                server,
                loop=loop,
                head_timeout_s=self._settings.header_timeout_s,
                keepalive_timeout=self._settings.idle_timeout_s,
                access_log_class=PathOnlyAccessLogger,
            )

        self._server = await loop.create_server(connection, self._host, self._port, reuse_address=True)


async def serve(
    upstream: Upstream,
    settings: GateSettings,
    listen: tuple[str, int],
    metrics_listen: tuple[str, int] | None = None,
) -> list[web.AppRunner]:
    """Start the API listener (and the metrics listener); the caller cleans the runners up."""
    runners = []
    served = ServedNameMetrics(settings.served_names)
    for address, metrics_only in ((listen, False), (metrics_listen, True)):
        if address is None:
            continue
        app = build_app(upstream, settings, metrics_only=metrics_only, served_metrics=served)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await GateSite(runner, address[0], address[1], settings).start()
        runners.append(runner)
    return runners


async def _run(
    upstream: Upstream,
    settings: GateSettings,
    listen: tuple[str, int],
    metrics_listen: tuple[str, int] | None,
    command: Sequence[str],
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    child = subprocess.Popen(list(command)) if command else None  # inherits stdout/stderr: one log
    runners = await serve(upstream, settings, listen, metrics_listen)
    exit_code = 0
    try:
        while not stop.is_set():
            if child is not None and child.poll() is not None:
                exit_code = child.returncode
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        for runner in runners:
            await runner.cleanup()
        if child is not None and child.poll() is None:
            child.terminate()
            deadline = time.monotonic() + 20
            while child.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if child.poll() is None:
                child.kill()
            child.wait()
    return exit_code


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    command: list[str] = []
    if "--" in argv:
        command = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(prog=f"python -m {GATE_MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address of the API listener")
    parser.add_argument("--port", type=int, required=True, help="port of the API listener")
    parser.add_argument("--metrics-port", type=int, help="port of the metrics listener (/metrics, /health)")
    origin = parser.add_mutually_exclusive_group(required=True)
    origin.add_argument("--upstream-url", help="the server, e.g. http://127.0.0.1:8081")
    origin.add_argument("--upstream-uds", help="the server's Unix socket")
    parser.add_argument("--api-key-env", default=API_KEY_ENV, help="environment variable with the key; empty: no key")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--header-timeout-s", type=float, default=DEFAULT_HEADER_TIMEOUT_S)
    parser.add_argument("--body-timeout-s", type=float, default=DEFAULT_BODY_TIMEOUT_S)
    parser.add_argument("--idle-timeout-s", type=float, default=DEFAULT_IDLE_TIMEOUT_S)
    parser.add_argument(
        "--served-name", action="append", default=[], dest="served_names",
        help="a name the server serves (the model's first, then each adapter's): per-name request metrics",
    )  # fmt: skip
    return parser.parse_args(argv), command


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> GateSettings:
    key = environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        raise SystemExit(f"error: ${args.api_key_env} is empty: the gate refuses to run without a key")
    return GateSettings(
        api_key=key,
        max_body_bytes=args.max_body_bytes,
        header_timeout_s=args.header_timeout_s,
        body_timeout_s=args.body_timeout_s,
        idle_timeout_s=args.idle_timeout_s,
        served_names=tuple(args.served_names),
    )


def main(argv: Sequence[str] | None = None) -> None:
    args, command = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="gate: %(message)s")
    settings = settings_from(args, os.environ)
    upstream = Upstream(url=args.upstream_url, uds=args.upstream_uds)
    metrics = (args.host, args.metrics_port) if args.metrics_port else None
    sys.exit(asyncio.run(_run(upstream, settings, (args.host, args.port), metrics, command)))


if __name__ == "__main__":
    main()
