"""The local edge's nginx configuration: the exposure's limits as ingress-nginx applies them, and the canary split."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_platform.catalog.schema import Exposure
from llm_platform.gate import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_IDLE_TIMEOUT_S
from llm_platform.manifests.edge_conf import UPSTREAM_IDLE_TIMEOUT_S, EdgeLimits, EdgeRoutes, render_edge_conf


def _conf(routes: EdgeRoutes, **exposure: object) -> str:
    limits = EdgeLimits.of(Exposure.model_validate(exposure))
    return render_edge_conf(listen=("127.0.0.1", 8080), prefix=Path("/state/edge"), limits=limits, routes=routes,
                            generation=7)  # fmt: skip


def test_the_exposures_limits_are_rendered_as_ingress_nginx_applies_them() -> None:
    conf = _conf(EdgeRoutes(stable="127.0.0.1:9000"), rate_limit_rps=4, max_connections_per_ip=3, timeout_s=900,
                 max_body_size="2m")  # fmt: skip
    assert "rate=4r/s" in conf and "burst=20 nodelay" in conf  # ingress-nginx: burst = 5 x limit-rps
    assert "limit_conn per_client_connections 3;" in conf
    assert "limit_req_status 429;" in conf and "limit_conn_status 429;" in conf
    assert "proxy_read_timeout 900000ms;" in conf and "proxy_send_timeout 900000ms;" in conf
    assert "client_max_body_size 2m;" in conf and "proxy_buffering off;" in conf
    assert "proxy_pass http://stable;" in conf and "split_clients" not in conf
    assert 'return 200 "generation 7\\n";' in conf
    # No query string in any log: the access log writes $uri, the error log (whole request lines) only crit.
    assert "$request " not in conf and "$args" not in conf and "error.log crit;" in conf


def test_a_canary_weight_splits_by_request_and_the_ends_route_to_one_upstream() -> None:
    split = _conf(EdgeRoutes(stable="127.0.0.1:9000", canary="127.0.0.1:9001", canary_weight=25))
    assert 'split_clients "${request_id}" $track {\n        25% canary;\n        * stable;' in split
    assert "proxy_pass http://$track;" in split
    assert "server 127.0.0.1:9001 max_fails=0;" in split
    assert "proxy_pass http://canary;" in _conf(EdgeRoutes(stable="127.0.0.1:9000", canary="127.0.0.1:9001",
                                                           canary_weight=100))  # fmt: skip
    idle = _conf(EdgeRoutes(stable="127.0.0.1:9000", canary="127.0.0.1:9001", canary_weight=0))
    assert "proxy_pass http://stable;" in idle and "split_clients" not in idle
    nothing = _conf(EdgeRoutes(stable=None))
    assert "return 503" in nothing and "upstream" not in nothing


@pytest.mark.parametrize(("canary", "weight"), [("127.0.0.1:9001", 101), ("127.0.0.1:9001", -1), (None, 10)])
def test_a_weight_that_is_no_percent_or_has_no_canary_is_refused(canary: str | None, weight: int) -> None:
    with pytest.raises(ValueError, match="canary"):
        EdgeRoutes(stable="127.0.0.1:9000", canary=canary, canary_weight=weight)


def test_nginx_closes_an_idle_upstream_connection_before_the_gate_would() -> None:
    """The gate drops a connection idle for its idle keep-alive; were nginx to keep it longer, a request sent on it
    at the instant the gate closes it would be answered 502. The header timeout is a separate, shorter deadline."""
    conf = _conf(EdgeRoutes(stable="127.0.0.1:9000", canary="127.0.0.1:9001", canary_weight=10))
    idle_ms = [int(line.split()[1].rstrip("ms;")) for line in conf.splitlines() if "keepalive_timeout" in line]
    assert len(idle_ms) == 2  # one per upstream
    assert all(ms == UPSTREAM_IDLE_TIMEOUT_S * 1000 < DEFAULT_IDLE_TIMEOUT_S * 1000 for ms in idle_ms)
    assert DEFAULT_HEADER_TIMEOUT_S < UPSTREAM_IDLE_TIMEOUT_S  # idle connections outlive the header deadline
