"""The benchmark Job's shell script and the parser of what it prints: serve the candidate, run the engine's
benchmark client at each level (the whole ladder ``rounds`` times; every level in one process where the engine has a
runner script), a ``LLM_PLATFORM_BENCH_ROUND <n>`` line before
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
    BENCH_RUNS_FILE,
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
    runs: list[tuple[str, int, list[str]]] = []  # (round directory, concurrency, the client's arguments)
    for round_index in range(rounds):
        round_dir = f"{result_dir}/round-{round_index}"
        lines.append(f"mkdir -p {round_dir}")
        if plan.requests:
            lines.append(f"cp {result_dir}/{REPLAY_DATASET_FILE} {round_dir}/{REPLAY_DATASET_FILE}")
        runs += [
            (round_dir, concurrency, bench_serve_args(
                engine, plan, concurrency, base_url=base_url, served_model_name=plan.served_name or model.name,
                tokenizer=weights_path(platform, model, revision), result_dir=round_dir,
                result_filename=level_filename(concurrency),
            ))
            for concurrency in plan.concurrency_levels
        ]  # fmt: skip
    runner = engine.benchmark_runner()
    if runner is not None:  # every level of every round in one client process, then the results in order
        runs_file, script = f"{result_dir}/{BENCH_RUNS_FILE}", f"{result_dir}/bench_runner.py"
        stale = " ".join(f"{round_dir}/{level_filename(concurrency)}" for round_dir, concurrency, _ in runs)
        lines += [
            f"rm -f {stale}",  # only what this client writes is read as a result
            *_here_document(runs_file, json.dumps([args for _, _, args in runs])),
            *_here_document(script, runner.source),
            f"python3 {script} {runner.runs_flag} {runs_file}",
            "client=$?",
        ]
    dump = "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))"
    for index, (round_dir, concurrency, args) in enumerate(runs):
        if index % len(plan.concurrency_levels) == 0:
            lines.append(f"echo {BENCH_ROUND_MARKER} {index // len(plan.concurrency_levels)}")
        result = f"{round_dir}/{level_filename(concurrency)}"
        failed = f'{{ echo "error: the benchmark client failed at concurrency {concurrency}" >&2; exit 5; }}'
        run = f"[ -f {result} ]" if runner is not None else shlex.join([*engine.benchmark_command(), *args])
        lines += [
            f"{run} || {failed}",
            f"printf '%s ' {BENCH_RESULT_MARKER} {concurrency}; python3 -c {shlex.quote(dump)} {result}",
        ]
    if runner is not None:
        lines.append('[ "$client" -eq 0 ] || { echo "error: the benchmark client failed (exit $client)" >&2; exit 5; }')
    if against is None:
        lines += ['kill "$server"', 'wait "$server" 2>/dev/null']
    return "\n".join([*lines, "exit 0"]) + "\n"


#: The end of the here-documents that carry files into the Job (the replay's lengths and writer, the benchmark's runs
#: and runner); never in any of them.
_HEREDOC_END = "LLM_PLATFORM_END_OF_FILE"


def _here_document(path: str, text: str) -> list[str]:
    """Lines that write ``text`` to ``path`` in the Job, verbatim (a quoted here-document: nothing is expanded)."""
    if _HEREDOC_END in text:
        raise ValueError(f"{path.rsplit('/', 1)[-1]} contains the here-document's end marker")
    return [f"cat > {path} <<'{_HEREDOC_END}'", text.rstrip("\n"), _HEREDOC_END]


def replay_dataset_lines(result_dir: str, plan: BenchmarkPlan, tokenizer: str) -> list[str]:
    """Lines that write the replay's prompts in the Job: its lengths and ``replay_dataset.py`` itself (the engine
    image has ``transformers``, not the platform) as here-documents, then the writer run with the plan's seed."""
    lengths = json.dumps(plan.replay_rows)
    return [
        *_here_document(f"{result_dir}/{REPLAY_LENGTHS_FILE}", lengths),
        *_here_document(f"{result_dir}/replay_dataset.py", Path(replay_dataset.__file__).read_text()),
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
