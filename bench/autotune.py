"""Auto-tuner against the exhaustive grid (what vLLM's ``benchmarks/auto_tune`` runs), on vLLM-on-CPU
(``--surface cpu``, the default) or on the simulated GPU server (``--surface simulated``: vLLM v1's scheduler driven
by AIConfigurator's step times for ``--gpu-type``, with seeded noise; see ``simulated`` below).

The tiny model on the local target. Every trial starts a server with the candidate's max_num_seqs and
max_num_batched_tokens and bisects the closed-loop concurrency for the highest load meeting the SLO (p95 TTFT and
p95 ITL below the limits given here); goodput is the output tokens/s at that load. Three measurements in one run,
on the same machine: the whole grid (one trial per point), the coordinate search from ``tuning/search.py``
(starting in the middle of the grid, as for a catalog that sets neither knob), and the vLLM defaults (neither
flag set).

By default the tuner's trials are answered from the grid's measurements (each distinct config it asks for counts
as one trial): both then search the same measured, noisy surface, so the ratio is about the strategy and not
about the machine's drift between two passes, and the run takes one grid's time. ``--live-tuner`` runs the
tuner's trials anew instead.

The best of many noisy trials is biased upwards (the winner's curse), so the two winners and the defaults are then
measured again ``--confirm`` times, alternating; the figures are their medians (the search-time ratio is printed
too). Goals: tuner >= 0.95x the grid's best with <= 1/3 of its trials; tuned >= 1.3x
the defaults where the grid shows that headroom exists.

    .venv/bin/python bench/autotune.py [--seqs 4,8,16,32,64] [--tokens 256,512,1024,2048] [--load-high 64]
    .venv/bin/python bench/autotune.py --surface simulated [--seeds 5] [--noise 0.1]
    .venv/bin/python bench/autotune.py --short    # seconds: the simulated surface at small sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


from shortmode import parse_options, scratch_dir  # noqa: E402

from llm_platform.benchmark.plan import BenchmarkPlan  # noqa: E402
from llm_platform.catalog import parse_catalog  # noqa: E402
from llm_platform.dev.tiny_model import make_tiny_model  # noqa: E402
from llm_platform.targets.base import TrialSettings  # noqa: E402
from llm_platform.targets.local import LocalTrials  # noqa: E402
from llm_platform.targets.local_servers import LocalServers, LocalTargetSettings  # noqa: E402
from llm_platform.tuning.report import trials_frame  # noqa: E402
from llm_platform.tuning.search import (  # noqa: E402
    Candidate,
    SearchSpace,
    Trial,
    TrialRunner,
    clamp_seqs,
    coordinate_search,
    grid_search,
)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(value) for value in text.split(","))


#: Traffic shapes the simulated tuner is judged on: ``prompt/output`` fixed lengths, or ``chat``: short turns with
#: a long tail (log-normal prompts, median 150 tokens, and answers, median 100), drawn as a measured profile is.
SHAPES = ("chat", "1024/256", "4096/256")
#: The simulated model's context: long enough for the long-context shape (4,096 in + 256 out).
SIMULATED_MAX_MODEL_LEN = 8192


def shape_lengths(shape: str, count: int, seed: int) -> tuple[tuple[int, int], ...]:
    """``count`` requests of ``shape``, through the platform's own path: a profile over vLLM's length buckets
    (``build_profile``), then seeded draws (``replay_lengths``), as a benchmark replays a measured profile."""
    import math
    import random

    from llm_platform.engine.vllm import request_length_buckets
    from llm_platform.workload import LengthHistogram, TrafficProfile, replay_lengths

    if shape != "chat":
        prompt, output = (int(part) for part in shape.split("/"))
        profile = TrafficProfile("bench", 3600, "prometheus", 1000, LengthHistogram.point(prompt),
                                 LengthHistogram.point(output))  # fmt: skip
    else:
        rng = random.Random(seed)
        bounds = request_length_buckets(SIMULATED_MAX_MODEL_LEN)

        def cumulative(samples: list[int]) -> dict[float, float]:
            return {**{float(b): float(sum(1 for n in samples if n <= b)) for b in bounds}, math.inf: len(samples)}

        prompts = [max(1, min(4000, round(rng.lognormvariate(math.log(150), 1.0)))) for _ in range(5000)]
        outputs = [max(1, min(1024, round(rng.lognormvariate(math.log(100), 0.8)))) for _ in range(5000)]
        profile = TrafficProfile("bench", 3600, "prometheus", 5000, LengthHistogram.from_cumulative(
            cumulative(prompts)), LengthHistogram.from_cumulative(cumulative(outputs)))  # fmt: skip
    return replay_lengths(profile, count, seed=seed, max_model_len=SIMULATED_MAX_MODEL_LEN)


def simulated(argv: list[str]) -> None:
    """The tuner on the simulated GPU server, per traffic shape and seed: the grid (one noisy trial per point, as
    vLLM's auto_tune), the noise-aware search from the serving plan's best, and vLLM's defaults; then the three
    winners re-measured on the same seeds (``--confirm`` each), medians. ``tuned_vs_optimum``: what the tuner would
    deploy against the grid's best measured without noise (the best there is), both without noise;
    ``grid_vs_optimum``: the grid's own pick on the same footing (what the reference reaches at four times the
    trials). A flat surface (one request at a time: every config serves it alike) must never be adopted, nor the
    same flat surface while a load slows the current config's first measurements and then lifts
    (``drift_adoptions``: a gain that is the machine's, not the config's). Figures: medians over the seeds, per shape
    and over all shapes."""
    from llm_platform.perfmodel import engine_defaults, model_reference, open_perf_model, plan_model
    from llm_platform.planning.plan import PlanAxes
    from llm_platform.planning.trials import SimulatedTrials
    from llm_platform.tuning.search import noise_aware_search

    parser = argparse.ArgumentParser(prog="autotune.py --surface simulated")
    parser.add_argument("--gpu-type", default="h100_sxm")
    parser.add_argument("--model", default="meta-llama/Meta-Llama-3.1-8B")
    parser.add_argument("--seqs", type=_floats, default=_floats("32,64,128,256,512,1024"))
    parser.add_argument("--tokens", type=_floats, default=_floats("256,512,1024,2048,4096,8192"))
    parser.add_argument("--utilization", type=_floats, default=_floats("0.85,0.9,0.95"))
    parser.add_argument("--ttft-ms", type=float, default=500.0)
    parser.add_argument("--itl-ms", type=float, default=30.0)
    parser.add_argument("--shapes", type=lambda text: tuple(text.split(",")), default=SHAPES,
                        help="traffic shapes: chat and/or prompt/output token lengths, comma-separated")  # fmt: skip
    parser.add_argument("--load-high", type=int, default=256)
    parser.add_argument("--prompts-per-load", type=int, default=32)  # p95 past the start-up burst (1/32 of requests)
    parser.add_argument("--noise", type=float, default=0.10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--confirm", type=int, default=3)
    short = {"seqs": (64.0, 256.0), "tokens": (512.0, 2048.0), "utilization": (0.9,), "shapes": ("chat",),
             "load_high": 32, "prompts_per_load": 8, "seeds": 1, "confirm": 1}  # fmt: skip
    options = parse_options(parser, short, argv)

    slo = {"ttft_p95_ms": options.ttft_ms, "itl_p95_ms": options.itl_ms, "max_error_rate": 0}
    catalog = parse_catalog({"platform": {"gpu_type": options.gpu_type},
                             "models": [{"name": "bench", "source": {"repo": options.model}, "slo": slo,
                                         "serving": {"max_model_len": SIMULATED_MAX_MODEL_LEN}}]})  # fmt: skip
    model = catalog.model("bench")
    perf = open_perf_model(model_reference(options.model, None), options.gpu_type, 1)
    defaults = engine_defaults(model, options.gpu_type)
    axes = {"max_num_seqs": options.seqs, "max_num_batched_tokens": options.tokens}
    if len(options.utilization) > 1:
        axes["gpu_memory_utilization"] = options.utilization
    space = SearchSpace(axes)
    requests = max(16, options.prompts_per_load * options.load_high)

    overall: dict[str, list[float]] = {"tuned_vs_defaults": [], "tuned_vs_grid": [], "trials_ratio": [],
                                       "tuned_vs_optimum": [], "grid_vs_optimum": []}  # fmt: skip
    per_shape: dict[str, float] = {}
    flat_adoptions = drift_adoptions = 0
    for shape in options.shapes:
        lengths = shape_lengths(shape, requests, seed=0)
        mean_in = round(statistics.mean(p for p, _ in lengths))
        mean_out = round(statistics.mean(o for _, o in lengths))
        # The plan sizes for the shape's mean lengths, as serving_plan does for a measured profile.
        planned = model.model_copy(update={"traffic": model.traffic.model_copy(
            update={"input_tokens": mean_in, "output_tokens": mean_out})})  # fmt: skip
        plan = plan_model(planned, options.gpu_type, 1, None, PlanAxes(tensor_parallel_size=(1,)))
        start = space.nearest(plan.best.overrides if plan.best else {})
        print(f"shape {shape} (mean {mean_in} in / {mean_out} out): {plan.verdict}", flush=True)

        trials = functools.partial(SimulatedTrials, perf, model.slo, defaults, mean_in, mean_out,
                                   load_high=options.load_high, prompts_per_load=options.prompts_per_load,
                                   noise=options.noise, lengths=lengths)  # fmt: skip

        noiseless = trials(seed=0, noise=0.0)
        optimum = grid_search(space, noiseless)
        best_there_is = optimum.best.goodput if optimum.best else float("nan")
        figures: dict[str, list[float]] = {name: [] for name in overall}
        for seed in range(1, options.seeds + 1):
            started = time.monotonic()
            grid = grid_search(space, trials(seed=seed))
            outcome = noise_aware_search(space, trials(seed=10_000 + seed), start, current={},
                                         equivalent=clamp_seqs(options.load_high))  # fmt: skip
            # What each would deploy: the tuner's winner only when it was adopted (its gain's interval cleared the
            # margin), else the current config (the defaults); the grid's best single trial, as vLLM's auto_tune does.
            tuned = outcome.winner.candidate if outcome.winner and outcome.adopted else {}
            contenders = {"defaults": {}, "grid": grid.best.candidate if grid.best else {}, "tuner": tuned}
            # Each winner re-measured on the same seeds: the same noise for all three, so the ratio is about configs.
            confirmed = {name: statistics.median(trials(seed=20_000 + seed)(candidate).goodput
                                                 for _ in range(options.confirm))
                         for name, candidate in contenders.items()}  # fmt: skip
            figures["tuned_vs_defaults"].append(confirmed["tuner"] / confirmed["defaults"])
            figures["tuned_vs_grid"].append(confirmed["tuner"] / confirmed["grid"])
            figures["trials_ratio"].append(outcome.trials / len(grid.trials))
            figures["tuned_vs_optimum"].append(noiseless(tuned).goodput / best_there_is)
            # The reference on the same footing: the grid's pick (one noisy trial per point) without noise.
            figures["grid_vs_optimum"].append(noiseless(contenders["grid"]).goodput / best_there_is)
            # A flat surface: one request at a time, every config serves it alike; adopting anything is noise.
            flat = noise_aware_search(space, trials(seed=30_000 + seed, load_high=1), start, current={},
                                      equivalent=clamp_seqs(1))  # fmt: skip
            flat_adoptions += int(flat.adopted)
            # The same flat surface while a neighbour's load slows the first server start (the current config's
            # repeats) by a third and then lifts: the gain is the load's, and adopting anything is the load.
            lifted = noise_aware_search(space, LoadLiftsAfterFirstStart(trials(seed=40_000 + seed, load_high=1), 2 / 3),
                                        start, current={}, equivalent=clamp_seqs(1))  # fmt: skip
            drift_adoptions += int(lifted.adopted)
            low, high = outcome.gain_interval
            print(f"  seed {seed}: grid best {contenders['grid']} ({len(grid.trials)} trials), tuner "
                  f"{contenders['tuner']} ({outcome.trials} trials, spread {outcome.spread:.1%}, gain "
                  f"{outcome.gain:+.1%} [{low:+.1%}, {high:+.1%}], adopted {outcome.adopted}); optimum "
                  f"{optimum.best.candidate if optimum.best else {}}; confirmed tok/s "
                  f"{ {name: round(value) for name, value in confirmed.items()} }; flat surface adopted "
                  f"{flat.adopted}, with a load that lifted {lifted.adopted} ({time.monotonic() - started:.0f} s)",
                  flush=True)  # fmt: skip
        key = shape.replace("/", "_")
        for name, values in figures.items():
            overall[name].extend(values)
            per_shape[f"{name}_{key}"] = statistics.median(values)
        print(f"shape {shape}: " + " ".join(f"{name}={statistics.median(values):.3f}"
                                           for name, values in figures.items()), flush=True)  # fmt: skip
    print(" ".join(f"{name}={statistics.median(values):.3f}" for name, values in overall.items())
          + " " + " ".join(f"{name}={value:.3f}" for name, value in per_shape.items())
          + f" flat_adoptions={flat_adoptions} drift_adoptions={drift_adoptions} seeds={options.seeds}"
          + f" grid_trials={len(space.grid())} noise={options.noise:g}")  # fmt: skip


class LoadLiftsAfterFirstStart(TrialRunner):
    """A runner whose first server start is measured ``factor`` times as fast as the rest: another process on the
    machine that finished after the current config's repeats were measured."""

    def __init__(self, runner: TrialRunner, factor: float) -> None:
        self.runner, self.factor, self.starts = runner, factor, 0

    def __call__(self, candidate: Candidate) -> Trial:
        return self.repeated(candidate, 1)[0]

    def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
        self.starts += 1
        trials = self.runner.repeated(candidate, times)
        if self.starts > 1:
            return trials
        return [dataclasses.replace(trial, goodput=trial.goodput * self.factor) for trial in trials]


