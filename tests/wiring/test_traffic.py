"""The traffic generator against a real HTTP server on loopback: bounded, authenticated, distinct prompts, every
status counted (a 429 included); and ``llm-platform dev traffic`` refusing a model this machine does not serve."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from llm_platform.cli import main
from llm_platform.dev.traffic import Traffic


class _Completions(BaseHTTPRequestHandler):
    """Answers 200, every fifth request 429; remembers each request's body and Authorization header."""

    seen: ClassVar[list[tuple[dict[str, object], str]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.seen.append((body, self.headers.get("Authorization", "")))
            status = 429 if len(self.seen) % 5 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    _Completions.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Completions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_traffic_is_bounded_authenticated_and_counts_every_status(endpoint: str) -> None:
    with Traffic(endpoint, "secret-key", "tiny-llama", callers=3, max_tokens=7, max_requests=20) as traffic:
        while traffic.total < 20:
            threading.Event().wait(0.05)
    assert 20 <= traffic.total <= 22  # callers in flight when the bound is reached finish their request
    assert traffic.outcomes["429"] >= 3 and traffic.outcomes["200"] >= 15
    bodies = [body for body, _ in _Completions.seen]
    assert {auth for _, auth in _Completions.seen} == {"Bearer secret-key"}
    assert {(body["model"], body["max_tokens"]) for body in bodies} == {("tiny-llama", 7)}
    assert len({body["prompt"] for body in bodies}) == len(bodies)  # no prefix cache makes one cheaper


def test_traffic_refuses_what_is_not_an_http_url() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Traffic("file:///etc/passwd", "k", "m")


def test_the_cli_refuses_a_model_this_machine_does_not_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert main(["dev", "traffic", "tiny-llama", "--seconds", "1"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: model 'tiny-llama': not served on this machine (start it: llm-platform demo)"
    )
