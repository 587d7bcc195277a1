"""Exact maximisation of a quadratic over a Euclidean ball (the trust-region subproblem).

For a symmetric A, a vector g and a radius rho >= 0 this module solves

    max_{||e|| <= rho}  m(e) = g^T e + e^T A e / 2,

which for a quadratic f gives the SAM objective exactly:
f_rho(w) = max_{||e|| <= rho} f(w + e) = f(w) + max m(e) with g = grad f(w), A = H.

Method: with A = V diag(a) V^T and gt = V^T g, a maximiser satisfies (lam I - A) e = g
with lam >= max(a_max, 0) and lam (rho - ||e||) = 0. Either the unconstrained maximiser
-A^{-1} g lies in the ball (only possible when A is negative definite, lam = 0), or
||e(lam)|| = rho, solved by Brent's method on the secular equation
1/||e(lam)|| - 1/rho = 0 for lam in (max(a_max, 0), max(a_max, 0) + ||g||/rho], in the
variable s = lam - a_max so that lam close to a_max loses no precision. In the hard case
(g orthogonal to the top eigenspace and ||e(a_max)|| < rho) lam = a_max and e gets a
component along a top eigenvector that brings its norm up to rho.

Example::

    import torch
    from theory.trust_region import max_quadratic_on_ball

    A = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    g = torch.tensor([0.0, 1.0], dtype=torch.float64)
    value, e = max_quadratic_on_ball(A, g, rho=1.0)
    # hard case: e = (2 sqrt(2)/3, 1/3), value = 7/6
"""

from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from scipy.optimize import brentq

__all__ = ["max_quadratic_on_ball"]

# Components of gt along the top eigenspace below this fraction of ||g|| count as zero
# when deciding the hard case.
HARD_CASE_TOLERANCE = 1e-12


