"""Profile fidelity: does a benchmark that replays the measured traffic profile predict what the server does under
that traffic, and better than today's synthetic plan?

1. Live: drive the tiny-llama endpoint for ``--duration`` seconds with a mixed workload of known shape (log-normal
   prompt lengths with a long tail, log-normal output lengths, ``ignore_eos``), Poisson arrivals at ``--rate``
   requests/s, streamed; the client measures each request's time to first token and the output tokens/s.
2. The profile: ``PrometheusClient.measured_traffic`` over the drive's window and ``build_profile``, as the
   ``traffic_profile`` asset does.
3. Benchmark the same server with the platform's runner (``vllm bench serve``): (a) the profile replayed, as many
   seeded draws as the drive sent, at the profile's mean request rate; (b) today's synthetic plan (``plan_for``:
   a quarter of max_model_len in, 64 out, closed loop at concurrency 1, 8 and max_num_seqs), judged as the SLO gate
   judges it (worst p95 TTFT, best output tokens/s over its levels); (c) the drive's own requests replayed in
   their order at their own times (vLLM's ``timed_trace``: what a replay of the window's trace would send), the
   best a replay can do: it tells the spread of two draws of one shape from what the profile misses.
4. Steps 1-3 (the replays) are a round, done ``--rounds`` times; the synthetic plan runs once. Print the median over
   the rounds of each benchmark's p95 TTFT and output tokens/s over its round's live figures (a replay follows its
   live drive at once: the shared machine's slower swings, which moved live p95 TTFT from 173 to 322 ms between two
   runs of the same workload, cancel). Goal: the profile's within +/-15 % of live on both, and closer than the
   synthetic plan's.

    .venv/bin/python bench/profile_fidelity.py [--duration 150] [--rate 4] [--rounds 3]
        [--base-url URL --tokenizer DIR --prometheus URL [--api-key-file FILE]]   # a running tiny-llama server

Without ``--base-url`` it starts a tiny-llama server (local target) and a Prometheus scraping it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from shortmode import parse_options, scratch_dir  # noqa: E402

from llm_platform.benchmark import replay_dataset  # noqa: E402
from llm_platform.benchmark.plan import BenchmarkPlan, plan_for  # noqa: E402
from llm_platform.benchmark.runner import run_plan  # noqa: E402
from llm_platform.catalog import ModelSpec, parse_catalog  # noqa: E402
from llm_platform.dev.tiny_model import make_tiny_model  # noqa: E402
from llm_platform.engine.vllm import VLLM, VLLM_METRICS  # noqa: E402
from llm_platform.processes import free_port  # noqa: E402
from llm_platform.prometheus import PrometheusClient  # noqa: E402
from llm_platform.services import SCRAPE_INTERVAL_S, LocalServices  # noqa: E402
from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings  # noqa: E402
from llm_platform.workload import build_profile, replay_lengths  # noqa: E402

MODEL = "tiny-llama"
MAX_MODEL_LEN = 2048
#: The live workload's shape: log-normal prompt lengths (median 80 tokens, a tail to 1,500) and outputs (median 24).
PROMPT_MEDIAN, PROMPT_SIGMA, PROMPT_CAP = 80, 1.0, 1500
OUTPUT_MEDIAN, OUTPUT_SIGMA, OUTPUT_CAP = 24, 0.7, 256
#: Open-loop replay: enough concurrency that the rate, not a cap, decides how many requests are in flight.
REPLAY_CONCURRENCY = 256


def log_normal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, round(rng.lognormvariate(math.log(median), sigma))))


@dataclass
class LiveTraffic:
    """What the client saw: each answered request's time to first token (s) and output tokens, and the span."""

    ttft_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    trace: list[tuple[int, int, float]] = field(default_factory=list)
    """Every request sent, in order: its prompt and output tokens and when it was sent (s after the first drive
    step): what a trace of the window would hold."""
    failed: int = 0
    first_sent: float = math.nan
    last_sent: float = math.nan
    last_done: float = math.nan

    def p95_ttft_ms(self) -> float:
        return statistics.quantiles(self.ttft_s, n=20)[-1] * 1000 if len(self.ttft_s) > 1 else math.nan

    def mean_ttft_ms(self) -> float:
        return statistics.fmean(self.ttft_s) * 1000 if self.ttft_s else math.nan

    def output_tok_s(self) -> float:
        return self.output_tokens / (self.last_done - self.first_sent)

    @property
    def arrival_span_s(self) -> float:
        """From the first request sent to the last: the time the traffic arrived over."""
        return self.last_sent - self.first_sent


