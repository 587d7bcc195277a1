"""Tests of the figure builders (on small synthetic data) and of ``bqsam figures``."""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bqsam.cli import main as bqsam_main
from figures import cli as figures_cli
from figures.common import fit_loglog_slope, save_figure
from figures.network_plots import build_landscape_1d, build_landscape_2d, build_sharpness
from figures.theory_data import QUICK, gradient_error_data, run_binarysam, stability_data
from figures.theory_plots import build_convergence, build_floor, build_gradient_error, build_stability
from theory.problems import Quadratic

# ---------------------------------------------------------------------------------------------
# Small synthetic data in the formats of the data generators


def _convergence_data() -> dict:
    K = np.arange(1, 11, dtype=float)
    series = {"label": "SAM", "theorem": "T1", "K": K, "average": 1 / K, "bound": 2 / K}
    stochastic = dict(series, theorem="T3(a)", standard_error=0.01 / K)
    return {"problem": "toy", "L": 1.0, "rho": 0.1, "eta": 1.0,
            "panels": [{"title": "T1", "series": [series]}, {"title": "T3(a)", "series": [stochastic]}]}


def _floor_data() -> dict:
    x = np.logspace(-3, 0, 5)
    return {"problem": "toy", "L": 1.0, "steps": 10, "rho": x, "sam_floor": 0.5 * x**2,
            "lam": x, "rms_displacement": x, "relax_floor": 0.3 * x**2}


def _gradient_error_data() -> dict:
    x = np.logspace(-4, 0, 5)
    return {"problem": "toy", "L": 1.0, "M": 1.0, "rho": x, "first_order_error": x**2,
            "first_order_bound": x, "usam_first_order_error": 0.5 * x, "usam_first_order_bound": x,
            "hessian_exact_error": np.zeros_like(x), "hessian_fd_error": 1e-12 * x, "fd_delta": 1e-3,
            "delta": x, "hvp_error": x**2, "hvp_bound": x, "g2_fd_error": 0.1 * x**2, "g2_rho": 0.1}


def _stability_data() -> dict:
    eta = np.linspace(0.1, 2.2, 4)
    rho = np.linspace(0.0, 1.0, 3)
    converged = eta[None, :] < 2 / (1 + rho[:, None])
    return {"L": 1.0, "eta": eta, "rho": rho, "converged": converged, "boundary_rho": rho,
            "boundary_eta": 2 / (1 + rho), "boundary_label": "eta = 2/(L + rho L^2)", "steps": 5}


def _network_data() -> dict:
    methods = ["SGD", "BC", "BQ-SAM"]
    t = np.linspace(-1, 1, 5)
    grid = np.linspace(-1, 1, 3)
    plane = 2.3 + np.add.outer(grid**2, grid**2)
    landscape = {m: {"t": t, "grid": grid, "slice_continuous": 2 + t**2, "slice_quantized": 2.5 + t**2,
                     "plane_continuous": plane, "plane_quantized": plane + 0.2} for m in methods}
    sharpness = {m: {"epoch": np.arange(3), "latent": np.array([3.0, 2.0, 1.0]),
                     "quantized": np.array([3.5, 2.5, 1.5])} for m in methods}
    accuracy = {m: {"latent": 0.3, "deployed": 0.25} for m in methods}
    return {"settings": {"epochs": 2}, "methods": methods, "sharpness": sharpness, "landscape": landscape,
            "accuracy": accuracy, "train_images": 100, "measure_images": 50}


BUILDERS = [
    ("convergence", build_convergence, _convergence_data),
    ("floor", build_floor, _floor_data),
    ("gradient-error", build_gradient_error, _gradient_error_data),
    ("stability", build_stability, _stability_data),
    ("landscape-1d", build_landscape_1d, _network_data),
    ("landscape-2d", build_landscape_2d, _network_data),
    ("sharpness", build_sharpness, _network_data),
]


# ---------------------------------------------------------------------------------------------
# Builders


@pytest.mark.parametrize("name, builder, make_data", BUILDERS, ids=[b[0] for b in BUILDERS])
def test_builder_labels_axes_and_legend(name, builder, make_data):
    figure = builder(make_data())

    assert isinstance(figure, Figure)
    data_axes = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
    assert data_axes, f"{name} has no axes"
    for ax in data_axes:
        assert ax.get_xlabel(), f"{name}: an axis has no x label"
        assert ax.get_legend() is not None, f"{name}: an axis has no legend"
    assert any(ax.get_ylabel() for ax in data_axes), f"{name}: no y label"
    assert figure._suptitle is not None or all(ax.get_title() for ax in data_axes), f"{name}: no title"


