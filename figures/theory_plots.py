"""Builders of the theory figures: each takes the dict of :mod:`figures.theory_data` and returns a Figure.

Example::

    from figures.theory_data import QUICK, stability_data
    from figures.theory_plots import build_stability

    figure = build_stability(stability_data(QUICK))
    figure.savefig("stability.png")
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from figures.common import METHOD_COLORS, fit_loglog_slope, new_figure

__all__ = ["build_convergence", "build_floor", "build_gradient_error", "build_stability"]


def _positive(values: np.ndarray) -> np.ndarray:
    """Replace entries <= 0 by NaN: a log axis cannot show them, and matplotlib skips NaN."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values > 0, values, np.nan)


def _max_ratio(average: np.ndarray, bound: np.ndarray) -> float:
    return float(np.max(np.asarray(average) / np.asarray(bound)))


def _draw_convergence_panel(axes: Axes, panel: dict) -> None:
    for series in panel["series"]:
        color = METHOD_COLORS.get(series["label"], None)
        K = series["K"]
        ratio = _max_ratio(series["average"], series["bound"])
        axes.loglog(K, series["average"], color=color,
                    label=f"{series['label']}: running average (max ratio to bound {ratio:.2f})")
        if "standard_error" in series:
            spread = 3 * series["standard_error"]
            axes.fill_between(K, _positive(series["average"] - spread), series["average"] + spread,
                              color=color, alpha=0.2, linewidth=0)
        axes.loglog(K, series["bound"], color=color, linestyle="--", label=f"{series['label']}: {series['theorem']} bound")
    axes.set_title(panel["title"], fontsize=10)
    axes.set_xlabel("iterations K")
    axes.set_ylabel(r"$(1/K)\sum_{k<K} \|\nabla f(w_k)\|^2$  (squared loss units)")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=7)


def build_convergence(data: dict) -> Figure:
    """Draw the running averages of ||grad f(w_k)||^2 against the T1, T2 and T3(a) bounds.

    ``data`` contains ``problem``, ``L``, ``rho`` and ``panels``: a list of dicts with a
    ``title`` and ``series``, each series a dict with ``label``, ``theorem``, ``K``,
    ``average``, ``bound`` and, for stochastic runs, ``standard_error`` (a band of
    3 standard errors is drawn).
    """
    panels = data["panels"]
    figure, axes = new_figure(1, len(panels), width=5.2, height=4.2)
    for ax, panel in zip(axes[0], panels):
        _draw_convergence_panel(ax, panel)
    figure.suptitle(
        f"Gradient norms of SAM, BinaryConnect and BQ-SAM against their bounds: {data['problem']}, "
        f"L = {data['L']:.3g}, rho = {data['rho']:g}",
        fontsize=11,
    )
    return figure


def _draw_slope_panel(
    axes: Axes, x: np.ndarray, y: np.ndarray, bound: np.ndarray, *, measured: str, predicted: str, color: str
) -> None:
    slope = fit_loglog_slope(x, y)
    axes.loglog(x, _positive(y), "o-", color=color, label=f"{measured} (fitted slope {slope:.2f})")
    axes.loglog(x, bound, "--", color="black", label=predicted)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8)


def build_floor(data: dict) -> Figure:
    """Draw the stationarity floor against rho (SAM) and against theta delta (BinaryRelax), log-log.

    ``data`` contains ``problem``, ``L``, ``steps``, ``rho``, ``sam_floor``,
    ``rms_displacement`` and ``relax_floor`` (arrays of one sweep each).
    """
    L = data["L"]
    figure, axes = new_figure(1, 2, width=5.2, height=4.2)
    left, right = axes[0]

    rho = np.asarray(data["rho"])
    _draw_slope_panel(left, rho, data["sam_floor"], L**2 * rho**2,
                      measured="SAM: measured floor", predicted=r"T1 floor $L^2\rho^2$ (slope 2)",
                      color=METHOD_COLORS["SAM"])
    left.set_xlabel(r"SAM radius $\rho$ (weight units)")
    left.set_ylabel(r"floor: mean $\|\nabla f(w_k)\|^2$ over the last half of the run")
    left.set_title("SAM floor against the radius rho", fontsize=10)

    displacement = np.asarray(data["rms_displacement"])
    _draw_slope_panel(right, displacement, data["relax_floor"], L**2 * displacement**2,
                      measured="BinaryRelax (rho = 0): measured floor",
                      predicted=r"T2 floor $L^2\,\mathrm{mean}\,r_k^2$ (slope 2)",
                      color=METHOD_COLORS["BR"])
    right.set_xlabel(r"quantization displacement $\sqrt{\mathrm{mean}_k (\theta\delta_k)^2}$, $\theta = \lambda/(1+\lambda)$")
    right.set_ylabel(r"floor: mean $\|\nabla f(w_k)\|^2$ over the last half of the run")
    right.set_title("BinaryRelax floor against the quantization displacement", fontsize=10)

    figure.suptitle(
        f"Measured stationarity floors against the predicted ones: {data['problem']}, "
        f"L = {L:.3g}, eta = 1/L, {data['steps']} steps",
        fontsize=11,
    )
    return figure


