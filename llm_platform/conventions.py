"""Names and numbers that several layers must agree on, decided once: the gate's module, paths and ports.

Pure: no I/O. The gate (``gate.py``), the local target and the rendered pods all read them from here.
"""

from __future__ import annotations

GATE_MODULE = "llm_platform.gate"
"""``python -m`` this to run the gate, the authenticating edge in front of every vLLM server."""
GATE_HEALTH_PATH = "/-/gate-health"
"""The gate's own liveness: answers without asking vLLM (the server behind it may still be loading)."""
ENGINE_HEALTH_PATH = "/health"
"""vLLM's health route: the one route the gate forwards without the key."""
METRICS_PATH = "/metrics"
"""Served only on the gate's metrics listener, never on the API port."""
API_KEY_ENV = "VLLM_API_KEY"
"""The environment variable with the key, for the gate and (defence in depth) vLLM itself."""

API_PORT = 8000
"""The gate's API listener in a pod: the Service's and the probes' port."""
METRICS_PORT = 8001
"""The gate's metrics listener in a pod: open to the monitoring namespace only (NetworkPolicy)."""
ENGINE_LOOPBACK_PORT = 8002
"""Where vLLM listens inside a serving pod: 127.0.0.1 only, so the gate is the one way in."""
