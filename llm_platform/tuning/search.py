"""SLO-goodput search over vLLM's engine arguments (pure: the caller's ``evaluate`` runs one trial on a target).

**Goodput** of a config is the output throughput (tokens/s) at the highest load that still meets the model's SLO
(p95 TTFT, p95 ITL, error rate). A trial finds that load by bisection on measured pass/fail (:func:`bisect_load`),
as vLLM's own sweep does, assuming latency does not fall when the load rises. A trial whose server crashes, runs
out of memory or refuses the arguments is recorded with its error and never wins.

**Strategy: coordinate search with discrete unimodal line searches** (:func:`coordinate_search`), not the full
grid that ``benchmarks/auto_tune`` runs, because of how the knobs act on the engine:

- Along one knob, goodput under an SLO rises and then falls or flattens: more ``max_num_seqs`` batches more
  requests until per-token latency or KV-cache preemption hits the SLO; a larger ``max_num_batched_tokens``
  prefills faster (TTFT) until long prefill steps stall decoding (ITL). A unimodal function over n sorted values is
  maximised by a ternary search in about 2·log₁.₅(n) trials instead of n.
- The knobs mostly interact weakly (the best token budget hardly moves with the batch size), so cycling over the
  axes from the incumbent converges in one or two passes; a pass that changes nothing ends the search. Where they do
  interact, each can hide the other's gain (more sequences pay only with a token budget that prefills them in time):
  each line search sees a plateau, and a step raising the tied knobs together, one trial a pass, tries the ridge.
- Equivalent configs are measured once: under a closed-loop load of at most ``load_high`` requests the engine
  never holds more sequences than that, so every ``max_num_seqs >= load_high`` behaves alike (:func:`clamp_seqs`).
- Alternatives considered: Bayesian optimisation (Optuna's TPE, scikit-optimize) spends its first 10-20 trials on
  random start-up points, which is the size of the whole grid here; successive halving needs a cheap low-fidelity
  trial, but a trial's cost is the server start and the bisection, which a shorter benchmark barely reduces.

Noise on shared machines is absorbed by ``tolerance``: goodputs within it count as equal, and ties go to the
smaller (cheaper, lower-latency) value.
"""

from __future__ import annotations

import itertools
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median

from llm_platform.catalog import Slo

#: The engine arguments the search may vary (fields of the catalog's serving section).
KNOBS = ("max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization", "max_model_len")

Candidate = Mapping[str, float]


@dataclass(frozen=True)
class Probe:
    """One benchmark run of a candidate at one load (closed-loop concurrency)."""

    load: int
    output_throughput: float
    request_throughput: float
    p95_ttft_ms: float
    p95_itl_ms: float
    error_rate: float
    passed: bool = False


def meets_slo(probe: Probe, slo: Slo) -> Probe:
    """``probe`` with ``passed`` set from the SLO (NaN latencies fail)."""
    ok = (
        probe.p95_ttft_ms <= slo.ttft_p95_ms
        and probe.p95_itl_ms <= slo.itl_p95_ms
        and probe.error_rate <= slo.max_error_rate
    )
    return Probe(**{**probe.__dict__, "passed": bool(ok)})


@dataclass(frozen=True)
class Trial:
    """A candidate's outcome: its goodput and the probe that set it, or the error that excluded it."""

    candidate: Mapping[str, float]
    goodput: float = 0.0
    best: Probe | None = None
    probes: tuple[Probe, ...] = ()
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def score(self) -> float:
        """What the search maximises: goodput, and below every success for a failed trial."""
        return self.goodput if self.ok else -1.0


class TrialRunner(ABC):
    """Measures candidates on a target: one trial per call, or repeats of one config on one server.

    ``repeated`` is what the noise-aware search asks for when it wants a config's spread: a real target starts the
    server once and measures it ``times`` over (a server start costs more than the measurements, and the repeats
    exist to measure the benchmark's noise, not to restart the engine)."""

    @abstractmethod
    def __call__(self, candidate: Candidate) -> Trial:
        """One trial: start ``candidate``, find its highest SLO-meeting load."""

    def repeated(self, candidate: Candidate, times: int) -> list[Trial]:
        """``times`` trials of ``candidate``; by default one call each."""
        return [self(candidate) for _ in range(times)]


