"""Stopping a process group the platform started: a leader that exited is reaped, not waited on for the grace period
(a zombie still counts as a member of its group)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from llm_platform.processes import group_alive, spawn, stop_group


def test_a_group_whose_popen_is_gone_stops_at_once_instead_of_after_the_grace_period(tmp_path: Path) -> None:
    """A service started by this process and stopped from its record (``LocalServices.stop``): only the pid is
    left. The stop must end when the leader exits, not at the SIGKILL after the grace period."""
    # As LocalServices starts a service: SIGTERM restored to its default, whatever this process inherited (a
    # background job's SIGINT is ignored, and Dagster's interrupt handlers map SIGTERM to SIGINT's handler).
    pid = spawn(["sleep", "600"], tmp_path / "sleep.log", cwd=tmp_path, restore_signals=True).pid  # Popen dropped
    ticks: list[float] = []
    clock = itertools.count(0.0, 0.1)  # 0.1 s per look at the clock, as many looks as the loop takes

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        time.sleep(seconds)

    stop_group(pid, grace_s=30.0, clock=lambda: next(clock), sleep=sleep)

    assert not group_alive(pid)
    assert len(ticks) < 100  # the grace period is ~300 ticks: the group ended with its reaped leader


def test_a_leader_that_ignores_sigterm_is_killed_and_reaped_at_the_end_of_the_grace_period(tmp_path: Path) -> None:
    """Started with SIGTERM ignored (inherited): the SIGKILL after the grace period ends it, and the stop reaps the
    zombie it leaves, so that the group is gone when the stop returns."""
    pid = spawn(["sh", "-c", "trap '' TERM; sleep 600 & wait"], tmp_path / "stubborn.log", cwd=tmp_path).pid
    time.sleep(0.2)  # the trap is set
    stop_group(pid, grace_s=1.0)
    assert not group_alive(pid)
