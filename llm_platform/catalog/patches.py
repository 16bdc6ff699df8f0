"""Typed changes to a model's settings: a :class:`ModelPatch` of its ``serving``, ``autoscaling`` and ``resources``
fields.

A patch is built once where a change enters — run config, ``llm-platform promote --set``, the drift sensor, the
auto-tuner — validated like the catalog itself (including the model's position limit from its ``config.json`` when
the weights are known), and passed on as a value. Its run-config form (field → YAML scalar) is only for crossing
into a Dagster run, where it is parsed back into a patch and validated again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from llm_platform.catalog.checks import QuotaBudget, model_problems
from llm_platform.catalog.parsing import describe_error, format_problem, load_yaml
from llm_platform.catalog.schema import Autoscaling, Catalog, ModelSpec, Resources, Serving
from llm_platform.errors import CatalogError

#: The sections a patch may change, and their schema (``resources``: the drift policy grows the pod's memory after
#: OOM kills; GPUs stay tied to tensor parallelism and the quota, checked as in the catalog).
PATCHABLE: Mapping[str, type[BaseModel]] = {"serving": Serving, "autoscaling": Autoscaling, "resources": Resources}


def _section_and_field(key: str) -> tuple[str, str]:
    """``max_num_seqs`` and ``serving.max_num_seqs`` name a serving field; ``autoscaling.max_replicas`` and
    ``resources.memory`` others."""
    section, dot, name = key.partition(".")
    return (section, name) if dot and section in PATCHABLE else ("serving", key)


@dataclass(frozen=True)
class ModelPatch:
    """Changes to some fields of a model's ``serving`` and ``autoscaling`` sections, with typed values."""

    changes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """section → field → value (the value as the schema types it)."""

    @classmethod
    def parse(
        cls,
        model: ModelSpec,
        overrides: Mapping[str, object],
        *,
        origin: str = "overrides",
        position_limit: int | None = None,
    ) -> ModelPatch:
        """A patch from ``field: value`` pairs; string values are read as YAML scalars, as in the catalog file
        (``"64"`` is 64, ``"true"`` true). Raises :class:`CatalogError`, one line per problem naming the model and
        the field, when any value is invalid or the patched model is not a valid catalog entry."""
        changes: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, name = _section_and_field(key)
            changes.setdefault(section, {})[name] = load_yaml(value, origin) if isinstance(value, str) else value
        patched = cls(changes).apply(model, origin=origin, position_limit=position_limit)
        # The values as the schema typed them (64, not "64"; a tuple, not a list).
        return cls(
            {
                section: {name: getattr(getattr(patched, section), name) for name in names}
                for section, names in changes.items()
            }
        )

    def apply(
        self,
        model: ModelSpec,
        *,
        origin: str = "overrides",
        position_limit: int | None = None,
        fleet: Catalog | QuotaBudget | None = None,
    ) -> ModelSpec:
        """``model`` with the patch applied, validated like the catalog (one line per problem); with ``fleet`` (the
        catalog the model belongs to, or its :class:`QuotaBudget` summed once for many proposals) also against the
        GPU quota that the catalog itself must meet, so that a change (``--set``, run config, a sensor's proposal,
        an adopted tuning) can never exceed it."""
        where = f"{origin}: model '{model.name}'"
        updates: dict[str, BaseModel] = {}
        problems: list[str] = []
        for section, values in self.changes.items():
            schema = PATCHABLE[section]
            current: BaseModel = getattr(model, section)
            try:
                updates[section] = schema.model_validate({**current.model_dump(exclude_unset=True), **values})
            except ValidationError as error:
                for path, message in (describe_error(problem, schema) for problem in error.errors()):
                    problems.append(format_problem(where, f"{section}.{path}", message))
        if problems:
            raise CatalogError(problems)
        patched = model.model_copy(update=updates)
        cross = model_problems(patched, limit=position_limit)
        if fleet is not None:
            budget = fleet if isinstance(fleet, QuotaBudget) else QuotaBudget.of(fleet.platform, fleet.models)
            cross += budget.problems_with(patched)
        if cross:
            raise CatalogError([format_problem(where, path, message) for path, message in cross])
        return patched

    def merged(self, later: ModelPatch) -> ModelPatch:
        """This patch, then ``later`` (whose values win)."""
        sections = {section: dict(values) for section, values in self.changes.items()}
        for section, values in later.changes.items():
            sections.setdefault(section, {}).update(values)
        return ModelPatch(sections)

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs; serving fields by their bare name, others as ``section.field``."""
        for section, values in sorted(self.changes.items()):
            for name, value in sorted(values.items()):
                yield (name if section == "serving" else f"{section}.{name}"), value

    def as_overrides(self) -> dict[str, str]:
        """The run-config form: each value as the YAML (JSON) scalar that :meth:`parse` reads back."""
        return {key: json.dumps(list(value) if isinstance(value, tuple) else value) for key, value in self.items()}

    def describe(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.items()) or "no change"

    def __bool__(self) -> bool:
        return any(self.changes.values())


def patch_between(base: ModelSpec, effective: ModelSpec) -> ModelPatch:
    """The patch that turns ``base`` into ``effective`` (their differing fields of the patchable sections)."""
    changes = {}
    for section in PATCHABLE:
        before, after = getattr(base, section).model_dump(), getattr(effective, section).model_dump()
        differing = {key: getattr(getattr(effective, section), key) for key in after if before[key] != after[key]}
        if differing:
            changes[section] = differing
    return ModelPatch(changes)


def diff_table(base: ModelSpec, effective: ModelSpec) -> dict[str, tuple[object, object]]:
    """Fields whose value differs: ``{key: (catalog value, effective value)}`` (keys as :meth:`ModelPatch.items`)."""
    rows = {}
    for key, value in patch_between(base, effective).items():
        section, name = _section_and_field(key)
        rows[key] = (getattr(getattr(base, section), name), value)
    return rows


def apply_serving_overrides(
    model: ModelSpec, overrides: Mapping[str, object], origin: str = "overrides", position_limit: int | None = None
) -> ModelSpec:
    """``model`` with the overrides applied (see :meth:`ModelPatch.parse`)."""
    return ModelPatch.parse(model, overrides, origin=origin, position_limit=position_limit).apply(
        model, origin=origin, position_limit=position_limit
    )
