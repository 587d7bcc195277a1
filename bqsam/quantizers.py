"""One-bit quantizers and the BinaryRelax relaxation.

The scaled binarizer maps a block ``v`` of ``d`` weights to ``q(v) = alpha(v) sgn(v)`` with
``alpha(v) = ||v||_1 / d``: the Euclidean projection of ``v`` onto the set
``{alpha s : alpha >= 0, s in {-1, +1}^d}``. The relaxation of Yin et al. (2018) moves ``v``
part of the way towards ``q(v)``:

    r_lam(v) = (v + lam q(v)) / (1 + lam),   lam >= 0,   r_0 = identity,   r_inf = q.

A block is a whole tensor, or with ``per_channel=True`` each slice along dim 0 (one output
channel of a convolution, one row of a linear layer, one configuration of a batched sweep).

Example:
    >>> import torch
    >>> from bqsam import binarize, relax, quantization_error
    >>> w = torch.tensor([0.5, -1.5, 0.0, 1.0])
    >>> binarize(w)
    tensor([ 0.7500, -0.7500,  0.7500,  0.7500])
    >>> relax(w, lam=1.0)
    tensor([ 0.6250, -1.1250,  0.3750,  0.8750])
    >>> round(float(quantization_error(w)), 6)  # sqrt(||w||^2 - ||w||_1^2 / d)
    1.118034
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["sgn", "scale_factor", "binarize", "relax", "quantization_error"]


def sgn(t: Tensor) -> Tensor:
    """Return +1 where ``t >= 0`` and -1 elsewhere, in the dtype of ``t``.

    Unlike ``torch.sign`` this never returns 0, so ``sgn(t)`` is always a vertex of the
    hypercube: a weight at exactly zero is binarized to ``+alpha``.
    """
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))


def scale_factor(t: Tensor, per_channel: bool = False) -> Tensor:
    """Return ``alpha = ||v||_1 / d`` for each block ``v`` of ``t``.

    The result is a 0-dim tensor, or with ``per_channel=True`` a tensor of shape
    ``(C, 1, ..., 1)`` that broadcasts against ``t`` of shape ``(C, ...)``.
    """
    magnitude = t.abs()
    if not per_channel or t.dim() == 0:
        return magnitude.mean()
    if t.dim() == 1:
        # One weight per block: alpha is its absolute value.
        return magnitude
    return magnitude.mean(dim=tuple(range(1, t.dim())), keepdim=True)


def binarize(t: Tensor, scale: bool = True, per_channel: bool = False) -> Tensor:
    """Return the one-bit quantization ``q(t) = alpha(t) sgn(t)``, or ``sgn(t)`` when
    ``scale=False``.

    Args:
        t: the latent (full-precision) weights.
        scale: multiply by ``alpha = ||v||_1 / d`` of each block (the projection onto the
            scaled binary set); ``False`` gives the unscaled ``sgn(t)`` of BinaryConnect.
        per_channel: one block per slice along dim 0 instead of one per tensor.
    """
    signs = sgn(t)
    if not scale:
        return signs
    return scale_factor(t, per_channel) * signs


def _check_lam(lam: float | Tensor) -> None:
    if isinstance(lam, Tensor):
        if torch.isnan(lam).any() or (lam < 0).any():
            raise ValueError(f"lam must be >= 0 (inf allowed), got {lam.tolist()}")
        return
    if not isinstance(lam, (int, float)) or math.isnan(lam) or lam < 0:
        raise ValueError(f"lam must be a number >= 0 (inf allowed), got {lam!r}")


def relax(t: Tensor, lam: float | Tensor, scale: bool = True, per_channel: bool = False) -> Tensor:
    """Return the BinaryRelax point ``r_lam(t) = (t + lam q(t)) / (1 + lam)``.

    ``r_lam`` is the proximal map of ``(lam / 2) dist(., Q)^2`` for the binary set ``Q``;
    ``lam = 0`` returns ``t`` unchanged and ``lam = inf`` returns ``q(t)``. The point keeps
    the quantization of ``t``: ``q(r_lam(t)) = q(t)``.

    Args:
        t: the latent weights.
        lam: the relaxation weight, a number in ``[0, inf]``, or with ``per_channel=True`` a
            tensor of shape ``(C,)`` with one weight per slice along dim 0.
        scale, per_channel: as in :func:`binarize`.
    """
    _check_lam(lam)
    q = binarize(t, scale=scale, per_channel=per_channel)

    if isinstance(lam, Tensor):
        if t.dim() > 0 and lam.dim() > 0:
            lam = lam.reshape((-1,) + (1,) * (t.dim() - 1))
        lam = lam.to(t.dtype)
        finite = torch.where(torch.isinf(lam), torch.zeros_like(lam), lam)
        return torch.where(torch.isinf(lam), q, (t + finite * q) / (1 + finite))

    if math.isinf(lam):
        return q
    return (t + lam * q) / (1 + lam)


def quantization_error(t: Tensor, scale: bool = True, per_channel: bool = False) -> Tensor:
    """Return ``delta = ||t - q(t)||``, per tensor (0-dim) or per slice along dim 0.

    For the scaled binarizer ``delta^2 = ||v||^2 - ||v||_1^2 / d``, which lies in
    ``[0, (1 - 1/d) ||v||^2]``.
    """
    diff = t - binarize(t, scale=scale, per_channel=per_channel)
    if per_channel and t.dim() > 0:
        return diff.reshape(t.shape[0], -1).norm(dim=1)
    return diff.norm()
