"""Symbolic derivations (sympy) of the exact facts behind the convergence checks.

Each function derives a result from the update rule itself, returns it as a sympy
expression, and checks it against the closed form used in ``theory.bounds``:

- ``usam_stability_threshold``: USAM on f = lam w^2/2 is w <- (1 - eta lam - eta rho lam^2) w,
  which converges for every lam in (0, L] iff eta < 2/(L + rho L^2) (T4).
- ``sam_two_cycle``: normalised SAM on f = L w^2/2 has the 2-cycle |w| = eta L rho/(2 - eta L).
- ``one_step_inequality``: the polarisation identity and the slack of the one-step
  inequality over the descent lemma, (eta/2)(L^2 r^2 - ||a - b||^2) >= 0.
- ``one_minibatch_step``: the coefficient algebra of T3(b).

Example::

    from theory.symbolic import usam_stability_threshold

    result = usam_stability_threshold()
    result.expression      # 2/(L*(L*rho + 1))
    result.check           # True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = [
    "Derivation",
    "usam_stability_threshold",
    "sam_two_cycle",
    "one_step_inequality",
    "one_minibatch_step",
]


@dataclass
class Derivation:
    """A derived expression, whether every check of it holds, and the named checks."""

    expression: sp.Expr
    check: bool
    checks: dict = field(default_factory=dict)


def _is_zero(expression: sp.Expr) -> bool:
    return sp.simplify(sp.expand(expression)) == 0


def usam_stability_threshold() -> Derivation:
    """Derive the largest stable USAM step size on quadratics with spectrum in (0, L].

    On f = lam w^2/2 the USAM perturbation is e = rho f'(w) = rho lam w, and the step is
    w <- w - eta f'(w + e) = m w with m = 1 - eta lam - eta rho lam^2. Since
    1 - m = eta lam (1 + rho lam) > 0, |m| < 1 iff m > -1, i.e. eta lam (1 + rho lam) < 2.
    lam (1 + rho lam) increases in lam, so the binding eigenvalue is lam = L and the
    threshold is the root in eta of m(L) = -1.
    """
    w, eta, lam, L = sp.symbols("w eta lam L", positive=True)
    rho = sp.Symbol("rho", nonnegative=True)

    gradient = lambda point: lam * point  # noqa: E731 - f'(w) for f = lam w^2/2
    perturbation = rho * gradient(w)
    multiplier = sp.expand((w - eta * gradient(w + perturbation)) / w)

    expected_multiplier = 1 - eta * lam - eta * rho * lam**2
    below_one = sp.factor(1 - multiplier)
    slope = sp.diff(lam * (1 + rho * lam), lam)
    roots = sp.solve(sp.Eq(multiplier.subs(lam, L), -1), eta)
    threshold = sp.simplify(roots[0]) if len(roots) == 1 else None

    checks = {
        "multiplier matches 1 - eta lam - eta rho lam^2": _is_zero(multiplier - expected_multiplier),
        "multiplier below 1 for lam > 0": bool(below_one.is_positive),
        "lam (1 + rho lam) increasing": bool(slope.is_positive),
        "unique root of m(L) = -1": threshold is not None,
    }
    if threshold is not None:
        checks["threshold equals 2/(L + rho L^2)"] = _is_zero(threshold - 2 / (L + rho * L**2))
        checks["rho = 0 gives 2/L"] = _is_zero(threshold.subs(rho, 0) - 2 / L)
        # At the threshold the top eigenvalue's multiplier is exactly -1 and smaller
        # eigenvalues stay inside (-1, 1).
        inside = multiplier.subs(eta, threshold)
        checks["multiplier -1 at lam = L"] = _is_zero(inside.subs(lam, L) + 1)
        checks["multiplier inside (-1, 1) at lam = L/2"] = bool(
            sp.simplify(inside.subs(lam, L / 2) + 1).is_positive
        )
    return Derivation(threshold if threshold is not None else sp.nan, all(checks.values()), checks)


def sam_two_cycle() -> Derivation:
    """Derive the 2-cycle amplitude of normalised SAM on f = L w^2/2 in one dimension.

    For w > 0 the normalised perturbation is e = rho sign(f'(w)) = rho, so the step is
    w <- w - eta L (w + rho). Solving step(w) = -w gives w* = eta L rho/(2 - eta L); the
    odd symmetry of the map sends -w* back to w*. With eta = 1/L, w* = rho.
    """
    w, eta, L, rho = sp.symbols("w eta L rho", positive=True)

    def step(point: sp.Expr, sign: int) -> sp.Expr:
        return point - eta * L * (point + sign * rho)

    solutions = sp.solve(sp.Eq(step(w, +1), -w), w)
    amplitude = sp.simplify(solutions[0]) if len(solutions) == 1 else None
    checks = {"unique fixed point of w -> -w": amplitude is not None}
    if amplitude is not None:
        checks["amplitude equals eta L rho/(2 - eta L)"] = _is_zero(amplitude - eta * L * rho / (2 - eta * L))
        checks["-w* maps back to w*"] = _is_zero(step(-amplitude, -1) - amplitude)
        checks["eta = 1/L gives rho"] = _is_zero(amplitude.subs(eta, 1 / L) - rho)
    return Derivation(amplitude if amplitude is not None else sp.nan, all(checks.values()), checks)


def one_step_inequality() -> Derivation:
    """Derive the slack of the one-step inequality over the descent lemma.

    Polarisation: -a b = ((a - b)^2 - a^2 - b^2)/2 per coordinate, hence
    -<a, b> = (||a - b||^2 - ||a||^2 - ||b||^2)/2 by summing coordinates. With norms as
    symbols (A2 = ||a||^2, B2 = ||b||^2, D2 = ||a - b||^2), the descent lemma reads
    f(w_{k+1}) <= f - eta <a, b> + (L eta^2/2) B2, and the stated right-hand side
    f - (eta/2) A2 - (eta/2)(1 - L eta) B2 + (eta/2) L^2 r^2 exceeds it by exactly
    (eta/2)(L^2 r^2 - D2), which is >= 0 because ||a - b|| <= L r.
    Returns the stated right-hand side.
    """
    a, b = sp.symbols("a b", real=True)
    f, eta, L, r = sp.symbols("f eta L r", positive=True)
    A2, B2, D2 = sp.symbols("A2 B2 D2", nonnegative=True)

    inner = (A2 + B2 - D2) / 2
    descent_lemma = f - eta * inner + L * eta**2 * B2 / 2
    stated = f - eta / 2 * A2 - eta / 2 * (1 - L * eta) * B2 + eta / 2 * L**2 * r**2
    slack = sp.factor(stated - descent_lemma)
    dropped = f - eta / 2 * A2 + eta / 2 * L**2 * r**2

    checks = {
        "polarisation identity per coordinate": _is_zero(-a * b - ((a - b) ** 2 - a**2 - b**2) / 2),
        "slack equals (eta/2)(L^2 r^2 - D2)": _is_zero(slack - eta / 2 * (L**2 * r**2 - D2)),
        "dropping the b term costs (eta/2)(1 - L eta) B2": _is_zero(dropped - stated - eta / 2 * (1 - L * eta) * B2),
    }
    return Derivation(stated, all(checks.values()), checks)


def one_minibatch_step() -> Derivation:
    """Derive the T3(b) one-step coefficients for one minibatch in both SAM gradients.

    From E<a, b~> >= A2/2 - L^2 r^2/2 and E||b~||^2 <= 2 A2 + 2 s2 + 2 L^2 r^2
    (s2 = sigma^2), the descent lemma gives
    E f(w_{k+1}) <= f - eta (1/2 - L eta) A2 + eta L^2 r^2 (1/2 + L eta) + L eta^2 s2;
    at eta = 1/(4L) the coefficients are 1/4 and 3/4, and they only improve for smaller eta.
    Returns the bound after substituting those coefficients.
    """
    f, eta, L, r = sp.symbols("f eta L r", positive=True)
    A2, s2 = sp.symbols("A2 s2", nonnegative=True)

    expanded = f - eta * (A2 / 2 - L**2 * r**2 / 2) + L * eta**2 / 2 * (2 * A2 + 2 * s2 + 2 * L**2 * r**2)
    collected = f - eta * (sp.Rational(1, 2) - L * eta) * A2 + eta * L**2 * r**2 * (sp.Rational(1, 2) + L * eta) + L * eta**2 * s2
    final = f - eta / 4 * A2 + 3 * eta / 4 * L**2 * r**2 + L * eta**2 * s2
    at_limit = {eta: 1 / (4 * L)}
    checks = {
        "collected form": _is_zero(expanded - collected),
        "A2 coefficient 1/4 at eta = 1/(4L)": _is_zero((sp.Rational(1, 2) - L * eta).subs(at_limit) - sp.Rational(1, 4)),
        "r^2 coefficient 3/4 at eta = 1/(4L)": _is_zero((sp.Rational(1, 2) + L * eta).subs(at_limit) - sp.Rational(3, 4)),
        "final bound equals collected form at eta = 1/(4L)": _is_zero((collected - final).subs(at_limit)),
    }
    return Derivation(final, all(checks.values()), checks)
