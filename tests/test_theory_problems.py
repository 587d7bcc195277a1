"""Tests for theory.problems: derivatives, constants, f_star, variance, invalid input."""

import itertools
import math

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.problems import (
    LOGISTIC_THIRD_DERIVATIVE_MAX,
    ROBUST_SECOND_DERIVATIVE_MAX,
    ROBUST_THIRD_DERIVATIVE_MAX,
    LeastSquares,
    Logistic,
    Quadratic,
    RobustRegression,
    random_orthogonal,
)

DTYPE = torch.float64


def make_problem(name: str, seed: int = 0):
    if name == "quadratic":
        return Quadratic.random(4, L=5.0, mu=0.5, seed=seed)
    if name == "indefinite_quadratic":
        basis = random_orthogonal(3, seed)
        eigenvalues = torch.tensor([-2.0, 0.5, 1.5], dtype=DTYPE)
        return Quadratic((basis * eigenvalues) @ basis.T, torch.ones(3, dtype=DTYPE))
    if name == "least_squares":
        return LeastSquares.random(30, 4, seed=seed)
    if name == "logistic":
        return Logistic.random(30, 4, seed=seed, c=0.05)
    if name == "robust":
        return RobustRegression.random(30, 4, seed=seed)
    raise KeyError(name)


PROBLEMS = ["quadratic", "indefinite_quadratic", "least_squares", "logistic", "robust"]
FINITE_SUMS = ["least_squares", "logistic", "robust"]


