"""PNG figures without pyplot: a matplotlib Figure on the Agg canvas, written atomically.

Shared by the simulator's, the population's and the evaluation's figures, so
that no module switches matplotlib's global backend and no figure is ever
left half-written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .._types import PathLike

DPI = 110


def new_figure(figsize: tuple[float, float] = (6.0, 4.0), dpi: int = DPI) -> Figure:
    """A ``matplotlib.figure.Figure`` attached to an Agg canvas (matplotlib imported lazily)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: PathLike, dpi: int = DPI) -> Path:
    """Lay the figure out and write it as PNG atomically; return the path."""
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


__all__ = ["new_figure", "save_png", "DPI"]
