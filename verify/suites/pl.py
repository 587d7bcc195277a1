"""T5: linear convergence to a neighbourhood under the PL inequality.

With ||grad f||^2 >= 2 mu (f - f*) and eta <= 1/L the one-step inequality gives
f(w_{k+1}) - f* <= (1 - eta mu)(f(w_k) - f*) + (eta/2) D_k^2, hence
f(w_K) - f* <= (1 - eta mu)^K (f(w_0) - f*) + max_k D_k^2 / (2 mu), with D_k = L r_k for
the first-order gradient. The suite checks the unrolled recursion (at most the closed
form) at every K for every method and setting of the sweep, on the problems with a PL
constant: the quadratic (mu = lambda_min(A)), least squares (mu = lambda_min(X^T X)/N)
and l2-regularised logistic regression (mu = c, f* certified by Newton's method).

Negative control: SAM with a tiny radius on a diagonal quadratic started along the
eigenvector of the smallest eigenvalue, checked with mu overstated tenfold, so that
1 - eta mu = 0 claims convergence in one step.
"""

from __future__ import annotations

import torch

from theory import bounds
from theory.problems import Quadratic

from ..analysis import analyse
from ..checks import Check, inequality_check
from ..context import Context, row_settings
from ..instances import f_star_lower
from ..methods import METHODS
from ..runner import run_sweep
from .descent import pl_checks

__all__ = ["run", "PL_PROBLEMS"]

PL_PROBLEMS = ("quadratic", "least-squares", "logistic")


def _control(ctx: Context) -> Check:
    problem = Quadratic(torch.tensor([0.2, 2.0], dtype=torch.float64))
    mu, L = 0.2, problem.L
    eta = 1.0 / L
    trace = run_sweep(
        problem, METHODS["sam"], etas=[eta], rhos=[1e-3], lams=[1.0],
        w0=torch.tensor([10.0, 0.0], dtype=torch.float64), steps=ctx.settings.steps,
    )
    run_ = analyse(trace)
    f = run_.f_w[:, 0, 0]
    overstated = 10 * mu  # eta * overstated = 1
    bound = bounds.t5_bound_along_run(f[0], eta, overstated, L, run_.r_effective[:, 0, 0] ** 2)
    return inequality_check(
        "T5/quadratic-2d/sam/eta=1L^-1,rho=0.001,mu-overstated-10x", "T5", "quadratic-2d", "sam",
        f[1:], bound, control=True, index_name="K", first_index=1,
        detail="mu = 10 lambda_min, so the bound claims f(w_1) - f* <= (eta/2) L^2 rho^2",
    )


def run(ctx: Context) -> list[Check]:
    """Run the PL suite on the sweep of every PL problem."""
    checks: list[Check] = []
    for name in PL_PROBLEMS:
        instance = ctx.instances[name]
        problem = instance.problem
        f_low = f_star_lower(problem)
        if problem.mu is None or f_low is None:
            raise RuntimeError(f"problem {name!r} has no PL constant or no certified f*; it cannot enter T5")
        for method_name in ctx.settings.methods:
            checks += pl_checks(
                name, ctx.analysis(name, method_name), f_low, float(problem.mu),
                row_settings(METHODS[method_name], ctx.settings), ctx.settings.eta_factors,
            )
    checks.append(_control(ctx))
    return checks