def build_gradient_error(data: dict) -> Figure:
    """Draw the SAM gradient errors against rho and the central-difference errors against delta.

    ``data`` contains ``problem``, ``L``, ``M``, ``rho``, ``first_order_error``,
    ``first_order_bound``, optionally ``usam_first_order_error`` and ``usam_first_order_bound``,
    ``hessian_exact_error``, ``hessian_fd_error``, ``fd_delta``,
    ``delta``, ``hvp_error``, ``hvp_bound``, ``g2_fd_error`` and ``g2_rho``. Zero errors
    cannot appear on a log axis and are left out.
    """
    figure, axes = new_figure(1, 2, width=5.4, height=4.4)
    left, right = axes[0]

    rho = np.asarray(data["rho"])
    first_order = np.asarray(data["first_order_error"])
    slope = fit_loglog_slope(rho, first_order)
    left.loglog(rho, _positive(first_order), "o-", color="tab:blue",
                label=f"type 1, normalised SAM (fitted slope {slope:.2f}; O(rho) term cancels)")
    left.loglog(rho, data["first_order_bound"], "--", color="tab:blue",
                label=r"bound $(\rho L/\|g\|)\,\|G_1\|$ (slope 1)")
    if "usam_first_order_error" in data:
        usam_error = np.asarray(data["usam_first_order_error"])
        usam_slope = fit_loglog_slope(rho, usam_error)
        left.loglog(rho, _positive(usam_error), "D-", color="tab:cyan",
                    label=f"type 1, USAM e = rho g (fitted slope {usam_slope:.2f})")
        left.loglog(rho, data["usam_first_order_bound"], ":", color="tab:cyan",
                    label=r"USAM bound $\rho L\,\|G_1\|$ (slope 1)")
    left.loglog(rho, _positive(data["hessian_fd_error"]), "s-", color="tab:red",
                label=f"type 2, central difference, delta = {data['fd_delta']:g}")
    left.loglog(rho, _positive(data["hessian_exact_error"]), "^-", color="tab:green",
                label="type 2, exact Hessian-vector product (rounding)")
    left.set_xlabel(r"radius $\rho$ (SAM: weight units; USAM: $e = \rho\,g$, squared weight units per loss unit)")
    left.set_ylabel(r"$\|\nabla F(w) - G\|$, $F(w) = f(w + e(w))$ (gradient units)")
    left.set_title("SAM gradient error against rho", fontsize=10)
    left.grid(True, which="major", alpha=0.3)
    # Room above the data for the legend.
    bottom, top = left.get_ylim()
    left.set_ylim(bottom, top * 1e4)
    left.legend(fontsize=6.5, loc="upper left")

    delta = np.asarray(data["delta"])
    hvp_error = np.asarray(data["hvp_error"])
    # Above delta = 1e-3 truncation dominates; below it rounding error ~ eps/delta takes over.
    truncation = delta >= 1e-3
    slope = fit_loglog_slope(delta[truncation], hvp_error[truncation])
    right.loglog(delta, _positive(hvp_error), "o-", color="tab:purple",
                 label=f"HVP error, unit v (fitted slope {slope:.2f} for delta >= 1e-3)")
    right.loglog(delta, data["hvp_bound"], "--", color="tab:purple",
                 label=r"bound $(M\delta/2)\|v\|^2$ (slope 1)")
    right.loglog(delta, _positive(data["g2_fd_error"]), "s-", color="tab:red",
                 label=f"BQ-SAM type 2 (hessian-fd) gradient error, rho = {data['g2_rho']:g}")
    right.set_xlabel(r"central-difference step $\delta$ (weight units)")
    right.set_ylabel("error norm (gradient units)")
    right.set_title("Central-difference Hessian-vector product error against delta", fontsize=10)
    right.grid(True, which="major", alpha=0.3)
    right.legend(fontsize=7)

    figure.suptitle(
        f"Gradient approximation errors: {data['problem']}, L = {data['L']:.3g}, M = {data['M']:.3g}",
        fontsize=11,
    )
    return figure


def build_stability(data: dict) -> Figure:
    """Draw converged and diverged USAM runs on the (rho, eta) grid with the T4 boundary.

    ``data`` contains ``L``, ``eta`` and ``rho`` (grid axes), ``converged`` (bool array of shape
    (len(rho), len(eta))), ``boundary_rho``, ``boundary_eta``, ``boundary_label``,
    ``steps`` and optionally ``agreement`` (fraction of grid points the boundary predicts).
    """
    figure, axes = new_figure(1, 1, width=6.4, height=5.0)
    ax = axes[0, 0]
    rho_grid, eta_grid = np.meshgrid(data["rho"], data["eta"], indexing="ij")
    converged = np.asarray(data["converged"], dtype=bool)
    ax.scatter(rho_grid[converged], eta_grid[converged], s=10, marker="o", color="tab:green",
               label=r"converged: $\|w_K\| < \|w_0\|$")
    ax.scatter(rho_grid[~converged], eta_grid[~converged], s=12, marker="x", color="tab:red",
               label="diverged")
    ax.plot(data["boundary_rho"], data["boundary_eta"], color="black", linewidth=2, label=data["boundary_label"])
    ax.axhline(2 / data["L"], color="gray", linestyle=":", label="gradient descent limit eta = 2/L")
    ax.set_xlabel(r"USAM radius $\rho$ (units of $1/L$; perturbation $e = \rho\,\nabla f(w)$)")
    ax.set_ylabel(r"step size $\eta$ (units of $1/L$)")
    title = f"USAM stability on a quadratic (L = {data['L']:g}): runs of {data['steps']} steps vs T4 boundary"
    if "agreement" in data:
        title += f"\nboundary agrees with {100 * data['agreement']:.1f}% of the grid points"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return figure