def main() -> None:
    if "--short" in sys.argv and "--surface" not in sys.argv:
        # The CPU surface starts a vLLM server per trial: minutes even at its smallest. The short mode runs the search,
        # the grid and the confirmation on the simulated surface instead (the full CPU run is what docs quote).
        simulated(sys.argv[1:])
        return
    if "--surface" in sys.argv:
        at = sys.argv.index("--surface")
        surface, rest = sys.argv[at + 1], sys.argv[1:at] + sys.argv[at + 2 :]
        if surface == "simulated":
            simulated(rest)
            return
        sys.argv = [sys.argv[0], *rest]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", type=_floats, default=_floats("4,8,16,32,64"))
    parser.add_argument("--tokens", type=_floats, default=_floats("256,512,1024,2048"))
    parser.add_argument("--load-high", type=int, default=64)
    parser.add_argument("--ttft-ms", type=float, default=500.0)
    parser.add_argument("--itl-ms", type=float, default=25.0)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--prompts-per-load", type=int, default=4)
    parser.add_argument("--confirm", type=int, default=3, help="re-measurements of each winner and the defaults")
    parser.add_argument("--live-tuner", action="store_true", help="run the tuner's trials anew")
    options = parser.parse_args()

    work = scratch_dir("autotune-")
    model_dir = str(make_tiny_model(work / "tiny"))
    slo = {"ttft_p95_ms": options.ttft_ms, "itl_p95_ms": options.itl_ms, "max_error_rate": 0}
    catalog = parse_catalog({"models": [{"name": "tiny-llama", "source": {"path": model_dir},
                                         "serving": {"max_model_len": 2048, "startup_timeout_s": 300},
                                         "slo": slo}]})  # fmt: skip
    model = catalog.model("tiny-llama")
    target = LocalServers(LocalTargetSettings(state_dir=work / "target", file_sd_dir=work / "sd"))
    plan = BenchmarkPlan(input_len=options.input_len, output_len=options.output_len, prompts_per_level=16,
                         num_warmups=1)  # fmt: skip
    space = SearchSpace({"max_num_seqs": options.seqs, "max_num_batched_tokens": options.tokens})
    settings = TrialSettings(plan, load_low=1, load_high=options.load_high, prompts_per_load=options.prompts_per_load)
    trials = LocalTrials(target, model, model_dir, settings, work / "trials", log=lambda line: print(line, flush=True))
    confirmed: dict[str, list[float]] = {}
    try:
        started = time.monotonic()
        grid = grid_search(space, trials)
        grid_s = time.monotonic() - started
        measured = {tuple(sorted(trial.candidate.items())): trial for trial in grid.trials}

        def replay(candidate: Candidate) -> Trial:
            return measured[tuple(sorted(candidate.items()))]

        tuned = coordinate_search(space, trials if options.live_tuner else replay, space.nearest({}),
                                  equivalent=clamp_seqs(options.load_high))  # fmt: skip
        # The best of many noisy trials is biased upwards (winner's curse): re-measure the two winners and the
        # defaults, alternating, and compare medians.
        contenders = {"defaults": {}, "grid": grid.best.candidate if grid.best else {},
                      "tuner": tuned.best.candidate if tuned.best else {}}  # fmt: skip
        for round_ in range(options.confirm):
            names = list(contenders)[round_ % 3 :] + list(contenders)[: round_ % 3]
            for name in names:
                confirmed.setdefault(name, []).append(trials(contenders[name]).goodput)
    finally:
        for name in target.models():
            target.stop(name)
    print(trials_frame(grid.trials, [f"g{i}" for i in range(1, len(grid.trials) + 1)]).to_string(index=False))
    print(trials_frame(tuned.trials, [f"t{i}" for i in range(1, len(tuned.trials) + 1)]).to_string(index=False))
    grid_best = grid.best.goodput if grid.best else 0.0
    tuned_best = tuned.best.goodput if tuned.best else 0.0
    print(f"search: grid best {grid_best:.1f} tok/s at {contenders['grid']} in {len(grid.trials)} trials "
          f"({grid_s:.0f} s); tuner best {tuned_best:.1f} tok/s at {contenders['tuner']} in {len(tuned.trials)} "
          f"trials")  # fmt: skip
    medians = {name: statistics.median(values) for name, values in confirmed.items()}
    for name, values in confirmed.items():
        print(f"confirmed {name}: median {medians[name]:.1f} tok/s of {[round(v, 1) for v in values]}")

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    print(f"grid_best={medians['grid']:.1f} tuner_best={medians['tuner']:.1f} defaults={medians['defaults']:.1f} "
          f"grid_trials={len(grid.trials)} tuner_trials={len(tuned.trials)} "
          f"tuned_vs_grid={ratio(medians['tuner'], medians['grid']):.3f} "
          f"trials_ratio={len(tuned.trials) / len(grid.trials):.3f} "
          f"grid_vs_defaults={ratio(medians['grid'], medians['defaults']):.3f} "
          f"tuned_vs_defaults={ratio(medians['tuner'], medians['defaults']):.3f} "
          f"search_tuner_vs_grid={ratio(tuned_best, grid_best):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
