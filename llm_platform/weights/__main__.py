"""``python -m llm_platform.weights``: download one model revision into a model store.

The Kubernetes download Job runs this with the RWX PVC mounted at ``--dest`` and ``HF_TOKEN`` from a Secret; the
local target calls the same code in-process. The last line on stdout is ``LLM_PLATFORM_MANIFEST <json>``, which
the asset reads from the Job's log. Exit codes: 0 done, 2 the repository/revision/access is wrong (fix the
catalog or the token), 1 anything else (network, disk, checksum).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from llm_platform.catalog import DEFAULT_ALLOW_PATTERNS
from llm_platform.errors import HubAccessError, HubNotFoundError, PlatformError
from llm_platform.weights.download import DEFAULT_WORKERS, DownloadRequest, download_snapshot
from llm_platform.weights.hub import HubClient, redact
from llm_platform.weights.plan import MANIFEST_MARKER, REUSED_MARKER
from llm_platform.weights.progress import LogProgress, TerminalProgress
from llm_platform.weights.store import ModelStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm_platform.weights", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="catalog model name (the store's directory)")
    parser.add_argument("--repo", required=True, help="Hugging Face repository id, org/name")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    parser.add_argument("--dest", required=True, help="model store root; the snapshot goes to DEST/MODEL/SHA")
    parser.add_argument(
        "--allow-pattern", action="append", dest="allow_patterns", help="glob of files to fetch (repeatable)"
    )
    parser.add_argument(
        "--require", action="append", default=[], help="glob some fetched file must match, else nothing is fetched"
    )
    parser.add_argument("--keep-revisions", type=int, default=0, help="complete snapshots to keep (0: all)")
    parser.add_argument("--protect", action="append", default=[], help="a sha never pruned (repeatable)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="parallel file downloads")
    parser.add_argument("--endpoint", default=os.environ.get("HF_ENDPOINT"), help="hub URL (default: $HF_ENDPOINT)")
    return parser


def _token() -> str | None:
    """``HF_TOKEN``, else the file ``HF_TOKEN_PATH`` names (the Job mounts the Secret as a file), else None."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    path = os.environ.get("HF_TOKEN_PATH")
    try:
        return (Path(path).read_text().strip() or None) if path else None
    except OSError:
        return None  # the Secret is optional: public models need no token


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    token = _token()
    request = DownloadRequest(
        model=args.model,
        repo=args.repo,
        revision=args.revision,
        allow_patterns=tuple(args.allow_patterns or DEFAULT_ALLOW_PATTERNS),
        required=tuple(args.require),
    )
    progress = TerminalProgress() if sys.stderr.isatty() else LogProgress(lambda line: print(line, flush=True))
    try:
        result = download_snapshot(
            request,
            ModelStore(args.dest),
            HubClient(args.endpoint, token),
            workers=args.workers,
            progress=progress,
            keep_revisions=args.keep_revisions,
            protected=args.protect,
        )
    except (HubNotFoundError, HubAccessError) as error:
        print(f"error: {redact(str(error), token)}", file=sys.stderr)
        return 2
    except PlatformError as error:
        print(f"error: {redact(str(error), token)}", file=sys.stderr)
        return 1
    manifest = result.manifest
    if result.reused:
        print(
            f"model '{manifest.model}': {manifest.sha} already complete in {result.directory}; verified, nothing "
            "downloaded"
        )
        print(f"{REUSED_MARKER} {manifest.sha}")
    else:
        print(
            f"model '{manifest.model}': downloaded {manifest.file_count} files of {manifest.sha} to "
            f"{result.directory} in {manifest.duration_s:.1f} s"
        )
    if result.pruned:
        print(f"model '{manifest.model}': removed older snapshots {', '.join(result.pruned)}")
    print(f"{MANIFEST_MARKER} {manifest.model_dump_json()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
