"""Catalog data to a validated :class:`Catalog`, every problem one readable line that names the model and the
field path, e.g.::

    catalog/models.yaml: model 'llama-8b': serving.gpu_memory_utilization: must be > 0 and <= 1 (got 1.5)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llm_platform.catalog.checks import model_problems, quota_problems
from llm_platform.catalog.schema import Catalog, ModelSpec, Platform
from llm_platform.conventions import ServedModel
from llm_platform.errors import CatalogError, shorten


def _allowed_fields(model_class: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The field names valid at ``loc`` (the parent of an unknown field), for 'did you mean' hints."""
    current: Any = model_class
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
        else:
            return []
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def describe_error(error: Mapping[str, Any], model_class: type[BaseModel]) -> tuple[str, str]:
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    path = ".".join(str(part)[:60] if isinstance(part, str) else f"[{part}]" for part in loc).replace(".[", "[")
    kind = error["type"]
    if kind == "extra_forbidden":
        unknown = str(loc[-1]) if loc else ""
        hint = difflib.get_close_matches(unknown, _allowed_fields(model_class, loc[:-1]), n=1)
        message = "unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
    elif kind == "missing":
        message = "required field is missing"
    elif kind in ("value_error", "assertion_error"):
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    else:
        shown = repr(error.get("input"))
        message = f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {shown[:60]})"
    return path or "(top level)", message


def with_platform_defaults(raw: Mapping[str, Any], platform: Platform) -> Mapping[str, Any]:
    """A model's data with the fields the platform's ``rollout`` section sets as defaults of its own (a model's own
    fields win, field by field)."""
    defaults = platform.rollout.model_dump(exclude_unset=True)
    if not defaults:
        return raw
    own = raw.get("rollout")
    if own is None:
        return {**raw, "rollout": defaults}
    return {**raw, "rollout": {**defaults, **own}} if isinstance(own, Mapping) else raw


MAX_PROBLEM_LENGTH = 400
"""Longest problem line: values are shortened where they are quoted, and this caps what is left."""


def format_problem(where: str, path: str, message: str) -> str:
    line = f"{where}: {path}: {message}"
    return line if len(line) <= MAX_PROBLEM_LENGTH else line[: MAX_PROBLEM_LENGTH - 1] + "…"


