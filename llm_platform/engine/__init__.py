"""The engine seam (pure core): the interface (``base``), vLLM (``vllm``, ``vllm_flags``) and the registry that
``serving.engine`` names. Everything engine-specific - server command, flags, metrics, autoscaling query,
benchmark client, image - lives in this package and nowhere else (``tests/unit/test_engine_seam.py`` checks)."""

from llm_platform.engine.base import (
    BenchmarkRunner,
    BenchmarkWorkload,
    Engine,
    EngineInvocation,
    EngineMetrics,
    LoraAdapters,
    ServingSettings,
)
from llm_platform.engine.registry import (
    DEFAULT_ENGINE,
    UnknownEngineError,
    all_engines,
    engine_for,
    engine_named,
    engine_names,
    register_engine,
    unregister_engine,
)

__all__ = [
    "DEFAULT_ENGINE",
    "BenchmarkRunner",
    "BenchmarkWorkload",
    "Engine",
    "EngineInvocation",
    "EngineMetrics",
    "LoraAdapters",
    "ServingSettings",
    "UnknownEngineError",
    "all_engines",
    "engine_for",
    "engine_named",
    "engine_names",
    "register_engine",
    "unregister_engine",
]
