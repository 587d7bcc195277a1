"""T4: the step-size threshold of USAM and gradient descent on quadratics.

On f(w) = w^T A w / 2 USAM is the linear map I - eta A - eta rho A^2, which converges from
every start iff eta < 2 / (L + rho L^2); rho = 0 is gradient descent, eta < 2/L. The
threshold comes from the sympy derivation ``theory.symbolic.usam_stability_threshold``
(checked against ``theory.bounds.t4_threshold``). BinarySAM (``normalize=False``) runs at
eta = c eta_crit for c on both sides of 1, from a start with a component along every
eigenvector, and the empirical contraction rate (||w_K|| / ||w_{K/2}||)^(2/K) must be
below 1 exactly when c < 1.

Negative controls: USAM at a step size between 2/(L + rho L^2) and 2/L predicted
convergent by the gradient-descent threshold (the rho L^2 term left out), and gradient
descent at eta = 2.5/L predicted convergent.
"""

from __future__ import annotations

import math

import torch

from theory import bounds
from theory.problems import Quadratic
from theory.symbolic import usam_stability_threshold

from ..checks import Check, identity_check
from ..context import Context, format_number
from ..methods import METHODS
from ..runner import run_sweep

__all__ = ["run", "contraction_rates"]

RHOS = (0.0, 0.05, 0.2)
FACTORS = (0.8, 0.95, 0.99, 1.01, 1.05, 1.25)
QUICK_FACTORS = (0.9, 0.99, 1.01, 1.1)


def contraction_rates(w: torch.Tensor) -> torch.Tensor:
    """Return (||w_K|| / ||w_{K/2}||)^(2/K) per group and row; w has shape (K+1, G, C, n)."""
    steps = w.shape[0] - 1
    half = steps // 2
    return (w[-1].norm(dim=-1) / w[half].norm(dim=-1)) ** (1.0 / (steps - half))


def _convergence_check(
    check_id: str, method: str, rate: float, converges: bool, control: bool, detail: str
) -> Check:
    """Build a check of the prediction 'converges' (rate < 1) or 'diverges' (rate > 1)."""
    holds = rate < 1 if converges else rate > 1
    if not math.isfinite(rate):
        holds = not converges
    return Check(
        id=check_id, theorem="T4", problem="quadratic", method=method, empirical=rate, bound=1.0,
        ratio=rate, holds=holds, control=control,
        detail=f"{detail}; predicted to {'converge' if converges else 'diverge'}",
    )


def run(ctx: Context) -> list[Check]:
    """Run the stability suite."""
    checks: list[Check] = []
    instance = ctx.instances["quadratic"]
    problem = Quadratic(instance.problem.A)  # b = 0: the fixed point is 0
    L = problem.L
    steps = ctx.settings.stability_steps
    factors = QUICK_FACTORS if ctx.settings.quick else FACTORS

    derivation = usam_stability_threshold()
    threshold_expression = derivation.expression
    checks.append(
        identity_check(
            "T4/symbolic/usam/derivation", "T4", "symbolic", "usam", 0.0 if derivation.check else float("inf"),
            detail="sympy: the multiplier 1 - eta lam - eta rho lam^2 and the root of m(L) = -1",
        )
    )

    for rho in RHOS:
        symbolic = float(
            threshold_expression.subs({s: (L if s.name == "L" else rho) for s in threshold_expression.free_symbols})
        )
        closed_form = float(bounds.t4_threshold(L, rho))
        checks.append(
            identity_check(
                f"T4/quadratic/usam/rho={format_number(rho)},symbolic-vs-closed-form", "T4", "quadratic", "usam",
                abs(symbolic / closed_form - 1),
                detail=f"sympy threshold {symbolic:.12g} against 2/(L + rho L^2) = {closed_form:.12g}",
            )
        )
        etas = [factor * symbolic for factor in factors]
        trace = run_sweep(problem, METHODS["usam"], etas=etas, rhos=[rho], lams=[1.0], w0=instance.w0, steps=steps)
        rates = contraction_rates(trace.w)
        method = "usam" if rho > 0 else "gd"
        for g, factor in enumerate(factors):
            checks.append(
                _convergence_check(
                    f"T4/quadratic/{method}/rho={format_number(rho)},eta={format_number(factor)}eta_crit",
                    method, float(rates[g, 0]), converges=factor < 1, control=False,
                    detail=f"eta = {etas[g]:.6g}, eta_crit = {symbolic:.6g}, K = {steps}",
                )
            )

    # Controls. USAM between the two thresholds: the gradient-descent threshold predicts
    # convergence, but eta > 2/(L + rho L^2) and the top mode has |multiplier| > 1.
    rho = RHOS[-1]
    eta = 0.5 * (float(bounds.t4_threshold(L, rho)) + float(bounds.t4_threshold(L, 0.0, method="gd")))
    trace = run_sweep(problem, METHODS["usam"], etas=[eta], rhos=[rho], lams=[1.0], w0=instance.w0, steps=steps)
    checks.append(
        _convergence_check(
            f"T4/quadratic/usam/rho={format_number(rho)},eta=midpoint,gd-threshold",
            "usam", float(contraction_rates(trace.w)[0, 0]), converges=True, control=True,
            detail="convergence predicted by 2/L with the rho L^2 term left out",
        )
    )
    trace = run_sweep(problem, METHODS["usam"], etas=[2.5 / L], rhos=[0.0], lams=[1.0], w0=instance.w0, steps=steps)
    checks.append(
        _convergence_check(
            "T4/quadratic/gd/eta=2.5L^-1,claimed-convergent", "gd", float(contraction_rates(trace.w)[0, 0]),
            converges=True, control=True, detail="gradient descent beyond 2/L predicted convergent",
        )
    )
    return checks
