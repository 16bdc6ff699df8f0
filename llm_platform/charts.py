"""PNG charts for the Dagster UI (matplotlib, headless): what every plot shares. The plots themselves live beside
what they plot (``benchmark/report.py``, ``tuning/report.py``, ``planning/report.py``)."""

from __future__ import annotations

from typing import Any


def new_figure(width: float = 6.5, height: float = 4) -> tuple[Any, Any]:
    """A figure and its axis on the non-interactive backend (no display on a run pod)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def to_png(figure: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed (matplotlib keeps every open one otherwise)."""
    import io

    from matplotlib import pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
