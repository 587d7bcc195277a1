"""Loss-landscape slices along filter-normalised random directions (Li et al., 2018).

A slice evaluates the loss on a line or a plane through the weights ``w``:

    continuous loss:  f(w + t d)            (1-D)    f(w + s d1 + t d2)       (2-D)
    quantized loss:   f(q(w + t d))         (1-D)    f(q(w + s d1 + t d2))    (2-D)

where ``q`` is the scaled binarizer of :mod:`bqsam.quantizers`, applied only to the tensors
chosen by ``binarized``. Random directions are filter-normalised, so the scale of a slice
does not depend on the scale of each filter. Every filter of ``d`` (a slice along dim 0 of
a convolution or linear weight) is rescaled to the norm of the matching filter of ``w``.
One-dimensional tensors (biases, BatchNorm weights and shifts) get a zero direction,
so a slice keeps them at their trained values.

Example:
    >>> import torch
    >>> from bqsam.landscape import filter_normalized_direction, loss_slice_1d
    >>> layer = torch.nn.Linear(4, 2)
    >>> x, y = torch.randn(8, 4), torch.randn(8, 2)
    >>> params = list(layer.parameters())
    >>> loss_fn = lambda: torch.nn.functional.mse_loss(layer(x), y)
    >>> d = filter_normalized_direction(params, seed=0)
    >>> losses = loss_slice_1d(loss_fn, params, d, torch.linspace(-1, 1, 5))
    >>> bool(losses[2] == loss_fn().detach())   # t = 0 is the unperturbed loss
    True
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bqsam.quantizers import binarize
from bqsam.sharpness import LossFn, _binarized_mask, _check_like, _check_params, restored_after

__all__ = ["filter_normalized_direction", "loss_slice_1d", "loss_slice_2d"]

_LOSSES = ("continuous", "quantized")


def filter_normalized_direction(params: Sequence[Tensor], *, seed: int = 0) -> list[Tensor]:
    """Draw a random direction ``d`` with each filter rescaled to the norm of the weights' filter.

    For a tensor ``w`` with two or more dimensions, ``d`` starts as standard normal noise and
    each slice ``d_i`` along dim 0 becomes ``d_i ||w_i|| / ||d_i||`` (a filter ``w_i = 0``
    gets ``d_i = 0``). One-dimensional and 0-dim tensors (biases, BatchNorm parameters)
    get ``d = 0``. The noise comes from a CPU generator seeded with ``seed``, so the direction
    does not depend on the device.
    """
    params = _check_params(params)
    generator = torch.Generator().manual_seed(seed)
    direction = []
    for p in params:
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        noise = noise.to(dtype=p.dtype, device=p.device)
        weight_norms = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        noise_norms = noise.reshape(p.shape[0], -1).norm(dim=1)
        factors = torch.where(noise_norms > 0, weight_norms / noise_norms, torch.zeros_like(noise_norms))
        direction.append(noise * factors.reshape((-1,) + (1,) * (p.dim() - 1)))
    return direction


def _check_loss(loss: str) -> None:
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")


def _as_steps(ts: Sequence[float] | Tensor, name: str) -> list[float]:
    values = torch.as_tensor(ts, dtype=torch.float64)
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError(f"{name} must contain finite numbers only, got {values.tolist()}")
    return values.tolist()


def _evaluate_plane(
    loss_fn: LossFn,
    params: list[Tensor],
    directions: list[list[Tensor]],
    grid: list[list[float]],
    mask: list[bool],
    loss: str,
    scale: bool,
    per_channel: bool,
) -> Tensor:
    """Return the losses at ``w + sum_k c_k d_k`` for every coefficient tuple of the grid."""
    shape = [len(axis) for axis in grid]
    values = torch.empty(shape, dtype=torch.float64)

    with restored_after(params) as origin, torch.no_grad():
        for index in torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, len(shape)).tolist():
            coefficients = [axis[i] for axis, i in zip(grid, index)]
            for position, (p, w0) in enumerate(zip(params, origin)):
                point = w0.clone()
                for c, d in zip(coefficients, directions):
                    if c != 0:
                        point.add_(d[position], alpha=c)
                if loss == "quantized" and mask[position]:
                    point = binarize(point, scale=scale, per_channel=per_channel)
                p.copy_(point)
            values[tuple(index)] = float(loss_fn())
    return values


def loss_slice_1d(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    direction: Sequence[Tensor],
    ts: Sequence[float] | Tensor,
    *,
    loss: str = "continuous",
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    scale: bool = True,
    per_channel: bool = False,
) -> Tensor:
    """Evaluate ``f(w + t d)`` (``loss="continuous"``) or ``f(q(w + t d))``
    (``loss="quantized"``) for each ``t`` in ``ts``.

    Runs under ``torch.no_grad`` with one call of ``loss_fn`` per point. ``t = 0`` evaluates
    at ``w`` itself (``w + 0 d`` is not formed). The parameters get their values back bit
    for bit afterwards, also after an exception.

    NOTE: only parameters are restored. A model in training mode updates its BatchNorm
    running statistics on every call; put it in ``eval()`` mode inside ``loss_fn``.

    Args:
        loss_fn: returns the scalar loss at the current parameter values.
        params: the weights ``w``, one tensor per parameter.
        direction: ``d``, one tensor per parameter with its shape, for example from
            :func:`filter_normalized_direction`.
        ts: the step lengths ``t``, a non-empty 1-D sequence.
        loss: ``"continuous"`` or ``"quantized"``.
        binarized: the tensors ``q`` applies to with ``loss="quantized"``: None (every
            tensor), one boolean per tensor, or the tensors themselves.
        scale, per_channel: options of :func:`bqsam.quantizers.binarize`.

    Returns:
        A float64 tensor of shape ``(len(ts),)``.
    """
    params = _check_params(params)
    direction = _check_like(direction, params, "direction")
    steps = _as_steps(ts, "ts")
    _check_loss(loss)
    mask = _binarized_mask(binarized, params)
    return _evaluate_plane(loss_fn, params, [direction], [steps], mask, loss, scale, per_channel)


def loss_slice_2d(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    d1: Sequence[Tensor],
    d2: Sequence[Tensor],
    ts1: Sequence[float] | Tensor,
    ts2: Sequence[float] | Tensor,
    *,
    loss: str = "continuous",
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    scale: bool = True,
    per_channel: bool = False,
) -> Tensor:
    """Evaluate ``f(w + s d1 + t d2)`` or ``f(q(w + s d1 + t d2))`` on the grid ``ts1 x ts2``.

    Arguments are as in :func:`loss_slice_1d`. Returns a float64 tensor of shape
    ``(len(ts1), len(ts2))`` whose entry ``[i, j]`` is the loss at ``s = ts1[i]``,
    ``t = ts2[j]``.
    """
    params = _check_params(params)
    d1 = _check_like(d1, params, "d1")
    d2 = _check_like(d2, params, "d2")
    steps1 = _as_steps(ts1, "ts1")
    steps2 = _as_steps(ts2, "ts2")
    _check_loss(loss)
    mask = _binarized_mask(binarized, params)
    return _evaluate_plane(loss_fn, params, [d1, d2], [steps1, steps2], mask, loss, scale, per_channel)
