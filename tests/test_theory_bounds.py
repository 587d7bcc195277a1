"""Tests for theory.bounds: exact formulas, tight cases, runs that respect every bound,
and negative controls that must violate them."""

import math

import numpy as np
import pytest
import torch

from theory import bounds
from theory.problems import LeastSquares, Logistic, Quadratic, RobustRegression

DTYPE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run these many small tensor operations on one thread (less contention, faster)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------- run helpers


def binarize(w: torch.Tensor) -> torch.Tensor:
    """Scaled one-bit quantizer per row: mean|w| * sgn(w), with sgn(0) = +1."""
    return w.abs().mean(dim=-1, keepdim=True) * torch.where(w >= 0, 1.0, -1.0)


def normalized(g: torch.Tensor, rho) -> torch.Tensor:
    norm = g.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, rho * g / norm.clamp_min(1e-300), torch.zeros_like(g))


def sam_run(problem, w0, eta, rho, steps, *, theta=None, lam=None):
    """Run batched (one-bit) SAM; return a dict of per-step tensors with shape (C, K, ...).

    theta None: plain SAM, x_k = w_k. lam = inf: straight-through (x_k = q(w_k), theta = 1);
    a finite lam: relaxed x_k = (w_k + lam q(w_k)) / (1 + lam), theta = lam / (1 + lam).
    """
    w = w0.clone()
    record = {"w": [w], "a": [], "b": [], "displacement": [], "delta": []}
    for _ in range(steps):
        if lam is None:
            x = w
        elif math.isinf(lam):
            x = binarize(w)
        else:
            x = (w + lam * binarize(w)) / (1 + lam)
        point = x + normalized(problem.grad(x), rho)
        b = problem.grad(point)
        record["a"].append(problem.grad(w))
        record["b"].append(b)
        record["displacement"].append(point - w)
        record["delta"].append((binarize(w) - w).norm(dim=-1))
        w = w - eta * b
        record["w"].append(w)
    result = {key: torch.stack(value, dim=1) for key, value in record.items()}
    result["loss"] = problem.loss(result["w"])
    return result


def quadratic_1d(curvature: float) -> Quadratic:
    return Quadratic(torch.tensor([curvature], dtype=DTYPE))


# ---------------------------------------------------------------- formulas


@pytest.mark.parametrize(
    "value, expected",
    [
        (lambda: bounds.one_step_bound(10.0, 4.0, 9.0, 2.0, 0.25, 0.5), 10 - 0.5 - 0.5625 + 0.125),
        (lambda: bounds.t1_bound(5.0, 3.0, 0.5, 4, 2.0, 0.1), 2.0 + 0.04),
        (lambda: bounds.t2_bound(5.0, 3.0, 0.5, 4, 2.0, 0.09), 2.0 + 0.36),
        (lambda: bounds.deployed_grad_norm_bound(1.5, 2.0, 0.25), 2.0),
        (lambda: bounds.deployed_loss_bound(1.0, 2.0, 4.0, 0.5), 1.0 + 1.0 + 0.5),
        (lambda: bounds.t3a_bound(5.0, 1.0, 0.5, 4, 2.0, 0.09, 3.0), 4.0 + 0.36 + 3.0),
        (lambda: bounds.t3b_bound(5.0, 1.0, 0.125, 4, 2.0, 0.09, 3.0), 32.0 + 1.08 + 3.0),
        (lambda: bounds.t4_threshold(2.0, 0.25), 2 / 3),
        (lambda: bounds.t4_threshold(2.0, 0.25, method="gd"), 1.0),
        (lambda: bounds.t5_bound(8.0, 0.5, 1.0, 2.0, 3, 0.25), 1.0 + 0.5),
        (lambda: bounds.sam_two_cycle_amplitude(0.5, 2.0, 0.3), 0.3),
        (lambda: bounds.sam_two_cycle_amplitude(0.75, 2.0, 0.2), 0.6),
        (lambda: bounds.s1_bounds(1.0, 2.0, 4.0, 0.5)[0], 1.0 + 1.0 - 0.5),
        (lambda: bounds.s1_bounds(1.0, 2.0, 4.0, 0.5)[1], 1.0 + 1.0 + 0.5),
        (lambda: bounds.s1_gap_bound(4.0, 0.5), 1.0),
        (lambda: bounds.s2_bound(3.0, 0.5), 1.5),
        (lambda: bounds.sam_jacobian_norm_bound(3.0, 0.5, 2.0), 0.75),
        (lambda: bounds.sam_jacobian_norm_bound(3.0, 0.5, normalize=False), 1.5),
        (lambda: bounds.type1_error_bound(4.0, 3.0, 0.5, 2.0), 3.0),
        (lambda: bounds.type1_error_bound(4.0, 3.0, 0.5, normalize=False), 6.0),
        (lambda: bounds.s3_fd_bound(2.0, 0.1, 3.0), 0.9),
    ],
)
def test_formula_values(value, expected):
    assert math.isclose(float(value()), expected, rel_tol=1e-14)


