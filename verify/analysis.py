"""Exact quantities along a recorded run, and the reference points the update must use.

For a ``Trace`` this module evaluates, with the problem's exact loss, gradient and
Hessian, everything the bounds need:

- ``a_k = grad f(w_k)``, ``f(w_k)``, and the update direction the optimizer actually
  applied, ``d_k = (w_k - w_{k+1}) / eta`` (plain SGD base step, so exact up to rounding);
- ``delta_k = ||q(w_k) - w_k||`` with an independent reference binarizer;
- the radius ``r_k = rho_k + theta_k delta_k`` that bounds ``||z_k - w_k||``, where
  ``rho_k = rho`` for normalised SAM and ``rho ||grad f(x_k)||`` for USAM;
- ``D_k``, an a-priori bound on ``||a_k - d_k||``: ``L r_k`` for the first-order gradient
  and ``L r_k + ||J|| ||G1|| + (M fd_delta / 2) ||v||`` for the Hessian-corrected one
  (the central difference steps fd_delta along v / ||v||);
- the reference x_k, descent point and descent gradient built from the definitions of
  the algorithm, to compare with what BinarySAM did.

Example:
    >>> run = analyse(trace)                 # doctest: +SKIP
    >>> run.D.shape                          # (K, G, C)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from theory import bounds

from .runner import Trace

__all__ = ["Analysis", "analyse", "gradient_scale", "reference_binarize", "reference_relax", "row_norm"]

TINY = torch.finfo(torch.float64).tiny


def row_norm(t: Tensor) -> Tensor:
    """Return the Euclidean norm over the last dimension."""
    return t.norm(dim=-1)


def gradient_scale(problem, x: Tensor) -> Tensor:
    """Return the magnitude of the terms summed into grad f(x): mean_i ||grad f_i(x)|| + L ||x||.

    Rounding errors of a computed gradient are relative to this, not to ||grad f(x)||, which
    cancels to nearly 0 near a stationary point.
    """
    return row_norm(problem.sample_grads(x)).mean(dim=-1) + float(problem.L) * row_norm(x)


def reference_binarize(w: Tensor) -> Tensor:
    """Return q(w) = (||w||_1 / n) sgn(w) per row (last dimension), sgn(0) = +1.

    Written independently of ``bqsam.quantizers`` so that a fault there shows up as a
    mismatch instead of being reproduced.
    """
    alpha = w.abs().mean(dim=-1, keepdim=True)
    return torch.where(w >= 0, alpha, -alpha)


def reference_relax(w: Tensor, lam: Tensor) -> Tensor:
    """Return r_lam(w) = (w + lam q(w)) / (1 + lam) per row; lam = inf gives q(w)."""
    q = reference_binarize(w)
    lam = lam.unsqueeze(-1)
    finite = torch.where(torch.isinf(lam), torch.zeros_like(lam), lam)
    return torch.where(torch.isinf(lam), q, (w + finite * q) / (1 + finite))


def _unit(g: Tensor) -> tuple[Tensor, Tensor]:
    norm = row_norm(g)
    inverse = torch.where(norm > 0, 1.0 / norm.clamp_min(TINY), torch.zeros_like(norm))
    return g * inverse.unsqueeze(-1), inverse


@dataclass
class Analysis:
    """Exact quantities along a trace; shapes use K steps, G step sizes, C rows, n coordinates."""

    trace: Trace
    f_w: Tensor  # (K+1, G, C)
    a: Tensor  # grad f(w_k), (K+1, G, C, n)
    d: Tensor  # applied direction (w_k - w_{k+1}) / eta, (K, G, C, n)
    g_x: Tensor  # grad f(x_k), (K, G, C, n)
    g_z: Tensor  # grad f(z_k) = G1, (K, G, C, n)
    delta: Tensor  # ||q(w_k) - w_k||, (K+1, G, C)
    theta: Tensor  # (K, 1, C)
    rho_step: Tensor  # bound on the SAM perturbation's norm, (K, G, C)
    r: Tensor  # r_k, (K, G, C)
    D: Tensor  # bound on ||a_k - d_k||, (K, G, C)
    x_ref: Tensor  # (K, G, C, n)
    z_ref: Tensor  # (K, G, C, n)
    d_ref: Tensor  # reference descent gradient, (K, G, C, n)
    fd_allowance: Tensor  # (M delta_fd / 2) ||v||, (K, G, C)
    jacobian_term: Tensor  # ||J|| bound times ||G1||, (K, G, C)

    @property
    def L(self) -> float:
        return float(self.trace.problem.L)

    @property
    def eta(self) -> Tensor:
        """Step sizes broadcast as (1, G, 1)."""
        return self.trace.etas.reshape(1, -1, 1)

    @property
    def r_effective(self) -> Tensor:
        """D_k / L: the radius that turns the T1/T2 formulas (stated with L r_k) into D_k."""
        return self.D / self.L


def analyse(trace: Trace) -> Analysis:
    """Evaluate the exact quantities and reference points of ``trace``."""
    problem, method = trace.problem, trace.method
    steps = trace.steps
    w, x, z = trace.w, trace.x, trace.z
    L = float(problem.L)
    eta = trace.etas.reshape(1, -1, 1, 1)
    rho = trace.rhos.reshape(1, 1, -1)

    f_w = problem.loss(w)
    a = problem.grad(w)
    d = (w[:-1] - w[1:]) / eta
    g_x = problem.grad(x)
    g_z = problem.grad(z)
    delta = row_norm(reference_binarize(w) - w)

    theta = torch.stack([method.theta(trace.lams, k) for k in range(steps)]).unsqueeze(1)
    lam_k = torch.stack([trace.lams * method.lam_growth**k for k in range(steps)]).unsqueeze(1)

    # Reference x_k from the definition of the method.
    w_k = w[:-1]
    if method.quantizer is None:
        x_ref = w_k.clone()
    elif method.quantizer == "ste":
        x_ref = reference_binarize(w_k)
    else:
        x_ref = reference_relax(w_k, lam_k.expand(steps, w.shape[1], -1))

    # Reference perturbation e(x_k) from the exact gradient at the recorded x_k.
    unit, inverse_norm = _unit(g_x)
    if not method.sam:
        e_ref = torch.zeros_like(x)
        rho_step = torch.zeros_like(delta[:-1])
    elif method.normalize:
        e_ref = rho.unsqueeze(-1) * unit
        rho_step = rho.expand_as(delta[:-1])
    else:
        e_ref = rho.unsqueeze(-1) * g_x
        rho_step = rho * row_norm(g_x)

    if method.perturb == "latent":
        z_ref = reference_binarize(w_k + e_ref)
    else:
        z_ref = x + e_ref

    r = rho_step + theta * delta[:-1]

    # Reference descent gradient and the bound on ||a_k - d_k||.
    zeros = torch.zeros_like(r)
    if method.hessian:
        if method.normalize:
            scaled = rho.unsqueeze(-1) * inverse_norm.unsqueeze(-1) * g_z
            v = scaled - unit * (unit * scaled).sum(dim=-1, keepdim=True)
            jacobian_norm = rho * L * inverse_norm
        else:
            v = rho.unsqueeze(-1) * g_z
            jacobian_norm = rho * L * torch.ones_like(inverse_norm)
        hessian = problem.hessian(x)
        d_ref = g_z + torch.einsum("...ij,...j->...i", hessian, v)
        jacobian_term = jacobian_norm * row_norm(g_z)
        if method.sam_grad == "hessian-fd":
            # BinarySAM steps fd_delta along the unit direction u = v/||v|| and returns
            # ||v|| HVP_delta(x, u); S3 then bounds the error by ||v|| (M delta / 2) ||u||^2.
            fd_allowance = float(bounds.s3_fd_bound(problem.M, trace.fd_delta, 1.0)) * row_norm(v)
        else:
            fd_allowance = zeros
    else:
        d_ref = g_z
        jacobian_term = zeros
        fd_allowance = zeros

    D = L * r + jacobian_term + fd_allowance
    return Analysis(
        trace=trace,
        f_w=f_w,
        a=a,
        d=d,
        g_x=g_x,
        g_z=g_z,
        delta=delta,
        theta=theta,
        rho_step=rho_step,
        r=r,
        D=D,
        x_ref=x_ref,
        z_ref=z_ref,
        d_ref=d_ref,
        fd_allowance=fd_allowance,
        jacobian_term=jacobian_term,
    )