@dataclass
class TrialFunction(TrialRunner):
    """A plain ``candidate → Trial`` function as a runner (every repeat a separate call)."""

    evaluate: Callable[[Candidate], Trial]

    def __call__(self, candidate: Candidate) -> Trial:
        return self.evaluate(candidate)


def bisect_load(measure: Callable[[int], Probe], low: int, high: int, precision: float = 0.2) -> Trial:
    """The highest load in ``[low, high]`` whose probe passes, by bisection (geometric midpoints, since loads span
    orders of magnitude), stopping when the bracket is within ``precision`` of its lower end. The trial carries no
    candidate; the caller adds it."""
    if not 1 <= low <= high:
        raise ValueError(f"load bounds must satisfy 1 <= low <= high (got {low}, {high})")
    probes = [measure(high)]
    if probes[-1].passed:
        return Trial({}, probes[-1].output_throughput, probes[-1], tuple(probes))
    if low == high:
        return Trial({}, 0.0, None, tuple(probes))
    probes.append(measure(low))
    if not probes[-1].passed:
        return Trial({}, 0.0, None, tuple(probes))
    best, lo, hi = probes[-1], low, high
    while hi - lo > max(1, math.floor(lo * precision)):
        mid = min(hi - 1, max(lo + 1, round(math.sqrt(lo * hi))))
        probes.append(measure(mid))
        if probes[-1].passed:
            best, lo = probes[-1], mid
        else:
            hi = mid
    return Trial({}, best.output_throughput, best, tuple(probes))


@dataclass(frozen=True)
class SearchSpace:
    """Sorted candidate values per knob; a knob with one value is held fixed."""

    axes: Mapping[str, tuple[float, ...]]

    def __post_init__(self) -> None:
        for knob, values in self.axes.items():
            if knob not in KNOBS:
                raise ValueError(f"'{knob}' is not a tunable engine argument (one of {', '.join(KNOBS)})")
            if not values or list(values) != sorted(set(values)):
                raise ValueError(f"the values of '{knob}' must be distinct and ascending (got {list(values)})")

    def grid(self) -> list[dict[str, float]]:
        """Every combination: what an exhaustive sweep runs."""
        knobs = list(self.axes)
        return [dict(zip(knobs, values, strict=True)) for values in itertools.product(*self.axes.values())]

    def nearest(self, current: Mapping[str, float | None]) -> dict[str, float]:
        """The grid point closest (in log scale) to ``current``; a knob that is unset starts in the middle."""
        point = {}
        for knob, values in self.axes.items():
            value = current.get(knob)
            if value is None:
                point[knob] = values[len(values) // 2]
            else:
                target = float(value)
                point[knob] = min(values, key=lambda v: abs(math.log(v / target)))
        return point


def clamp_seqs(load_high: int) -> Callable[[Candidate], dict[str, float]]:
    """Equivalence for a closed-loop load of at most ``load_high``: larger max_num_seqs never fill up."""

    def equivalent(candidate: Candidate) -> dict[str, float]:
        seqs = candidate.get("max_num_seqs")
        return {**candidate, **({"max_num_seqs": min(seqs, load_high)} if seqs is not None else {})}

    return equivalent


def _key(candidate: Candidate) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(candidate.items()))


@dataclass
class SearchResult:
    """Every trial run, in order (each distinct config once), and the best successful one."""

    trials: list[Trial] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        ok = [trial for trial in self.trials if trial.ok and trial.goodput > 0]
        return max(ok, key=lambda trial: trial.goodput) if ok else None


class _Cache:
    """Runs each distinct (equivalent) candidate once."""

    def __init__(
        self, evaluate: Callable[[Candidate], Trial], equivalent: Callable[[Candidate], Mapping[str, float]]
    ) -> None:
        self.evaluate, self.equivalent = evaluate, equivalent
        self.result = SearchResult()
        self._seen: dict[tuple[tuple[str, float], ...], Trial] = {}

    def measured(self, candidate: Candidate) -> Trial | None:
        """The trial of ``candidate`` (or an equivalent) if one ran; never runs one."""
        return self._seen.get(_key(self.equivalent(candidate)))

    def __call__(self, candidate: Candidate) -> Trial:
        key = _key(self.equivalent(candidate))
        if key not in self._seen:
            trial = self.evaluate(dict(candidate))
            self._seen[key] = trial
            self.result.trials.append(trial)
        return self._seen[key]


