"""Smoke benchmarks with vLLM's own benchmark (``vllm bench serve``): plan (pure), parse (pure), SLO evaluation
(pure), and the runner (adapter) that executes the plan against a server."""
