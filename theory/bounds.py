"""The convergence bounds of SAM and one-bit SAM as functions of a run's quantities.

Notation: f(w) = (1/N) sum_i f_i(w); a_k = grad f(w_k); b_k = grad f(w_k + e_k) is the
gradient the update uses, w_{k+1} = w_k - eta b_k; e_k is the total displacement from w_k
to the point where b_k is taken (quantization plus SAM perturbation), with
||e_k|| <= r_k = rho + theta delta_k and delta_k = ||q(w_k) - w_k|| (theta = 1 for the
straight-through estimator, lam/(1 + lam) for the relaxation, 0 without quantization).
Assumptions: A1 f is L-smooth, A1' every f_i is L-smooth, A3 unbiased stochastic
gradients with variance <= sigma^2, A4 the Hessian is M-Lipschitz, A5 the PL inequality
||grad f||^2 >= 2 mu (f - f*).

Every function works elementwise on floats, numpy arrays or torch tensors (one entry per
configuration of a sweep) and returns the same kind. Each docstring states the bound and
the short proof it rests on. Functions whose bound needs a step-size condition check it
and raise ValueError; pass ``check_step=False`` to evaluate the formula anyway (negative
controls do this).

Example::

    import torch
    from theory.bounds import t1_bound, running_mean

    grad_norm2 = torch.tensor([4.0, 1.0, 0.25])         # ||grad f(w_k)||^2, k = 0, 1, 2
    losses = torch.tensor([3.0, 1.0, 0.5, 0.3])         # f(w_k), k = 0..3
    K = torch.arange(1, 4)
    lhs = running_mean(grad_norm2)                       # (1/K) sum_{k<K} ||a_k||^2
    rhs = t1_bound(losses[0], losses[1:], eta=0.5, K=K, L=1.0, rho=0.05)
    bool((lhs <= rhs).all())
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch

__all__ = [
    "one_step_bound",
    "running_mean",
    "t1_bound",
    "t2_bound",
    "t2_bound_along_run",
    "deployed_grad_norm_bound",
    "deployed_loss_bound",
    "t3a_bound",
    "t3b_bound",
    "t4_threshold",
    "t5_bound",
    "t5_bound_along_run",
    "sam_two_cycle_amplitude",
    "s1_bounds",
    "s1_gap_bound",
    "s2_bound",
    "sam_jacobian_norm_bound",
    "type1_error_bound",
    "s3_fd_bound",
]

Number = Union[float, int, np.ndarray, torch.Tensor]


def _values(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _require(name: str, value: Number, condition, valid: str) -> None:
    array = _values(value)
    if not np.all(np.isfinite(array)) or not np.all(condition(array)):
        raise ValueError(f"{name} must be {valid}, got {array.tolist()}")


def _require_positive(name: str, value: Number) -> None:
    _require(name, value, lambda v: v > 0, "> 0 (and finite)")


def _require_nonnegative(name: str, value: Number) -> None:
    _require(name, value, lambda v: v >= 0, ">= 0 (and finite)")


def _require_step(eta: Number, L: Number, factor: float, check_step: bool) -> None:
    _require_positive("eta", eta)
    _require_positive("L", L)
    if not check_step:
        return
    product = _values(eta) * _values(L) * factor
    if np.any(product > 1 + 1e-12):
        limit = "1/L" if factor == 1 else f"1/({factor:g} L)"
        raise ValueError(
            f"this bound needs eta <= {limit}, got eta * L = {(product / factor).tolist()}; "
            "pass check_step=False to evaluate it outside its hypothesis"
        )


def one_step_bound(f_k: Number, a_norm2: Number, b_norm2: Number, L: Number, eta: Number, r: Number) -> Number:
    """Return the right-hand side of the one-step inequality (A1):

        f(w_{k+1}) <= f(w_k) - (eta/2)||a||^2 - (eta/2)(1 - L eta)||b||^2 + (eta/2) L^2 r_k^2.

    Proof: the descent lemma gives f(w_{k+1}) <= f(w_k) - eta <a, b> + (L eta^2/2)||b||^2;
    substitute -<a, b> = (||a - b||^2 - ||a||^2 - ||b||^2)/2 and ||a - b|| <= L ||e_k|| <= L r_k.
    The inequality holds for every eta > 0. The condition eta <= 1/L is only needed to
    drop the ||b||^2 term in the averaged bounds.
    """
    _require_positive("eta", eta)
    _require_nonnegative("L", L)
    return f_k - 0.5 * eta * a_norm2 - 0.5 * eta * (1 - L * eta) * b_norm2 + 0.5 * eta * L**2 * r**2


def running_mean(x: Number, axis: int = -1) -> Number:
    """Return the running means (1/K) sum_{k<K} x_k for K = 1, 2, ... along ``axis``."""
    if isinstance(x, torch.Tensor):
        count = torch.arange(1, x.shape[axis] + 1, dtype=x.dtype, device=x.device)
        shape = [1] * x.dim()
        shape[axis] = -1
        return torch.cumsum(x, dim=axis) / count.reshape(shape)
    array = np.asarray(x, dtype=np.float64)
    count = np.arange(1, array.shape[axis] + 1, dtype=np.float64)
    shape = [1] * array.ndim
    shape[axis] = -1
    return np.cumsum(array, axis=axis) / count.reshape(shape)


def t1_bound(
    f0: Number, fK: Number, eta: Number, K: Number, L: Number, rho: Number, *, check_step: bool = True
) -> Number:
    """Return the T1 bound for deterministic SAM (A1, eta <= 1/L), for every K >= 1:

        (1/K) sum_{k<K} ||grad f(w_k)||^2 <= 2 (f(w_0) - f(w_K)) / (eta K) + L^2 rho^2.

    Proof: with eta <= 1/L the one-step inequality gives
    f(w_{k+1}) <= f(w_k) - (eta/2)||a_k||^2 + (eta/2) L^2 rho^2; sum over k < K and divide
    by eta K / 2. Equality holds for f = L w^2/2, eta = 1/L, w_0 = rho (the 2-cycle +-rho).
    ``fK`` and ``K`` may be arrays (one entry per K) for a check at every K.
    """
    _require_step(eta, L, 1.0, check_step)
    _require_positive("K", K)
    _require_nonnegative("rho", rho)
    return 2 * (f0 - fK) / (eta * K) + L**2 * rho**2


def t2_bound(
    f0: Number, fK: Number, eta: Number, K: Number, L: Number, mean_r2: Number, *, check_step: bool = True
) -> Number:
    """Return the T2 bound for deterministic one-bit SAM (A1, eta <= 1/L):

        (1/K) sum_{k<K} ||grad f(w_k)||^2 <= 2 (f(w_0) - f(w_K)) / (eta K) + L^2 (1/K) sum_{k<K} r_k^2,

    where mean_r2 = (1/K) sum_{k<K} r_k^2 and r_k = rho + theta delta_k. Proof: as for T1,
    with ||e_k|| <= r_k in place of rho. See ``t2_bound_along_run`` for every K at once.
    """
    _require_step(eta, L, 1.0, check_step)
    _require_positive("K", K)
    _require_nonnegative("mean_r2", mean_r2)
    return 2 * (f0 - fK) / (eta * K) + L**2 * mean_r2


def t2_bound_along_run(losses: Number, r: Number, eta: Number, L: Number, *, check_step: bool = True) -> Number:
    """Return the T2 bound for K = 1..K_max from a run's losses and radii.

    Args:
        losses: f(w_k) for k = 0..K_max, shape (..., K_max + 1).
        r: r_k = rho + theta delta_k for k = 0..K_max - 1, shape (..., K_max).
        eta, L: scalars or arrays broadcastable to the leading shape (...,) with a
            trailing axis of length 1.

    Returns:
        Shape (..., K_max); entry K - 1 bounds (1/K) sum_{k<K} ||grad f(w_k)||^2
        (compare it with ``running_mean`` of the squared gradient norms).
    """
    if not isinstance(losses, torch.Tensor):
        losses = np.asarray(losses, dtype=np.float64)
    if not isinstance(r, torch.Tensor):
        r = np.asarray(r, dtype=np.float64)
    if _values(losses).shape[-1] != _values(r).shape[-1] + 1:
        raise ValueError(
            f"losses needs one more entry than r along the last axis (f(w_0)..f(w_K) and "
            f"r_0..r_(K-1)), got shapes {_values(losses).shape} and {_values(r).shape}"
        )
    _require_nonnegative("r", r)
    count = _values(r).shape[-1]
    K = torch.arange(1, count + 1, dtype=torch.float64) if isinstance(r, torch.Tensor) else np.arange(1, count + 1, dtype=np.float64)
    if isinstance(r, torch.Tensor):
        K = K.to(r)
    return t2_bound(losses[..., :1], losses[..., 1:], eta, K, L, running_mean(r**2), check_step=check_step)


def deployed_grad_norm_bound(grad_norm: Number, L: Number, delta: Number) -> Number:
    """Return the bound on the gradient at the deployed point q(w) (A1):

        ||grad f(q(w))|| <= ||grad f(w)|| + L delta,  delta = ||q(w) - w||.

    Proof: the triangle inequality and ||grad f(q(w)) - grad f(w)|| <= L ||q(w) - w||.
    """
    _require_nonnegative("L", L)
    _require_nonnegative("delta", delta)
    return grad_norm + L * delta


def deployed_loss_bound(f_w: Number, grad_norm: Number, L: Number, delta: Number) -> Number:
    """Return the bound on the loss at the deployed point q(w) (A1):

        f(q(w)) <= f(w) + ||grad f(w)|| delta + L delta^2 / 2.

    Proof: the descent lemma f(q) <= f(w) + <grad f(w), q - w> + (L/2)||q - w||^2 and
    Cauchy-Schwarz on the middle term.
    """
    _require_nonnegative("L", L)
    _require_nonnegative("delta", delta)
    return f_w + grad_norm * delta + 0.5 * L * delta**2


def t3a_bound(
    f0: Number,
    f_star: Number,
    eta: Number,
    K: Number,
    L: Number,
    mean_r2: Number,
    sigma2: Number,
    *,
    check_step: bool = True,
) -> Number:
    """Return the T3(a) bound: stochastic SAM with independent ascent and descent samples
    (A1, A2, A3, eta <= 1/L):

        (1/K) sum E||grad f(w_k)||^2 <= 2 (f(w_0) - f*) / (eta K) + L^2 (1/K) sum E r_k^2 + L eta sigma^2.

    Proof: the descent sample is independent of the perturbation, so conditionally on it
    E[b~] = b = grad f(w_k + e_k) and E||b~||^2 <= ||b||^2 + sigma^2. The descent lemma
    then gives the one-step inequality plus L eta^2 sigma^2 / 2. Drop the ||b||^2 term
    (eta <= 1/L), sum, use E f(w_K) >= f*, and divide by eta K / 2.
    Here sigma^2 bounds the variance at the points where the descent gradient is taken,
    w_k + e_k, so a finite-sum check should take the maximum over those points.
    """
    _require_step(eta, L, 1.0, check_step)
    _require_positive("K", K)
    _require_nonnegative("mean_r2", mean_r2)
    _require_nonnegative("sigma2", sigma2)
    return 2 * (f0 - f_star) / (eta * K) + L**2 * mean_r2 + L * eta * sigma2


def t3b_bound(
    f0: Number,
    f_star: Number,
    eta: Number,
    K: Number,
    L: Number,
    mean_r2: Number,
    sigma2: Number,
    *,
    check_step: bool = True,
) -> Number:
    """Return the T3(b) bound: one minibatch for both SAM gradients (A1', A2, A3,
    eta <= 1/(4L)):

        (1/K) sum E||grad f(w_k)||^2 <= 4 (f(w_0) - f*) / (eta K) + 3 L^2 (1/K) sum E r_k^2 + 4 L eta sigma^2.

    L must bound every minibatch function's smoothness, so pass the per-sample constant
    max_i L_i (``problem.L_i``), and sigma2 the variance at the points w_k.
    Proof: write b~ = g_xi(w_k) + d with ||d|| = ||g_xi(w_k + e_k) - g_xi(w_k)|| <= L r_k
    (A1'). Then E<a, b~> >= ||a||^2 - ||a|| L r_k >= ||a||^2/2 - L^2 r_k^2/2 (Young) and
    E||b~||^2 <= 2(||a||^2 + sigma^2) + 2 L^2 r_k^2. The descent lemma gives
    E f(w_{k+1}) <= f(w_k) - eta (1/2 - L eta)||a||^2 + eta L^2 r_k^2 (1/2 + L eta) + L eta^2 sigma^2,
    and eta <= 1/(4L) turns the coefficients into 1/4 and 3/4. Sum and divide by eta K / 4.
    """
    _require_step(eta, L, 4.0, check_step)
    _require_positive("K", K)
    _require_nonnegative("mean_r2", mean_r2)
    _require_nonnegative("sigma2", sigma2)
    return 4 * (f0 - f_star) / (eta * K) + 3 * L**2 * mean_r2 + 4 * L * eta * sigma2


def t4_threshold(L: Number, rho: Number = 0.0, method: str = "usam") -> Number:
    """Return the largest stable step size on quadratics with spectrum in (0, L] (T4).

    USAM on f = w^T A w / 2 is the linear map I - eta A - eta rho A^2; its eigenvalue
    1 - eta lam (1 + rho lam) is below 1 for lam > 0 and above -1 iff
    eta lam (1 + rho lam) < 2. Since lam (1 + rho lam) increases, the worst case is lam = L:
    USAM converges from every start iff eta < 2 / (L + rho L^2). Gradient descent (rho = 0
    or method "gd") iff eta < 2 / L.
    """
    if method not in ("usam", "gd"):
        raise ValueError(f"method must be 'usam' or 'gd', got {method!r}")
    _require_positive("L", L)
    _require_nonnegative("rho", rho)
    if method == "gd":
        return 2 / L
    return 2 / (L + rho * L**2)


def t5_bound(f0_gap: Number, eta: Number, mu: Number, L: Number, K: Number, max_r2: Number, *, check_step: bool = True) -> Number:
    """Return the T5 bound under the PL inequality (A1, A5, eta <= 1/L):

        f(w_K) - f* <= (1 - eta mu)^K (f(w_0) - f*) + L^2 max_k r_k^2 / (2 mu).

    Proof: the one-step inequality with eta <= 1/L and ||a||^2 >= 2 mu (f - f*) give
    f(w_{k+1}) - f* <= (1 - eta mu)(f(w_k) - f*) + (eta/2) L^2 r_k^2; unroll and bound the
    geometric sum by 1/(eta mu). ``t5_bound_along_run`` keeps the exact sum (tighter).
    """
    _require_step(eta, L, 1.0, check_step)
    _require_positive("mu", mu)
    _require_nonnegative("K", K)
    _require_nonnegative("max_r2", max_r2)
    return (1 - eta * mu) ** K * f0_gap + L**2 * max_r2 / (2 * mu)


def t5_bound_along_run(f0_gap: Number, eta: Number, mu: Number, L: Number, r2: Number, *, check_step: bool = True) -> Number:
    """Return the unrolled T5 recursion B_{k+1} = (1 - eta mu) B_k + (eta/2) L^2 r_k^2,
    B_0 = f(w_0) - f*, for K = 1..K_max.

    Args:
        f0_gap: f(w_0) - f*, a scalar or shape (...,).
        eta, mu, L: scalars or shape (...,).
        r2: r_k^2 for k = 0..K_max - 1, shape (..., K_max).

    Returns:
        Shape (..., K_max): entry K - 1 bounds f(w_K) - f* and is at most ``t5_bound``
        with max_k r_k^2.
    """
    _require_step(eta, L, 1.0, check_step)
    _require_positive("mu", mu)
    _require_nonnegative("r2", r2)
    contraction = 1 - eta * mu
    steps = []
    current = f0_gap
    for k in range(_values(r2).shape[-1]):
        current = contraction * current + 0.5 * eta * L**2 * r2[..., k]
        steps.append(current)
    if isinstance(r2, torch.Tensor):
        return torch.stack([torch.as_tensor(s, dtype=r2.dtype) for s in steps], dim=-1)
    return np.stack([np.asarray(s, dtype=np.float64) for s in steps], axis=-1)


def sam_two_cycle_amplitude(eta: Number, L: Number, rho: Number) -> Number:
    """Return |w| of the 2-cycle w -> -w of normalised SAM on f = L w^2 / 2 (1-D):

        |w| = eta L rho / (2 - eta L),  for 0 < eta L < 2.

    Proof: for w > 0 the step is w - eta L (w + rho); setting it to -w gives
    (2 - eta L) w = eta L rho. With eta = 1/L the amplitude is rho.
    """
    _require_positive("eta", eta)
    _require_positive("L", L)
    _require_nonnegative("rho", rho)
    product = _values(eta) * _values(L)
    if np.any(product >= 2):
        raise ValueError(f"the 2-cycle exists only for eta * L < 2, got eta * L = {product.tolist()}")
    return eta * L * rho / (2 - eta * L)


def s1_bounds(f_w: Number, grad_norm: Number, L: Number, rho: Number) -> tuple[Number, Number]:
    """Return (lower, upper) of S1 (A1), with e(w) = rho grad f(w)/||grad f(w)||:

        f(w) + rho ||g|| - L rho^2/2 <= f(w + e(w)) <= f_rho(w) <= f(w) + rho ||g|| + L rho^2/2.

    Proof: the two-sided descent lemma |f(w + e) - f(w) - <g, e>| <= (L/2)||e||^2, with
    <g, e(w)> = rho ||g|| for the lower bound and max_{||e||<=rho} <g, e> = rho ||g|| for
    the upper one. (With g = 0, e = 0 and the lower bound still holds.)
    """
    _require_nonnegative("L", L)
    _require_nonnegative("rho", rho)
    return f_w + rho * grad_norm - 0.5 * L * rho**2, f_w + rho * grad_norm + 0.5 * L * rho**2


def s1_gap_bound(L: Number, rho: Number) -> Number:
    """Return L rho^2, the S1 bound on f_rho(w) - f(w + e(w)) >= 0 (difference of the two sides)."""
    _require_nonnegative("L", L)
    _require_nonnegative("rho", rho)
    return L * rho**2


def s2_bound(L: Number, e_norm: Number) -> Number:
    """Return L ||e||, the S2 bound on ||grad f(w + e) - grad f(w)|| (A1); ||e|| <= rho for SAM."""
    _require_nonnegative("L", L)
    _require_nonnegative("e_norm", e_norm)
    return L * e_norm


def sam_jacobian_norm_bound(L: Number, rho: Number, grad_norm: Optional[Number] = None, *, normalize: bool = True) -> Number:
    """Return the bound on ||J||, J the Jacobian of the perturbation e(w) (A1).

    Normalised SAM: J = (rho/||g||)(I - u u^T) H(w), u = g/||g||, so ||J|| <= rho L / ||g||
    (the projection has norm 1 and ||H|| <= L). USAM: J = rho H, ||J|| <= rho L.
    """
    _require_nonnegative("L", L)
    _require_nonnegative("rho", rho)
    if not normalize:
        return rho * L
    if grad_norm is None:
        raise ValueError("grad_norm = ||grad f(w)|| is required for the normalised perturbation")
    _require_positive("grad_norm", grad_norm)
    return rho * L / grad_norm


def type1_error_bound(
    perturbed_grad_norm: Number,
    L: Number,
    rho: Number,
    grad_norm: Optional[Number] = None,
    *,
    normalize: bool = True,
) -> Number:
    """Return the bound on the error of the first-order SAM gradient G1 = grad f(w + e):

        ||grad F(w) - G1|| = ||J^T G1|| <= ||J|| ||grad f(w + e)||,

    with F(w) = f(w + e(w)), grad F = (I + J)^T grad f(w + e) and ||J|| from
    ``sam_jacobian_norm_bound`` (rho L / ||g|| normalised, rho L for USAM).
    """
    _require_nonnegative("perturbed_grad_norm", perturbed_grad_norm)
    return sam_jacobian_norm_bound(L, rho, grad_norm, normalize=normalize) * perturbed_grad_norm


def s3_fd_bound(M: Number, delta: Number, v_norm: Number) -> Number:
    """Return (M delta / 2) ||v||^2, the S3 bound on the central-difference HVP error (A4):

        ||(grad f(w + delta v) - grad f(w - delta v)) / (2 delta) - H(w) v|| <= (M delta / 2) ||v||^2.

    Proof: grad f(w + s v) - grad f(w) - s H(w) v = s int_0^1 (H(w + t s v) - H(w)) v dt
    has norm <= M s^2 ||v||^2 / 2 for s = +delta and s = -delta. Subtract the two and
    divide by 2 delta. On quadratics M = 0 and the difference is exact up to rounding.
    """
    _require_nonnegative("M", M)
    _require_positive("delta", delta)
    _require_nonnegative("v_norm", v_norm)
    return 0.5 * M * delta * v_norm**2