def test_formulas_vectorise_over_configurations():
    eta = torch.tensor([0.1, 0.2, 0.4], dtype=DTYPE)
    rho = np.array([0.0, 0.1, 0.2])
    threshold = bounds.t4_threshold(torch.tensor([1.0, 2.0, 4.0], dtype=DTYPE), torch.from_numpy(rho))
    assert threshold.shape == (3,)
    t1 = bounds.t1_bound(torch.ones(3, dtype=DTYPE), torch.zeros(3, dtype=DTYPE), eta, 10, 2.0, torch.from_numpy(rho))
    torch.testing.assert_close(t1, 2 / (eta * 10) + 4 * torch.from_numpy(rho) ** 2)
    numpy_t1 = bounds.t1_bound(np.ones(3), np.zeros(3), eta.numpy(), 10, 2.0, rho)
    assert isinstance(numpy_t1, np.ndarray)
    np.testing.assert_allclose(numpy_t1, t1.numpy(), rtol=1e-15)


def test_t5_along_run_unrolls_recursion():
    r2 = torch.tensor([[0.04, 0.01, 0.09, 0.0]], dtype=DTYPE)
    along = bounds.t5_bound_along_run(torch.tensor([2.0], dtype=DTYPE), 0.25, 1.0, 2.0, r2)
    expected, current = [], 2.0
    for value in r2[0].tolist():
        current = 0.75 * current + 0.5 * 0.25 * 4.0 * value
        expected.append(current)
    torch.testing.assert_close(along[0], torch.tensor(expected, dtype=DTYPE), rtol=1e-15, atol=0)
    closed = bounds.t5_bound(2.0, 0.25, 1.0, 2.0, torch.arange(1, 5, dtype=DTYPE), 0.09)
    assert bool((along[0] <= closed).all())


def test_t2_along_run_averages_squared_radii():
    losses = torch.tensor([[4.0, 3.0, 2.5, 2.0]], dtype=DTYPE)
    r = torch.tensor([[0.1, 0.3, 0.2]], dtype=DTYPE)
    bound = bounds.t2_bound_along_run(losses, r, 0.5, 2.0)
    mean_r2 = torch.tensor([0.01, 0.05, 0.14 / 3], dtype=DTYPE)
    expected = 2 * (4.0 - losses[0, 1:]) / (0.5 * torch.arange(1, 4, dtype=DTYPE)) + 4.0 * mean_r2
    torch.testing.assert_close(bound[0], expected, rtol=1e-14, atol=0)


def test_running_mean_matches_cumulative_average():
    x = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 8.0]], dtype=DTYPE)
    torch.testing.assert_close(bounds.running_mean(x), torch.tensor([[1.0, 2.0, 3.0], [2.0, 2.0, 4.0]], dtype=DTYPE))
    np.testing.assert_allclose(bounds.running_mean(x.numpy()), bounds.running_mean(x).numpy())