async def send(session: aiohttp.ClientSession, url: str, prompt: str, output: int, live: LiveTraffic) -> None:
    """One streamed completion; records its time to first token and its output tokens."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": output, "ignore_eos": True, "stream": True,
            "temperature": 0}  # fmt: skip
    start, first = time.monotonic(), math.nan
    try:
        async with session.post(url, json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if math.isnan(first) and line.startswith(b"data: {"):
                    first = time.monotonic()
    except (TimeoutError, aiohttp.ClientError):
        first = math.nan
    done = time.monotonic()
    if math.isnan(first):  # refused, cut, or answered without a token
        live.failed += 1
        return
    live.ttft_s.append(first - start)
    live.output_tokens += output
    live.last_done = done if math.isnan(live.last_done) else max(live.last_done, done)


async def _drive(base_url: str, api_key: str | None, requests: list[dict[str, Any]], lengths: list[list[int]],
                 rate: float, rng: random.Random) -> LiveTraffic:  # fmt: skip
    """Poisson arrivals at ``rate``: each request a task on one pooled session, as a production client sends (and
    as vLLM's benchmark does: a thread and a new connection per request measured the client's own delays)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    timeout = aiohttp.ClientTimeout(total=300)
    live, tasks = LiveTraffic(), []
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        live.first_sent = due = time.monotonic()
        for entry, (prompt, output) in zip(requests, lengths, strict=True):
            due += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            url = f"{base_url}/v1/completions"
            live.trace.append((prompt, output, time.monotonic() - live.first_sent))
            tasks.append(asyncio.create_task(send(session, url, entry["prompt"], entry["output_tokens"], live)))
        live.last_sent = time.monotonic()
        await asyncio.gather(*tasks)
    return live


def drive(base_url: str, api_key: str | None, tokenizer: str, rate: float, duration_s: float, seed: int,
          work: Path) -> LiveTraffic:  # fmt: skip
    """Poisson arrivals at ``rate`` for ``duration_s`` of the workload's shape (bounded by the duration)."""
    rng = random.Random(seed)
    count = max(1, round(rate * duration_s))
    lengths = []
    for _ in range(count):
        prompt = log_normal(rng, PROMPT_MEDIAN, PROMPT_SIGMA, PROMPT_CAP)
        output = min(log_normal(rng, OUTPUT_MEDIAN, OUTPUT_SIGMA, OUTPUT_CAP), MAX_MODEL_LEN - prompt - 8)
        lengths.append([prompt, output])
    dataset = replay_dataset.write_dataset(lengths, tokenizer, seed, work / "live.jsonl")
    requests = [json.loads(line) for line in dataset.read_text().splitlines()]
    return asyncio.run(_drive(base_url, api_key, requests, lengths, rate, rng))


def replay_plan(
    model: ModelSpec, prometheus: str, window_s: int, arrival_span_s: float, requests: int, seed: int
) -> BenchmarkPlan:
    """The profile of the drive's window (as ``traffic_profile`` builds it) as a replay at its mean rate: the
    profile's requests over the span they arrived in (the window also holds the idle scrapes around the drive)."""
    measured = PrometheusClient(prometheus).measured_traffic(MODEL, window_s, VLLM_METRICS)
    profile = build_profile(model, window_s, measured)
    if profile.source != "prometheus":
        raise SystemExit(f"no measured profile: {'; '.join(profile.notes)}")
    lengths = replay_lengths(profile, requests, seed=seed, max_model_len=model.serving.max_model_len)
    rate = profile.requests / arrival_span_s
    print(f"profile: {profile.described}; replayed at {rate:.2f} requests/s")
    return BenchmarkPlan(input_len=1, output_len=1, prompts_per_level=len(lengths), seed=seed, num_warmups=0,
                         concurrency_levels=(REPLAY_CONCURRENCY,), request_rate=f"{rate:.3f}", requests=lengths,
                         workload=profile.described)  # fmt: skip


def trace_plan(live: LiveTraffic, seed: int) -> BenchmarkPlan:
    """The drive's own requests replayed in their order at their times (vLLM's ``timed_trace``): what a replay of the
    window's trace would send, the best a replay can do; the profile's replay is a fresh draw of the same shape."""
    return BenchmarkPlan(input_len=1, output_len=1, prompts_per_level=len(live.trace), seed=seed, num_warmups=0,
                         concurrency_levels=(REPLAY_CONCURRENCY,),
                         requests=tuple((prompt, output) for prompt, output, _ in live.trace),
                         arrivals_s=tuple(sent for _, _, sent in live.trace),
                         workload="live drive's own requests")  # fmt: skip


