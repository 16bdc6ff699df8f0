"""``--short``: every bench script's small-size run, the same code path at sizes that take seconds, so that
``make test`` runs each one (``tests/integration/test_bench_short.py``) and a bench that breaks fails the suite.
The full mode (no ``--short``) is what docs/benchmarks.md quotes."""

from __future__ import annotations

import argparse
import atexit
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def parse_options(
    parser: argparse.ArgumentParser, short: Mapping[str, object], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser``'s options, with ``short``'s defaults under ``--short`` (options given explicitly still win)."""
    parser.add_argument("--short", action="store_true", help="small sizes, same code path (what make test runs)")
    args = list(sys.argv[1:] if argv is None else argv)
    if "--short" in args:
        parser.set_defaults(**short)
    return parser.parse_args(args)


def scratch_dir(prefix: str) -> Path:
    """A directory for the run's files (a tiny model, logs, results), removed when the script exits: ``make test``
    runs every bench, and each run left its files in the temporary directory."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
