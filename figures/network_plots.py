"""Builders of the network figures: loss landscapes and sharpness during training.

Each builder takes the dict of :func:`figures.network_data.network_data` and returns a Figure.

Example::

    from figures.network_plots import build_sharpness

    figure = build_sharpness(data)       # data from figures.network_data.network_data
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from figures.common import METHOD_COLORS, new_figure

__all__ = ["build_landscape_1d", "build_landscape_2d", "build_sharpness"]


def _subtitle(data: dict) -> str:
    settings = data["settings"]
    return (f"small CNN on {data['train_images']} real CIFAR-10 training images, {settings['epochs']} epochs; "
            f"losses on a fixed batch of {data['measure_images']} of them")


def _accuracy_label(data: dict, method: str) -> str:
    accuracy = data.get("accuracy", {}).get(method)
    if accuracy is None:
        return method
    return f"{method} (test accuracy at q(w): {100 * accuracy['deployed']:.1f}%)"


def build_landscape_1d(data: dict) -> Figure:
    """Draw the 1-D slices f(w + t d) and f(q(w + t d)) of every method, one panel per method."""
    methods = data["methods"]
    figure, axes = new_figure(1, len(methods), width=4.4, height=3.8, sharey=True)
    for ax, method in zip(axes[0], methods):
        slices = data["landscape"][method]
        color = METHOD_COLORS.get(method)
        ax.plot(slices["t"], slices["slice_continuous"], color=color, label="continuous f(w + t d)")
        ax.plot(slices["t"], slices["slice_quantized"], color=color, linestyle="--", marker=".",
                label="quantized f(q(w + t d))")
        ax.set_title(_accuracy_label(data, method), fontsize=9)
        ax.set_xlabel("step t along filter-normalised d (units of ||w|| per filter)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("training cross-entropy (nats)")
    figure.suptitle("1-D loss slices of SGD, BinaryConnect and BQ-SAM, continuous vs quantized\n" + _subtitle(data),
                    fontsize=10)
    return figure


def build_landscape_2d(data: dict) -> Figure:
    """Draw the 2-D slices as contour plots: one column per method, continuous and quantized rows.

    All panels share one colour scale with geometric levels, so heights compare across methods.
    """
    methods = data["methods"]
    figure, axes = new_figure(2, len(methods), width=3.9, height=3.4, sharey=True)
    planes = [data["landscape"][m][f"plane_{kind}"] for m in methods for kind in ("continuous", "quantized")]
    low = float(min(np.min(p) for p in planes))
    high = float(max(np.max(p) for p in planes))
    # Geometric levels: the quantized and the continuous losses differ by orders of magnitude.
    levels = np.geomspace(low, high, 15) if 0 < low < high else 15
    contour = None
    for column, method in enumerate(methods):
        grid = data["landscape"][method]["grid"]
        for row, kind in enumerate(("continuous", "quantized")):
            ax = axes[row, column]
            plane = data["landscape"][method][f"plane_{kind}"]
            # plane[i, j] is the loss at s = grid[i] (direction d1), t = grid[j] (direction d2).
            contour = ax.contourf(grid, grid, plane.T, levels=levels, cmap="viridis")
            ax.plot([0], [0], marker="*", color="white", markersize=8, label="trained weights")
            formula = "f(w + s d1 + t d2)" if kind == "continuous" else "f(q(w + s d1 + t d2))"
            ax.set_title(f"{method}: {kind} {formula}", fontsize=8)
            ax.set_xlabel("s along d1 (filter-normalised)", fontsize=8)
            if column == 0:
                ax.set_ylabel("t along d2 (filter-normalised)")
            ax.legend(fontsize=7, loc="upper right")
    figure.colorbar(contour, ax=axes, label="training cross-entropy (nats)", shrink=0.8)
    figure.suptitle("2-D loss slices of SGD, BinaryConnect and BQ-SAM\n" + _subtitle(data), fontsize=10)
    return figure


def build_sharpness(data: dict) -> Figure:
    """Draw the top Hessian eigenvalue (Lanczos) at w and at q(w) after every epoch, per method."""
    figure, axes = new_figure(1, 1, width=6.4, height=4.6)
    ax = axes[0, 0]
    for method in data["methods"]:
        history = data["sharpness"][method]
        color = METHOD_COLORS.get(method)
        ax.plot(history["epoch"], history["latent"], color=color, marker="o", label=f"{method}: at latent w")
        ax.plot(history["epoch"], history["quantized"], color=color, marker="s", linestyle="--",
                label=f"{method}: at deployed q(w)")
    ax.set_xlabel("epoch (0: initialisation)")
    ax.set_ylabel(r"top Hessian eigenvalue $\lambda_{max}$ (nats per squared weight unit)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    # The subtitle is long, so it gets a line of its own at a size that fits the axes width.
    ax.set_title("Sharpness during training, SGD vs BinaryConnect vs BQ-SAM (Lanczos)\n"
                 + _subtitle(data).replace("; ", ";\n"), fontsize=8)
    return figure
