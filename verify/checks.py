"""Checks: one verified inequality or identity, reduced to an empirical value and a bound.

A check compares a sequence of empirical values with a sequence of bounds (one entry per
step k, or per horizon K) and reports the worst entry:

- ``inequality_check``: holds when ``empirical_k <= bound_k`` at every entry, up to a
  rounding allowance of ``rel_tol`` times the magnitude of the terms involved;
- ``identity_check``: holds when a relative error stays below ``rel_tol`` everywhere;
- ``stochastic_check``: holds when, at every K, the bound exceeds the mean over
  independent runs by more than 3 standard errors of the mean difference.

A negative control is a check built on a case where the inequality is certain to be
violated; its ``passed`` is true when the check fails, as it must.

Example:
    >>> import torch
    >>> c = inequality_check("T1/demo/sam/tight", "T1", "demo", "sam",
    ...                      torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]))
    >>> c.passed, c.ratio
    (True, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "Check",
    "REL_TOL",
    "inequality_check",
    "identity_check",
    "stochastic_check",
    "STANDARD_ERRORS",
]

# Rounding allowance of float64 computations, relative to the magnitude of the terms.
REL_TOL = 1e-10

# The worst ratio is taken over entries whose bound exceeds this many rounding allowances.
MEASURABLE = 1e4

# A stochastic bound passes only when bound - mean exceeds this many standard errors.
STANDARD_ERRORS = 3.0


@dataclass
class Check:
    """One row of the verification report.

    ``passed`` is the verdict shown in the report. For an ordinary check it means the
    inequality or identity held, and for a negative control (``control=True``) it means the
    check was violated, as it must be. ``holds`` is the raw outcome of the comparison,
    ``detail`` the caller's note on what is compared (for a control: what is broken) and
    ``where`` the location of the worst entry. These three are not part of report.json.
    """

    id: str
    theorem: str
    problem: str
    method: str
    empirical: float
    bound: float
    ratio: float
    holds: bool
    control: bool = False
    detail: str = ""
    where: str = ""
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = (not self.holds) if self.control else self.holds

    def to_json(self) -> dict:
        """Return the report.json entry (non-finite numbers become null)."""
        return {
            "id": self.id,
            "theorem": self.theorem,
            "problem": self.problem,
            "method": self.method,
            "empirical": _finite_or_none(self.empirical),
            "bound": _finite_or_none(self.bound),
            "ratio": _finite_or_none(self.ratio),
            "passed": bool(self.passed),
            "control": bool(self.control),
        }


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _as_1d(values: Tensor | Sequence[float] | float) -> Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    return tensor.reshape(-1)


def _ratio(empirical: float, bound: float, violated: bool) -> float:
    if bound > 0:
        return empirical / bound
    # A bound of 0 or below has no meaningful ratio: report 0 when the inequality holds
    # and infinity when it does not.
    return math.inf if violated else 0.0


def inequality_check(
    check_id: str,
    theorem: str,
    problem: str,
    method: str,
    empirical: Tensor | Sequence[float] | float,
    bound: Tensor | Sequence[float] | float,
    *,
    scale: Tensor | Sequence[float] | float | None = None,
    rel_tol: float = REL_TOL,
    control: bool = False,
    index_name: str = "k",
    first_index: int = 0,
    detail: str = "",
) -> Check:
    """Check ``empirical_i <= bound_i`` at every entry i and report the worst entry.

    The allowance for rounding is ``rel_tol * scale_i``, where ``scale_i`` is the magnitude
    of the terms the two sides were computed from (default ``|empirical_i| + |bound_i|``).
    The worst entry is the most violated one when the check fails, otherwise the one with
    the largest ratio ``empirical_i / bound_i`` among the positive bounds. Entries are
    named ``index_name = first_index + i`` in the detail.
    """
    emp = _as_1d(empirical)
    bnd = _as_1d(bound)
    if emp.shape != bnd.shape:
        emp, bnd = torch.broadcast_tensors(emp, bnd)
    if emp.numel() == 0:
        raise ValueError(f"check {check_id!r} has no entries to compare")
    magnitude = emp.abs() + bnd.abs() if scale is None else _as_1d(scale).expand_as(emp).abs()
    allowance = rel_tol * magnitude

    finite = torch.isfinite(emp) & torch.isfinite(bnd)
    excess = emp - bnd - allowance
    violated = (excess > 0) | ~finite
    holds = not bool(violated.any())

    if not holds:
        normalised = torch.where(finite, excess / (magnitude + torch.finfo(torch.float64).tiny), torch.inf)
        worst = int(torch.argmax(torch.where(violated, normalised, -torch.inf)))
    elif bool((bnd > 0).any()):
        # Ratios are compared only where the bound is well above the rounding allowance,
        # because a bound of the size of the rounding error has no meaningful ratio.
        measurable = bnd > MEASURABLE * allowance
        if not bool((measurable & (bnd > 0)).any()):
            measurable = bnd > 0
        ratios = torch.where(measurable & (bnd > 0), emp / bnd.clamp_min(torch.finfo(torch.float64).tiny), -torch.inf)
        worst = int(torch.argmax(ratios))
    else:
        worst = int(torch.argmax(emp - bnd))

    e, b = float(emp[worst]), float(bnd[worst])
    where = f"worst at {index_name}={first_index + worst} of {emp.numel()}"
    return Check(
        id=check_id,
        theorem=theorem,
        problem=problem,
        method=method,
        empirical=e,
        bound=b,
        ratio=_ratio(e, b, bool(violated[worst])),
        holds=holds,
        control=control,
        detail=detail,
        where=where,
    )


def identity_check(
    check_id: str,
    theorem: str,
    problem: str,
    method: str,
    relative_error: Tensor | Sequence[float] | float,
    *,
    rel_tol: float = REL_TOL,
    control: bool = False,
    index_name: str = "k",
    first_index: int = 0,
    detail: str = "",
) -> Check:
    """Check that a relative error stays at most ``rel_tol`` at every entry.

    The report shows the largest relative error as the empirical value and ``rel_tol``
    as the bound.
    """
    err = _as_1d(relative_error)
    if err.numel() == 0:
        raise ValueError(f"check {check_id!r} has no entries to compare")
    err = torch.where(torch.isfinite(err), err, torch.inf)
    worst = int(torch.argmax(err))
    e = float(err[worst])
    holds = e <= rel_tol
    where = f"largest relative error at {index_name}={first_index + worst} of {err.numel()}"
    return Check(
        id=check_id,
        theorem=theorem,
        problem=problem,
        method=method,
        empirical=e,
        bound=rel_tol,
        ratio=e / rel_tol,
        holds=holds,
        control=control,
        detail=detail,
        where=where,
    )


def stochastic_check(
    check_id: str,
    theorem: str,
    problem: str,
    method: str,
    empirical_runs: Tensor,
    bound_runs: Tensor,
    *,
    control: bool = False,
    detail: str = "",
) -> Check:
    """Check ``E[empirical_K] <= E[bound_K]`` at every K from independent runs.

    Args:
        empirical_runs, bound_runs: shape (R, T), one row per independent run and one
            column per horizon K. The bound may vary between runs (it contains the
            run's own quantization errors), so the test is on the per-run difference
            ``bound - empirical``: it holds at K when its mean exceeds
            ``STANDARD_ERRORS`` standard errors of that mean.

    The report shows the means at the K with the largest ratio of the means.
    """
    emp = torch.as_tensor(empirical_runs, dtype=torch.float64)
    bnd = torch.as_tensor(bound_runs, dtype=torch.float64)
    if emp.dim() != 2 or emp.shape != bnd.shape or emp.shape[0] < 2:
        raise ValueError(
            f"check {check_id!r} needs two (runs, K) arrays of one shape with at least 2 runs, "
            f"got {tuple(emp.shape)} and {tuple(bnd.shape)}"
        )
    runs = emp.shape[0]
    difference = bnd - emp
    mean_difference = difference.mean(dim=0)
    standard_error = difference.std(dim=0, unbiased=True) / math.sqrt(runs)
    finite = torch.isfinite(mean_difference) & torch.isfinite(standard_error)
    margin = mean_difference - STANDARD_ERRORS * standard_error
    violated = (margin <= 0) | ~finite
    holds = not bool(violated.any())

    mean_emp = emp.mean(dim=0)
    mean_bnd = bnd.mean(dim=0)
    if not holds:
        scaled = torch.where(finite, -margin / (mean_emp.abs() + mean_bnd.abs() + 1e-300), torch.inf)
        worst = int(torch.argmax(torch.where(violated, scaled, -torch.inf)))
    else:
        ratios = torch.where(mean_bnd > 0, mean_emp / mean_bnd.clamp_min(1e-300), -torch.inf)
        worst = int(torch.argmax(ratios))

    e, b = float(mean_emp[worst]), float(mean_bnd[worst])
    where = (
        f"worst at K={worst + 1} of {emp.shape[1]}: mean over {runs} runs, "
        f"bound - mean = {float(mean_difference[worst]):.3e}, "
        f"standard error {float(standard_error[worst]):.3e}"
    )
    return Check(
        id=check_id,
        theorem=theorem,
        problem=problem,
        method=method,
        empirical=e,
        bound=b,
        ratio=_ratio(e, b, bool(violated[worst])),
        holds=holds,
        control=control,
        detail=detail,
        where=where,
    )
