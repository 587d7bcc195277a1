"""SAM perturbations and the bounds S1-S3 against exact ground truth."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bqsam.hvp import hvp_central_difference, hvp_exact
from bqsam.perturbation import sam_perturbation
from theory.problems import Logistic, Quadratic, RobustRegression

pytestmark = pytest.mark.usefixtures("float64_default")

seeds = st.integers(0, 2**20)
radii = st.floats(min_value=1e-4, max_value=2.0)


def logistic_problem(seed, n=4, samples=12, c=0.1):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, n, generator=generator)
    labels = torch.where(torch.rand(samples, generator=generator) < 0.5, -1.0, 1.0)
    return Logistic(X, labels, c=c)


def robust_problem(seed, n=4, samples=12):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, n, generator=generator)
    y = torch.randn(samples, generator=generator)
    return RobustRegression(X, y)


def random_point(seed, n, scale=1.0):
    return scale * torch.randn(n, generator=torch.Generator().manual_seed(seed + 17))


# ---------------------------------------------------------------- the perturbation itself


@settings(max_examples=50, deadline=None)
@given(seeds, radii)
def test_normalised_perturbation_has_norm_rho(seed, rho):
    generator = torch.Generator().manual_seed(seed)
    grads = [torch.randn(3, 2, generator=generator), torch.randn(4, generator=generator)]
    e = sam_perturbation(grads, rho)
    total = math.sqrt(sum(float(t.pow(2).sum()) for t in e))
    assert total == pytest.approx(rho, rel=1e-12)
    for ei, gi in zip(e, grads):
        assert torch.allclose(ei * 0 + ei / rho * torch.cat([g.flatten() for g in grads]).norm(), gi, rtol=1e-10)


@pytest.mark.parametrize("normalize, adaptive", [(True, False), (False, False), (True, True), (False, True)])
def test_zero_gradient_gives_zero_perturbation(normalize, adaptive):
    grads = [torch.zeros(3), torch.zeros(2, 2)]
    params = [torch.ones(3), torch.ones(2, 2)]
    e = sam_perturbation(grads, 0.5, normalize=normalize, adaptive=adaptive, params=params)
    for t in e:
        assert torch.equal(t, torch.zeros_like(t))


def test_unnormalised_perturbation_is_rho_times_gradient():
    g = torch.tensor([3.0, -4.0])
    (e,) = sam_perturbation([g], 0.1, normalize=False)
    assert torch.allclose(e, 0.1 * g, rtol=1e-15)


def test_adaptive_perturbation_formula():
    g = torch.tensor([3.0, -4.0, 1.0])
    w = torch.tensor([2.0, -0.5, 0.0])
    (e,) = sam_perturbation([g], 0.2, adaptive=True, params=[w])
    t = w.abs()
    expected = 0.2 * t**2 * g / (t * g).norm()
    assert torch.allclose(e, expected, rtol=1e-14)
    # ||T^{-1} e|| = rho on the coordinates where T is invertible.
    assert float((e[:2] / t[:2]).norm()) == pytest.approx(0.2, rel=1e-12)


def test_rows_are_independent_problems():
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=generator), torch.randn(3, generator=generator)]
    grads[0][1].zero_()
    grads[1][1] = 0.0
    rho = torch.tensor([0.1, 0.2, 0.3])
    e = sam_perturbation(grads, rho, rows=True)
    for i in range(3):
        expected = sam_perturbation([grads[0][i], grads[1][i : i + 1]], float(rho[i]))
        assert torch.allclose(e[0][i], expected[0], rtol=1e-14)
        assert torch.allclose(e[1][i : i + 1], expected[1], rtol=1e-14)
    assert torch.equal(e[0][1], torch.zeros(4))


# ---------------------------------------------------------------- S1 on quadratics


@settings(max_examples=40, deadline=None)
@given(seeds, radii, st.integers(1, 6))
def test_sam_objective_bounds_against_trust_region(seed, rho, n):
    L = 3.0
    problem = Quadratic.random(n, L=L, mu=L if n == 1 else 0.2, seed=seed)
    w = random_point(seed, n)
    g = problem.grad(w)
    (e,) = sam_perturbation([g], rho)

    f = float(problem.loss(w))
    f_first_order = float(problem.loss(w + e))
    f_rho = float(problem.sam_objective(w, rho))
    g_norm = float(g.norm())
    slack = 1e-10 * (1 + abs(f) + rho * g_norm + L * rho**2)

    assert f + rho * g_norm - L * rho**2 / 2 <= f_first_order + slack
    assert f_first_order <= f_rho + slack
    assert f_rho <= f + rho * g_norm + L * rho**2 / 2 + slack
    assert 0 <= f_rho - f_first_order + slack
    assert f_rho - f_first_order <= L * rho**2 + slack


def test_first_order_perturbation_misses_maximiser_when_curvature_dominates():
    # Ground truth is not trivially matched: with rho large against ||g|| the exact maximiser
    # follows the top eigenvector, and the first-order value falls strictly below f_rho.
    problem = Quadratic(torch.diag(torch.tensor([0.1, 4.0])), torch.zeros(2))
    w = torch.tensor([1.0, 1e-3])
    (e,) = sam_perturbation([problem.grad(w)], 1.0)
    assert float(problem.sam_objective(w, 1.0)) - float(problem.loss(w + e)) > 1.0


# ---------------------------------------------------------------- S2 and the type-1 error


@settings(max_examples=30, deadline=None)
@given(seeds, radii, st.sampled_from(["logistic", "robust"]))
def test_perturbed_gradient_moves_at_most_L_rho(seed, rho, kind):
    problem = logistic_problem(seed) if kind == "logistic" else robust_problem(seed)
    w = random_point(seed, problem.dim)
    g = problem.grad(w)
    (e,) = sam_perturbation([g], rho)
    change = float((problem.grad(w + e) - g).norm())
    assert change <= problem.L * rho * (1 + 1e-10)


def exact_sam_gradient(problem, w, rho, normalize):
    w = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(problem.loss(w), [w], create_graph=True)
    (e,) = sam_perturbation([g], rho, normalize=normalize)
    (grad_f,) = torch.autograd.grad(problem.loss(w + e), [w])
    return grad_f


@settings(max_examples=30, deadline=None)
@given(seeds, radii, st.booleans())
def test_first_order_gradient_error_bound(seed, rho, normalize):
    problem = logistic_problem(seed)
    w = random_point(seed, problem.dim, scale=2.0)
    g = problem.grad(w)
    (e,) = sam_perturbation([g], rho, normalize=normalize)
    first_order = problem.grad(w + e)

    error = float((exact_sam_gradient(problem, w, rho, normalize) - first_order).norm())
    jacobian_bound = rho * problem.L / float(g.norm()) if normalize else rho * problem.L
    assert error <= jacobian_bound * float(first_order.norm()) * (1 + 1e-9) + 1e-14


def test_hessian_corrected_gradient_closes_the_error():
    problem = logistic_problem(1)
    w = random_point(1, problem.dim, scale=2.0)
    rho = 0.3
    g = problem.grad(w)
    (e,) = sam_perturbation([g], rho)
    g1 = problem.grad(w + e)
    u = g / g.norm()
    v = (rho / g.norm()) * (g1 - u * (u @ g1))
    g2 = g1 + problem.hessian(w) @ v
    exact = exact_sam_gradient(problem, w, rho, True)
    assert float((g2 - exact).norm()) <= 1e-12 * float(exact.norm())
    assert float((g1 - exact).norm()) > 1e-4


# ---------------------------------------------------------------- S3: Hessian-vector products


@settings(max_examples=30, deadline=None)
@given(seeds, st.floats(min_value=1e-4, max_value=0.5), st.floats(min_value=0.1, max_value=3.0))
def test_central_difference_hvp_error_bound(seed, delta, v_scale):
    problem = logistic_problem(seed)
    w = random_point(seed, problem.dim)
    v = v_scale * random_point(seed + 1, problem.dim)
    (approx,) = hvp_central_difference(lambda pts: [problem.grad(pts[0])], [w], [v], delta)
    error = float((approx - problem.hessian(w) @ v).norm())
    assert error <= problem.M * delta / 2 * float(v.norm()) ** 2 * (1 + 1e-6) + 1e-12


def test_central_difference_exact_on_quadratic():
    problem = Quadratic.random(5, L=4.0, mu=0.5, seed=2)
    w, v = random_point(0, 5), random_point(1, 5)
    (approx,) = hvp_central_difference(lambda pts: [problem.grad(pts[0])], [w], [v], 0.7)
    assert torch.allclose(approx, problem.A @ v, rtol=1e-12, atol=1e-12)


def test_exact_hvp_matches_hessian():
    problem = robust_problem(4)
    w = random_point(4, problem.dim).requires_grad_(True)
    (g,) = torch.autograd.grad(problem.loss(w), [w], create_graph=True)
    v = random_point(5, problem.dim)
    (hv,) = hvp_exact([g], [w], [v])
    assert torch.allclose(hv, problem.hessian(w.detach()) @ v, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- invalid usage


@pytest.mark.parametrize("rho", [-0.1, math.inf, math.nan, "0.1"])
def test_sam_perturbation_rejects_invalid_rho(rho):
    with pytest.raises(ValueError, match="rho must be"):
        sam_perturbation([torch.ones(2)], rho)


def test_sam_perturbation_rejects_row_rho_without_rows():
    with pytest.raises(ValueError, match="rows=True"):
        sam_perturbation([torch.ones(2, 2)], torch.tensor([0.1, 0.2]))


def test_adaptive_needs_params():
    with pytest.raises(ValueError, match="needs params"):
        sam_perturbation([torch.ones(2)], 0.1, adaptive=True)


@pytest.mark.parametrize("delta", [0.0, -1e-3])
def test_central_difference_rejects_invalid_delta(delta):
    with pytest.raises(ValueError, match="delta must be > 0"):
        hvp_central_difference(lambda pts: pts, [torch.ones(2)], [torch.ones(2)], delta)


def test_exact_hvp_rejects_gradients_without_graph():
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="create_graph=True"):
        hvp_exact([torch.ones(2)], [w], [torch.ones(2)])