# ---------------------------------------------------------------- T1: tight case and runs


@pytest.mark.parametrize("L, rho", [(1.0, 0.1), (4.0, 0.05), (10.0, 1.0)])
def test_t1_tight_case_is_exact(L, rho):
    """f = L w^2/2, normalised SAM, eta = 1/L, w_0 = rho: the 2-cycle +-rho meets T1 with equality."""
    problem = quadratic_1d(L)
    run = sam_run(problem, torch.tensor([[rho]], dtype=DTYPE), 1 / L, rho, steps=21)
    torch.testing.assert_close(run["w"][0, :, 0].abs(), torch.full((22,), rho, dtype=DTYPE), rtol=1e-12, atol=0)

    average = bounds.running_mean((run["a"] ** 2).sum(dim=-1))[0]
    K = torch.arange(1, 22, dtype=DTYPE)
    bound = bounds.t1_bound(run["loss"][0, 0], run["loss"][0, 1:], 1 / L, K, L, rho)
    torch.testing.assert_close(average, torch.full((21,), L**2 * rho**2, dtype=DTYPE), rtol=1e-10, atol=0)
    torch.testing.assert_close(bound, average, rtol=1e-10, atol=0)

    one_step = bounds.one_step_bound(
        run["loss"][0, :-1], (run["a"] ** 2).sum(-1)[0], (run["b"] ** 2).sum(-1)[0], L, 1 / L, rho
    )
    torch.testing.assert_close(one_step, run["loss"][0, 1:], rtol=1e-12, atol=0)


def test_t1_fails_with_L_over_ten():
    L, rho = 2.0, 0.3
    run = sam_run(quadratic_1d(L), torch.tensor([[rho]], dtype=DTYPE), 1 / L, rho, steps=10)
    average = bounds.running_mean((run["a"] ** 2).sum(dim=-1))[0]
    bound = bounds.t1_bound(run["loss"][0, 0], run["loss"][0, 1:], 1 / L, torch.arange(1, 11), L / 10, rho, check_step=False)
    assert bool((average > bound).all())


def make_problem(name):
    if name == "quadratic":
        return Quadratic.random(5, L=4.0, mu=0.1, seed=0)
    if name == "logistic":
        return Logistic.random(40, 5, seed=1, c=0.01)
    if name == "robust":
        return RobustRegression.random(40, 5, seed=2)
    raise KeyError(name)


def sweep(problem, count_per_setting=2, seed=0):
    """Start points and (eta, rho) for a batched sweep: C = 6 * count_per_setting rows."""
    settings = [(f, rho) for f in (1.0, 0.5, 0.1) for rho in (0.02, 0.2)]
    eta = torch.tensor([f / problem.L for f, _ in settings for _ in range(count_per_setting)], dtype=DTYPE)
    rho = torch.tensor([r for _, r in settings for _ in range(count_per_setting)], dtype=DTYPE)
    generator = torch.Generator().manual_seed(seed)
    w0 = 2.0 * torch.randn(eta.shape[0], problem.dim, generator=generator, dtype=DTYPE)
    return w0, eta.unsqueeze(-1), rho.unsqueeze(-1)


@pytest.mark.parametrize("name", ["quadratic", "logistic", "robust"])
def test_t1_and_one_step_hold_along_batched_runs(name):
    problem = make_problem(name)
    w0, eta, rho = sweep(problem)
    run = sam_run(problem, w0, eta, rho, steps=100)

    a2, b2 = (run["a"] ** 2).sum(-1), (run["b"] ** 2).sum(-1)
    one_step = bounds.one_step_bound(run["loss"][:, :-1], a2, b2, problem.L, eta, rho)
    assert bool((run["loss"][:, 1:] <= one_step + 1e-12).all())

    K = torch.arange(1, 101, dtype=DTYPE)
    bound = bounds.t1_bound(run["loss"][:, :1], run["loss"][:, 1:], eta, K, problem.L, rho)
    assert bool((bounds.running_mean(a2) <= bound * (1 + 1e-12)).all())


