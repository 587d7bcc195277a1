"""Tests for bqsam.sharpness: eigenvalues, trace and rho-sharpness against exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bqsam.quantizers import binarize
from bqsam.sharpness import (
    HessianOperator,
    hessian_vector_product,
    hutchinson_trace,
    lanczos_top_eigenvalue,
    power_iteration_top_eigenvalue,
    quantized_point,
    rho_sharpness,
)


def make_quadratic(eigenvalues, seed=0):
    """Return ``(A, b, w, loss_fn)`` for ``f(w) = w^T A w / 2 + b^T w`` with ``A = Q diag Q^T``."""
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.asarray(eigenvalues, dtype=np.float64)) @ q.T
    a = (a + a.T) / 2
    b = rng.standard_normal(n)
    matrix = torch.tensor(a)
    shift = torch.tensor(b)
    w = torch.tensor(rng.standard_normal(n), requires_grad=True)

    def loss_fn():
        return 0.5 * w @ matrix @ w + shift @ w

    return a, b, w, loss_fn


def spectrum(n, top, seed=1):
    """Eigenvalues with a chosen top part, the rest uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(-1.0, 1.0, n - len(top))
    return np.concatenate([np.asarray(top, dtype=np.float64), rest])


SPECTRA = {
    "separated_top": spectrum(40, [10.0, 5.0, 3.0]),
    "clustered_top": spectrum(40, [2.0, 1.999, 1.998]),
    "negative_dominant": spectrum(30, [3.0, 2.5, -8.0]),
    "dimension_200": spectrum(200, [4.0, 3.9, 3.5]),
}


# ---------------------------------------------------------------------------------------------
# Hessian-vector products


def test_hvp_matches_matrix_product():
    a, _, w, loss_fn = make_quadratic([3.0, 1.0, -2.0, 0.5])
    v = torch.tensor([1.0, -1.0, 2.0, 0.25], dtype=torch.float64)
    (product,) = hessian_vector_product(loss_fn, [w], [v])
    np.testing.assert_allclose(product.numpy(), a @ v.numpy(), rtol=1e-12, atol=1e-12)


def test_hvp_operator_counts_products():
    _, _, w, loss_fn = make_quadratic([3.0, 1.0])
    operator = HessianOperator(loss_fn, [w])
    for _ in range(3):
        operator([torch.ones(2, dtype=torch.float64)])
    assert operator.hvp_count == 3


def test_hvp_of_unused_parameter_is_zero():
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    unused = torch.tensor([5.0], dtype=torch.float64, requires_grad=True)
    products = hessian_vector_product(lambda: (x**3).sum(), [x, unused], [torch.ones(2), torch.ones(1)])
    np.testing.assert_allclose(products[0].numpy(), [6.0, 12.0])
    assert products[1].tolist() == [0.0]


# ---------------------------------------------------------------------------------------------
# Top eigenvalue


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_lanczos_matches_eigvalsh(name):
    a, _, w, loss_fn = make_quadratic(SPECTRA[name])
    exact = np.linalg.eigvalsh(a)[::-1]

    result = lanczos_top_eigenvalue(loss_fn, [w], k=3, tol=1e-12, max_iter=300)

    assert result.converged
    assert result.hvp_count == len(result.history)
    assert abs(result.eigenvalue - exact[0]) <= 1e-8 * abs(exact[0])
    np.testing.assert_allclose(result.eigenvalues, exact[:3], rtol=1e-8)


def test_lanczos_eigenvector_residual_small():
    a, _, w, loss_fn = make_quadratic(SPECTRA["separated_top"])
    result = lanczos_top_eigenvalue(loss_fn, [w], tol=1e-12, max_iter=100, return_eigenvector=True)
    (vector,) = result.eigenvector
    v = vector.numpy()
    assert abs(np.linalg.norm(v) - 1.0) <= 1e-12
    residual = np.linalg.norm(a @ v - result.eigenvalue * v)
    assert residual <= 1e-7 * result.eigenvalue


def test_lanczos_stops_at_dimension():
    _, _, w, loss_fn = make_quadratic([4.0, 3.0, 2.0, 1.0, 0.5])
    result = lanczos_top_eigenvalue(loss_fn, [w], tol=1e-15, max_iter=50)
    assert result.hvp_count <= 5
    assert abs(result.eigenvalue - 4.0) <= 1e-12


