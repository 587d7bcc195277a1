"""Tests for theory.trust_region against brute force, including the hard case."""

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.problems import Quadratic, random_orthogonal
from theory.trust_region import max_quadratic_on_ball


def model_value(A: np.ndarray, g: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Return g^T e + e^T A e / 2 for e of shape (..., n)."""
    return e @ g + 0.5 * np.einsum("...i,ij,...j->...", e, A, e)


def ball_samples(n: int, rho: float, count: int, seed: int) -> np.ndarray:
    """Return points on the sphere (most of them) and inside the ball of radius rho."""
    rng = np.random.default_rng(seed)
    if n == 2:
        angles = np.linspace(0, 2 * np.pi, count, endpoint=False)
        sphere = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    else:
        directions = rng.standard_normal((count, n))
        sphere = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    shells = np.concatenate([sphere * rho * s for s in (1.0, 0.75, 0.5, 0.25)])
    return np.concatenate([shells, np.zeros((1, n))])


def polished_maximum(A: np.ndarray, g: np.ndarray, rho: float, start: np.ndarray) -> float:
    """Return a local maximum of the model in the ball found by SLSQP from ``start``."""
    result = scipy.optimize.minimize(
        lambda e: -model_value(A, g, e),
        start,
        jac=lambda e: -(g + A @ e),
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda e: rho**2 - e @ e, "jac": lambda e: -2 * e}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    e = result.x
    norm = np.linalg.norm(e)
    if norm > rho:
        e = e * rho / norm
    return float(model_value(A, g, e))


def check_against_brute_force(A: np.ndarray, g: np.ndarray, rho: float, seed: int) -> None:
    value, e = max_quadratic_on_ball(A, g, rho)
    scale = max(np.abs(A).max() * rho**2, np.linalg.norm(g) * rho, 1e-300)

    assert np.linalg.norm(e) <= rho * (1 + 1e-12)
    assert math.isclose(value, float(model_value(A, g, e)), rel_tol=1e-12, abs_tol=1e-14 * scale)

    samples = ball_samples(A.shape[0], rho, 20_000 if A.shape[0] == 2 else 40_000, seed)
    values = model_value(A, g, samples)
    assert value >= values.max() - 1e-12 * scale
    best = polished_maximum(A, g, rho, samples[int(values.argmax())])
    assert value >= best - 1e-11 * scale
    assert value <= best + 1e-7 * scale


@pytest.mark.parametrize(
    "eigenvalues, rho",
    [
        ([3.0, 1.0], 0.7),          # convex model: boundary solution
        ([2.0, -1.0], 1.3),         # indefinite
        ([-2.0, -3.0], 0.5),        # concave, maximiser may be outside the ball
        ([-2.0, -3.0], 50.0),       # concave, interior maximiser
        ([4.0, -1.0, 0.5], 0.9),
        ([1e-3, 5.0, -5.0], 2.0),
        ([0.0, 0.0, 0.0], 1.0),     # linear model
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(eigenvalues, rho, seed):
    n = len(eigenvalues)
    basis = random_orthogonal(n, seed).numpy()
    A = (basis * np.array(eigenvalues)) @ basis.T
    A = (A + A.T) / 2
    g = np.random.default_rng(seed).standard_normal(n)
    check_against_brute_force(A, g, rho, seed)


def test_hard_case_two_dimensions():
    A = np.diag([2.0, -1.0])
    g = np.array([0.0, 1.0])
    value, e = max_quadratic_on_ball(A, g, 1.0)
    assert math.isclose(value, 7 / 6, rel_tol=1e-14)
    assert math.isclose(abs(e[0]), 2 * math.sqrt(2) / 3, rel_tol=1e-14)
    assert math.isclose(e[1], 1 / 3, rel_tol=1e-14)
    check_against_brute_force(A, g, 1.0, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_case_repeated_top_eigenvalue(seed):
    """g orthogonal to a two-dimensional top eigenspace, in a rotated basis."""
    basis = random_orthogonal(3, seed).numpy()
    A = (basis * np.array([3.0, 3.0, -1.0])) @ basis.T
    A = (A + A.T) / 2
    g = 0.8 * basis[:, 2]
    value, e = max_quadratic_on_ball(A, g, 1.0)
    # Along the bottom direction e_3 = 0.8/(3 - (-1)) = 0.2; the rest of the norm goes
    # to the top eigenspace: value = 0.8*0.2 - 0.02 + 3*(1 - 0.04)/2.
    assert math.isclose(value, 0.16 - 0.02 + 1.5 * 0.96, rel_tol=1e-12)
    check_against_brute_force(A, g, 1.0, seed)


def test_near_hard_case_is_continuous():
    A = np.diag([2.0, -1.0])
    exact, _ = max_quadratic_on_ball(A, np.array([0.0, 1.0]), 1.0)
    for tilt in (1e-6, 1e-9, 1e-13):
        value, e = max_quadratic_on_ball(A, np.array([tilt, 1.0]), 1.0)
        assert math.isclose(value, float(model_value(A, np.array([tilt, 1.0]), e)), rel_tol=1e-12)
        assert abs(value - exact) <= 2 * tilt + 1e-14


@pytest.mark.parametrize(
    "eigenvalues, expected",
    [([2.0, 1.0], 2.0 * 0.25 / 2), ([-1.0, -2.0], 0.0), ([0.0, -1.0], 0.0)],
)
def test_zero_gradient(eigenvalues, expected):
    value, e = max_quadratic_on_ball(np.diag(eigenvalues), np.zeros(2), 0.5)
    assert math.isclose(value, expected, abs_tol=1e-15)
    assert np.all(np.isfinite(e))


def test_zero_radius_gives_zero():
    value, e = max_quadratic_on_ball(np.diag([1.0, 2.0]), np.ones(2), 0.0)
    assert value == 0.0
    assert np.all(e == 0)


def test_batch_matches_single_problems():
    basis = random_orthogonal(3, 4)
    A = (basis * torch.tensor([2.0, -0.5, 1.0], dtype=torch.float64)) @ basis.T
    A = (A + A.T) / 2
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    rho = torch.tensor([0.1, 0.5, 1.0, 2.0, 0.0], dtype=torch.float64)
    values, maximisers = max_quadratic_on_ball(A, g, rho)
    assert values.shape == (5,)
    assert maximisers.shape == (5, 3)
    for row in range(5):
        value, e = max_quadratic_on_ball(A, g[row], float(rho[row]))
        assert math.isclose(float(values[row]), value, rel_tol=1e-14, abs_tol=1e-300)
        torch.testing.assert_close(maximisers[row], e, rtol=1e-13, atol=1e-15)


def test_quadratic_sam_objective_matches_brute_force():
    problem = Quadratic.random(2, L=4.0, mu=0.5, seed=6)
    w = torch.tensor([[0.3, -0.2], [1.0, 2.0]], dtype=torch.float64)
    objective, perturbation = problem.sam_objective(w, 0.4, return_perturbation=True)
    angles = torch.linspace(0, 2 * math.pi, 20_001, dtype=torch.float64)
    circle = 0.4 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    for row in range(2):
        brute = problem.loss(w[row] + circle).max()
        assert float(objective[row]) >= float(brute) - 1e-12
        assert float(objective[row]) <= float(brute) + 1e-6
        assert math.isclose(float(problem.loss(w[row] + perturbation[row])), float(objective[row]), rel_tol=1e-12)


@given(
    entries=st.lists(st.floats(-5, 5), min_size=3, max_size=3),
    direction=st.floats(0, 2 * math.pi),
    magnitude=st.floats(0, 3),
    rho=st.floats(0.01, 3),
)
@settings(max_examples=40, deadline=None)
def test_two_dimensional_optimality(entries, direction, magnitude, rho):
    A = np.array([[entries[0], entries[1]], [entries[1], entries[2]]])
    g = magnitude * np.array([math.cos(direction), math.sin(direction)])
    value, e = max_quadratic_on_ball(A, g, rho)
    scale = max(np.abs(A).max() * rho**2, magnitude * rho, 1e-12)
    assert np.linalg.norm(e) <= rho * (1 + 1e-12)
    samples = ball_samples(2, rho, 4_000, seed=0)
    assert value >= model_value(A, g, samples).max() - 1e-12 * scale
    assert math.isclose(value, float(model_value(A, g, e)), rel_tol=1e-10, abs_tol=1e-12 * scale)


@pytest.mark.parametrize(
    "A, g, rho, message",
    [
        (np.ones((2, 3)), np.ones(2), 1.0, "square"),
        (np.eye(2), np.ones(3), 1.0, r"shape \(2,\)"),
        (np.eye(2), np.ones(2), -0.1, r"\[-0.1\]"),
        (np.array([[1.0, 2.0], [0.0, 1.0]]), np.ones(2), 1.0, "symmetric"),
        (np.eye(2), np.ones((3, 2)), np.ones(2), r"shape \(3,\)"),
    ],
)
def test_invalid_usage_raises_value_error(A, g, rho, message):
    with pytest.raises(ValueError, match=message):
        max_quadratic_on_ball(A, g, rho)
