"""The benchmark Job's shell script and the parser of what it prints: serve the candidate, run the engine's
benchmark client at each level (the whole ladder ``rounds`` times), a ``LLM_PLATFORM_BENCH_ROUND <n>`` line before
each round and one ``LLM_PLATFORM_BENCH_RESULT <concurrency> <json>`` line per level, read back from the pod log."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from llm_platform.benchmark import replay_dataset
from llm_platform.benchmark.plan import (
    BENCH_RESULT_MARKER,
    BENCH_ROUND_MARKER,
    BenchmarkPlan,
    bench_serve_args,
    level_filename,
)
from llm_platform.catalog import ModelSpec, Platform
from llm_platform.conventions import (
    ENGINE_HEALTH_PATH,
    ENGINE_LOOPBACK_PORT,
    REPLAY_DATASET_FILE,
    REPLAY_LENGTHS_FILE,
)
from llm_platform.engine import LoraAdapters, engine_for
from llm_platform.manifests.pods import cache_dir, serving_invocation, weights_path


def benchmark_script(
    platform: Platform,
    model: ModelSpec,
    revision: str,
    plan: BenchmarkPlan,
    against: str | None = None,
    rounds: int = 1,
    adapters: LoraAdapters | None = None,
) -> str:
    """The benchmark container's shell script: serve the candidate, wait for health, benchmark each level.

    ``rounds`` > 1 measures the whole ladder again against the same server: the tuner's repeats of one config cost
    one server start.

    With ``against`` (a base URL, e.g. the model's Service) nothing is served: the levels run against that server.
    The engine's own log goes to a file (shown on failure) so that it never interleaves with the result lines: each
    level prints one ``LLM_PLATFORM_BENCH_RESULT <concurrency> <json>`` line, which the target reads from the pod
    log and hands to the same parser as the local benchmark.
    """
    if rounds < 1:
        raise ValueError("a benchmark Job measures at least one round")
    engine = engine_for(model.serving)
    home = cache_dir(model)
    result_dir = f"{home}/bench"
    lines = ["set -u", f"mkdir -p {result_dir}"]
    base_url = against or f"http://127.0.0.1:{ENGINE_LOOPBACK_PORT}"
    if against is None:
        invocation = serving_invocation(platform, model, revision, adapters)
        server_log = f"{home}/engine-server.log"
        probe = f'import urllib.request as u; u.urlopen("{base_url}{ENGINE_HEALTH_PATH}", timeout=5)'
        timeout = model.serving.startup_timeout_s
        lines += [
            f"{shlex.join(invocation.command())} >{server_log} 2>&1 &",
            "server=$!",
            f"deadline=$(( $(date +%s) + {timeout} ))",
            f"until python3 -c {shlex.quote(probe)} 2>/dev/null; do",
            '  if ! kill -0 "$server" 2>/dev/null; then',
            f'    echo "error: the {engine.name} server exited before it became healthy" >&2; '
            f"tail -n 40 {server_log} >&2; exit 3",
            "  fi",
            '  if [ "$(date +%s)" -ge "$deadline" ]; then',
            f'    echo "error: the {engine.name} server is not healthy after {timeout} s" >&2; '
            f"tail -n 40 {server_log} >&2; exit 4",
            "  fi",
            "  sleep 5",
            "done",
        ]
    if plan.requests:
        lines += replay_dataset_lines(result_dir, plan, weights_path(platform, model, revision))
    dump = "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))"
    for round_index in range(rounds):
        round_dir = f"{result_dir}/round-{round_index}"
        lines += [f"mkdir -p {round_dir}", f"echo {BENCH_ROUND_MARKER} {round_index}"]
        if plan.requests:
            lines.append(f"cp {result_dir}/{REPLAY_DATASET_FILE} {round_dir}/{REPLAY_DATASET_FILE}")
        for concurrency in plan.concurrency_levels:
            args = bench_serve_args(
                engine,
                plan,
                concurrency,
                base_url=base_url,
                served_model_name=plan.served_name or model.name,
                tokenizer=weights_path(platform, model, revision),
                result_dir=round_dir,
                result_filename=level_filename(concurrency),
            )
            lines += [
                f"{shlex.join([*engine.benchmark_command(), *args])} || "
                f'{{ echo "error: the benchmark client failed at concurrency {concurrency}" >&2; exit 5; }}',
                f"printf '%s ' {BENCH_RESULT_MARKER} {concurrency}; "
                f"python3 -c {shlex.quote(dump)} {round_dir}/{level_filename(concurrency)}",
            ]
    if against is None:
        lines += ['kill "$server"', 'wait "$server" 2>/dev/null']
    return "\n".join([*lines, "exit 0"]) + "\n"


#: The end of the here-documents that carry the replay's lengths and writer into the Job (never in either).
_HEREDOC_END = "LLM_PLATFORM_END_OF_FILE"


def replay_dataset_lines(result_dir: str, plan: BenchmarkPlan, tokenizer: str) -> list[str]:
    """Lines that write the replay's prompts in the Job: its lengths and ``replay_dataset.py`` itself (the engine
    image has ``transformers``, not the platform) as here-documents, then the writer run with the plan's seed."""
    writer = Path(replay_dataset.__file__).read_text()
    lengths = json.dumps([list(pair) for pair in plan.requests])
    if _HEREDOC_END in writer:
        raise ValueError("replay_dataset.py contains the here-document's end marker")
    return [
        f"cat > {result_dir}/{REPLAY_LENGTHS_FILE} <<'{_HEREDOC_END}'", lengths, _HEREDOC_END,
        f"cat > {result_dir}/replay_dataset.py <<'{_HEREDOC_END}'", writer.rstrip("\n"), _HEREDOC_END,
        f"python3 {result_dir}/replay_dataset.py {result_dir}/{REPLAY_LENGTHS_FILE} {shlex.quote(tokenizer)} "
        f"{plan.seed} {result_dir}/{REPLAY_DATASET_FILE} || "
        '{ echo "error: writing the replayed prompts failed" >&2; exit 6; }',
    ]  # fmt: skip


def rounds_from_log(log: str) -> list[dict[int, dict[str, Any]]]:
    """The result JSON of each level of each round from a benchmark Job's log (``LLM_PLATFORM_BENCH_RESULT`` lines,
    grouped by the ``LLM_PLATFORM_BENCH_ROUND`` line before them; results before any round line are round 0)."""
    rounds: list[dict[int, dict[str, Any]]] = []
    for line in log.splitlines():
        if line.startswith(BENCH_ROUND_MARKER + " ") or (not rounds and line.startswith(BENCH_RESULT_MARKER + " ")):
            rounds.append({})
        if line.startswith(BENCH_RESULT_MARKER + " "):
            _, concurrency, payload = line.split(" ", 2)
            rounds[-1][int(concurrency)] = json.loads(payload)
    return rounds
