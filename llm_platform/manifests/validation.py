"""Offline schema validation of rendered objects, as strict as ``kubectl apply --validate=strict``.

Core kinds are checked against the OpenAPI schemas that ``kubernetes-validate`` ships, in strict mode (unknown
fields are errors), for every Kubernetes version in :data:`KUBERNETES_VERSIONS`. Custom resources (KEDA,
Prometheus Operator) are checked with ``jsonschema`` against the CRD schemas packaged beside this module; since
CRD schemas allow unknown fields (the API server silently prunes them), a walk over ``properties`` reports them.

Validators are compiled once per (version, kind) with ``jsonschema-rs`` and cached: ``kubernetes_validate.validate``
reloads a 1.2 MB definitions file and interprets the schema in Python for every object (~8 ms a Deployment), which
would dominate the cost of validating a catalog; a compiled validator takes microseconds. A test checks that both
agree on every rendered object.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import resources
from typing import Any

import jsonschema_rs
from kubernetes_validate import utils as kv_utils
from packaging.version import Version

from llm_platform.errors import ManifestValidationError

#: The oldest Kubernetes release we support and a current one; rendered objects must pass both.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.30", "1.33")

#: Custom resources and the packaged copy of their CRD's openAPIV3Schema (``llm_platform/manifests/schemas``).
CUSTOM_RESOURCE_SCHEMAS: Mapping[tuple[str, str], str] = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-2.20-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-2.20-triggerauthentication.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator-0.93.0-podmonitor.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-operator-0.93.0-servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-operator-0.93.0-prometheusrule.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway-api-1.6.1-httproute.json",
}


#: Where the kind schemas of kubernetes-validate look up their shared definitions.
_DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"


def _describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{obj.get('kind', '?')}/{metadata.get('name', '?')}"


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(object)"


def _schema_dir(version: str) -> str:
    """The strict schema directory of the newest release not newer than ``version`` (kubernetes-validate's rule)."""
    wanted = Version(kv_utils.major_minor(version))
    candidates = [v for v in kv_utils.all_versions() if Version(kv_utils.major_minor(v)) <= wanted]
    if not candidates:
        raise ValueError(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return f"v{candidates[-1]}-local-strict"


@functools.cache
def _core_registry(schema_dir: str) -> jsonschema_rs.Registry:
    definitions = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", schema_dir)
    return jsonschema_rs.Registry([(_DEFINITIONS_URI, definitions)])


@functools.cache
def _core_validator(version: str, api_version: str, kind: str) -> jsonschema_rs.Draft202012Validator | None:
    schema_dir = _schema_dir(version)
    # kubernetes-validate's file naming: "apps/v1" -> "apps-v1", "networking.k8s.io/v1" -> "networking-v1".
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    file_name = f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json"
    try:
        schema = kv_utils.schema_contents(file_name, version)
    except FileNotFoundError:
        return None
    return jsonschema_rs.Draft202012Validator(schema, registry=_core_registry(schema_dir))


def _scoped_flags(schema: Any) -> Any:
    """CRD patterns are Go (RE2) regexes: ``a(?i)b`` turns flags on for the rest of the pattern, which the
    validator's regex dialect refuses; the equivalent scoped group ``a(?i:b)`` is accepted by both."""
    if isinstance(schema, dict):
        converted = {key: _scoped_flags(value) for key, value in schema.items()}
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and "(?i)" in pattern:
            head, _, tail = pattern.partition("(?i)")
            converted["pattern"] = f"{head}(?i:{tail})"
        return converted
    if isinstance(schema, list):
        return [_scoped_flags(item) for item in schema]
    return schema


@functools.cache
def _custom_schema(file_name: str) -> dict[str, Any]:
    text = resources.files("llm_platform.manifests").joinpath("schemas", file_name).read_text()
    schema: dict[str, Any] = _scoped_flags(json.loads(text))
    return schema


@functools.cache
def _custom_validator(file_name: str) -> jsonschema_rs.Draft7Validator:
    return jsonschema_rs.Draft7Validator(_custom_schema(file_name))


def unknown_fields(value: Any, schema: Mapping[str, Any], path: tuple[Any, ...] = ()) -> Iterator[str]:
    """Paths in ``value`` that ``schema`` does not declare (where it declares ``properties``)."""
    if isinstance(value, Mapping):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                yield from unknown_fields(item, properties[key], (*path, key))
            elif isinstance(additional, Mapping):
                yield from unknown_fields(item, additional, (*path, key))
            elif properties is not None and not additional and not schema.get("x-kubernetes-preserve-unknown-fields"):
                yield _path((*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from unknown_fields(item, schema["items"], (*path, index))


def object_problems(obj: Mapping[str, Any], versions: Iterable[str] = KUBERNETES_VERSIONS) -> list[str]:
    """Every schema problem of one object, one line each, naming the object and the field path."""
    where = _describe(obj)
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    custom = CUSTOM_RESOURCE_SCHEMAS.get((api_version, kind))
    if custom is not None:
        problems = [
            f"{where}: {_path(error.instance_path)}: {error.message}"
            for error in _custom_validator(custom).iter_errors(obj)
        ]
        problems += [
            f"{where}: {path}: unknown field (the API server would drop it silently)"
            for path in unknown_fields(obj, _custom_schema(custom))
        ]
        return problems
    problems = []
    for version in versions:
        validator = _core_validator(version, api_version, kind)
        if validator is None:
            problems.append(f"{where}: no schema for {api_version} {kind} in Kubernetes {version}")
            continue
        problems += [
            f"{where}: {_path(error.instance_path)}: {error.message} (Kubernetes {version})"
            for error in validator.iter_errors(obj)
        ]
    return problems


def validate_objects(objects: Iterable[Mapping[str, Any]], versions: Iterable[str] = KUBERNETES_VERSIONS) -> None:
    """Raise :class:`ManifestValidationError` listing every problem of every object; return quietly if none."""
    versions = tuple(versions)
    problems = [problem for obj in objects for problem in object_problems(obj, versions)]
    if problems:
        raise ManifestValidationError(problems)
