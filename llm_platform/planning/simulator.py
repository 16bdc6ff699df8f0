"""A discrete-event model of vLLM v1's scheduler, driven by a per-step time model (pure: no I/O).

AIConfigurator times one engine step from its prefill/decode mix; it does not model requests: arrivals, queueing,
``max_num_seqs``, the KV cache filling up, preemption. This module does, the way vLLM v1's ``Scheduler.schedule``
does it, so that a config can be judged on a GPU-shaped surface without a GPU:

- Every step has a token budget (``max_num_batched_tokens``). Running requests are scheduled first, in order: a
  decoding request takes one token, a prefilling one the rest of its prompt or what is left of the budget (chunked
  prefill). Then waiting requests are admitted while the budget, ``max_num_seqs`` and the KV cache allow.
- The KV cache is ``kv_cache_tokens`` in blocks of ``block_size``. When a running request needs a block and none is
  free, the most recently admitted running request is preempted: its blocks are freed and it goes back to the front
  of the queue to recompute its prompt and everything it generated (vLLM v1's preemption by recompute).
- A step lasts what the step-time model says for its mix, times seeded measurement noise. A request that finishes
  its prefill emits its first token at the end of that step, a decoding request one token per step.
- The load is the one ``vllm bench serve --max-concurrency`` makes: a closed loop of ``concurrency`` clients, each
  sending its next request when the previous one ends; a request longer than ``max_model_len`` is refused (HTTP 400).

The result is a dict with ``vllm bench serve``'s keys, so the benchmark parser and the SLO judgement read it as they
read a real run.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llm_platform.benchmark.plan import LATENCY_METRICS, PERCENTILES


@dataclass(frozen=True)
class StepLoad:
    """What one engine step computes: AIConfigurator's forward-pass metrics of a single rank."""

    prefill_requests: int
    prefill_tokens: int
    decode_requests: int
    decode_kv_tokens: int


#: Milliseconds one engine step takes for its load.
StepTime = Callable[[StepLoad], float]


class EngineStartError(ValueError):
    """The engine would refuse to start with these limits (as vLLM does when one request cannot fit its KV cache)."""


@dataclass(frozen=True)
class EngineLimits:
    """The scheduler's limits: the engine arguments the tuner varies, and the KV cache they leave."""

    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_tokens: int
    max_model_len: int
    block_size: int = 16

    def __post_init__(self) -> None:
        if min(self.max_num_seqs, self.max_num_batched_tokens, self.max_model_len, self.block_size) < 1:
            raise EngineStartError("every engine limit must be at least 1")
        if self.kv_cache_tokens < self.max_model_len:
            raise EngineStartError(
                f"the KV cache holds {self.kv_cache_tokens} tokens, fewer than max_model_len {self.max_model_len}; "
                "raise gpu_memory_utilization or lower max_model_len"
            )

    @property
    def kv_blocks(self) -> int:
        return self.kv_cache_tokens // self.block_size


@dataclass(frozen=True)
class Workload:
    """A closed-loop benchmark: ``num_prompts`` requests of fixed length (or, with ``lengths``, of those lengths in
    turn: a traffic profile's draws), at most ``concurrency`` in flight."""

    concurrency: int
    num_prompts: int
    input_len: int
    output_len: int
    lengths: tuple[tuple[int, int], ...] = ()
    """``(prompt, output)`` tokens of each request, in order, repeated when there are fewer than ``num_prompts``."""

    def request(self, index: int) -> tuple[int, int]:
        """The prompt and output length of the ``index``-th request sent."""
        return self.lengths[index % len(self.lengths)] if self.lengths else (self.input_len, self.output_len)


@dataclass
class _Request:
    arrival: float
    prompt: int
    output_len: int
    computed: int = 0  # tokens whose KV is cached
    outputs: int = 0  # tokens generated so far
    blocks: int = 0
    first_token: float = math.nan
    last_token: float = math.nan

    @property
    def length(self) -> int:
        """Tokens the engine must have computed before it can emit the next one."""
        return self.prompt + self.outputs


