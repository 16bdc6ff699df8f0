"""The local edge's nginx configuration, rendered from the model's exposure settings and its routes. Pure: no I/O.

It enforces what the cluster's ingress-nginx enforces for the same catalog entry (``manifests/serving.py``'s
annotations), with ingress-nginx's own semantics where it has them:

- ``limit-rps``: ``limit_req`` per client address at ``rate_limit_rps`` with a burst of 5 × the rate
  (ingress-nginx's ``limit-burst-multiplier``) and ``nodelay``; ``limit-connections``: ``limit_conn`` per address.
  Both answer **429** (ingress-nginx's default is 503; 429 is what a client's retry logic understands as "slow
  down", and what the local edge's tests check).
- ``proxy-read-timeout`` / ``proxy-send-timeout``: ``timeout_s``, so a long generation is not cut at nginx's 60 s;
  ``proxy-buffering off``, so tokens stream as they are generated; ``proxy-body-size``: ``client_max_body_size``.
- ``canary-weight``: ``split_clients`` on the request id between the stable and the canary upstream (each
  request is drawn independently, as ingress-nginx's canary does).

Logs never carry a query string (a key sent as ``?api_key=`` is never written): the access log writes ``$uri``,
and the error log, which would quote whole request lines, is kept at ``crit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llm_platform.catalog.schema import Exposure
from llm_platform.conventions import EDGE_HEALTH_PATH

BURST_MULTIPLIER = 5
"""ingress-nginx's ``limit-burst-multiplier`` default: the burst a client may send at once is 5 × its rate."""
LIMIT_STATUS = 429
WORKER_PROCESSES = 1
"""One worker per edge: a tiny model's traffic on a laptop or CI; more workers would share the limit zones anyway."""
UPSTREAM_IDLE_TIMEOUT_S = 60.0
"""How long nginx keeps an idle connection to a server's gate for reuse: ingress-nginx's default
(``upstream-keepalive-timeout``), so the local edge meets the gates as a cluster's does; shorter than the gate's idle
keep-alive (75 s, ``gate.DEFAULT_IDLE_TIMEOUT_S``), so that nginx, never the gate, closes an idle connection. The
other way round, a request nginx sends on a connection the gate is closing at that instant fails as a 502."""
NO_SERVER_BODY = '{"error": {"message": "no server is promoted for this model yet", "code": 503}}'


@dataclass(frozen=True)
class EdgeLimits:
    """What the edge enforces per client; :meth:`of` reads them from a model's exposure."""

    rate_limit_rps: int
    max_connections_per_ip: int
    timeout_s: float
    """Read and send timeout towards the servers (between two reads or writes, as nginx counts)."""
    max_body_size: str
    header_timeout_s: float = 15.0
    """A client must send a complete request head within this (no slow-loris), as the gate does."""
    body_timeout_s: float = 60.0

    @classmethod
    def of(cls, exposure: Exposure) -> EdgeLimits:
        return cls(
            rate_limit_rps=exposure.rate_limit_rps,
            max_connections_per_ip=exposure.max_connections_per_ip,
            timeout_s=exposure.timeout_s,
            max_body_size=exposure.max_body_size,
        )


@dataclass(frozen=True)
class EdgeRoutes:
    """Where the edge sends a model's traffic: ``host:port`` of the stable and (during a canary) the canary server."""

    stable: str | None
    canary: str | None = None
    canary_weight: int = 0
    """Percent of requests the canary takes (0–100)."""

    def __post_init__(self) -> None:
        if not 0 <= self.canary_weight <= 100:
            raise ValueError(f"canary weight {self.canary_weight} is not a percent (0-100)")
        if self.canary_weight and self.canary is None:
            raise ValueError("a canary weight without a canary server")


def _seconds(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def render_edge_conf(
    *, listen: tuple[str, int], prefix: Path, limits: EdgeLimits, routes: EdgeRoutes, generation: int
) -> str:
    """nginx.conf for one model's edge, every path under ``prefix`` (nginx runs as this user, in the foreground).
    ``generation`` is answered on :data:`EDGE_HEALTH_PATH`, so that a reload can be seen to have taken effect."""
    host, port = listen
    upstreams = {"stable": routes.stable, "canary": routes.canary}
    blocks = "".join(
        f"    upstream {name} {{\n        server {address} max_fails=0;\n        keepalive 16;\n"
        f"        keepalive_timeout {_seconds(UPSTREAM_IDLE_TIMEOUT_S)};\n    }}\n"
        for name, address in upstreams.items()
        if address is not None
    )
    split = ""
    if routes.stable is None:
        route = f"            default_type application/json;\n            return 503 '{NO_SERVER_BODY}';\n"
    else:
        if routes.canary_weight == 100:
            target = "canary"
        elif routes.canary_weight:
            split = (
                f'    split_clients "${{request_id}}" $track {{\n'
                f"        {routes.canary_weight}% canary;\n        * stable;\n    }}\n"
            )
            target = "$track"
        else:
            target = "stable"
        route = (
            f"            proxy_pass http://{target};\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $host;\n"
            "            proxy_set_header X-Forwarded-For $remote_addr;\n"
            "            proxy_next_upstream off;\n"
        )
    timeout = _seconds(limits.timeout_s)
    return f"""# Rendered by llm-platform (manifests/edge_conf.py); every reload replaces it whole.
daemon off;
master_process on;
worker_processes {WORKER_PROCESSES};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;

events {{
    worker_connections 1024;
}}

http {{
    log_format paths '$remote_addr "$request_method $uri" $status $body_bytes_sent $request_time';
    access_log {prefix}/access.log paths;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server_tokens off;

    limit_req_zone $binary_remote_addr zone=per_client_rate:1m rate={limits.rate_limit_rps}r/s;
    limit_conn_zone $binary_remote_addr zone=per_client_connections:1m;
    limit_req_status {LIMIT_STATUS};
    limit_conn_status {LIMIT_STATUS};

{blocks}{split}
    server {{
        listen {host}:{port};
        client_header_timeout {_seconds(limits.header_timeout_s)};
        client_body_timeout {_seconds(limits.body_timeout_s)};
        client_max_body_size {limits.max_body_size};
        proxy_connect_timeout 10s;
        proxy_read_timeout {timeout};
        proxy_send_timeout {timeout};
        send_timeout {timeout};
        proxy_buffering off;
        proxy_request_buffering off;

        location = {EDGE_HEALTH_PATH} {{
            default_type text/plain;
            return 200 "generation {generation}\\n";
        }}

        location / {{
            limit_req zone=per_client_rate burst={limits.rate_limit_rps * BURST_MULTIPLIER} nodelay;
            limit_conn per_client_connections {limits.max_connections_per_ip};
{route}        }}
    }}
}}
"""
