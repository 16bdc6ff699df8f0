"""llm-platform: a Dagster-orchestrated lifecycle for self-hosted LLMs (download, benchmark, promote, retune)."""

__version__ = "0.1.0"