def simulate(
    limits: EngineLimits,
    workload: Workload,
    step_ms: StepTime,
    *,
    noise: float = 0.0,
    seed: int = 0,
    skip_ahead: bool = True,
) -> dict[str, float]:
    """Run ``workload`` against the engine; ``noise`` is the size of the seeded measurement noise (0.1: one run is
    up to 10 % slower or faster throughout, and each step jitters around that).

    ``skip_ahead``: runs of steps in which every running request only decodes and nothing can be admitted are
    advanced together (the same steps and times, bookkept once per run instead of once per request and step), which
    makes long benchmarks at high concurrency cheap; the result is the same (a test compares the two)."""
    rng = random.Random(seed)  # noqa: S311 - simulated measurement noise, not a secret
    run_factor = 1.0 + rng.uniform(-noise, noise)
    refused = 0
    to_send = workload.num_prompts
    waiting: deque[_Request] = deque()
    running: list[_Request] = []
    finished: list[_Request] = []
    free_blocks = limits.kv_blocks
    now = 0.0
    # Inter-token latencies as (value, how many tokens had it): a decode-only step gives every running request the
    # same gap.
    itl_values: list[float] = []
    itl_weights: list[int] = []

    def send(count: int) -> None:
        nonlocal to_send, refused
        while count > 0 and to_send > 0:
            prompt, output = workload.request(workload.num_prompts - to_send)
            to_send -= 1
            if prompt + output > limits.max_model_len:
                refused += 1  # vLLM answers 400 at once; the client sends its next request
                continue
            waiting.append(_Request(now, prompt, output))
            count -= 1

    def blocks_for(tokens: int) -> int:
        return _blocks(tokens, limits.block_size)

    send(workload.concurrency)
    while running or waiting:
        steps = _decode_only_steps(running, waiting, limits, free_blocks) if skip_ahead else 0
        if steps:
            batch, kv_tokens = len(running), sum(request.computed for request in running)
            for step in range(steps):
                jitter = max(0.5, 1.0 + rng.gauss(0.0, noise / 3)) if noise else 1.0
                step_s = step_ms(StepLoad(0, 0, batch, kv_tokens + step * batch)) * run_factor * jitter / 1000.0
                now += step_s
                if step == 0:  # the first gap runs from each request's own last token
                    itl_values.extend(now - request.last_token for request in running)
                    itl_weights.extend([1] * batch)
                else:
                    itl_values.append(step_s)
                    itl_weights.append(batch)
            for request in running:
                needed = _blocks(request.computed + steps, limits.block_size) - request.blocks
                free_blocks -= needed
                request.blocks += needed
                request.computed += steps
                request.outputs += steps
                request.last_token = now
            continue
        budget = limits.max_num_batched_tokens
        scheduled: list[tuple[_Request, int]] = []
        preempted = False
        index = 0
        block_size = limits.block_size
        while index < len(running) and budget > 0:
            request = running[index]
            remaining = request.prompt + request.outputs - request.computed
            if remaining == 1:  # the common case, decoding: one token, a new block only at a block boundary
                tokens, needed = 1, int(request.computed + 1 > request.blocks * block_size)
            else:
                tokens = min(remaining, budget)
                needed = blocks_for(request.computed + tokens) - request.blocks
            preempted_itself = False
            while needed > free_blocks:
                victim = running.pop()  # the most recently admitted one
                free_blocks += victim.blocks
                victim.blocks, victim.computed = 0, 0
                waiting.appendleft(victim)
                preempted = True
                if victim is request:
                    preempted_itself = True
                    break
            if preempted_itself:
                break  # nothing more fits this step
            free_blocks -= needed
            request.blocks += needed
            scheduled.append((request, tokens))
            budget -= tokens
            index += 1
        if not preempted:
            while waiting and budget > 0 and len(running) < limits.max_num_seqs:
                request = waiting[0]
                tokens = min(request.length - request.computed, budget)
                needed = blocks_for(request.computed + tokens)
                if needed > free_blocks:
                    break
                waiting.popleft()
                free_blocks -= needed
                request.blocks = needed
                running.append(request)
                scheduled.append((request, tokens))
                budget -= tokens
        if not scheduled:
            raise EngineStartError("no request can be scheduled: the KV cache is too small for one request")
        load = _step_load(scheduled)
        jitter = max(0.5, 1.0 + rng.gauss(0.0, noise / 3)) if noise else 1.0
        now += step_ms(load) * run_factor * jitter / 1000.0
        done = 0
        for request, tokens in scheduled:
            request.computed += tokens
            if request.computed < request.prompt + request.outputs:
                continue  # a prefill chunk: no token yet
            if request.outputs == 0:
                request.first_token = now
            else:
                itl_values.append(now - request.last_token)
                itl_weights.append(1)
            request.last_token = now
            request.outputs += 1
            if request.outputs >= request.output_len:
                running.remove(request)
                free_blocks += request.blocks
                finished.append(request)
                done += 1
        send(done)
    itl = np.repeat(np.asarray(itl_values, dtype=float), np.asarray(itl_weights, dtype=int))
    return _result(finished, refused, workload, now, itl)


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def _decode_only_steps(
    running: list[_Request], waiting: deque[_Request], limits: EngineLimits, free_blocks: int
) -> int:
    """How many steps can be advanced together: every running request decodes (one token a step, all within the
    token budget), none can join (nothing waits, or the batch is full), none finishes and the KV cache holds them;
    the step in which the first request finishes is left to the ordinary path. 0: take one ordinary step."""
    if not running or len(running) > limits.max_num_batched_tokens:
        return 0
    if waiting and len(running) < limits.max_num_seqs:
        return 0
    if any(request.outputs == 0 or request.computed != request.length - 1 for request in running):
        return 0
    steps = min(request.output_len - request.outputs for request in running) - 1
    if steps < 2:
        return 0
    needed = sum(_blocks(request.computed + steps, limits.block_size) - request.blocks for request in running)
    return steps if needed <= free_blocks else 0


