"""The engines a catalog may name in ``serving.engine``: vLLM, the one shipped today.

A second engine is a module of this package that implements :class:`~llm_platform.engine.base.Engine` and is
registered here; nothing outside the package changes. Tests register doubles with :func:`register_engine`.
"""

from __future__ import annotations

from llm_platform.engine.base import Engine, ServingSettings
from llm_platform.engine.vllm import VLLM

DEFAULT_ENGINE = VLLM.name
"""``serving.engine`` when the catalog leaves it out."""

_ENGINES: dict[str, Engine] = {VLLM.name: VLLM}


class UnknownEngineError(ValueError):
    """A ``serving.engine`` that names no registered engine."""


def register_engine(engine: Engine) -> None:
    """Make ``engine`` selectable by its name (a name already registered is replaced)."""
    _ENGINES[engine.name] = engine


def unregister_engine(name: str) -> None:
    """Remove a registered engine (tests' doubles); the default engine stays."""
    if name != DEFAULT_ENGINE:
        _ENGINES.pop(name, None)


def engine_names() -> tuple[str, ...]:
    """The registered engines' names, sorted."""
    return tuple(sorted(_ENGINES))


def engine_named(name: str) -> Engine:
    """The engine registered as ``name``; :class:`UnknownEngineError` naming the registered ones otherwise."""
    try:
        return _ENGINES[name]
    except KeyError:
        raise UnknownEngineError(
            f"{name!r} is not an engine of this platform (registered: {', '.join(engine_names())})"
        ) from None


def engine_for(serving: ServingSettings) -> Engine:
    """The engine that serves ``serving``."""
    return engine_named(serving.engine)


def all_engines() -> tuple[Engine, ...]:
    """Every registered engine, by name."""
    return tuple(_ENGINES[name] for name in engine_names())
