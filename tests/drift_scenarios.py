"""Labelled metric histories for the drift policy: what a model's servers reported over the last hour, and what the
sensor must decide. Backfilled into a real Prometheus by ``tests/integration/test_drift_scenarios.py``; the
scenario table of docs/lifecycle.md is generated from this list (and checked against it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_platform.dev.promtrace import Behaviour, Episode

HOUR = 3600.0
#: Typical traffic: ~2,500-token requests against a 4,096-token context, 2 requests/s, half the KV cache.
STEADY = Behaviour(kv_cache_usage=0.5, prompt_tokens=2000, generation_tokens=500, requests_per_s=2.0)
SATURATED = {"kv_cache_usage": 0.99, "preemptions_per_s": 0.5}
#: Severe: users' requests recomputed 1.5 times a second; mild: one every 20 s.
SEVERE = {"kv_cache_usage": 0.99, "preemptions_per_s": 1.5}
MILD = {"kv_cache_usage": 0.99, "preemptions_per_s": 0.05}


@dataclass(frozen=True)
class Scenario:
    name: str
    behaviour: Behaviour
    expected_rule: str | None
    """The rule of the promote run the sensor must request, or None: no redeploy."""
    expected_change: dict[str, str] = field(default_factory=dict)
    why: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    """Catalog settings of the scenario's model beyond the defaults below."""
    deployed_age_s: float = 2 * HOUR


