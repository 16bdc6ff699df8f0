"""Where a model's weights live in the model store: ``<root>/<model>/<revision sha>/``.

Shared by the downloader (which writes a snapshot there, manifest last) and by every renderer and target (which
point vLLM at it), so the path has one definition.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: Written last into a snapshot directory; a directory without it is incomplete and never served.
SNAPSHOT_MANIFEST = "llm-platform-manifest.json"


def snapshot_path(root: str, model_name: str, revision: str) -> str:
    """The directory of one downloaded revision of a model, as a POSIX path (it is used inside containers too)."""
    return str(PurePosixPath(root) / model_name / revision)
