"""Reading the catalog file (and the ``config.json`` of models given by a local path) and the environment: the
I/O around the pure catalog package."""

from __future__ import annotations

import json
import os
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


def _local_model_configs(data: object, base: Path) -> dict[str, Mapping[str, Any]]:
    """``config.json`` of the models given by a local path, where it exists and parses."""
    configs: dict[str, Mapping[str, Any]] = {}
    models = data.get("models") if isinstance(data, Mapping) else None
    for raw in models if isinstance(models, list) else []:
        source = raw.get("source") if isinstance(raw, Mapping) else None
        if isinstance(source, Mapping) and isinstance(source.get("path"), str) and isinstance(raw.get("name"), str):
            config_file = base / source["path"] / "config.json"
            try:
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
    origin = str(catalog_path)
    try:
        if catalog_path.stat().st_size > MAX_CATALOG_BYTES:  # refused before it is read into memory
            raise CatalogError(
                [f"{origin}: {catalog_path.stat().st_size} bytes; a catalog may have at most {MAX_CATALOG_BYTES}"]
            )
        text = catalog_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(
            [f"{origin}: catalog file not found; pass --catalog PATH or set {CATALOG_ENV_VAR}"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([f"{origin}: cannot read the catalog: {exc}"]) from None
    data = load_yaml(text, origin)
    configs = _local_model_configs(data, catalog_path.parent)
    configs.update(model_configs or {})
    catalog = parse_catalog(data, origin=origin, model_configs=configs)
    return _resolve_local_paths(catalog, catalog_path.parent)


def _resolve_local_paths(catalog: Catalog, base: Path) -> Catalog:
    models = []
    for model in catalog.models:
        if model.source.path is not None and not Path(model.source.path).is_absolute():
            source = model.source.model_copy(update={"path": str((base / model.source.path).resolve())})
            model = model.model_copy(update={"source": source})
        models.append(model)
    return catalog.model_copy(update={"models": tuple(models)})