def parse_catalog(
    data: object,
    *,
    origin: str = "catalog",
    model_configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Catalog:
    """Validate parsed catalog data; raises :class:`CatalogError` listing every problem, one line each.

    ``model_configs`` maps model names to their Hugging Face ``config.json`` where it is known, for the
    max-model-len check. ``origin`` (usually the file path) starts every message.
    """
    model_configs = model_configs or {}
    if not isinstance(data, Mapping):
        raise CatalogError([f"{origin}: expected a mapping with 'models' (and optionally 'platform') at the top"])
    problems: list[str] = []
    for key in data:
        if key not in Catalog.model_fields:
            problems.append(
                format_problem(origin, str(key)[:60], "unknown top-level field (expected 'platform' and 'models')")
            )
    platform = Platform()
    try:
        platform = Platform.model_validate(data.get("platform") or {})
    except ValidationError as exc:
        problems += [
            format_problem(origin, "platform." + p, m) for p, m in (describe_error(e, Platform) for e in exc.errors())
        ]
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        problems.append(format_problem(origin, "models", "must be a non-empty list of models"))
        raise CatalogError(problems)

    models: list[ModelSpec] = []
    seen: set[str] = set()
    served_by: dict[str, ServedModel] = {}  # every served name so far (models' and adapters') → what serves it
    for index, raw in enumerate(raw_models):
        name = raw.get("name") if isinstance(raw, Mapping) else None
        where = f"{origin}: model {shorten(name)}" if isinstance(name, str) and name else f"{origin}: models[{index}]"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with 'name' and 'source'")
            continue
        try:
            model = ModelSpec.model_validate(with_platform_defaults(raw, platform))
        except ValidationError as exc:
            problems += [format_problem(where, *describe_error(error, ModelSpec)) for error in exc.errors()]
            continue
        if model.name in seen:
            problems.append(format_problem(where, "name", "duplicate model name; each model needs its own"))
        seen.add(model.name)
        problems += _served_name_problems(model, where, served_by)
        problems += [format_problem(where, p, m) for p, m in model_problems(model, model_configs.get(model.name))]
        models.append(model)

    for model_name, path, message in quota_problems(platform, models):
        where = f"{origin}: model '{model_name}'" if model_name else origin
        problems.append(format_problem(where, path, message))
    if problems:
        raise CatalogError(problems)
    return Catalog(platform=platform, models=tuple(models))


def _served_name_problems(model: ModelSpec, where: str, served_by: dict[str, ServedModel]) -> list[str]:
    """A model's name and its adapters' against every served name of the models before it (requests name what they
    want served: two of one name would be ambiguous); records them in ``served_by``."""

    def owner(name: str) -> str:
        served = served_by[name]
        return f"adapter of model '{served.base}'" if served.kind == "adapter" else f"model '{served.base}'"

    problems = []
    if model.name in served_by and served_by[model.name].kind == "adapter":
        problems.append(format_problem(where, "name", f"'{model.name}' is the {owner(model.name)} already: "
                                       "served names are unique"))  # fmt: skip
    served_by.setdefault(model.name, model.identity)
    for index, adapter in enumerate(model.adapters):
        if adapter.name in served_by:
            problems.append(format_problem(where, f"adapters[{index}].name", f"'{adapter.name}' is served by "
                                           f"{owner(adapter.name)} already: served names are unique"))  # fmt: skip
        served_by[adapter.name] = model.identity.adapter(adapter.name)
    return problems


#: Bounds on catalog text, checked before anything else reads it: far above any real catalog, far below what
#: exhausts memory or the stack (a billion-laughs file expands a few hundred bytes to gigabytes).
MAX_CATALOG_BYTES = 5 * 1024 * 1024
MAX_YAML_NODES = 200_000
"""Nodes of the document with every alias expanded (what a consumer walking it would see)."""
MAX_YAML_DEPTH = 32
"""Nesting the schema never needs more than a handful of."""


class _LimitExceeded(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (PyYAML would otherwise resolve them silently to the last one), nesting
    deeper than :data:`MAX_YAML_DEPTH`, and documents whose aliases expand to more than :data:`MAX_YAML_NODES` nodes
    (refused while composing, before a single object is built)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _LimitExceeded(f"nested deeper than {MAX_YAML_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None and self._expanded_size(node) > MAX_YAML_NODES:
            raise _LimitExceeded(
                f"expands to more than {MAX_YAML_NODES} values through aliases ('*name'); write the values out"
            )
        return node

    def _expanded_size(self, node: yaml.Node) -> int:
        """Nodes under ``node`` with aliases expanded, memoised per node (aliases share their node)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._expanded_size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._expanded_size(key) + self._expanded_size(value) for key, value in node.value)
        self._sizes[id(node)] = size
        return size


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str, origin: str) -> object:
    """YAML text to data; a syntax error, or text past the bounds above, becomes a single line (with the position
    where there is one, never the input itself)."""
    if len(text) > MAX_CATALOG_BYTES:
        raise CatalogError([f"{origin}: {len(text)} characters; a catalog may have at most {MAX_CATALOG_BYTES}"])
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _LimitExceeded as exc:
        raise CatalogError([f"{origin}: refused: the YAML {exc}"]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise CatalogError([f"{origin}{position}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([f"{origin}: invalid YAML: {str(exc)[:200]}"]) from None
    except (ValueError, TypeError, RecursionError) as exc:
        # A 5,000-digit integer (Python's int parsing limit), an unhashable key (``? [a]: 1``), and the like.
        raise CatalogError([f"{origin}: invalid YAML: {str(exc).splitlines()[0][:200]}"]) from None


def parse_catalog_text(
    text: str, *, origin: str = "catalog", model_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> Catalog:
    """Parse and validate catalog YAML text (see :func:`parse_catalog`)."""
    return parse_catalog(load_yaml(text, origin), origin=origin, model_configs=model_configs)


def parse_assignments(assignments: Sequence[str]) -> dict[str, str]:
    """``["max_num_seqs=64", …]`` (the CLI's ``--set``) to a mapping; a malformed item is a :class:`CatalogError`."""
    parsed: dict[str, str] = {}
    problems = []
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected FIELD=VALUE, e.g. max_num_seqs=64")
            continue
        parsed[key.strip().removeprefix("serving.")] = value.strip()
    if problems:
        raise CatalogError(problems)
    return parsed
