"""SAM ascent perturbations: normalised (Foret et al. 2021), unnormalised (USAM) and
adaptive (ASAM, Kwon et al. 2021).

Given the gradient ``g`` at the point ``x``, the first-order maximiser of
``f(x + e)`` over ``||e|| <= rho`` is

    normalised:    e = rho g / ||g||
    unnormalised:  e = rho g
    adaptive:      e = rho T^2 g / ||T g||,   T = diag(|x|)

where the norm runs over all tensors of the list together. A zero gradient gives a zero
perturbation, never NaN: no epsilon is added to the denominator.

With ``rows=True`` every index along dim 0 is an independent problem (one configuration of a
batched sweep): the norm is taken per row over all tensors, and ``rho`` may hold one radius
per row.

Example:
    >>> import torch
    >>> from bqsam.perturbation import sam_perturbation
    >>> sam_perturbation([torch.tensor([3.0, 4.0])], rho=0.5)
    [tensor([0.3000, 0.4000])]
    >>> sam_perturbation([torch.zeros(2)], rho=0.5)
    [tensor([0., 0.])]
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["sam_perturbation", "squared_norm", "scale_rows", "safe_reciprocal"]


def squared_norm(tensors: Sequence[Tensor], rows: bool = False) -> Tensor:
    """Return the squared Euclidean norm of a list of tensors taken as one vector.

    With ``rows=True`` the result has shape ``(C,)``: one squared norm per index along dim 0.
    """
    if rows:
        return sum(t.reshape(t.shape[0], -1).pow(2).sum(dim=1) for t in tensors)
    return sum(t.pow(2).sum() for t in tensors)


def safe_reciprocal(norm: Tensor) -> Tensor:
    """Return ``1 / norm`` where ``norm > 0`` and 0 where it vanishes (no epsilon, no NaN)."""
    positive = norm > 0
    return torch.where(positive, norm, torch.ones_like(norm)).reciprocal() * positive


def scale_rows(t: Tensor, factor: Tensor | float, rows: bool) -> Tensor:
    """Return ``factor * t`` where ``factor`` is a scalar, or one value per row of ``t``."""
    if rows and isinstance(factor, Tensor) and factor.dim() > 0:
        factor = factor.reshape((-1,) + (1,) * (t.dim() - 1))
    return factor * t


def _check_rho(rho: float | Tensor, rows: bool) -> None:
    if isinstance(rho, Tensor):
        if rho.dim() > 0 and not rows:
            raise ValueError(
                f"rho has shape {tuple(rho.shape)}; one radius per row needs rows=True, "
                "otherwise pass a number"
            )
        if torch.isnan(rho).any() or (rho < 0).any() or torch.isinf(rho).any():
            raise ValueError(f"rho must be finite and >= 0, got {rho.tolist()}")
        return
    if not isinstance(rho, (int, float)) or not (0 <= rho < float("inf")):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")


def sam_perturbation(
    grads: Sequence[Tensor],
    rho: float | Tensor,
    *,
    normalize: bool = True,
    adaptive: bool = False,
    params: Sequence[Tensor] | None = None,
    rows: bool = False,
) -> list[Tensor]:
    """Return the SAM perturbation ``e`` for the gradients ``grads``.

    Args:
        grads: the gradient at the current point, one tensor per parameter.
        rho: the radius, a number ``>= 0``, or with ``rows=True`` a tensor of shape ``(C,)``.
        normalize: ``True`` for ``rho g / ||g||``, ``False`` for USAM's ``rho g``.
        adaptive: ASAM's scaling by ``T = diag(|params|)``; needs ``params``.
        params: the point ``x`` at which ``grads`` was taken (used only when adaptive).
        rows: treat every index along dim 0 as an independent problem.
    """
    _check_rho(rho, rows)
    if adaptive and params is None:
        raise ValueError("adaptive=True needs params (the point x) to build T = diag(|x|)")
    if adaptive and len(params) != len(grads):
        raise ValueError(f"params has {len(params)} tensors but grads has {len(grads)}")

    if adaptive:
        scaled = [p.abs() * g for p, g in zip(params, grads)]  # T g
        direction = [p.abs() * tg for p, tg in zip(params, scaled)]  # T^2 g
    else:
        scaled = list(grads)
        direction = list(grads)

    if not normalize:
        return [scale_rows(d, rho, rows) for d in direction]

    factor = rho * safe_reciprocal(squared_norm(scaled, rows).sqrt())
    return [scale_rows(d, factor, rows) for d in direction]
