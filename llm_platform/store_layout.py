"""Where a model's weights live in the model store: ``<root>/<model>/<revision sha>/``, and its LoRA adapters'
beside them: ``<root>/<model>/adapters/<adapter>/<revision sha>/``.

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


#: The directory of a model's adapters, beside its snapshots (never a snapshot itself: it has no manifest).
ADAPTERS_DIR = "adapters"


def adapter_store_key(model_name: str, adapter_name: str) -> str:
    """The store key of one of a model's adapters: where its snapshots go, relative to the store's root, and the
    ``model`` its manifests record (so a snapshot's path is found from its manifest alone, base or adapter)."""
    return f"{model_name}/{ADAPTERS_DIR}/{adapter_name}"