def test_power_iteration_converges_on_quadratic():
    a, _, w, loss_fn = make_quadratic(SPECTRA["separated_top"])
    exact = np.linalg.eigvalsh(a)[-1]
    result = power_iteration_top_eigenvalue(loss_fn, [w], tol=1e-12, max_iter=500)
    assert result.converged
    assert result.hvp_count == len(result.history)
    assert abs(result.eigenvalue - exact) <= 1e-8 * exact


def test_power_iteration_finds_largest_magnitude():
    a, _, w, loss_fn = make_quadratic(SPECTRA["negative_dominant"])
    result = power_iteration_top_eigenvalue(loss_fn, [w], tol=1e-12, max_iter=2000)
    assert abs(result.eigenvalue - (-8.0)) <= 1e-8 * 8.0


def small_cnn():
    """A float64 CNN with 3,418 parameters and a loss on fixed random data."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).double()
    inputs = torch.randn(64, 3, 8, 8, dtype=torch.float64)
    labels = torch.randint(0, 10, (64,))

    def loss_fn():
        return nn.functional.cross_entropy(model(inputs), labels)

    return model, loss_fn


def products_to_reach(history, reference, rel_error):
    """Return the number of products after which the estimate is within ``rel_error``."""
    for count, estimate in enumerate(history, start=1):
        if abs(estimate - reference) <= rel_error * abs(reference):
            return count
    return math.inf


def test_lanczos_halves_power_iteration_hvps(capsys):
    torch.set_num_threads(1)
    model, loss_fn = small_cnn()
    params = list(model.parameters())
    reference = lanczos_top_eigenvalue(loss_fn, params, tol=1e-12, max_iter=200, seed=100)
    assert reference.converged
    assert reference.residuals[-1] <= 1e-6 * reference.eigenvalue

    lanczos_counts, power_counts = [], []
    for seed in range(5):
        lanczos = lanczos_top_eigenvalue(loss_fn, params, tol=1e-10, max_iter=60, seed=seed)
        power = power_iteration_top_eigenvalue(loss_fn, params, tol=1e-10, max_iter=200, seed=seed)
        lanczos_counts.append(products_to_reach(lanczos.history, reference.eigenvalue, 1e-3))
        power_counts.append(products_to_reach(power.history, reference.eigenvalue, 1e-3))

    with capsys.disabled():
        print(f"\nHVPs to 1e-3 relative error, Lanczos {lanczos_counts}, power iteration {power_counts}")
    assert max(lanczos_counts) < math.inf
    assert max(power_counts) < math.inf
    assert 2 * sum(lanczos_counts) <= sum(power_counts)


# ---------------------------------------------------------------------------------------------
# Trace


def test_hutchinson_within_four_standard_errors():
    a, _, w, loss_fn = make_quadratic(SPECTRA["separated_top"])
    result = hutchinson_trace(loss_fn, [w], n_samples=300, seed=3)
    assert result.hvp_count == 300
    assert result.standard_error > 0
    assert abs(result.trace - np.trace(a)) <= 4 * result.standard_error


def test_hutchinson_standard_error_matches_variance():
    # For Rademacher z, Var(z^T A z) = 2 (||A||_F^2 - sum_i A_ii^2).
    a, _, w, loss_fn = make_quadratic(SPECTRA["separated_top"])
    n_samples = 400
    variance = 2 * (np.sum(a**2) - np.sum(np.diag(a) ** 2))
    result = hutchinson_trace(loss_fn, [w], n_samples=n_samples, seed=4)
    assert result.standard_error == pytest.approx(np.sqrt(variance / n_samples), rel=0.25)


def test_hutchinson_exact_for_diagonal_hessian():
    diagonal = torch.tensor([3.0, -1.0, 0.5, 7.25, 2.0], dtype=torch.float64)
    w = torch.ones(5, dtype=torch.float64, requires_grad=True)
    result = hutchinson_trace(lambda: 0.5 * (diagonal * w * w).sum(), [w], n_samples=10, seed=0)
    assert result.samples == pytest.approx([11.75] * 10, rel=1e-15)
    assert result.trace == pytest.approx(11.75, rel=1e-15)
    assert result.standard_error == pytest.approx(0.0, abs=1e-14)


def test_hutchinson_single_sample_has_nan_error():
    _, _, w, loss_fn = make_quadratic([1.0, 2.0])
    result = hutchinson_trace(loss_fn, [w], n_samples=1)
    assert math.isnan(result.standard_error)


# ---------------------------------------------------------------------------------------------
# rho-sharpness


def trust_region_value(a, g, rho):
    from theory.trust_region import max_quadratic_on_ball

    value, _ = max_quadratic_on_ball(a, g, rho)
    return float(value)


RHO_CASES = [
    # (spectrum name, rho)
    ("separated_top", 0.05),
    ("separated_top", 1.0),
    ("clustered_top", 0.5),
    ("negative_dominant", 2.0),
]


@pytest.mark.parametrize("name,rho", RHO_CASES)
def test_rho_sharpness_matches_trust_region(name, rho):
    a, b, w, loss_fn = make_quadratic(SPECTRA[name])
    g = a @ w.detach().numpy() + b
    exact = trust_region_value(a, g, rho)

    result = rho_sharpness(loss_fn, [w], rho, steps=3000, tol=1e-13)

    size = float(torch.cat([e.reshape(-1) for e in result.perturbation]).norm())
    assert size <= rho * (1 + 1e-12)
    assert abs(result.value - exact) <= 1e-10 * abs(exact)


def test_rho_sharpness_starts_from_sam_perturbation():
    a, b, w, loss_fn = make_quadratic(SPECTRA["separated_top"])
    g = a @ w.detach().numpy() + b
    rho = 0.2
    e0 = rho * g / np.linalg.norm(g)

    result = rho_sharpness(loss_fn, [w], rho, steps=0)

    assert result.steps == 0
    np.testing.assert_allclose(result.perturbation[0].numpy(), e0, rtol=1e-12, atol=1e-15)
    assert result.value == pytest.approx(g @ e0 + e0 @ a @ e0 / 2, rel=1e-10)


def test_rho_sharpness_at_minimum():
    a, b, w, loss_fn = make_quadratic(SPECTRA["separated_top"])
    with torch.no_grad():
        w.copy_(torch.tensor(np.linalg.solve(a, -b)))
    rho = 0.3
    result = rho_sharpness(loss_fn, [w], rho, steps=3000, tol=1e-13)
    assert result.value == pytest.approx(10.0 * rho**2 / 2, rel=1e-10)


def test_rho_sharpness_zero_radius_is_zero():
    _, _, w, loss_fn = make_quadratic([1.0, 2.0])
    result = rho_sharpness(loss_fn, [w], 0.0)
    assert result.value == 0.0
    assert result.steps == 0


def test_rho_sharpness_restores_parameters():
    _, _, w, loss_fn = make_quadratic([5.0, 1.0, -1.0])
    before = w.detach().clone()
    rho_sharpness(loss_fn, [w], 0.7, steps=20)
    assert torch.equal(w.detach(), before)


# ---------------------------------------------------------------------------------------------
# Measures at the quantized point


def quartic_problem():
    """``f(u, c) = sum(u^4)/4 + sum(c^4)/4``: ``H = diag(3 u^2, 3 c^2)``."""
    u = torch.tensor([0.5, -1.5, 0.25, 2.0], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[0.1, -0.2], [0.3, 0.05]], dtype=torch.float64, requires_grad=True)
    return u, c, lambda: (u**4).sum() / 4 + (c**4).sum() / 4


def test_quantized_eigenvalue_uses_binarized_point():
    u, c, loss_fn = quartic_problem()
    alpha = float(u.detach().abs().mean())  # q(u) = alpha sgn(u): every diagonal entry is 3 alpha^2

    latent = lanczos_top_eigenvalue(loss_fn, [u, c], tol=1e-12, max_iter=10)
    quantized = lanczos_top_eigenvalue(loss_fn, [u, c], tol=1e-12, max_iter=10, at="quantized", binarized=[u])

    assert latent.eigenvalue == pytest.approx(3 * 2.0**2, rel=1e-12)
    assert quantized.eigenvalue == pytest.approx(3 * alpha**2, rel=1e-12)


def test_quantized_trace_and_mask_forms_agree():
    u, c, loss_fn = quartic_problem()
    by_flag = hutchinson_trace(loss_fn, [u, c], n_samples=3, at="quantized", binarized=[False, True])
    by_tensor = hutchinson_trace(loss_fn, [u, c], n_samples=3, at="quantized", binarized=[c])
    q_c = binarize(c.detach())
    expected = 3 * float((u.detach() ** 2).sum() + (q_c**2).sum())
    assert by_flag.trace == pytest.approx(expected, rel=1e-12)
    assert by_tensor.trace == by_flag.trace


def test_quantized_rho_sharpness_base_loss():
    u, c, loss_fn = quartic_problem()
    result = rho_sharpness(loss_fn, [u, c], 0.1, steps=5, at="quantized")
    with quantized_point([u, c]), torch.no_grad():
        expected_base = float(loss_fn())
    assert result.base_loss == pytest.approx(expected_base, rel=1e-15)


@pytest.mark.parametrize(
    "measure",
    [
        lambda f, p: lanczos_top_eigenvalue(f, p, at="quantized", max_iter=5),
        lambda f, p: power_iteration_top_eigenvalue(f, p, at="quantized", max_iter=5),
        lambda f, p: hutchinson_trace(f, p, at="quantized", n_samples=2),
        lambda f, p: rho_sharpness(f, p, 0.2, at="quantized", steps=5),
    ],
    ids=["lanczos", "power", "hutchinson", "rho"],
)
def test_quantized_measure_restores_latent_weights(measure):
    u, c, loss_fn = quartic_problem()
    saved = [u.detach().clone(), c.detach().clone()]
    measure(loss_fn, [u, c])
    assert torch.equal(u.detach(), saved[0])
    assert torch.equal(c.detach(), saved[1])


def test_quantized_point_restores_after_exception():
    u, c, _ = quartic_problem()
    saved = u.detach().clone()
    with pytest.raises(RuntimeError):
        with quantized_point([u]):
            assert not torch.equal(u.detach(), saved)
            raise RuntimeError("inside")
    assert torch.equal(u.detach(), saved)


# ---------------------------------------------------------------------------------------------
# Invalid usage


def _w():
    return torch.ones(3, dtype=torch.float64, requires_grad=True)


def _loss(w):
    return lambda: (w**2).sum()


INVALID_CALLS = [
    ("rho", lambda w: rho_sharpness(_loss(w), [w], -0.1)),
    ("rho", lambda w: rho_sharpness(_loss(w), [w], math.nan)),
    ("lr", lambda w: rho_sharpness(_loss(w), [w], 0.1, lr=0.0)),
    ("steps", lambda w: rho_sharpness(_loss(w), [w], 0.1, steps=-1)),
    ("tol", lambda w: lanczos_top_eigenvalue(_loss(w), [w], tol=0.0)),
    ("tol", lambda w: power_iteration_top_eigenvalue(_loss(w), [w], tol=-1e-3)),
    ("max_iter", lambda w: lanczos_top_eigenvalue(_loss(w), [w], max_iter=0)),
    ("k", lambda w: lanczos_top_eigenvalue(_loss(w), [w], k=0)),
    ("n_samples", lambda w: hutchinson_trace(_loss(w), [w], n_samples=0)),
    ("at", lambda w: hutchinson_trace(_loss(w), [w], at="deployed")),
    ("vectors", lambda w: hessian_vector_product(_loss(w), [w], [torch.ones(4)])),
    ("vectors", lambda w: hessian_vector_product(_loss(w), [w], [])),
    ("binarized", lambda w: lanczos_top_eigenvalue(_loss(w), [w], at="quantized", binarized=[True, False])),
    ("binarized", lambda w: lanczos_top_eigenvalue(_loss(w), [w], at="quantized", binarized=[torch.ones(3)])),
    ("params is empty", lambda w: hutchinson_trace(_loss(w), [])),
    ("requires_grad", lambda w: hutchinson_trace(_loss(w), [w.detach()])),
    ("scalar", lambda w: lanczos_top_eigenvalue(lambda: w * 2, [w])),
]


@pytest.mark.parametrize("name,call", INVALID_CALLS, ids=[f"{i}-{case[0]}" for i, case in enumerate(INVALID_CALLS)])
def test_invalid_argument_raises_value_error(name, call):
    with pytest.raises(ValueError, match=name):
        call(_w())