def server_ttft_ms(prometheus: str, since: float) -> tuple[float, float]:
    """The engine's own TTFT (its histogram: p95 interpolated in vLLM's buckets, and the exact mean) over the
    requests it finished since ``since`` (epoch seconds), once their samples are scraped: what the server did, beside
    what each client measured."""
    window = f"[{math.ceil(time.time() - since)}s]"
    name, matchers = VLLM_METRICS.ttft_seconds, f'{{model_name="{MODEL}"}}'
    client = PrometheusClient(prometheus)

    def value(promql: str) -> float:
        answer = client.query(promql)
        return answer[0][1] * 1000 if answer else math.nan

    p95 = value(f"histogram_quantile(0.95, sum by (le) (increase({name}_bucket{matchers}{window})))")
    mean = value(f"sum(increase({name}_sum{matchers}{window})) / sum(increase({name}_count{matchers}{window}))")
    return p95, mean


def tiny_model(path: str) -> ModelSpec:
    """The demo model as the tests' catalog serves it (the session's server has this engine config)."""
    serving = {"max_model_len": MAX_MODEL_LEN, "max_num_seqs": 32}
    return parse_catalog({"models": [{"name": MODEL, "source": {"path": path}, "serving": serving}]}).model(MODEL)


@contextmanager
def own_server(work: Path) -> Iterator[tuple[str, str, str, str | None]]:
    """A tiny-llama server and a Prometheus scraping it: base URL, weights, Prometheus URL, API key."""
    model_dir = str(make_tiny_model(work / "tiny"))
    target = LocalServers(LocalTargetSettings(state_dir=work / "target", file_sd_dir=work / "sd"))
    services = LocalServices(work / "services")
    try:
        server = target.ensure_server(tiny_model(model_dir), model_dir, log=lambda _: None)
        prometheus = services.start_prometheus(work / "sd", port=free_port())
        yield server.base_url, model_dir, prometheus.url, target.api_key
    finally:
        services.stop("prometheus")
        target.stop(MODEL)


@dataclass(frozen=True)
class Round:
    """One round: the live figures, then the profile of its window replayed, then the window's own trace (each
    client's p95 TTFT ms and output tok/s; the engine's own p95 and mean TTFT ms over each window)."""

    live: tuple[float, float]
    replayed: tuple[float, float]
    engine_live: tuple[float, float]
    engine_replayed: tuple[float, float]
    traced: tuple[float, float]
    """The drive's own requests replayed at their own times (:func:`trace_plan`)."""
    engine_traced: tuple[float, float]


def measure(plan: BenchmarkPlan, base_url: str, api_key: str | None, tokenizer: str, work: Path) -> tuple[float, float]:
    """``plan`` run by the platform's runner, judged as the SLO gate judges: worst p95 TTFT, best output tok/s."""
    frame, _ = run_plan(plan, engine=VLLM, model=MODEL, base_url=base_url, api_key=api_key, tokenizer=tokenizer,
                        work_dir=work)  # fmt: skip
    figures = (float(frame["p95_ttft_ms"].max()), float(frame["output_throughput"].max()))
    print(f"  {work.name}: {plan.described}; levels {list(plan.concurrency_levels)}: p95 TTFT {figures[0]:.0f} ms "
          f"(mean {float(frame['mean_ttft_ms'].max()):.0f}), {figures[1]:.0f} output tok/s", flush=True)  # fmt: skip
    return figures


