"""Tightness: the cases where T1 and the one-step inequality hold with equality.

On f(w) = L w^2 / 2 in one dimension, normalised SAM with eta = 1/L started at w_0 = rho
enters the 2-cycle w = +-rho at once: every step has ||grad f(w_k)||^2 = L^2 rho^2 and
f(w_K) = f(w_0), so T1 reads L^2 rho^2 <= 0 + L^2 rho^2 at every K and the one-step
inequality is an equality at every k. The checks require the ratio to be 1 to 1e-10.
For other step sizes the run started at the 2-cycle amplitude eta L rho / (2 - eta L)
(derived with sympy in ``theory.symbolic.sam_two_cycle``) must stay on the cycle.

Negative controls: the same T1 and one-step checks with L understated tenfold.
"""

from __future__ import annotations

import torch

from theory import bounds
from theory.problems import Quadratic
from theory.symbolic import sam_two_cycle

from ..analysis import analyse
from ..checks import Check, identity_check, inequality_check
from ..context import Context, format_number
from ..methods import METHODS
from ..runner import run_sweep
from .descent import averaged_terms, one_step_terms

__all__ = ["run"]

CURVATURE = 2.0
RHO = 0.1


def run(ctx: Context) -> list[Check]:
    """Run the tightness suite."""
    checks: list[Check] = []
    problem = Quadratic(torch.tensor([CURVATURE], dtype=torch.float64))
    L = problem.L
    steps = ctx.settings.steps
    setting = f"eta=1L^-1,rho={format_number(RHO)},w0=rho"

    trace = run_sweep(
        problem, METHODS["sam"], etas=[1.0 / L], rhos=[RHO], lams=[1.0],
        w0=torch.tensor([RHO], dtype=torch.float64), steps=steps,
    )
    run_ = analyse(trace)
    lhs, rhs, _ = averaged_terms(run_, 0, 0)
    checks.append(
        identity_check(
            f"T1/quadratic-1d/sam/{setting},tight", "T1", "quadratic-1d", "sam", (lhs / rhs - 1).abs(),
            index_name="K", first_index=1, detail="|ratio - 1| at every K; the bound is attained",
        )
    )
    empirical, bound, _ = one_step_terms(run_, 0, 0)
    checks.append(
        identity_check(
            f"one-step/quadratic-1d/sam/{setting},tight", "one-step inequality", "quadratic-1d", "sam",
            (empirical / bound - 1).abs(), detail="|ratio - 1| at every k; the bound is attained",
        )
    )

    # Controls: L understated tenfold. T1: L^2 rho^2 > (L/10)^2 rho^2 with f(w_K) = f(w_0).
    lhs, rhs, scale = averaged_terms(run_, 0, 0, L=L / 10, check_step=False)
    checks.append(
        inequality_check(
            f"T1/quadratic-1d/sam/{setting},L-understated-10x", "T1", "quadratic-1d", "sam",
            lhs, rhs, scale=scale, control=True, index_name="K", first_index=1,
            detail="the tight case with L/10 in the bound",
        )
    )
    empirical, bound, scale = one_step_terms(run_, 0, 0, L=L / 10)
    checks.append(
        inequality_check(
            f"one-step/quadratic-1d/sam/{setting},L-understated-10x", "one-step inequality", "quadratic-1d",
            "sam", empirical, bound, scale=scale, control=True, detail="the tight case with L/10 in the bound",
        )
    )

    # The 2-cycle amplitude for other step sizes, from the sympy derivation.
    derivation = sam_two_cycle()
    checks.append(
        identity_check(
            "T1/symbolic/sam/two-cycle-derivation", "T1", "symbolic", "sam", 0.0 if derivation.check else float("inf"),
            detail="sympy: the 2-cycle |w| = eta L rho / (2 - eta L) of normalised SAM on L w^2/2",
        )
    )
    factors = (0.5, 1.0, 1.5)
    amplitudes = [float(bounds.sam_two_cycle_amplitude(f / L, L, RHO)) for f in factors]
    for factor, amplitude in zip(factors, amplitudes):
        trace = run_sweep(
            problem, METHODS["sam"], etas=[factor / L], rhos=[RHO], lams=[1.0],
            w0=torch.tensor([amplitude], dtype=torch.float64), steps=steps,
        )
        error = (trace.w[:, 0, 0, 0].abs() / amplitude - 1).abs()
        checks.append(
            identity_check(
                f"T1/quadratic-1d/sam/eta={format_number(factor)}L^-1,rho={format_number(RHO)},two-cycle",
                "T1", "quadratic-1d", "sam", error,
                detail=f"|w_k| against the amplitude {amplitude:.6g} at every k",
            )
        )
    return checks