def test_one_step_inequality_holds_for_large_steps():
    """The one-step inequality needs no step-size condition; only T1 does."""
    problem = make_problem("quadratic")
    w0 = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    eta = 1.8 / problem.L
    run = sam_run(problem, w0, eta, 0.1, steps=30)
    one_step = bounds.one_step_bound(
        run["loss"][:, :-1], (run["a"] ** 2).sum(-1), (run["b"] ** 2).sum(-1), problem.L, eta, 0.1
    )
    assert bool((run["loss"][:, 1:] <= one_step + 1e-10 * run["loss"][:, :-1].abs().clamp_min(1)).all())


# ---------------------------------------------------------------- T2 and the deployed point


@pytest.mark.parametrize("lam, theta", [(math.inf, 1.0), (3.0, 0.75)])
@pytest.mark.parametrize("name", ["quadratic", "robust"])
def test_t2_holds_for_one_bit_sam(name, lam, theta):
    problem = make_problem(name)
    w0, eta, rho = sweep(problem, seed=4)
    run = sam_run(problem, w0, eta, rho, steps=60, lam=lam)
    r = rho + theta * run["delta"]
    assert bool((run["displacement"].norm(dim=-1) <= r * (1 + 1e-12)).all())

    a2 = (run["a"] ** 2).sum(-1)
    bound = bounds.t2_bound_along_run(run["loss"], r, eta, problem.L)
    assert bool((bounds.running_mean(a2) <= bound * (1 + 1e-12)).all())

    # Without the quantization term the bound is T1's, which one-bit SAM can break.
    if name == "quadratic" and math.isinf(lam):
        K = torch.arange(1, 61, dtype=DTYPE)
        t1 = bounds.t1_bound(run["loss"][:, :1], run["loss"][:, 1:], eta, K, problem.L, rho)
        assert bool((bounds.running_mean(a2) > t1).any())