def on_server(
    plan: BenchmarkPlan, server: tuple[str, str | None, str, str], work: Path
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``plan``'s client figures (:func:`measure`) on ``server`` (base URL, key, weights, Prometheus), then the
    engine's own TTFT over its run."""
    base_url, api_key, model_dir, prometheus = server
    started = time.time()
    figures = measure(plan, base_url, api_key, model_dir, work)
    time.sleep(2 * SCRAPE_INTERVAL_S)
    engine = server_ttft_ms(prometheus, started)
    print(f"  the engine's own TTFT under the {work.name} replay: p95 {engine[0]:.0f} ms, mean {engine[1]:.0f} ms",
          flush=True)  # fmt: skip
    return figures, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of live traffic per round")
    parser.add_argument("--rate", type=float, default=4.0, help="live requests per second (Poisson arrivals)")
    parser.add_argument("--rounds", type=int, default=3, help="live drive then its replay, this many times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic-prompts", type=int, default=64, help="the synthetic plan's prompts per level")
    parser.add_argument("--base-url", help="measure this running tiny-llama server instead of starting one")
    parser.add_argument("--tokenizer", help="the running server's weights directory (with --base-url)")
    parser.add_argument("--prometheus", help="a Prometheus scraping the running server (with --base-url)")
    parser.add_argument("--api-key-file", help="the key the running server requires (with --base-url)")
    options = parse_options(parser, {"duration": 26.0, "rate": 8.0, "rounds": 1, "synthetic_prompts": 16})
    if options.base_url and not (options.tokenizer and options.prometheus):
        parser.error("--base-url needs --tokenizer and --prometheus")
    if options.rate * options.duration < 200:
        parser.error("rate x duration must send at least 200 requests (the profile's floor)")
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    work = scratch_dir("profile-fidelity-")
    model = tiny_model(str(work))

    @contextmanager
    def given() -> Iterator[tuple[str, str, str, str | None]]:
        key = Path(options.api_key_file).read_text().strip() if options.api_key_file else None
        yield options.base_url, options.tokenizer, options.prometheus, key

    rounds: list[Round] = []
    with given() if options.base_url else own_server(work) as (base_url, model_dir, prometheus, api_key):
        for index in range(options.rounds):
            seed = options.seed + 2 * index
            time.sleep(2 * SCRAPE_INTERVAL_S)  # the window starts after a scrape of the idle server
            started = time.time()
            live = drive(base_url, api_key, model_dir, options.rate, options.duration, seed, work)
            time.sleep(2 * SCRAPE_INTERVAL_S)  # the last requests' samples are scraped
            window_s = math.ceil(time.time() - started)
            live_figures = (live.p95_ttft_ms(), live.output_tok_s())
            replay = replay_plan(model, prometheus, window_s, live.arrival_span_s, len(live.ttft_s) + live.failed,
                                 seed + 1)  # fmt: skip
            engine_live = server_ttft_ms(prometheus, started)
            print(f"round {index + 1}: live {len(live.ttft_s)} answered, {live.failed} failed at {options.rate:g} "
                  f"requests/s for {options.duration:g} s: p95 TTFT {live_figures[0]:.0f} ms "
                  f"(mean {live.mean_ttft_ms():.0f}), {live_figures[1]:.0f} output tok/s; the engine's own TTFT: "
                  f"p95 {engine_live[0]:.0f} ms, mean {engine_live[1]:.0f} ms", flush=True)  # fmt: skip
            server = (base_url, api_key, model_dir, prometheus)
            replayed, engine_replayed = on_server(replay, server, work / f"profile-{index + 1}")
            traced, engine_traced = on_server(trace_plan(live, seed + 1), server, work / f"trace-{index + 1}")
            rounds.append(Round(live_figures, replayed, engine_live, engine_replayed, traced, engine_traced))
        synthetic = measure(plan_for(model, prompts_per_level=options.synthetic_prompts), base_url, api_key,
                            model_dir, work / "synthetic")  # fmt: skip

    def ratio(kind: int, figures: Callable[[Round], tuple[float, float]]) -> float:
        """The median over the rounds of a benchmark's figure over the live one of its round (the replay follows
        its live drive at once, so the machine's slower swings cancel)."""
        return statistics.median(figures(one)[kind] / one.live[kind] for one in rounds)

    ratios = {f"{name}_{kind}_ratio": ratio(index, figures)
              for name, figures in (("profile", lambda one: one.replayed), ("synthetic", lambda _: synthetic),
                                    ("trace", lambda one: one.traced))
              for index, kind in enumerate(("ttft", "tok"))}  # fmt: skip

    def error(name: str) -> float:
        return max(abs(ratios[f"{name}_ttft_ratio"] - 1), abs(ratios[f"{name}_tok_ratio"] - 1))

    goal_met = error("profile") <= 0.15 and error("profile") < error("synthetic")
    # The same instrument on both sides (the engine's TTFT histogram, as the platform reads live latency): whether
    # the replay loads the server as the traffic did, whatever each client's own delays on shared cores.
    engine = {
        f"engine_{prefix}{stat}_ttft_ratio": statistics.median(getattr(one, field)[i] / one.engine_live[i]
                                                                for one in rounds)
        for prefix, field in (("", "engine_replayed"), ("trace_", "engine_traced"))
        for i, stat in enumerate(("p95", "mean"))
    }  # fmt: skip
    live_ttft = statistics.median(one.live[0] for one in rounds)
    live_tok = statistics.median(one.live[1] for one in rounds)
    print(
        f"rounds={len(rounds)} live_p95_ttft_ms={live_ttft:.0f} live_output_tok_s={live_tok:.0f} "
        + " ".join(f"{key}={value:.3f}" for key, value in {**ratios, **engine}.items())
        + f" goal=profile_within_15pct_and_closer goal_met={goal_met}"
    )


if __name__ == "__main__":
    main()