def _norm(x: np.ndarray) -> float:
    """Return ||x|| without underflow or overflow in the squares (scaled by max |x_i|)."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0 or not math.isfinite(peak):
        return peak
    return peak * float(np.sqrt(np.sum((x / peak) ** 2)))


def _solve_single(
    eigenvalues: np.ndarray, gt: np.ndarray, rho: float
) -> tuple[float, np.ndarray]:
    """Solve the subproblem in the eigenbasis; return (value, e in the eigenbasis)."""
    n = eigenvalues.shape[0]
    if rho == 0:
        return 0.0, np.zeros(n)
    a_max = float(eigenvalues[-1])
    scale = max(float(np.abs(eigenvalues).max()), np.finfo(float).tiny)
    g_norm = _norm(gt)

    def value_of(e: np.ndarray) -> float:
        return float(gt @ e + 0.5 * (eigenvalues * e) @ e)

    # Interior solution: m is strictly concave and its maximiser lies inside the ball.
    if a_max < 0:
        with np.errstate(over="ignore"):
            interior = gt / (-eigenvalues)
        if _norm(interior) <= rho:
            return value_of(interior), interior

    lam_low = max(a_max, 0.0)
    top = eigenvalues >= a_max - 1e-12 * scale
    rest = ~top

    # Hard case: only possible when lam_low = a_max (a_max >= 0) and gt vanishes on the
    # top eigenspace, so ||e(lam)|| stays bounded as lam -> a_max.
    if a_max >= 0 and _norm(gt[top]) <= HARD_CASE_TOLERANCE * g_norm:
        partial = np.zeros(n)
        with np.errstate(over="ignore"):
            partial[rest] = gt[rest] / (a_max - eigenvalues[rest])
        partial_norm = _norm(partial)
        if partial_norm <= rho:
            e = partial.copy()
            first_top = int(np.flatnonzero(top)[0])
            direction = 1.0 if gt[first_top] >= 0 else -1.0
            e[first_top] = direction * math.sqrt(max(rho * rho - partial_norm ** 2, 0.0))
            return value_of(e), e

    # Solve for the shift s = lam - a_max rather than lam: the gaps lam - a_i = s + (a_max - a_i)
    # then keep full relative precision even when lam is within an ulp of a_max.
    offsets = a_max - eigenvalues

    def secular(shift: float) -> float:
        gaps = shift + offsets
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            terms = np.where(gt == 0, 0.0, gt / gaps)
        norm = _norm(terms)
        if not math.isfinite(norm):
            return -1.0 / rho
        inverse = 0.0 if norm == 0 else 1.0 / norm
        return inverse - 1.0 / rho

    # ||e|| <= ||g|| / s, so ||e|| <= rho at s_high up to rounding; widen the bracket when
    # rounding puts the endpoint a hair inside.
    shift_low = lam_low - a_max
    shift_high = shift_low + g_norm / rho
    for _ in range(60):
        if secular(shift_high) >= 0:
            break
        shift_high = shift_low + 2 * (shift_high - shift_low)
    if secular(shift_low) >= 0:
        # ||e(lam_low)|| <= rho with no hard-case component: the boundary is reached at
        # lam_low itself (a degenerate case, e.g. g = 0 and a_max = 0).
        shift = shift_low
    else:
        shift = brentq(secular, shift_low, shift_high, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    gaps = shift + offsets
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.where(gt == 0, 0.0, gt / gaps)
    # The root s can underflow when gt is tiny along the top eigenspace; the limit of
    # e(s) / ||e(s)|| is then the direction of the infinite components.
    if not np.all(np.isfinite(e)):
        e = np.where(np.isinf(e), np.sign(e), 0.0)
    peak = float(np.abs(e).max())
    if peak > 0:
        e = e / peak
        e = e * (rho / _norm(e))
    return value_of(e), e


def max_quadratic_on_ball(
    A: Union[torch.Tensor, np.ndarray],
    g: Union[torch.Tensor, np.ndarray],
    rho: Union[float, torch.Tensor, np.ndarray],
    *,
    eigh: Optional[tuple] = None,
):
    """Maximise g^T e + e^T A e / 2 over ||e|| <= rho exactly.

    Args:
        A: symmetric matrix of shape (n, n).
        g: vector of shape (n,), or (C, n) for C independent problems sharing A.
        rho: radius >= 0, a scalar or one radius per problem (shape (C,)).
        eigh: optional precomputed (eigenvalues ascending, eigenvectors as columns) of A.

    Returns:
        (value, e). For g of shape (n,) the value is a float and e has shape (n,). For g
        of shape (C, n) the values have shape (C,) and e has shape (C, n). Arrays are torch
        float64 tensors when g is a torch tensor, numpy arrays otherwise. The value is
        exact up to rounding and the root-finding tolerance (a few ulps of lam - a_max).
    """
    as_torch = isinstance(g, torch.Tensor)
    matrix = np.asarray(A.detach().cpu() if isinstance(A, torch.Tensor) else A, dtype=np.float64)
    vectors_in = np.asarray(g.detach().cpu() if as_torch else g, dtype=np.float64)
    radii = np.asarray(rho.detach().cpu() if isinstance(rho, torch.Tensor) else rho, dtype=np.float64)

    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {matrix.shape}")
    n = matrix.shape[0]
    single = vectors_in.ndim == 1
    batch = vectors_in.reshape(1, -1) if single else vectors_in
    if batch.ndim != 2 or batch.shape[1] != n:
        raise ValueError(f"g must have shape ({n},) or (C, {n}) to match A, got {vectors_in.shape}")
    if radii.ndim == 0:
        radii = np.full(batch.shape[0], float(radii))
    if radii.shape != (batch.shape[0],):
        raise ValueError(f"rho must be a scalar or have shape ({batch.shape[0]},), got {radii.shape}")
    if not np.all(np.isfinite(radii)) or np.any(radii < 0):
        raise ValueError(f"rho must be finite and >= 0, got {radii.tolist()}")
    if not np.all(np.isfinite(matrix)) or not np.all(np.isfinite(batch)):
        raise ValueError("A and g must contain only finite values")
    if np.abs(matrix - matrix.T).max() > 1e-12 * max(np.abs(matrix).max(), 1.0):
        raise ValueError("A must be symmetric; pass (A + A.T) / 2 for the same quadratic form")

    if eigh is None:
        eigenvalues, basis = np.linalg.eigh((matrix + matrix.T) / 2)
    else:
        eigenvalues = np.asarray(eigh[0].detach().cpu() if isinstance(eigh[0], torch.Tensor) else eigh[0], dtype=np.float64)
        basis = np.asarray(eigh[1].detach().cpu() if isinstance(eigh[1], torch.Tensor) else eigh[1], dtype=np.float64)
        order = np.argsort(eigenvalues)
        eigenvalues, basis = eigenvalues[order], basis[:, order]

    values = np.empty(batch.shape[0])
    maximisers = np.empty_like(batch)
    for row in range(batch.shape[0]):
        value, e_eigen = _solve_single(eigenvalues, basis.T @ batch[row], float(radii[row]))
        values[row] = value
        maximisers[row] = basis @ e_eigen

    if single:
        value_out, e_out = float(values[0]), maximisers[0]
    else:
        value_out, e_out = values, maximisers
    if as_torch:
        e_out = torch.as_tensor(e_out, dtype=torch.float64)
        if not single:
            value_out = torch.as_tensor(value_out, dtype=torch.float64)
    return value_out, e_out