@pytest.mark.parametrize("name", ["quadratic", "logistic", "robust"])
def test_deployed_point_bounds_hold(name):
    problem = make_problem(name)
    w = 1.5 * torch.randn(200, problem.dim, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    q = binarize(w)
    delta = (q - w).norm(dim=-1)
    grad_norm = problem.grad(w).norm(dim=-1)
    assert bool((problem.grad(q).norm(dim=-1) <= bounds.deployed_grad_norm_bound(grad_norm, problem.L, delta) * (1 + 1e-12)).all())
    loss_bound = bounds.deployed_loss_bound(problem.loss(w), grad_norm, problem.L, delta)
    assert bool((problem.loss(q) <= loss_bound + 1e-12 * loss_bound.abs().clamp_min(1)).all())


# ---------------------------------------------------------------- T3: stochastic runs


def stochastic_sam_run(problem, w0, eta, rho, steps, batch_size, *, independent, seed):
    generator = torch.Generator().manual_seed(seed)
    C = w0.shape[0]
    w = w0.clone()
    a2, descent_points, ascent_points = [], [], []
    for _ in range(steps):
        ascent = torch.randint(problem.n_samples, (C, batch_size), generator=generator)
        descent = torch.randint(problem.n_samples, (C, batch_size), generator=generator) if independent else ascent
        point = w + normalized(problem.minibatch_grad(w, ascent), rho)
        a2.append((problem.grad(w) ** 2).sum(-1))
        ascent_points.append(w)
        descent_points.append(point)
        w = w - eta * problem.minibatch_grad(point, descent)
    return torch.stack(a2, dim=1), torch.stack(ascent_points, dim=1), torch.stack(descent_points, dim=1)


@pytest.mark.parametrize("independent", [True, False])
def test_t3_holds_in_mean_over_seeds(independent):
    problem = LeastSquares.random(40, 5, seed=6, noise=0.5)
    seeds, steps, batch_size, rho = 256, 40, 4, 0.05
    if independent:
        eta, L = 1 / problem.L, problem.L
    else:
        eta, L = 1 / (4 * problem.L_i), problem.L_i
    w0 = torch.ones(seeds, problem.dim, dtype=DTYPE)
    a2, ascent_points, descent_points = stochastic_sam_run(
        problem, w0, eta, rho, steps, batch_size, independent=independent, seed=7
    )
    # sigma^2: the maximum exact minibatch variance over the points the proof uses.
    visited = descent_points if independent else ascent_points
    sigma2 = float(problem.gradient_variance(visited.reshape(-1, problem.dim), batch_size).max())

    averages = bounds.running_mean(a2)
    mean = averages.mean(dim=0)
    standard_error = averages.std(dim=0) / math.sqrt(seeds)
    K = torch.arange(1, steps + 1, dtype=DTYPE)
    f0 = float(problem.loss(w0[0]))
    bound_function = bounds.t3a_bound if independent else bounds.t3b_bound
    bound = bound_function(f0, problem.f_star, eta, K, L, rho**2, sigma2)
    assert bool((bound >= mean + 3 * standard_error).all())


# ---------------------------------------------------------------- T4, T5, 2-cycle


@pytest.mark.parametrize("rho", [0.0, 0.1, 1.0])
def test_t4_threshold_separates_convergence_from_divergence(rho):
    problem = Quadratic.random(6, L=5.0, mu=0.2, seed=8)
    threshold = bounds.t4_threshold(problem.L, rho)
    identity = torch.eye(6, dtype=DTYPE)
    A = problem.A
    for factor, converges in [(1 - 1e-6, True), (1 + 1e-6, False)]:
        eta = factor * threshold
        radius = torch.linalg.eigvals(identity - eta * A - eta * rho * A @ A).abs().max()
        assert (float(radius) < 1) == converges


def test_t4_gd_threshold_separates_convergence_from_divergence():
    A = Quadratic.random(4, L=3.0, mu=0.5, seed=9).A
    threshold = bounds.t4_threshold(3.0, method="gd")
    for factor, converges in [(1 - 1e-6, True), (1 + 1e-6, False)]:
        radius = torch.linalg.eigvals(torch.eye(4, dtype=DTYPE) - factor * threshold * A).abs().max()
        assert (float(radius) < 1) == converges


@pytest.mark.parametrize("eta_times_L", [0.5, 1.0, 1.5, 1.9])
def test_two_cycle_amplitude_is_a_fixed_cycle(eta_times_L):
    L, rho = 2.0, 0.3
    amplitude = bounds.sam_two_cycle_amplitude(eta_times_L / L, L, rho)
    run = sam_run(quadratic_1d(L), torch.tensor([[amplitude]], dtype=DTYPE), eta_times_L / L, rho, steps=6)
    torch.testing.assert_close(run["w"][0, :, 0].abs(), torch.full((7,), amplitude, dtype=DTYPE), rtol=1e-12, atol=0)
    assert float(run["w"][0, 1, 0]) < 0


@pytest.mark.parametrize("name", ["quadratic", "logistic"])
def test_t5_holds_along_runs(name):
    problem = make_problem(name)
    w0, _, rho = sweep(problem, seed=10)
    eta, steps = 1 / problem.L, 100
    run = sam_run(problem, w0, eta, rho, steps=steps)
    gap = run["loss"][:, 1:] - problem.f_star
    initial_gap = run["loss"][:, 0] - problem.f_star
    r2 = (rho**2).expand(-1, steps)
    along = bounds.t5_bound_along_run(initial_gap, eta, problem.mu, problem.L, r2)
    assert along.shape == gap.shape
    assert bool((gap <= along + 1e-12).all())
    K = torch.arange(1, steps + 1, dtype=DTYPE)
    closed = bounds.t5_bound(initial_gap.unsqueeze(-1), eta, problem.mu, problem.L, K, rho**2)
    assert bool((along <= closed * (1 + 1e-12)).all())


def test_t5_fails_with_mu_times_ten():
    problem = make_problem("quadratic")
    w0, _, rho = sweep(problem, seed=11)
    eta, steps = 1 / problem.L, 100
    run = sam_run(problem, w0, eta, rho, steps=steps)
    gap = run["loss"][:, 1:] - problem.f_star
    wrong = bounds.t5_bound_along_run(
        run["loss"][:, 0] - problem.f_star, eta, 10 * problem.mu, problem.L, (rho**2).expand(-1, steps)
    )
    assert bool((gap > wrong).any())


# ---------------------------------------------------------------- S1, S2, type-1 error, S3


def test_s1_sandwich_on_exact_sam_objective():
    problem = Quadratic.random(4, L=3.0, mu=0.0, seed=12)
    w = torch.randn(50, 4, generator=torch.Generator().manual_seed(13), dtype=DTYPE)
    for rho in (0.01, 0.3, 2.0):
        g = problem.grad(w)
        ascent = problem.loss(w + normalized(g, rho))
        exact = problem.sam_objective(w, rho)
        lower, upper = bounds.s1_bounds(problem.loss(w), g.norm(dim=-1), problem.L, rho)
        slack = 1e-12 * upper.abs().clamp_min(1)
        assert bool((lower <= ascent + slack).all())
        assert bool((ascent <= exact + slack).all())
        assert bool((exact <= upper + slack).all())
        assert bool((exact - ascent <= bounds.s1_gap_bound(problem.L, rho) + slack).all())


def test_s1_bounds_are_attained():
    L, rho = 3.0, 0.4
    w = torch.tensor([[0.7]], dtype=DTYPE)
    convex = quadratic_1d(L)
    _, upper = bounds.s1_bounds(convex.loss(w), convex.grad(w).norm(dim=-1), L, rho)
    torch.testing.assert_close(convex.sam_objective(w, rho), upper, rtol=1e-13, atol=0)
    concave = quadratic_1d(-L)
    lower, _ = bounds.s1_bounds(concave.loss(w), concave.grad(w).norm(dim=-1), L, rho)
    torch.testing.assert_close(concave.loss(w + normalized(concave.grad(w), rho)), lower, rtol=1e-13, atol=0)


def test_s2_holds_and_is_attained():
    problem = make_problem("robust")
    w = torch.randn(100, 5, generator=torch.Generator().manual_seed(14), dtype=DTYPE)
    e = normalized(torch.randn(100, 5, generator=torch.Generator().manual_seed(15), dtype=DTYPE), 0.5)
    change = (problem.grad(w + e) - problem.grad(w)).norm(dim=-1)
    assert bool((change <= bounds.s2_bound(problem.L, e.norm(dim=-1)) * (1 + 1e-12)).all())

    quadratic = make_problem("quadratic")
    top = quadratic.eigh()[1][:, -1]
    change = (quadratic.grad(0.5 * top) - quadratic.grad(torch.zeros(5, dtype=DTYPE))).norm()
    assert math.isclose(float(change), float(bounds.s2_bound(quadratic.L, 0.5)), rel_tol=1e-12)


def sam_gradient_error(problem, w, rho, normalize):
    """Return ||grad F(w) - G1|| and ||G1|| for F(w) = f(w + e(w)), by autograd."""
    point = w.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(problem.loss(point).sum(), point, create_graph=True)
    perturbation = normalized(g, rho) if normalize else rho * g
    objective = problem.loss(point + perturbation)
    (exact,) = torch.autograd.grad(objective.sum(), point)
    first_order = problem.grad((w + perturbation).detach())
    return (exact - first_order).norm(dim=-1), first_order.norm(dim=-1), g.detach().norm(dim=-1)


@pytest.mark.parametrize("normalize", [True, False])
def test_type1_error_bound_holds(normalize):
    problem = make_problem("logistic")
    w = torch.randn(50, 5, generator=torch.Generator().manual_seed(16), dtype=DTYPE)
    error, g1_norm, g_norm = sam_gradient_error(problem, w, 0.2, normalize)
    bound = bounds.type1_error_bound(g1_norm, problem.L, 0.2, g_norm, normalize=normalize)
    assert bool((error <= bound * (1 + 1e-10)).all())


def test_type1_error_bound_is_attained_for_usam():
    L, rho = 2.0, 0.3
    problem = Quadratic(torch.tensor([0.5, L], dtype=DTYPE))
    w = torch.tensor([[0.0, 1.0]], dtype=DTYPE)
    error, g1_norm, _ = sam_gradient_error(problem, w, rho, normalize=False)
    bound = bounds.type1_error_bound(g1_norm, L, rho, normalize=False)
    torch.testing.assert_close(error, bound, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["logistic", "robust"])
@pytest.mark.parametrize("delta", [0.3, 1e-2])
def test_s3_central_difference_bound_holds(name, delta):
    problem = make_problem(name)
    w = torch.randn(40, 5, generator=torch.Generator().manual_seed(17), dtype=DTYPE)
    v = 2.0 * torch.randn(40, 5, generator=torch.Generator().manual_seed(18), dtype=DTYPE)
    estimate = (problem.grad(w + delta * v) - problem.grad(w - delta * v)) / (2 * delta)
    exact = torch.einsum("cij,cj->ci", problem.hessian(w), v)
    error = (estimate - exact).norm(dim=-1)
    assert bool((error <= bounds.s3_fd_bound(problem.M, delta, v.norm(dim=-1)) + 1e-12).all())


def test_s3_central_difference_exact_on_quadratics():
    problem = make_problem("quadratic")
    w = torch.randn(10, 5, generator=torch.Generator().manual_seed(19), dtype=DTYPE)
    v = torch.randn(10, 5, generator=torch.Generator().manual_seed(20), dtype=DTYPE)
    estimate = (problem.grad(w + 1e-2 * v) - problem.grad(w - 1e-2 * v)) / 2e-2
    assert problem.M == 0
    torch.testing.assert_close(estimate, v @ problem.A, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: bounds.t1_bound(1.0, 0.0, 0.6, 5, 2.0, 0.1), r"eta <= 1/L.*eta \* L = 1.2"),
        (lambda: bounds.t3b_bound(1.0, 0.0, 0.2, 5, 2.0, 0.1, 1.0), r"1/\(4 L\)"),
        (lambda: bounds.t1_bound(1.0, 0.0, -0.1, 5, 2.0, 0.1), r"eta must be > 0.*-0.1"),
        (lambda: bounds.t1_bound(1.0, 0.0, 0.1, 0, 2.0, 0.1), r"K must be > 0"),
        (lambda: bounds.t1_bound(1.0, 0.0, 0.1, 3, 2.0, -0.1), r"rho must be >= 0"),
        (lambda: bounds.t4_threshold(1.0, 0.1, method="sam"), r"'sam'"),
        (lambda: bounds.t4_threshold(0.0, 0.1), r"L must be > 0"),
        (lambda: bounds.sam_two_cycle_amplitude(1.0, 2.0, 0.1), r"eta \* L = 2.0"),
        (lambda: bounds.type1_error_bound(1.0, 1.0, 0.1), "grad_norm"),
        (lambda: bounds.s3_fd_bound(1.0, 0.0, 1.0), r"delta must be > 0"),
        (lambda: bounds.t5_bound(1.0, 0.1, 0.0, 1.0, 3, 0.1), r"mu must be > 0"),
        (lambda: bounds.t2_bound_along_run(np.ones(3), np.ones(3), 0.1, 1.0), r"\(3,\) and \(3,\)"),
    ],
)
def test_invalid_usage_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_check_step_false_evaluates_outside_hypothesis():
    value = bounds.t1_bound(1.0, 0.0, 0.6, 5, 2.0, 0.1, check_step=False)
    assert math.isclose(value, 2 / 3 + 0.04, rel_tol=1e-14)
