"""What the gate costs a streamed request: the same streaming upstream (a stand-in for vLLM sending 64 token
chunks) called directly and through ``llm_platform.gate`` (key check, route allow-list, body limit), in one run.

    .venv/bin/python bench/gate.py [--requests 400] [--concurrency 16]

Last line: ``direct_ttfb_ms=… gate_ttfb_ms=… ttfb_added_ms=… direct_rps=… gate_rps=… rps_ratio=…`` (medians of
time to first byte over sequential requests; requests/s at the given concurrency).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiohttp import ClientSession, web
from shortmode import parse_options

from llm_platform.gate import GateSettings, Upstream, serve
from llm_platform.processes import free_port

KEY = "bench-key"
CHUNKS = 64
PATH = "/v1/completions"


async def _upstream() -> tuple[web.AppRunner, int]:
    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(CHUNKS):
            await response.write(f'data: {{"token": {index}}}\n\n'.encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _one(client: ClientSession, url: str) -> float:
    """Time to the first byte of the body; the rest is read to the end."""
    started = time.perf_counter()
    async with client.post(url, json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200, response.status
        await response.content.readany()
        first = time.perf_counter() - started
        await response.read()
    return first


async def _measure(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    async with ClientSession() as client:
        for _ in range(20):  # warm-up: connections, code paths
            await _one(client, url)
        ttfb = statistics.median([await _one(client, url) for _ in range(requests)])
        started = time.perf_counter()
        for _ in range(requests // concurrency):
            await asyncio.gather(*(_one(client, url) for _ in range(concurrency)))
        rps = (requests // concurrency) * concurrency / (time.perf_counter() - started)
    return ttfb * 1000, rps


async def main(requests: int, concurrency: int) -> None:
    upstream, upstream_port = await _upstream()
    gate_port = free_port()
    runners = await serve(
        Upstream(url=f"http://127.0.0.1:{upstream_port}"), GateSettings(api_key=KEY), ("127.0.0.1", gate_port)
    )
    try:
        direct_ttfb, direct_rps = await _measure(
            f"http://127.0.0.1:{upstream_port}/v1/completions", requests, concurrency
        )
        gate_ttfb, gate_rps = await _measure(f"http://127.0.0.1:{gate_port}/v1/completions", requests, concurrency)
    finally:
        for runner in [*runners, upstream]:
            await runner.cleanup()
    print(
        f"direct_ttfb_ms={direct_ttfb:.3f} gate_ttfb_ms={gate_ttfb:.3f} ttfb_added_ms={gate_ttfb - direct_ttfb:.3f} "
        f"direct_rps={direct_rps:.0f} gate_rps={gate_rps:.0f} rps_ratio={gate_rps / direct_rps:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    arguments = parse_options(parser, {"requests": 40, "concurrency": 4})
    asyncio.run(main(arguments.requests, arguments.concurrency))