def _b(**changes: Any) -> Behaviour:
    return Behaviour(**{**STEADY.__dict__, **changes})


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("steady", STEADY, None, why="the config fits the traffic"),
    Scenario("kv-saturated", _b(**SATURATED), "kv_saturation", {"gpu_memory_utilization": "0.92"},
             "KV cache full with preemptions for the whole lookback: more memory for it"),
    Scenario("saturation-burst", _b(episodes=(Episode(HOUR - 420, HOUR - 120, SATURATED),)), None,
             why="5 minutes of saturation: a burst, not a level"),
    Scenario("flapping", _b(episodes=(Episode(0, HOUR, SATURATED, period_s=240, on_s=120),)), None,
             why="saturated and idle every 2 minutes: half the time is not most of it"),
    Scenario("severe-saturation", _b(episodes=(Episode(HOUR - 600, HOUR, SEVERE),)), "kv_saturation",
             {"gpu_memory_utilization": "0.92"}, "1.5 preemptions/s for the last 10 minutes: severe, acted on at once"),
    Scenario("severe-saturation-short", _b(episodes=(Episode(HOUR - 300, HOUR, SEVERE),)), None,
             why="as severe, but for 5 minutes: shorter than the 5.6 minutes severe needs"),
    Scenario("mild-saturation", _b(episodes=(Episode(HOUR - 1680, HOUR, MILD),)), "kv_saturation",
             {"gpu_memory_utilization": "0.92"}, "0.05 preemptions/s for the last 28 minutes: mild, and long enough"),
    Scenario("mild-saturation-short", _b(episodes=(Episode(HOUR - 1200, HOUR, MILD),)), None,
             why="as mild, for 20 minutes: mild needs 22.5 of the 30-minute lookback"),
    Scenario("queue-building-full-cache",
             _b(ksm=True, replicas=2, episodes=(Episode(HOUR - 480, HOUR, {"waiting": 30, **SEVERE}),)), None,
             why="a severe KV saturation, but with a queue building at the replica ceiling for 8 minutes: capacity "
             "is judged first, and memory would not serve the queue", model={"autoscaling": {"max_replicas": 2}}),
    Scenario("oom-twice", _b(ksm=True, oom_kills_at_s=(HOUR - 900, HOUR - 300)), "oom_kills",
             {"resources.memory": "48Gi"},
             "two OOMKilled restarts 10 minutes apart: host memory ran out: the pod's grows (GPU memory frees none)"),
    Scenario("crash-loop", _b(ksm=True, oom_kills_at_s=(HOUR - 900, HOUR - 300), restart_reason="Error"),
             "crash_loop", {}, "two restarts with reason Error: the run reads the pods' termination messages "
             "(a CUDA out-of-memory lowers GPU memory, any other crash is reported, not redeployed)"),
    Scenario("oom-once", _b(ksm=True, oom_kills_at_s=(HOUR - 600,)), None, why="one OOM kill can be a one-off"),
    Scenario("oom-long-ago", _b(ksm=True, oom_kills_at_s=(HOUR - 3000, HOUR - 2700)), None,
             why="both kills are older than the 30-minute lookback"),
    Scenario("capacity", _b(ksm=True, replicas=2, waiting=30, **SATURATED), "capacity",
             {"autoscaling.max_replicas": "5"},
             "queue at the replica ceiling with a full cache: replicas, as many as the GPU quota allows",
             model={"autoscaling": {"max_replicas": 2}}),
    Scenario("no-quota-headroom", _b(ksm=True, replicas=1, waiting=30, **SATURATED), None,
             why="queue at the ceiling with a full cache, but another 8-GPU replica does not fit the quota",
             model={"serving": {"tensor_parallel_size": 8}, "autoscaling": {"max_replicas": 1}}),
    Scenario("queue-kv-headroom", _b(ksm=True, replicas=2, waiting=30, kv_cache_usage=0.5), "queue_at_ceiling",
             {"max_num_seqs": "96"}, "queue at the ceiling with half the cache free: batch more sequences",
             model={"autoscaling": {"max_replicas": 2}}),
    Scenario("queue-burst", _b(ksm=True, replicas=2, episodes=(Episode(HOUR - 300, HOUR, {"waiting": 30}),)), None,
             why="the queue at the ceiling for 5 minutes only", model={"autoscaling": {"max_replicas": 2}}),
    Scenario("short-requests", _b(prompt_tokens=300, generation_tokens=100), "context_too_long",
             {"max_model_len": "768"}, "p99.9 of 600 tokens against a 4,096 context: free the KV cache"),
    Scenario("crowded-context", _b(prompt_tokens=3900, generation_tokens=100), "context_too_short",
             {"max_model_len": "8192"}, "p99.9 prompts fill 95 % of the context: double it"),
    Scenario("too-few-requests", _b(prompt_tokens=300, generation_tokens=100, requests_per_s=0.005), None,
             why="9 requests in 30 minutes say nothing about the workload's shape"),
    Scenario("idle", _b(kv_cache_usage=0.0, requests_per_s=0.0), None, why="no traffic: nothing to tune"),
    Scenario("gap", _b(**SATURATED, gaps=((HOUR - 1500, HOUR - 300),)), None,
             why="no data for 20 of the last 30 minutes"),
    Scenario("stale", _b(**SATURATED, stops_at_s=HOUR - 1200), None, why="the newest sample is 20 minutes old"),
    Scenario("rollout", _b(ksm=True, **SATURATED, rollout_between=(HOUR - 600, HOUR - 420)), None,
             why="a rollout within the lookback: its data mixes two configs"),
    Scenario("young-config", _b(**SATURATED), None, why="deployed 10 minutes ago: not a lookback of its own data yet",
             deployed_age_s=600),
    Scenario("missing", _b(stops_at_s=-1.0), None, why="deployed, but no series at all"),
)  # fmt: skip


def catalog_data() -> dict[str, Any]:
    """One model per scenario (4,096-token context, 64 sequences, 2 replicas at most), a 38-GPU quota (the
    models need 34 at their minimums)."""
    models = []
    for scenario in SCENARIOS:
        model: dict[str, Any] = {
            "name": scenario.name,
            "source": {"repo": f"org/{scenario.name}"},
            "serving": {"max_model_len": 4096, "max_num_seqs": 64, "gpu_memory_utilization": 0.9},
            "autoscaling": {"min_replicas": 1, "max_replicas": 2, "waiting_threshold": 5},
        }
        for section, values in scenario.model.items():
            model[section] = {**model[section], **values}
        models.append(model)
    return {"platform": {"gpu_quota": 38}, "models": models}


def readme_table() -> str:
    """The scenario table of docs/lifecycle.md: scenario → expected decision → why."""
    rows = ["| scenario | decision | why |", "|---|---|---|"]
    for scenario in SCENARIOS:
        change = ", ".join(f"{k}={v}" for k, v in scenario.expected_change.items())
        decision = f"`{scenario.expected_rule}`: {change or 'diagnosis'}" if scenario.expected_rule else "no redeploy"
        rows.append(f"| {scenario.name} | {decision} | {scenario.why} |")
    return "\n".join(rows) + "\n"
