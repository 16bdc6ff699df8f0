"""How the project's errors reach Dagster: one readable line as the run's failure, no traceback."""

from __future__ import annotations

from collections.abc import Iterator
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
