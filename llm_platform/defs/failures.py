"""How the project's errors reach Dagster: one readable line as the run's failure, no traceback."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import dagster as dg

from llm_platform.errors import PlatformError


@contextmanager
def platform_errors_as_failure() -> Iterator[None]:
    """Turn a :class:`PlatformError` into ``dg.Failure`` with its message (user mistakes are not retried)."""
    try:
        yield
    except PlatformError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None


def environment_references(config: object, path: str = "") -> list[str]:
    """Where ``config`` (a run's config as submitted) asks Dagster for an environment variable (``{env: NAME}``)."""
    if isinstance(config, Mapping):
        if set(config) == {"env"}:
            return [path or "(top level)"]
        return [
            found
            for key, value in config.items()
            for found in environment_references(value, f"{path}.{key}".lstrip("."))
        ]
    if isinstance(config, list):
        return [
            found for index, value in enumerate(config) for found in environment_references(value, f"{path}[{index}]")
        ]
    return []


def refuse_environment_references(context: dg.AssetExecutionContext) -> None:
    """Fail the run before it does anything when its config reads the run worker's environment.

    Dagster resolves ``{env: NAME}`` in every string and integer field of run config, so an override such as
    ``dtype: {env: DAGSTER_PG_PASSWORD}`` would hand the run pod's secrets to whoever launches a run (echoed in a
    validation error, written into metadata). Nothing in this platform's run config is meant to come from the
    environment: secrets reach the code location through its own settings, never through a run."""
    found = environment_references(context.run.run_config)
    if found:
        raise dg.Failure(
            description=(
                f"run config: {', '.join(found[:5])}: environment references ({{env: …}}) are not accepted in run "
                "config; write the value itself"
            ),
            allow_retries=False,
        )
