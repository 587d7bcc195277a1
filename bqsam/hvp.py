"""Hessian-vector products for the Hessian-corrected SAM gradient.

Two ways to compute ``H(x) v`` without forming ``H``:

    exact (double backpropagation):   H(x) v = grad_x <grad f(x), v>
    central difference (Hessian-free): HVP_delta(x, v) = (grad f(x + delta v) - grad f(x - delta v)) / (2 delta)

Under a Hessian-Lipschitz constant ``M`` the central difference errs by at most
``(M delta / 2) ||v||^2``; on a quadratic it is exact up to rounding.

Example:
    >>> import torch
    >>> from bqsam.hvp import hvp_exact
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> loss = (x[0] ** 2) * x[1]                       # H = [[2 x1, 2 x0], [2 x0, 0]]
    >>> (g,) = torch.autograd.grad(loss, [x], create_graph=True)
    >>> hvp_exact([g], [x], [torch.tensor([1.0, 0.0])])
    [tensor([4., 2.])]
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["hvp_exact", "hvp_central_difference"]


def hvp_exact(
    grads: Sequence[Tensor],
    params: Sequence[Tensor],
    vectors: Sequence[Tensor],
    *,
    retain_graph: bool = False,
) -> list[Tensor]:
    """Return ``H v`` by differentiating ``<grads, vectors>`` with respect to ``params``.

    ``grads`` must carry a graph: compute them with ``create_graph=True``. A parameter that
    the gradient does not depend on gets a zero product. ``retain_graph=True`` keeps the
    graph for further products with the same gradients (Lanczos, Hutchinson).
    """
    if len(grads) != len(params) or len(vectors) != len(params):
        raise ValueError(
            f"grads, params and vectors need one tensor per parameter, got "
            f"{len(grads)}, {len(params)} and {len(vectors)}"
        )
    if not any(g.requires_grad for g in grads):
        raise ValueError(
            "the gradients carry no graph; compute them with create_graph=True "
            "(loss.backward(create_graph=True) or torch.autograd.grad(..., create_graph=True))"
        )

    products = torch.autograd.grad(
        [g for g in grads if g.requires_grad],
        params,
        grad_outputs=[v.to(g.dtype) for g, v in zip(grads, vectors) if g.requires_grad],
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return [torch.zeros_like(p) if hv is None else hv.detach() for p, hv in zip(params, products)]


def hvp_central_difference(
    grad_fn: Callable[[list[Tensor]], list[Tensor]],
    params: Sequence[Tensor],
    vectors: Sequence[Tensor],
    delta: float,
) -> list[Tensor]:
    """Return ``(grad f(x + delta v) - grad f(x - delta v)) / (2 delta)``.

    Args:
        grad_fn: maps a list of points (one tensor per parameter) to the gradients there.
        params: the point ``x``.
        vectors: the direction ``v``.
        delta: the finite-difference step, ``> 0``.
    """
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta!r}")
    if len(vectors) != len(params):
        raise ValueError(f"params and vectors need the same length, got {len(params)} and {len(vectors)}")

    plus = grad_fn([x + delta * v for x, v in zip(params, vectors)])
    minus = grad_fn([x - delta * v for x, v in zip(params, vectors)])
    return [(gp - gm) / (2 * delta) for gp, gm in zip(plus, minus)]
