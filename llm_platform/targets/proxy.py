"""The local target's stable endpoint: a streaming reverse proxy to the model's active vLLM server.

``python -m llm_platform.targets.proxy --port P --active-file F`` forwards every request to the server named in
``F`` (re-read when it changes), streaming responses (server-sent events included) as they come. Switching ``F``
is how a promotion moves traffic without the endpoint ever refusing a connection.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, web

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}  # fmt: skip


class ActiveBackend:
    """The backend URL from the active file, cached until the file's mtime changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime = -1.0
        self._url: str | None = None

    def url(self) -> str | None:
        try:
            mtime = self._path.stat().st_mtime
        except OSError:
            return None
        if mtime != self._mtime:
            data = json.loads(self._path.read_text())
            self._url = f"http://{data['host']}:{data['port']}"
            self._mtime = mtime
        return self._url


def build_app(active: ActiveBackend) -> web.Application:
    session: dict[str, ClientSession] = {}

    async def startup(app: web.Application) -> None:
        session["client"] = ClientSession(timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False)

    async def cleanup(app: web.Application) -> None:
        await session["client"].close()

    async def own_health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def forward(request: web.Request) -> web.StreamResponse:
        backend = active.url()
        if backend is None:
            return web.json_response({"error": "no server is promoted for this model yet"}, status=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with session["client"].request(
            request.method, f"{backend}{request.rel_url}", headers=headers, data=body or None
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
            )
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/-/proxy-health", own_health)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--active-file", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(build_app(ActiveBackend(args.active_file)), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