def _step_load(scheduled: list[tuple[_Request, int]]) -> StepLoad:
    prefill_requests = prefill_tokens = decode_requests = decode_kv = 0
    for request, tokens in scheduled:
        if tokens == 1 and request.outputs > 0 and request.computed == request.prompt + request.outputs - 1:
            decode_requests += 1
            decode_kv += request.computed
        else:
            prefill_requests += 1
            prefill_tokens += tokens
    return StepLoad(prefill_requests, prefill_tokens, decode_requests, decode_kv)


def _stats(name: str, values_s: list[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(values_s, dtype=float) * 1000.0
    if not len(values):
        return {f"mean_{name}_ms": math.nan, **{f"p{p}_{name}_ms": math.nan for p in PERCENTILES}}
    stats = {f"mean_{name}_ms": float(values.mean()), f"median_{name}_ms": float(np.median(values))}
    stats.update({f"p{p}_{name}_ms": float(np.percentile(values, p)) for p in PERCENTILES})
    return stats


def _result(
    finished: list[_Request], refused: int, workload: Workload, duration: float, itl_s: np.ndarray
) -> dict[str, float]:
    """The simulated run in ``vllm bench serve``'s result keys."""
    output_tokens = sum(request.outputs for request in finished)
    input_tokens = sum(request.prompt for request in finished)
    latencies: dict[str, list[float] | np.ndarray] = {
        "ttft": [r.first_token - r.arrival for r in finished],
        "tpot": [(r.last_token - r.first_token) / (r.outputs - 1) for r in finished if r.outputs > 1],
        "itl": itl_s,
        "e2el": [r.last_token - r.arrival for r in finished],
    }
    result: dict[str, float] = {
        "num_prompts": float(workload.num_prompts),
        "completed": float(len(finished)),
        "failed": float(refused),
        "max_concurrency": float(workload.concurrency),
        "duration": duration,
        "request_throughput": len(finished) / duration if duration else 0.0,
        "output_throughput": output_tokens / duration if duration else 0.0,
        "total_token_throughput": (input_tokens + output_tokens) / duration if duration else 0.0,
    }
    for metric in LATENCY_METRICS:
        result.update(_stats(metric, latencies[metric]))
    return result
