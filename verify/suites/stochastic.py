"""T3: stochastic SAM and one-bit SAM, checked on means over many independent runs.

Each configuration runs R independent rows (one minibatch stream each) of BinarySAM with
minibatch gradients of B indices drawn uniformly with replacement, on the finite-sum
problems (least squares, logistic, robust regression):

- T3a, a fresh minibatch for the ascent and for the descent gradient, eta = 0.5/L:
  (1/K) sum E||grad f(w_k)||^2 <= 2 (f(w_0) - f*)/(eta K) + L^2 (1/K) sum E r_k^2 + L eta sigma^2;
- T3b, one minibatch for both (practical SAM), eta = 1/(4 L_max) with L_max = max_i L_i
  (assumption A1': every f_i is L_max-smooth):
  (1/K) sum E||grad f(w_k)||^2 <= 4 (f(w_0) - f*)/(eta K) + 3 L_max^2 (1/K) sum E r_k^2 + 4 L_max eta sigma^2.

sigma^2 is the maximum, over every visited latent point w_k and descent point of every
run, of the exact finite-sum variance of the minibatch gradient,
(1/B) (1/N) sum_i ||grad f_i(w) - grad f(w)||^2 (``Problem.gradient_variance``). The proofs
use the variance only at those points. f* is exact (least squares), certified from below
(logistic) or replaced by the lower bound 0 (robust regression), which only enlarges the
bound by a known amount. The bound contains the run's own r_k, so the test is on the
per-run difference bound - empirical: at every K its mean must exceed 3 standard errors.

Negative controls: SGD started at the minimizer with sigma^2 left out of T3a and of T3b.
There f(w_0) = f* (up to the certificate), so the bound without noise is (nearly) 0
while every step after the first lands at a point with a nonzero gradient.
"""

from __future__ import annotations

import torch

from theory import bounds
from theory.symbolic import one_minibatch_step

from ..analysis import analyse, row_norm
from ..checks import Check, identity_check, stochastic_check
from ..context import Context, format_number
from ..instances import f_star_lower
from ..methods import METHODS
from ..runner import Trace, run_sweep

__all__ = ["run"]

DTYPE = torch.float64
PROBLEMS = ("least-squares", "logistic", "robust-regression")
METHOD_NAMES = ("sam", "bqsam-ste", "bc")
RHO = 0.05
ETA_A = 0.5  # units of 1/L
ETA_B = 0.25  # units of 1/L_max


def _max_variance(trace: Trace, batch_size: int) -> float:
    """Return the largest exact minibatch-gradient variance over the visited points."""
    problem = trace.problem
    largest = 0.0
    for points in (trace.w, trace.z):
        for k in range(points.shape[0]):
            value = problem.gradient_variance(points[k], batch_size, replacement=True).max()
            largest = max(largest, float(value))
    return largest


def _run(ctx: Context, name: str, method_name: str, w0: torch.Tensor, seed: int) -> Trace:
    problem = ctx.instances[name].problem
    runs = ctx.settings.stochastic_runs
    return run_sweep(
        problem,
        METHODS[method_name],
        etas=[ETA_A / problem.L, ETA_B / problem.L_i],
        rhos=[RHO] * runs,
        lams=[1.0] * runs,
        w0=w0,
        steps=ctx.settings.stochastic_steps,
        sampling=["independent", "shared"],
        batch_size=ctx.settings.batch_size,
        generator=torch.Generator().manual_seed(seed),
    )


def _terms(trace: Trace, f_low: float, sigma2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the running-mean squared gradients (G, R, K) and the T3a and T3b bounds."""
    problem = trace.problem
    run_ = analyse(trace)
    a2 = row_norm(run_.a[:-1]) ** 2  # (K, G, R)
    lhs = bounds.running_mean(a2.permute(1, 2, 0))  # (G, R, K)
    mean_r2 = bounds.running_mean((run_.r ** 2).permute(1, 2, 0))
    steps = a2.shape[0]
    K = torch.arange(1, steps + 1, dtype=DTYPE)
    f0 = float(run_.f_w[0, 0, 0])
    eta_a, eta_b = float(trace.etas[0]), float(trace.etas[1])
    bound_a = bounds.t3a_bound(f0, f_low, eta_a, K, problem.L, mean_r2[0], sigma2)
    bound_b = bounds.t3b_bound(f0, f_low, eta_b, K, problem.L_i, mean_r2[1], sigma2)
    return lhs, bound_a, bound_b


def run(ctx: Context) -> list[Check]:
    """Run the stochastic suite."""
    checks: list[Check] = []
    derivation = one_minibatch_step()
    checks.append(
        identity_check(
            "T3b/symbolic/any/coefficients", "T3b", "symbolic", "any", 0.0 if derivation.check else float("inf"),
            detail="sympy: the coefficient algebra of the one-minibatch step with eta <= 1/(4L)",
        )
    )
    runs, batch = ctx.settings.stochastic_runs, ctx.settings.batch_size
    setting = f"rho={format_number(RHO)},B={batch},R={runs}"
    for p_index, name in enumerate(PROBLEMS):
        instance = ctx.instances[name]
        f_low = f_star_lower(instance.problem)
        for m_index, method_name in enumerate(METHOD_NAMES):
            trace = _run(ctx, name, method_name, instance.w0, seed=100 * p_index + m_index)
            sigma2 = _max_variance(trace, batch)
            lhs, bound_a, bound_b = _terms(trace, f_low, sigma2)
            note = f"sigma^2 = {sigma2:.4g} (max over visited points)"
            checks.append(
                stochastic_check(
                    f"T3a/{name}/{method_name}/eta={format_number(ETA_A)}L^-1,{setting},independent-samples",
                    "T3a", name, method_name, lhs[0], bound_a, detail=note,
                )
            )
            checks.append(
                stochastic_check(
                    f"T3b/{name}/{method_name}/eta={format_number(ETA_B)}Lmax^-1,{setting},one-minibatch",
                    "T3b", name, method_name, lhs[1], bound_b, detail=note,
                )
            )

    # Controls: SGD from the minimizer with sigma^2 = 0 in the bound.
    for name in ("least-squares", "logistic"):
        instance = ctx.instances[name]
        trace = _run(ctx, name, "sgd", instance.problem.minimizer, seed=999)
        lhs, bound_a, bound_b = _terms(trace, f_star_lower(instance.problem), 0.0)
        checks.append(
            stochastic_check(
                f"T3a/{name}/sgd/eta={format_number(ETA_A)}L^-1,B={batch},R={runs},from-minimizer,no-sigma",
                "T3a", name, "sgd", lhs[0], bound_a, control=True,
                detail="noise dominates at the minimizer; sigma^2 left out of the bound",
            )
        )
        checks.append(
            stochastic_check(
                f"T3b/{name}/sgd/eta={format_number(ETA_B)}Lmax^-1,B={batch},R={runs},from-minimizer,no-sigma",
                "T3b", name, "sgd", lhs[1], bound_b, control=True,
                detail="noise dominates at the minimizer; sigma^2 left out of the bound",
            )
        )
    return checks