def grid_search(space: SearchSpace, evaluate: Callable[[Candidate], Trial]) -> SearchResult:
    """The reference: every grid point, one trial each (what vLLM's ``benchmarks/auto_tune`` does)."""
    result = SearchResult()
    for candidate in space.grid():
        result.trials.append(evaluate(candidate))
    return result


def _line_search(values: Sequence[float], score: Callable[[float], float], tolerance: float) -> float:
    """The value maximising a unimodal ``score`` over sorted ``values``: ternary search on the indices, then the
    few values left; near-equal scores (within ``tolerance``) keep both sides and ties go to the smaller value."""

    def same(a: float, b: float) -> bool:
        return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-9)

    lo, hi = 0, len(values) - 1
    while hi - lo > 2:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        s1, s2 = score(values[m1]), score(values[m2])
        if same(s1, s2):
            if (lo, hi) == (m1, m2):
                break
            lo, hi = m1, m2
        elif s1 < s2:
            lo = m1 + 1
        else:
            hi = m2 - 1
    best = values[lo]
    for value in values[lo : hi + 1]:
        if score(value) > score(best) and not same(score(value), score(best)):
            best = value
    return best


def coordinate_search(
    space: SearchSpace,
    evaluate: Callable[[Candidate], Trial],
    start: Candidate,
    *,
    equivalent: Callable[[Candidate], Mapping[str, float]] = dict,
    tolerance: float = 0.03,
    max_passes: int = 3,
) -> SearchResult:
    """Cycle over the knobs from ``start`` (a grid point), line-searching each with the others held at the
    incumbent, until a pass changes nothing or ``max_passes`` is reached.

    After each pass, a **step up the ridge**: the knobs whose line search scored a larger value as well as the
    incumbent's (a tie, within ``tolerance``) are raised one value together, one trial. Knobs that bind in turn hide
    each other's gain from a line search: with a token budget that prefills fast enough for more concurrent
    requests, raising ``max_num_seqs`` pays, and with few sequences, a larger budget does not; each alone is flat,
    both together are better. The step is taken when it scores better beyond ``tolerance``, as a line search's move
    is."""
    run = _Cache(evaluate, equivalent)
    incumbent = dict(start)
    run(incumbent)
    tunable = [knob for knob, values in space.axes.items() if len(values) > 1]
    for _ in range(max_passes):
        before = dict(incumbent)
        for knob in tunable:

            def score(value: float, knob: str = knob) -> float:
                return run({**incumbent, knob: value}).score

            found, current = _line_search(space.axes[knob], score, tolerance), incumbent[knob]
            better = score(found) > score(current) * (1 + tolerance)
            cheaper_tie = found < current and score(found) >= score(current) * (1 - tolerance)
            if better or cheaper_tie:  # a cheaper tie can unlock another knob (e.g. a smaller token budget, more seqs)
                incumbent[knob] = found
        ridge = _step_up_the_ridge(space, run, incumbent, tunable, tolerance)
        if ridge is not None and run(ridge).score > run(incumbent).score * (1 + tolerance):
            incumbent.update(ridge)
        if incumbent == before:
            break
    return run.result


def _step_up_the_ridge(
    space: SearchSpace, run: _Cache, incumbent: Mapping[str, float], knobs: Sequence[str], tolerance: float
) -> dict[str, float] | None:
    """``incumbent`` with every knob raised one value where its line search measured a larger value as a tie (a
    plateau: under a unimodal score, the values between tie too), when at least two are (one alone, its line search
    has tried); None otherwise or when that config ran already."""
    base = run(incumbent)  # measured already: the line searches held it
    if not base.ok:
        return None
    raised = {}
    for knob in knobs:
        larger = [value for value in space.axes[knob] if value > incumbent[knob]]
        steps = (run.measured({**incumbent, knob: value}) for value in larger)
        if any(step is not None and step.ok and step.score >= base.score * (1 - tolerance) for step in steps):
            raised[knob] = larger[0]
    ridge = {**incumbent, **raised}
    if len(raised) < 2 or run.measured(ridge) is not None:
        return None
    return ridge


