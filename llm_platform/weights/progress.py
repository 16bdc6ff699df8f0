"""Progress of a snapshot download, for a terminal (a tqdm bar) or a log (a line every few seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm import tqdm


@dataclass(frozen=True)
class ProgressEvent:
    model: str
    done_bytes: int
    total_bytes: int
    done_files: int
    total_files: int
    elapsed_s: float

    @property
    def fraction(self) -> float:
        return self.done_bytes / self.total_bytes if self.total_bytes else 1.0


class ProgressSink(Protocol):
    def __call__(self, event: ProgressEvent, final: bool = False) -> None: ...


def human_bytes(count: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as download tools print them)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def describe(event: ProgressEvent) -> str:
    rate = event.done_bytes / event.elapsed_s if event.elapsed_s > 0 else 0.0
    return (
        f"model '{event.model}': {human_bytes(event.done_bytes)} / {human_bytes(event.total_bytes)} "
        f"({event.fraction:.0%}), {event.done_files}/{event.total_files} files, {human_bytes(rate)}/s"
    )


class LogProgress:
    """One line per ``interval_s`` (and a last one at the end) through ``log``, e.g. Dagster's ``context.log.info``."""

    def __init__(
        self, log: Callable[[str], None], interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def __call__(self, event: ProgressEvent, final: bool = False) -> None:
        now = self._clock()
        if final or self._last is None or now - self._last >= self._interval_s:
            self._last = now
            self._log(describe(event))


class TerminalProgress:
    """A byte-based progress bar for the whole snapshot."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def __call__(self, event: ProgressEvent, final: bool = False) -> None:
        bar = self._bar
        if bar is None:
            bar = self._bar = tqdm(total=event.total_bytes, unit="B", unit_scale=True, desc=event.model)
        bar.n = event.done_bytes
        bar.set_postfix_str(f"{event.done_files}/{event.total_files} files", refresh=False)
        bar.refresh()
        if final:
            bar.close()