def random_points(problem, count: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(count, problem.dim, generator=generator, dtype=DTYPE)


# ---------------------------------------------------------------- derivatives


@pytest.mark.parametrize("name", PROBLEMS)
def test_grad_matches_autograd(name):
    problem = make_problem(name)
    w = random_points(problem, 5, seed=1).requires_grad_(True)
    (autograd,) = torch.autograd.grad(problem.loss(w).sum(), w)
    torch.testing.assert_close(problem.grad(w.detach()), autograd, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", PROBLEMS)
def test_hessian_matches_autograd(name):
    problem = make_problem(name)
    points = random_points(problem, 3, seed=2)
    batched = problem.hessian(points)
    assert batched.shape == (3, problem.dim, problem.dim)
    for row in range(3):
        expected = torch.autograd.functional.hessian(lambda v: problem.loss(v), points[row])
        torch.testing.assert_close(batched[row], expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", PROBLEMS)
def test_batched_loss_matches_single_points(name):
    problem = make_problem(name)
    points = random_points(problem, 4, seed=3)
    batched = problem.loss(points)
    assert batched.shape == (4,)
    for row in range(4):
        torch.testing.assert_close(batched[row], problem.loss(points[row]), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", FINITE_SUMS)
def test_sample_grads_match_autograd_and_average(name):
    problem = make_problem(name)
    w = random_points(problem, 2, seed=4)
    per_sample = problem.sample_grads(w)
    assert per_sample.shape == (2, problem.n_samples, problem.dim)
    torch.testing.assert_close(per_sample.mean(dim=-2), problem.grad(w), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(problem.sample_losses(w).mean(dim=-1), problem.loss(w), rtol=1e-13, atol=0)

    idx = torch.tensor([3, 7, 11])
    point = w[0].clone().requires_grad_(True)
    losses = problem.sample_losses(point, idx)
    for column in range(3):
        (expected,) = torch.autograd.grad(losses[column], point, retain_graph=True)
        torch.testing.assert_close(problem.sample_grads(w[0], idx)[column], expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", FINITE_SUMS)
def test_minibatch_grad_per_configuration(name):
    problem = make_problem(name)
    w = random_points(problem, 3, seed=5)
    idx = torch.tensor([[0, 1, 2], [5, 5, 9], [29, 10, 3]])
    batch = problem.minibatch_grad(w, idx)
    for row in range(3):
        expected = problem.sample_grads(w[row], idx[row]).mean(dim=0)
        torch.testing.assert_close(batch[row], expected, rtol=1e-12, atol=1e-13)
    shared = problem.minibatch_grad(w, idx[0])
    torch.testing.assert_close(shared[1], problem.sample_grads(w[1], idx[0]).mean(dim=0), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(
        problem.minibatch_loss(w, idx)[2], problem.sample_losses(w[2], idx[2]).mean(), rtol=1e-13, atol=0
    )


# ---------------------------------------------------------------- constants


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_L_and_mu_are_extreme_eigenvalues(seed):
    problem = Quadratic.random(6, L=12.5, mu=0.25, seed=seed)
    eigenvalues = torch.linalg.eigvalsh(problem.A)
    assert problem.L == 12.5
    assert problem.mu == 0.25
    assert math.isclose(float(eigenvalues[-1]), problem.L, rel_tol=1e-12)
    assert math.isclose(float(eigenvalues[0]), problem.mu, rel_tol=1e-12)
    assert problem.M == 0


def test_quadratic_from_eigenvalues_is_diagonal():
    problem = Quadratic(torch.tensor([3.0, 1.0, 2.0]), torch.zeros(3))
    torch.testing.assert_close(problem.A, torch.diag(torch.tensor([3.0, 1.0, 2.0], dtype=DTYPE)))
    assert problem.L == 3.0
    assert problem.mu == 1.0


def test_indefinite_quadratic_constants():
    problem = make_problem("indefinite_quadratic")
    assert math.isclose(problem.L, 2.0, rel_tol=1e-12)
    assert problem.mu is None
    assert problem.f_star == -math.inf


def test_least_squares_constants_match_definitions():
    problem = make_problem("least_squares")
    gram_eigenvalues = torch.linalg.eigvalsh(problem.X.T @ problem.X / problem.n_samples)
    assert math.isclose(problem.L, float(gram_eigenvalues[-1]), rel_tol=1e-12)
    assert math.isclose(problem.mu, float(gram_eigenvalues[0]), rel_tol=1e-10)
    assert math.isclose(problem.L_i, float((problem.X**2).sum(dim=1).max()), rel_tol=1e-14)
    assert problem.M == 0


def test_logistic_constants_match_definitions():
    problem = make_problem("logistic")
    top = float(torch.linalg.eigvalsh(problem.X.T @ problem.X)[-1])
    N = problem.n_samples
    assert math.isclose(problem.L, top / (4 * N) + problem.c, rel_tol=1e-12)
    assert problem.mu == problem.c
    row_norm = float(problem.X.norm(dim=1).max())
    assert math.isclose(problem.M, row_norm * top / (6 * math.sqrt(3) * N), rel_tol=1e-12)
    assert math.isclose(problem.L_i, row_norm**2 / 4 + problem.c, rel_tol=1e-12)


def test_robust_constants_match_definitions():
    problem = make_problem("robust")
    top = float(torch.linalg.eigvalsh(problem.X.T @ problem.X)[-1])
    assert math.isclose(problem.L, 2 * top / problem.n_samples, rel_tol=1e-12)
    assert problem.mu is None
    assert problem.f_star is None


@pytest.mark.parametrize("name", PROBLEMS)
def test_smoothness_holds_on_random_pairs(name):
    problem = make_problem(name)
    x = random_points(problem, 200, seed=6)
    y = x + torch.logspace(-3, 1, 200, dtype=DTYPE).unsqueeze(-1) * random_points(problem, 200, seed=7, scale=1.0)
    ratios = (problem.grad(x) - problem.grad(y)).norm(dim=-1) / (x - y).norm(dim=-1)
    assert float(ratios.max()) <= problem.L * (1 + 1e-12)


@pytest.mark.parametrize("name", ["logistic", "robust"])
def test_hessian_lipschitz_holds_on_random_pairs(name):
    problem = make_problem(name)
    x = random_points(problem, 100, seed=8)
    y = x + torch.logspace(-3, 0, 100, dtype=DTYPE).unsqueeze(-1) * random_points(problem, 100, seed=9, scale=1.0)
    differences = torch.linalg.matrix_norm(problem.hessian(x) - problem.hessian(y), ord=2)
    assert float((differences / (x - y).norm(dim=-1)).max()) <= problem.M * (1 + 1e-12)


def test_L_is_attained_exactly():
    """L equals the Hessian norm at a point where it is attained (factor 1, not loose)."""
    quadratic = make_problem("quadratic")
    top = quadratic.eigh()[1][:, -1]
    ratio = (quadratic.grad(top) - quadratic.grad(torch.zeros_like(top))).norm() / top.norm()
    assert math.isclose(float(ratio), quadratic.L, rel_tol=1e-12)

    least_squares = make_problem("least_squares")
    norm = torch.linalg.matrix_norm(least_squares.hessian(torch.zeros(4, dtype=DTYPE)), ord=2)
    assert math.isclose(float(norm), least_squares.L, rel_tol=1e-12)

    # Logistic: every margin is 0 at w = 0, where phi'' = 1/4 is maximal.
    logistic = make_problem("logistic")
    norm = torch.linalg.matrix_norm(logistic.hessian(torch.zeros(4, dtype=DTYPE)), ord=2)
    assert math.isclose(float(norm), logistic.L, rel_tol=1e-12)

    # Robust regression: psi''(0) = 2 is maximal, attained where every residual is 0.
    generator = torch.Generator().manual_seed(10)
    X = torch.randn(20, 3, generator=generator, dtype=DTYPE)
    w_true = torch.randn(3, generator=generator, dtype=DTYPE)
    robust = RobustRegression(X, X @ w_true)
    norm = torch.linalg.matrix_norm(robust.hessian(w_true), ord=2)
    assert math.isclose(float(norm), robust.L, rel_tol=1e-12)


def test_link_derivative_extremes_match_constants():
    t = torch.linspace(-8, 8, 1_600_001, dtype=DTYPE)
    s = torch.sigmoid(t)
    logistic_third = (s * (1 - s) * (1 - 2 * s)).abs().max()
    assert math.isclose(float(logistic_third), LOGISTIC_THIRD_DERIVATIVE_MAX, rel_tol=1e-9)
    assert math.isclose(LOGISTIC_THIRD_DERIVATIVE_MAX, 1 / (6 * math.sqrt(3)), rel_tol=1e-15)

    robust_second = (2 - 6 * t**2) / (1 + t**2) ** 3
    assert math.isclose(float(robust_second.abs().max()), ROBUST_SECOND_DERIVATIVE_MAX, rel_tol=1e-12)
    assert math.isclose(float(robust_second.min()), -0.5, rel_tol=1e-9)
    robust_third = 24 * t * (t**2 - 1) / (1 + t**2) ** 4
    assert math.isclose(float(robust_third.abs().max()), ROBUST_THIRD_DERIVATIVE_MAX, rel_tol=1e-9)


def test_logistic_M_is_tight_in_one_dimension():
    """With one sample x = 1, H(w) = phi''(w) + c, so sup |H(x) - H(y)|/|x - y| = max |phi'''| = M."""
    problem = Logistic(torch.ones(1, 1, dtype=DTYPE), torch.ones(1, dtype=DTYPE), c=0.1)
    grid = torch.linspace(-6, 6, 200_001, dtype=DTYPE).unsqueeze(-1)
    curvature = problem.hessian(grid)[:, 0, 0]
    slopes = (curvature[1:] - curvature[:-1]).abs() / (grid[1:, 0] - grid[:-1, 0])
    assert math.isclose(float(slopes.max()), problem.M, rel_tol=1e-6)


@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
@settings(max_examples=25, deadline=None)
def test_logistic_smoothness_on_random_instances(seed, scale):
    problem = Logistic.random(12, 3, seed=seed, c=0.01)
    x = random_points(problem, 20, seed=seed + 1, scale=scale)
    y = random_points(problem, 20, seed=seed + 2, scale=scale)
    ratios = (problem.grad(x) - problem.grad(y)).norm(dim=-1) / (x - y).norm(dim=-1)
    assert float(ratios.max()) <= problem.L * (1 + 1e-12)


# ---------------------------------------------------------------- f_star and PL


def test_quadratic_f_star_is_attained():
    problem = make_problem("quadratic")
    w_star = problem.minimizer
    assert float(problem.grad(w_star).norm()) < 1e-12
    assert math.isclose(float(problem.loss(w_star)), problem.f_star, rel_tol=1e-12)


def test_singular_quadratic_f_star_with_b_in_range():
    problem = Quadratic(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 4.0]))
    assert math.isclose(problem.f_star, -4.0, rel_tol=1e-14)
    assert Quadratic(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 4.0])).f_star == -math.inf


def test_least_squares_f_star_and_pl_constant():
    problem = make_problem("least_squares")
    assert float(problem.grad(problem.minimizer).norm()) < 1e-12
    w = random_points(problem, 50, seed=11)
    gap = problem.loss(w) - problem.f_star
    assert bool((gap >= -1e-15).all())
    assert bool((problem.grad(w).norm(dim=-1) ** 2 >= 2 * problem.mu * gap * (1 - 1e-12)).all())
    # Equality along the bottom eigenvector of X^T X from the minimizer: mu is the PL constant.
    bottom = torch.linalg.eigh(problem.X.T @ problem.X)[1][:, 0]
    point = problem.minimizer + 0.3 * bottom
    ratio = problem.grad(point).norm() ** 2 / (2 * (problem.loss(point) - problem.f_star))
    assert math.isclose(float(ratio), problem.mu, rel_tol=1e-7)


@pytest.mark.parametrize("n_samples, dim", [(40, 5), (10, 30)])
def test_logistic_f_star_matches_scipy(n_samples, dim):
    problem = Logistic.random(n_samples, dim, seed=3, c=0.02)
    assert float(problem.grad(problem.minimizer).norm()) < 1e-12
    assert problem.f_star_error_bound < 1e-20
    result = scipy.optimize.minimize(
        lambda v: float(problem.loss(torch.from_numpy(v))),
        np.zeros(dim),
        jac=lambda v: problem.grad(torch.from_numpy(v)).numpy(),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000},
    )
    assert problem.f_star <= result.fun + 1e-15
    assert math.isclose(problem.f_star, result.fun, rel_tol=1e-8)


def test_logistic_without_l2_has_no_f_star():
    problem = Logistic.random(20, 3, seed=0, c=0.0)
    assert problem.mu is None
    assert problem.f_star is None


# ---------------------------------------------------------------- gradient variance


@pytest.mark.parametrize("replacement", [True, False])
def test_gradient_variance_matches_enumeration(replacement):
    problem = LeastSquares.random(5, 3, seed=12)
    w = random_points(problem, 2, seed=13)
    batch_size = 3
    if replacement:
        batches = list(itertools.product(range(5), repeat=batch_size))
    else:
        batches = list(itertools.combinations(range(5), batch_size))
    idx = torch.tensor(batches)
    for row in range(2):
        means = problem.sample_grads(w[row], None)[idx].mean(dim=1)
        expected = ((means - problem.grad(w[row])) ** 2).sum(dim=-1).mean()
        actual = problem.gradient_variance(w, batch_size, replacement=replacement)[row]
        assert math.isclose(float(actual), float(expected), rel_tol=1e-12)


def test_full_batch_without_replacement_has_zero_variance():
    problem = make_problem("logistic")
    variance = problem.gradient_variance(random_points(problem, 3, seed=14), problem.n_samples, replacement=False)
    assert float(variance.abs().max()) < 1e-28


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Quadratic(torch.tensor([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
        (lambda: Quadratic(torch.eye(2), torch.ones(3)), r"b must have shape \(2,\)"),
        (lambda: Quadratic(torch.ones(2, 3)), r"got shape \(2, 3\)"),
        (lambda: Quadratic.random(3, L=1.0, mu=2.0, seed=0), "mu=2.0"),
        (lambda: Logistic(torch.ones(3, 2), torch.tensor([1.0, 0.0, -1.0])), "got 0.0 at index 1"),
        (lambda: Logistic(torch.ones(3, 2), torch.ones(3), c=-1.0), "got -1.0"),
        (lambda: LeastSquares(torch.ones(3, 2), torch.ones(4)), "3 rows"),
        (lambda: LeastSquares(torch.tensor([[1.0, math.nan]]), torch.ones(1)), "finite"),
        (lambda: make_problem("quadratic").loss(torch.ones(3, 5, dtype=DTYPE)), r"\(3, 5\)"),
        (lambda: make_problem("logistic").sample_grads(torch.ones(4, dtype=DTYPE), [0, 30]), r"\[0, 30\]"),
        (lambda: make_problem("logistic").minibatch_grad(torch.ones(2, 4, dtype=DTYPE), torch.zeros(3, 2, dtype=torch.long)), r"\(3, 2\)"),
        (lambda: make_problem("robust").gradient_variance(torch.ones(4, dtype=DTYPE), 0), "got 0"),
        (lambda: make_problem("robust").sample_losses(torch.ones(4, dtype=DTYPE), [0.5]), "integer"),
    ],
)
def test_invalid_usage_raises_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()