@dataclass(frozen=True)
class NoisyOutcome:
    """What :func:`noise_aware_search` found, and how sure it is.

    ``baseline`` and ``winner_goodputs`` are repeated measurements of the current config (before the search) and
    of the winner; ``gain_interval`` is a bootstrap interval on the winner's goodput relative to the current
    config's (0.2: 20 % better). ``confirmation`` is the current config measured again after the winner, when the
    interval's lower end cleared the margin (empty otherwise); the winner is adopted only when it also beats that
    measurement, beyond its noise and by the margin (:attr:`gain_after`)."""

    result: SearchResult
    baseline: tuple[float, ...]
    winner: Trial | None
    winner_goodputs: tuple[float, ...]
    spread: float
    gain: float
    gain_interval: tuple[float, float]
    adopted: bool
    confirmation: tuple[float, ...] = ()

    @property
    def trials(self) -> int:
        """Every measurement made, repeats included: what the search cost."""
        return len(self.result.trials)

    @property
    def current_moved(self) -> float:
        """How far the current config's goodput moved between its measurements before and after the search (0.1:
        10 % higher after); NaN when it was measured once."""
        return _moved(self.baseline, self.confirmation) if self.confirmation else math.nan

    @property
    def gain_after(self) -> float:
        """The winner's median goodput against the current config's measured after it; NaN when not measured."""
        return _moved(self.confirmation, self.winner_goodputs) if self.confirmation else math.nan


def relative_spread(values: Sequence[float]) -> float:
    """(max − min) / median of repeated measurements of one config: how much a single trial can be off."""
    centre = median(values)
    return (max(values) - min(values)) / centre if centre > 0 else 0.0


