"""Runs launched the way Kubernetes runs them, on one machine: the test topology of the production path.

Dagster's ``K8sRunLauncher`` starts each run as a Job whose pod has a fresh, empty disk: the instance's settings
come from a ConfigMap, its storage is PostgreSQL, and whatever the run writes locally (Dagster's local artefact
storage, its working directory) is gone when the pod ends. :class:`EphemeralRunLauncher` does the same with a
process: each run gets a new ``DAGSTER_HOME`` holding only a copy of the instance's ``dagster.yaml`` and a new empty
working directory, both deleted when the run ends. A behaviour that only holds because runs share a disk fails
here as it would on the cluster.

Configured in ``dagster.yaml``::

    run_launcher:
      module: llm_platform.dev.pod_runs
      class: EphemeralRunLauncher
      config: {scratch_dir: /tmp/runs}     # optional; where run directories and run logs go

The run worker is ``python -m llm_platform.dev.pod_runs`` (below), which makes the directories, runs Dagster's own
``dagster api execute_run`` in them, and removes them; its output goes to ``<scratch_dir>/logs/<run id>.log``, as
a pod's log would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import dagster._check as check
from dagster import Field, StringSource
from dagster._core.launcher.base import LaunchRunContext, RunLauncher
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass
from dagster._serdes.config_class import ConfigurableClassData

from llm_platform.processes import spawn, stop_group

PID_TAG = "llm-platform/run-worker-pid"
"""Run tag with the run worker's process id (its process group is the run's "pod")."""
RUN_DIR_PREFIX = "run-"


class EphemeralRunLauncher(RunLauncher, ConfigurableClass):
    """Each run in its own process group with a fresh ``DAGSTER_HOME`` and working directory (see the module)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, scratch_dir: str | None = None) -> None:
        self._inst_data = inst_data
        self.scratch_dir = Path(scratch_dir or Path(tempfile.gettempdir(), "llm-platform-runs"))
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {"scratch_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, scratch_dir=config_value.get("scratch_dir"))

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = check.not_none(run.job_code_origin)
        # No instance ref: like a pod, the run worker loads the instance from its own DAGSTER_HOME.
        args = ExecuteRunArgs(
            job_origin=origin, run_id=run.run_id, instance_ref=None, set_exit_code_on_failure=True
        ).get_command_args()
        instance_yaml = Path(check.not_none(self._instance.root_directory)) / "dagster.yaml"
        log_path = self.scratch_dir / "logs" / f"{run.run_id}.log"
        command = [sys.executable, "-m", __name__, "--scratch-dir", str(self.scratch_dir), "--run-id", run.run_id,
                   "--instance-yaml", str(instance_yaml), "--", *args]  # fmt: skip
        process = spawn(command, log_path, cwd=self.scratch_dir)
        threading.Thread(target=process.wait, daemon=True).start()  # reap it: no zombie in a long-lived daemon
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(process.pid)})
        self._instance.report_engine_event(
            f"run worker started (pid {process.pid}, log {log_path})", run, cls=self.__class__
        )

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or PID_TAG not in run.tags:
            return False
        self._instance.report_run_canceling(run)
        stop_group(int(run.tags[PID_TAG]))
        return True


def run_in_fresh_directories(scratch_dir: Path, run_id: str, instance_yaml: Path, command: Sequence[str]) -> int:
    """Run ``command`` with a new ``DAGSTER_HOME`` (a copy of ``instance_yaml`` only) and a new empty working
    directory, then delete both; returns the command's exit code."""
    root = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{run_id[:8]}-", dir=scratch_dir))
    try:
        home, work = root / "dagster_home", root / "work"
        home.mkdir()
        work.mkdir()
        shutil.copy(instance_yaml, home / "dagster.yaml")
        # The run worker's command starts with the `dagster` entry point, on PATH as in the image.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "DAGSTER_HOME": str(home), "PATH": path}
        return subprocess.run(list(command), cwd=work, env=env, check=False).returncode
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one Dagster run in fresh, throw-away directories.")
    parser.add_argument("--scratch-dir", type=Path, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--instance-yaml", type=Path, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_in_fresh_directories(args.scratch_dir, args.run_id, args.instance_yaml, command)


if __name__ == "__main__":
    sys.exit(main())
