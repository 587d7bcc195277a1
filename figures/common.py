"""Shared pieces of the figure builders: the matplotlib backend, colours, slopes and saving.

Every builder takes plain data (numpy arrays in dicts) and returns a ``matplotlib.figure.Figure``
built on the Agg backend, so the figures render without a display and a test can call a
builder on small synthetic data. ``save_figure`` writes the PNG and the PDF of one figure.

Example::

    import numpy as np
    from figures.common import fit_loglog_slope

    x = np.logspace(-3, 0, 10)
    fit_loglog_slope(x, 4 * x**2)      # 2.0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "METHOD_COLORS",
    "FORMATS",
    "new_figure",
    "fit_loglog_slope",
    "save_figure",
]

logger = logging.getLogger(__name__)

# One colour per method, the same in every figure.
METHOD_COLORS = {
    "SGD": "tab:gray",
    "SAM": "tab:blue",
    "BC": "tab:orange",
    "BR": "tab:purple",
    "BQ-SAM": "tab:green",
}
FORMATS = ("png", "pdf")


def new_figure(rows: int = 1, cols: int = 1, *, width: float = 5.0, height: float = 3.8, **kwargs):
    """Return ``(figure, axes)`` with ``rows x cols`` panels of ``width x height`` inches each.

    ``axes`` is always a 2-D numpy array of Axes. The figure is detached from pyplot's
    figure manager, so building many figures leaks no memory.
    """
    figure = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False, **kwargs)
    return figure, axes


def fit_loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Return the least-squares slope of log y against log x over the positive, finite pairs.

    Raises ValueError when fewer than two such pairs remain.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2:
        raise ValueError(f"a log-log slope needs at least two positive, finite pairs, got {int(keep.sum())}")
    slope, _ = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return float(slope)


def save_figure(figure: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``figure`` as ``out_dir/name.png`` (150 dpi) and ``out_dir/name.pdf``.

    Creates ``out_dir`` when missing and returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for extension in FORMATS:
        path = out_dir / f"{name}.{extension}"
        figure.savefig(path, dpi=150)
        paths.append(path)
    return paths