def test_builders_cover_every_figure_name():
    assert {b[0] for b in BUILDERS} == set(figures_cli.FIGURES)


def test_save_figure_writes_png_and_pdf(tmp_path):
    paths = save_figure(build_stability(_stability_data()), tmp_path / "new", "stability")

    assert [p.name for p in paths] == ["stability.png", "stability.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert paths[1].read_bytes().startswith(b"%PDF")


# ---------------------------------------------------------------------------------------------
# Data generation


@pytest.mark.parametrize("slope", [1.0, 2.0, -1.0])
def test_fit_loglog_slope_recovers_power(slope):
    x = np.logspace(-3, 1, 9)
    assert fit_loglog_slope(x, 3.0 * x**slope) == pytest.approx(slope, abs=1e-12)


def test_fit_loglog_slope_rejects_single_point():
    with pytest.raises(ValueError, match="at least two"):
        fit_loglog_slope([1.0, 2.0], [1.0, 0.0])


def test_run_binarysam_sam_two_cycle_is_rho():
    # f = L w^2/2 in 1-D, eta = 1/L, w_0 = rho: normalised SAM enters the 2-cycle +-rho at once.
    problem = Quadratic(torch.tensor([2.0], dtype=torch.float64))
    rho = 0.3
    run = run_binarysam(problem, torch.tensor([[rho]], dtype=torch.float64), 4, lr=0.5, rho=rho)

    expected = torch.tensor([rho, -rho, rho, -rho, rho], dtype=torch.float64)
    torch.testing.assert_close(run.points[:, 0, 0], expected, rtol=1e-12, atol=1e-15)


def test_stability_grid_matches_symbolic_boundary():
    data = stability_data(QUICK)

    assert data["symbolic_checks_hold"]
    assert data["agreement"] == 1.0
    assert data["converged"].any()
    assert not data["converged"].all()


def test_gradient_error_slopes():
    data = gradient_error_data(QUICK)

    # Normalised SAM: the O(rho) term of J^T G1 cancels, so the error is O(rho^2); USAM is O(rho).
    assert fit_loglog_slope(data["rho"], data["first_order_error"]) == pytest.approx(2.0, abs=0.1)
    assert fit_loglog_slope(data["rho"], data["usam_first_order_error"]) == pytest.approx(1.0, abs=0.1)
    assert np.all(data["first_order_error"] <= data["first_order_bound"])
    truncation = data["delta"] >= 1e-3
    assert fit_loglog_slope(data["delta"][truncation], data["hvp_error"][truncation]) == pytest.approx(2.0, abs=0.1)
    assert np.all(data["hvp_error"][truncation] <= data["hvp_bound"][truncation])


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_writes_cheap_figures(tmp_path):
    status = bqsam_main(["figures", "--quick", "--only", "stability", "gradient-error", "--out", str(tmp_path)])

    assert status == 0
    for name in ("stability", "gradient-error"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.pdf").stat().st_size > 0


def test_cli_rejects_unknown_figure_name(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="figures.cli"):
        status = bqsam_main(["figures", "--only", "stabilty", "--out", str(tmp_path)])

    assert status == 2
    assert "stabilty" in caplog.text
    for name in figures_cli.FIGURES:
        assert name in caplog.text
    assert not any(tmp_path.iterdir())


def test_cli_reports_missing_cifar_data(tmp_path, caplog):
    args = argparse.Namespace(only=["sharpness"], out=tmp_path / "out", quick=True,
                              data_dir=tmp_path / "missing", threads=1)
    with caplog.at_level(logging.ERROR, logger="figures.cli"):
        status = figures_cli.main(args)

    assert status == 1
    assert "train.zip" in caplog.text
    assert "--data-dir" in caplog.text


def test_network_figures_on_real_cifar(tmp_path, cifar10_dir):
    status = bqsam_main(["figures", "--quick", "--only", "sharpness", "landscape-1d",
                         "--out", str(tmp_path), "--data-dir", str(cifar10_dir)])

    assert status == 0
    assert (tmp_path / "sharpness.png").is_file()
    assert (tmp_path / "landscape-1d.png").is_file()
    assert len(list((tmp_path / "cache").glob("network-*.pt"))) == 3
