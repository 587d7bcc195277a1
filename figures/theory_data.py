"""Data for the theory figures: runs of ``bqsam.BinarySAM`` in float64 on problems with known constants.

Every run goes through the optimizer the trainer uses. A sweep is one batched run: the
parameter tensor has one row per configuration (``batched=True``), with one SAM radius
``rho`` or relaxation weight ``lam`` per row, so a figure's sweep costs one tensor computation.

The functions return plain dicts of numpy arrays, which the builders in
:mod:`figures.theory_plots` draw:

- :func:`convergence_data`: running averages of ||grad f(w_k)||^2 against the T1, T2 and
  T3(a) bounds as K grows (SAM, BinaryConnect, BQ-SAM; deterministic and stochastic).
- :func:`floor_data`: the stationarity floor against rho (SAM) and against the quantization
  displacement theta delta (BinaryRelax).
- :func:`gradient_error_data`: the error of the first-order SAM gradient against rho and of
  the central-difference Hessian-vector product against its step delta.
- :func:`stability_data`: converged and diverged USAM runs on an (eta, rho) grid and the
  symbolic T4 boundary.

Example::

    from figures.theory_data import QUICK, stability_data

    data = stability_data(QUICK)
    data["converged"].shape          # (len(data["rho"]), len(data["eta"]))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from torch import Tensor

from bqsam import BinarySAM, quantization_error
from bqsam.hvp import hvp_central_difference
from theory.bounds import running_mean, s3_fd_bound, t1_bound, t2_bound_along_run, t3a_bound, type1_error_bound
from theory.problems import Logistic, Problem, Quadratic
from theory.symbolic import usam_stability_threshold

__all__ = [
    "TheorySizes",
    "QUICK",
    "FULL",
    "Trajectory",
    "run_binarysam",
    "convergence_problem",
    "convergence_data",
    "floor_data",
    "gradient_error_data",
    "stability_data",
]

logger = logging.getLogger(__name__)

DTYPE = torch.float64


@dataclass(frozen=True)
class TheorySizes:
    """Run lengths and sweep sizes of the theory figures.

    Attributes:
        steps: deterministic steps K of the convergence runs.
        stochastic_steps: steps of the stochastic (T3) runs.
        seeds: independent stochastic runs per method (rows of one batched run).
        batch_size: minibatch size B of the stochastic runs.
        floor_steps: steps of each floor run; the floor is the mean over the second half.
        sweep_points: values of rho, lam or delta in each sweep.
        grid: grid points per axis of the stability figure.
        stability_steps: USAM steps per grid point.
    """

    steps: int
    stochastic_steps: int
    seeds: int
    batch_size: int
    floor_steps: int
    sweep_points: int
    grid: int
    stability_steps: int


QUICK = TheorySizes(steps=200, stochastic_steps=200, seeds=8, batch_size=10, floor_steps=400,
                    sweep_points=7, grid=12, stability_steps=100)
FULL = TheorySizes(steps=3000, stochastic_steps=2000, seeds=64, batch_size=10, floor_steps=4000,
                   sweep_points=19, grid=60, stability_steps=300)


@dataclass
class Trajectory:
    """The iterates of one batched run.

    Attributes:
        points: latent weights w_0 .. w_K, shape (K + 1, C, n).
        descent_points: the points where the descent gradient of step k was taken
            (x_k + e_k for SAM-type steps, x_k otherwise), shape (K, C, n).
    """

    points: Tensor
    descent_points: Tensor


def run_binarysam(
    problem: Problem,
    w0: Tensor,
    steps: int,
    *,
    lr: float,
    rho: float | Tensor = 0.0,
    quantizer: str | None = None,
    lam: float | Tensor = 1.0,
    normalize: bool = True,
    batch_size: int | None = None,
    seed: int = 0,
) -> Trajectory:
    """Run ``BinarySAM`` with SGD for ``steps`` steps on every row of ``w0`` (shape (C, n)).

    Each row is an independent problem (``batched=True``): the perturbation norm and the
    binarizer scale are taken per row, and ``rho`` and ``lam`` may hold one value per row.
    With ``batch_size`` every gradient is a minibatch gradient with B indices drawn with
    replacement, freshly at each call of the closure, so the ascent and the descent
    gradients of a SAM step use independent samples (the setting of bound T3(a)).
    """
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if w0.dim() != 2:
        raise ValueError(f"w0 must have shape (C, n), got {tuple(w0.shape)}")

    w = w0.detach().clone().to(DTYPE).requires_grad_(True)
    group = {"params": [w], "batched": True, "rho": rho, "lam": lam}
    optimizer = BinarySAM([group], torch.optim.SGD, quantizer=quantizer, normalize=normalize, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    calls: list[Tensor] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        calls.append(w.detach().clone())
        if batch_size is None:
            loss = problem.loss(w).sum()
        else:
            indices = torch.randint(problem.n_samples, (w.shape[0], batch_size), generator=generator)
            loss = problem.minibatch_loss(w, indices).sum()
        loss.backward()
        return loss

    points = [w.detach().clone()]
    descent_points = []
    for _ in range(steps):
        calls.clear()
        optimizer.step(closure)
        # First-order steps call the closure at x_k and then (SAM) at the descent point.
        descent_points.append(calls[-1])
        points.append(w.detach().clone())
    return Trajectory(torch.stack(points), torch.stack(descent_points))


def convergence_problem(seed: int = 0) -> Logistic:
    """Return the logistic regression problem of the convergence figures (N = 200, n = 20, c = 0.01)."""
    return Logistic.random(n_samples=200, dim=20, seed=seed, c=1e-2)


def _start(problem: Problem, rows: int, seed: int, scale: float = 1.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    w0 = scale * torch.randn(problem.dim, generator=generator, dtype=DTYPE)
    return w0.expand(rows, problem.dim).clone()


def _squared_grad_norms(problem: Problem, points: Tensor) -> Tensor:
    return (problem.grad(points) ** 2).sum(dim=-1)


def _deterministic_series(
    problem: Problem, label: str, theorem: str, steps: int, eta: float, rho: float, quantizer: str | None
) -> dict:
    trajectory = run_binarysam(problem, _start(problem, 1, seed=1), steps, lr=eta, rho=rho, quantizer=quantizer)
    points = trajectory.points[:, 0]
    losses = problem.loss(points)
    average = running_mean(_squared_grad_norms(problem, points[:-1]))
    K = torch.arange(1, steps + 1, dtype=DTYPE)
    if quantizer is None:
        bound = t1_bound(losses[0], losses[1:], eta, K, problem.L, rho)
    else:
        # r_k = rho + theta delta_k with theta = 1 for the straight-through estimator.
        radii = rho + quantization_error(points[:-1], per_channel=True)
        bound = t2_bound_along_run(losses, radii, eta, problem.L)
    return {
        "label": label,
        "theorem": theorem,
        "K": K.numpy(),
        "average": average.numpy(),
        "bound": bound.numpy(),
    }


def _stochastic_series(
    problem: Logistic, label: str, sizes: TheorySizes, eta: float, rho: float, quantizer: str | None
) -> dict:
    steps, seeds = sizes.stochastic_steps, sizes.seeds
    trajectory = run_binarysam(
        problem, _start(problem, seeds, seed=1), steps,
        lr=eta, rho=rho, quantizer=quantizer, batch_size=sizes.batch_size, seed=2,
    )
    points = trajectory.points[:-1]                                    # (K, C, n)
    squared = _squared_grad_norms(problem, points)                     # (K, C)
    averages = running_mean(squared.T)                                 # (C, K)
    mean = averages.mean(dim=0)
    standard_error = averages.std(dim=0) / np.sqrt(seeds)

    if quantizer is None:
        radii = torch.full_like(squared, rho)
    else:
        radii = rho + quantization_error(points.reshape(-1, problem.dim), per_channel=True).reshape(squared.shape)
    mean_r2 = running_mean((radii**2).mean(dim=1))

    # sigma^2: the largest exact minibatch-gradient variance over the visited descent points
    # (the points where the bound's variance term enters), computed in chunks of steps.
    sigma2 = 0.0
    for chunk in torch.split(trajectory.descent_points, 50):
        variance = problem.gradient_variance(chunk, sizes.batch_size, replacement=True)
        sigma2 = max(sigma2, float(variance.max()))

    K = torch.arange(1, steps + 1, dtype=DTYPE)
    f0 = problem.loss(trajectory.points[0, 0])
    bound = t3a_bound(f0, problem.f_star, eta, K, problem.L, mean_r2, sigma2)
    return {
        "label": label,
        "theorem": "T3(a)",
        "K": K.numpy(),
        "average": mean.numpy(),
        "standard_error": standard_error.numpy(),
        "bound": bound.numpy(),
        "sigma2": sigma2,
    }


def convergence_data(sizes: TheorySizes, seed: int = 0) -> dict:
    """Run SAM, BinaryConnect and BQ-SAM on a logistic regression and evaluate T1, T2 and T3(a).

    Deterministic runs use eta = 1/L and full gradients; stochastic runs use eta = 1/(2L),
    ``sizes.seeds`` independent runs of minibatch size B, and report the mean running
    average with its standard error. The T3(a) bound uses the exact minimum f* (Newton's
    method), the mean of r_k^2 over the runs in place of E r_k^2, and the largest exact
    minibatch variance over the visited descent points as sigma^2.
    """
    problem = convergence_problem(seed)
    L = problem.L
    rho = 0.5
    eta = 1.0 / L
    logger.info("convergence: logistic regression N=%d n=%d, L=%.4g, rho=%g, %d steps",
                problem.n_samples, problem.dim, L, rho, sizes.steps)
    deterministic_sam = _deterministic_series(problem, "SAM", "T1", sizes.steps, eta, rho, None)
    deterministic_bc = _deterministic_series(problem, "BC", "T2", sizes.steps, eta, 0.0, "ste")
    deterministic_bqsam = _deterministic_series(problem, "BQ-SAM", "T2", sizes.steps, eta, rho, "ste")
    logger.info("convergence: %d stochastic runs per method, B=%d", sizes.seeds, sizes.batch_size)
    stochastic_sam = _stochastic_series(problem, "SAM", sizes, eta / 2, rho, None)
    stochastic_bqsam = _stochastic_series(problem, "BQ-SAM", sizes, eta / 2, rho, "ste")
    return {
        "problem": f"logistic regression (N={problem.n_samples}, n={problem.dim}, c={problem.c:g})",
        "L": L,
        "rho": rho,
        "eta": eta,
        "panels": [
            {"title": "T1: deterministic SAM, eta = 1/L", "series": [deterministic_sam]},
            {"title": "T2: deterministic one-bit methods, eta = 1/L",
             "series": [deterministic_bc, deterministic_bqsam]},
            {"title": f"T3(a): stochastic, eta = 1/(2L), B = {sizes.batch_size}, {sizes.seeds} runs",
             "series": [stochastic_sam, stochastic_bqsam]},
        ],
    }


def floor_data(sizes: TheorySizes, seed: int = 0) -> dict:
    """Measure the stationarity floor against rho (SAM) and against theta delta (BinaryRelax).

    The floor is the mean of ||grad f(w_k)||^2 over the second half of a run of
    ``sizes.floor_steps`` steps with eta = 1/L. The T1 floor is L^2 rho^2; the T2 floor is
    L^2 times the mean of r_k^2, with r_k = theta delta_k, theta = lam/(1 + lam) and
    delta_k = ||q(w_k) - w_k|| (rho = 0, the relaxation alone).
    """
    problem = convergence_problem(seed)
    L, steps, points = problem.L, sizes.floor_steps, sizes.sweep_points
    tail = slice(steps // 2, steps)

    rhos = torch.logspace(-3, 0, points, dtype=DTYPE)
    logger.info("floor: SAM with %d radii rho in [%g, %g], %d steps", points, rhos[0], rhos[-1], steps)
    start = _start(problem, points, seed=1)
    run = run_binarysam(problem, start, steps, lr=1.0 / L, rho=rhos)
    sam_floor = _squared_grad_norms(problem, run.points[tail]).mean(dim=0)

    lams = torch.logspace(-3, 1, points, dtype=DTYPE)
    logger.info("floor: BinaryRelax with %d weights lam in [%g, %g], %d steps", points, lams[0], lams[-1], steps)
    run = run_binarysam(problem, start, steps, lr=1.0 / L, rho=0.0, quantizer="relax", lam=lams)
    tail_points = run.points[tail]
    relax_floor = _squared_grad_norms(problem, tail_points).mean(dim=0)
    theta = lams / (1 + lams)
    delta = quantization_error(tail_points.reshape(-1, problem.dim), per_channel=True).reshape(tail_points.shape[:2])
    rms_displacement = ((theta * delta) ** 2).mean(dim=0).sqrt()

    return {
        "problem": f"logistic regression (N={problem.n_samples}, n={problem.dim}, c={problem.c:g})",
        "L": L,
        "steps": steps,
        "rho": rhos.numpy(),
        "sam_floor": sam_floor.numpy(),
        "lam": lams.numpy(),
        "rms_displacement": rms_displacement.numpy(),
        "relax_floor": relax_floor.numpy(),
    }


def _sam_objective_gradient(problem: Problem, w: Tensor, rhos: Tensor, normalize: bool = True) -> Tensor:
    """Return grad F(w) for F(w) = f(w + rho g(w)/||g(w)||) (or f(w + rho g(w)) unnormalised),
    row by row, by autograd."""
    point = w.detach().clone().requires_grad_(True)
    gradient = problem.grad(point)
    if normalize:
        gradient = gradient / gradient.norm(dim=-1, keepdim=True)
    perturbation = rhos[:, None] * gradient
    (grad_F,) = torch.autograd.grad(problem.loss(point + perturbation).sum(), point)
    return grad_F


def _one_step_gradient(
    problem: Problem, w: Tensor, rhos: Tensor, sam_grad: str, fd_delta: float = 1e-3, normalize: bool = True
) -> Tensor:
    """Return the gradient G that one BinarySAM step with lr = 1 applies: G = w_0 - w_1."""
    point = w.detach().clone().requires_grad_(True)
    optimizer = BinarySAM([{"params": [point], "batched": True, "rho": rhos}], torch.optim.SGD,
                          sam_grad=sam_grad, fd_delta=fd_delta, normalize=normalize, lr=1.0)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = problem.loss(point).sum()
        loss.backward(create_graph=optimizer.create_graph)
        return loss

    optimizer.step(closure)
    return (w - point).detach()


def gradient_error_data(sizes: TheorySizes, seed: int = 0) -> dict:
    """Measure the SAM gradient errors at one point of a logistic regression (smooth, M > 0).

    Against rho: ||grad F - G1|| for the first-order gradient G1 = grad f(w + e), normalised
    and unnormalised (USAM), and
    ||grad F - G2|| for the Hessian-corrected gradient (exact and central-difference
    Hessian-vector products), with the bound ||J|| ||G1|| <= (rho L/||g||) ||G1||.
    grad F is differentiated by autograd through F(w) = f(w + rho g(w)/||g(w)||), and each
    G is the update of one BinarySAM step with lr = 1. For the normalised perturbation the
    error is O(rho^2), not O(rho): grad F - G1 = J^T G1 with
    J^T = (rho/||g||) H (I - u u^T) and G1 = g + O(rho), and (I - u u^T) g = 0 removes the
    first-order term. For USAM, J^T G1 = rho H g + O(rho^2), so the error is O(rho).

    Against delta: the error ||HVP_delta(w, v) - H(w) v|| of the central difference for a
    unit vector v, next to the bound (M delta/2) ||v||^2, and the error of the G2 that
    BinarySAM's ``sam_grad="hessian-fd"`` step computes with ``fd_delta = delta``.
    """
    problem = convergence_problem(seed)
    points = sizes.sweep_points
    w = _start(problem, 1, seed=1)[0]

    rhos = torch.logspace(-4, 0, points, dtype=DTYPE)
    logger.info("gradient error: %d radii rho in [%g, %g]", points, rhos[0], rhos[-1])
    rows = w.expand(points, problem.dim).clone()
    exact = _sam_objective_gradient(problem, rows, rhos)
    first_order = _one_step_gradient(problem, rows, rhos, "first-order")
    hessian_exact = _one_step_gradient(problem, rows, rhos, "hessian-exact")
    hessian_fd = _one_step_gradient(problem, rows, rhos, "hessian-fd", fd_delta=1e-3)
    grad_norm = problem.grad(w).norm()
    bound = type1_error_bound(first_order.norm(dim=-1), problem.L, rhos, grad_norm)
    usam_exact = _sam_objective_gradient(problem, rows, rhos, normalize=False)
    usam_first_order = _one_step_gradient(problem, rows, rhos, "first-order", normalize=False)
    usam_bound = type1_error_bound(usam_first_order.norm(dim=-1), problem.L, rhos, normalize=False)

    deltas = torch.logspace(-6, 0, points, dtype=DTYPE)
    logger.info("gradient error: %d central-difference steps delta in [%g, %g]", points, deltas[0], deltas[-1])
    generator = torch.Generator().manual_seed(seed + 3)
    v = torch.randn(problem.dim, generator=generator, dtype=DTYPE)
    v = v / v.norm()
    exact_product = problem.hessian(w) @ v

    def grad_at(at: list[Tensor]) -> list[Tensor]:
        return [problem.grad(at[0])]

    hvp_error = torch.stack([
        (hvp_central_difference(grad_at, [w], [v], float(delta))[0] - exact_product).norm() for delta in deltas
    ])
    fixed_rho = torch.tensor([0.1], dtype=DTYPE)
    exact_at_rho = _sam_objective_gradient(problem, w[None], fixed_rho)
    g2_error = torch.stack([
        (_one_step_gradient(problem, w[None], fixed_rho, "hessian-fd", float(delta)) - exact_at_rho).norm()
        for delta in deltas
    ])

    return {
        "problem": f"logistic regression (N={problem.n_samples}, n={problem.dim}, c={problem.c:g})",
        "L": problem.L,
        "M": problem.M,
        "rho": rhos.numpy(),
        "first_order_error": (exact - first_order).norm(dim=-1).numpy(),
        "first_order_bound": bound.numpy(),
        "usam_first_order_error": (usam_exact - usam_first_order).norm(dim=-1).numpy(),
        "usam_first_order_bound": usam_bound.numpy(),
        "hessian_exact_error": (exact - hessian_exact).norm(dim=-1).numpy(),
        "hessian_fd_error": (exact - hessian_fd).norm(dim=-1).numpy(),
        "fd_delta": 1e-3,
        "delta": deltas.numpy(),
        "hvp_error": hvp_error.numpy(),
        "hvp_bound": s3_fd_bound(problem.M, deltas, 1.0).numpy(),
        "g2_fd_error": g2_error.numpy(),
        "g2_rho": float(fixed_rho),
    }


def stability_data(sizes: TheorySizes, seed: int = 0) -> dict:
    """Run USAM (rho g, unnormalised) on a quadratic over an (eta, rho) grid as one batched run.

    The quadratic has spectrum linspace(0.1, 1, 10) (L = 1) and minimizer 0. Every grid
    point starts from the same w_0 with equal weight on every eigenvector; one param group
    per step size eta contains one row per rho, and ||w_0|| = 0.5. A point counts as converged when
    ||w_K|| < ||w_0|| after ``sizes.stability_steps`` steps (a linear map with spectral
    radius above 1 grows along its top eigenvector, so diverging runs end above ||w_0||).
    The boundary comes from ``theory.symbolic.usam_stability_threshold`` (sympy).
    """
    L = 1.0
    problem = Quadratic.random(n=10, L=L, mu=0.1, seed=seed, b_scale=0.0)
    n = sizes.grid
    etas = torch.linspace(0.05, 2.3, n, dtype=DTYPE)
    rhos = torch.linspace(0.0, 3.0, n, dtype=DTYPE)
    logger.info("stability: USAM on a %dx%d (eta, rho) grid, %d steps", n, n, sizes.stability_steps)

    _, basis = problem.eigh()
    # USAM is linear, so the scale of w_0 does not matter to it. Norm 0.5 keeps the check
    # discriminating: with ||w_0|| = 1 = L, normalised SAM's 2-cycle amplitude
    # eta L rho/(2 - eta L) crosses ||w_0|| exactly on the USAM boundary.
    w0 = 0.5 * basis.sum(dim=1) / np.sqrt(problem.dim)
    tensors = [w0.expand(n, problem.dim).clone().requires_grad_(True) for _ in range(n)]
    groups = [{"params": [t], "batched": True, "rho": rhos, "lr": float(eta)} for t, eta in zip(tensors, etas)]
    optimizer = BinarySAM(groups, torch.optim.SGD, normalize=False, lr=1.0)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = sum(problem.loss(t).sum() for t in tensors)
        loss.backward()
        return loss

    for _ in range(sizes.stability_steps):
        optimizer.step(closure)
    final = torch.stack([t.detach().norm(dim=-1) for t in tensors], dim=1)   # (rho, eta)
    converged = torch.isfinite(final) & (final < w0.norm())

    derivation = usam_stability_threshold()
    symbols = sorted(derivation.expression.free_symbols, key=lambda s: s.name)
    threshold = sp.lambdify(symbols, derivation.expression, "numpy")
    values = {"L": L}
    fine_rho = np.linspace(0.0, 3.0, 200)
    boundary = threshold(*[values.get(s.name, fine_rho) for s in symbols])

    predicted = etas.numpy()[None, :] < np.broadcast_to(
        threshold(*[values.get(s.name, rhos.numpy()) for s in symbols]), (n,)
    )[:, None]
    agreement = float((predicted == converged.numpy()).mean())
    logger.info("stability: the symbolic boundary classifies %.1f%% of the grid points as observed", 100 * agreement)

    return {
        "L": L,
        "agreement": agreement,
        "eta": etas.numpy(),
        "rho": rhos.numpy(),
        "converged": converged.numpy(),
        "boundary_rho": fine_rho,
        "boundary_eta": np.broadcast_to(boundary, fine_rho.shape).astype(np.float64),
        "boundary_label": f"eta = {sp.sstr(derivation.expression)} (sympy, L = {L:g})",
        "symbolic_checks_hold": bool(derivation.check),
        "steps": sizes.stability_steps,
    }