def gain_interval(
    winner: Sequence[float], baseline: Sequence[float], *, level: float = 0.9, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A percentile-bootstrap interval on mean(winner) / mean(baseline) − 1 (seeded, so a report is reproducible)."""

    if not winner or not baseline or min(baseline) <= 0:
        return (math.nan, math.nan)
    rng = random.Random(seed)  # noqa: S311 - simulated measurement noise, not a secret
    ratios = sorted(
        sum(rng.choices(winner, k=len(winner))) / len(winner) / (sum(rng.choices(baseline, k=len(baseline))) /
                                                                    len(baseline)) - 1
        for _ in range(resamples)
    )  # fmt: skip
    tail = (1 - level) / 2
    return ratios[int(tail * (resamples - 1))], ratios[int((1 - tail) * (resamples - 1))]


def noise_aware_search(
    space: SearchSpace,
    evaluate: TrialRunner | Callable[[Candidate], Trial],
    start: Candidate,
    *,
    current: Candidate | None = None,
    equivalent: Callable[[Candidate], Mapping[str, float]] = dict,
    repeats: int = 3,
    finalists: int = 2,
    margin: float = 0.10,
    min_tolerance: float = 0.03,
) -> NoisyOutcome:
    """The coordinate search made safe on a noisy machine.

    1. The current config (``current``; ``{}``: the engine's defaults) and the incumbent (``start``, e.g. the
       planner's best) are each measured ``repeats`` times (:meth:`TrialRunner.repeated`: one server start each);
       the incumbent's relative spread is the noise.
    2. The coordinate search runs with that spread as its tolerance: differences inside it are ties (which go to
       the cheaper value), so the search does not chase noise.
    3. The best ``finalists`` distinct configs are measured again until each has ``repeats`` measurements; the one
       with the highest median wins (one lucky trial cannot).
    4. The winner's gain over the current config gets a bootstrap interval; it is adopted only when the interval's
       lower end clears ``margin``.
    5. Before adopting, the current config is measured ``repeats`` times again (one more server start), so the
       winner's measurements lie between two sets of the current config's (an A/B/A order). The repeats of one
       config are back to back, but two configs are measured minutes apart, so the noise estimate does not see a
       load that moved in between (a neighbour's process, a throttled node): against the first set alone it reads
       as a gain. The winner must also beat the second set: by ``margin`` median against median, and beyond the
       noise (the interval against it above 0). A load that changed once lifted or slowed the winner alike with one
       of the two sets, so it cannot pass both. Not a second interval above ``margin``: the first has judged the
       gain's size, and a second hurdle of that height rejects real gains as often as the first does.
    """
    if repeats < 2:
        raise ValueError("repeats must be at least 2: one measurement says nothing about the noise")
    result = SearchResult()
    samples: dict[tuple[tuple[str, float], ...], list[float]] = {}
    first_trial: dict[tuple[tuple[str, float], ...], Trial] = {}

    runner = evaluate if isinstance(evaluate, TrialRunner) else TrialFunction(evaluate)

    def record(candidate: Candidate, trial: Trial) -> Trial:
        key = _key(equivalent(candidate))
        result.trials.append(trial)
        samples.setdefault(key, []).append(_score(trial))
        first_trial.setdefault(key, trial)
        return trial

    def measure(candidate: Candidate) -> Trial:
        return record(candidate, runner(dict(candidate)))

    def measured_again(candidate: Candidate, times: int) -> list[float]:
        """``times`` new measurements of ``candidate`` (one ``repeated`` call: one server start)."""
        trials = runner.repeated(dict(candidate), times)
        if len(trials) != times:
            raise ValueError(f"asked for {times} trials of {dict(candidate)}, the runner made {len(trials)}")
        return [_score(record(candidate, trial)) for trial in trials]

    def measured(candidate: Candidate, times: int) -> list[float]:
        key = _key(equivalent(candidate))
        missing = times - len(samples.get(key, []))
        if missing > 0:
            measured_again(candidate, missing)
        return samples[key]

    baseline_candidate = dict(current or {})
    baseline = list(measured(baseline_candidate, repeats))
    spread = relative_spread(measured(start, repeats))
    tolerance = max(min_tolerance, spread)

    def explore(candidate: Candidate) -> Trial:
        key = _key(equivalent(candidate))
        if key in first_trial:  # measured already (the incumbent's repeats): its median stands for it
            trial = first_trial[key]
            return Trial(trial.candidate, median(samples[key]), trial.best, trial.probes, trial.error)
        return measure(candidate)

    coordinate_search(space, explore, start, equivalent=equivalent, tolerance=tolerance)
    ranked = sorted(
        (key for key, values in samples.items() if first_trial[key].ok and median(values) > 0),
        key=lambda key: median(samples[key]),
        reverse=True,
    )
    for key in ranked[:finalists]:
        measured(first_trial[key].candidate, repeats)
    contenders = list(ranked[:finalists])
    if not contenders:
        return NoisyOutcome(result, tuple(baseline), None, (), spread, math.nan, (math.nan, math.nan), False)
    best_key = max(contenders, key=lambda key: median(samples[key]))
    winner_goodputs = tuple(samples[best_key])
    gain, interval = _compared(winner_goodputs, baseline)
    adopted = best_key != _key(equivalent(baseline_candidate)) and interval[0] >= margin
    confirmation: list[float] = []
    if adopted:
        confirmation = measured_again(baseline_candidate, repeats)
        gain_after, interval_after = _compared(winner_goodputs, confirmation)
        adopted = gain_after >= margin and interval_after[0] > 0
    winner = first_trial[best_key]
    return NoisyOutcome(
        result,
        tuple(baseline),
        Trial(winner.candidate, median(winner_goodputs), winner.best, winner.probes, winner.error),
        winner_goodputs,
        spread,
        gain,
        interval,
        adopted,
        tuple(confirmation),
    )


def _moved(before: Sequence[float], after: Sequence[float]) -> float:
    """Median against median (0.2: ``after`` 20 % higher): a config's two sets of measurements, or two configs'."""
    return median(after) / median(before) - 1 if median(before) > 0 else (0.0 if median(after) <= 0 else math.inf)


def _score(trial: Trial) -> float:
    """A trial's goodput as a sample of its config: a failed trial counts as none."""
    return trial.score if trial.ok else 0.0


def _compared(winner: Sequence[float], current: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """The winner's median gain over ``current`` and its bootstrap interval (infinite when ``current`` is 0)."""
    if median(current) <= 0:
        return math.inf, (math.inf, math.inf)
    return _moved(current, winner), gain_interval(winner, current)
