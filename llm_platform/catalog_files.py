"""Reading the catalog file (and the ``config.json`` of models given by a local path) and the environment: the
I/O around the pure catalog package."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llm_platform.catalog import Catalog, parse_catalog
from llm_platform.catalog.parsing import MAX_CATALOG_BYTES, load_yaml
from llm_platform.errors import CatalogError

CATALOG_ENV_VAR = "LLM_PLATFORM_CATALOG"
DEFAULT_CATALOG_PATH = Path("catalog/models.yaml")


def default_catalog_path() -> Path:
    """``$LLM_PLATFORM_CATALOG``, else ``catalog/models.yaml`` in the working directory."""
    return Path(os.environ.get(CATALOG_ENV_VAR) or DEFAULT_CATALOG_PATH)


def read_bounded_text(path: Path, origin: str, limit: int = MAX_CATALOG_BYTES) -> str:
    """A regular file's text, at most ``limit`` bytes of UTF-8: a device (``/dev/zero``), a FIFO (which would block)
    or a directory is refused before it is opened, and a file that grows past the limit while read is refused too."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CatalogError(
            [f"{origin}: catalog file not found; pass --catalog PATH or set {CATALOG_ENV_VAR}"]
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise CatalogError([f"{origin}: cannot read the catalog: {str(exc)[:200]}"]) from None
    if not stat.S_ISREG(info.st_mode):
        raise CatalogError([f"{origin}: not a regular file; the catalog is a YAML file"])
    if info.st_size > limit:  # refused before it is read into memory
        raise CatalogError([f"{origin}: {info.st_size} bytes; a catalog may have at most {limit}"])
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise CatalogError([f"{origin}: more than {limit} bytes; a catalog may have at most {limit}"])
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([f"{origin}: cannot read the catalog: {str(exc)[:200]}"]) from None


def _local_model_configs(data: object, base: Path) -> dict[str, Mapping[str, Any]]:
    """``config.json`` of the models given by a local path, where it exists and parses."""
    configs: dict[str, Mapping[str, Any]] = {}
    models = data.get("models") if isinstance(data, Mapping) else None
    for raw in models if isinstance(models, list) else []:
        source = raw.get("source") if isinstance(raw, Mapping) else None
        if isinstance(source, Mapping) and isinstance(source.get("path"), str) and isinstance(raw.get("name"), str):
            config_file = base / source["path"] / "config.json"
            try:
                if config_file.is_file() and config_file.stat().st_size <= MAX_CATALOG_BYTES:
                    configs[raw["name"]] = json.loads(config_file.read_text())
            except (OSError, ValueError):
                continue  # no readable config: the position check is skipped, the download will tell
    return configs


def load_catalog(
    path: Path | str | None = None, *, model_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> Catalog:
    """Read and validate the catalog file (default: :func:`default_catalog_path`).

    Relative ``source.path`` entries are resolved against the catalog's directory; their ``config.json`` feeds
    the max-model-len check, together with any ``model_configs`` the caller knows (e.g. from downloaded weights).
    """
    catalog_path = Path(path) if path is not None else default_catalog_path()
    origin = str(catalog_path)[:200]
    text = read_bounded_text(catalog_path, origin)
    data = load_yaml(text, origin)
    configs = _local_model_configs(data, catalog_path.parent)
    configs.update(model_configs or {})
    catalog = parse_catalog(data, origin=origin, model_configs=configs)
    return _resolve_local_paths(catalog, catalog_path.parent, origin)


def _resolve_local_paths(catalog: Catalog, base: Path, origin: str) -> Catalog:
    """Relative ``source.path`` entries made absolute against the catalog's directory, which they may not leave
    (through ``..`` or a symbolic link)."""
    models = []
    problems = []
    root = base.resolve()
    for model in catalog.models:
        if model.source.path is not None and not Path(model.source.path).is_absolute():
            resolved = (root / model.source.path).resolve()
            if not resolved.is_relative_to(root):
                problems.append(
                    f"{origin}: model '{model.name}': source.path: leads outside the catalog's directory {root}; "
                    "put the weights below it or give an absolute path"
                )
            source = model.source.model_copy(update={"path": str(resolved)})
            model = model.model_copy(update={"source": source})
        models.append(model)
    if problems:
        raise CatalogError(problems)
    return catalog.model_copy(update={"models": tuple(models)})
