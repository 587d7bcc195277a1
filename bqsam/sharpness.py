"""Sharpness measures of a loss from Hessian-vector products and projected gradient ascent.

Every measure takes a loss closure ``loss_fn()`` that returns the scalar loss ``f`` at the
current values of a list of parameter tensors ``params``: the parameters of an
``nn.Module`` or the plain tensors of a small problem. The Hessian ``H`` is never formed.
Each product ``H v`` costs one double backpropagation through the graph of ``grad f``:

    H v = grad_w <grad f(w), v>.

Measures:

- top Hessian eigenvalue by Lanczos with full reorthogonalisation
  (:func:`lanczos_top_eigenvalue`) or by power iteration, the method PyHessian uses
  (:func:`power_iteration_top_eigenvalue`);
- Hessian trace by Hutchinson's estimator ``tr H = E[z^T H z]`` with Rademacher ``z``
  (:func:`hutchinson_trace`);
- worst-case rho-sharpness ``max_{||e|| <= rho} f(w + e) - f(w)`` by projected gradient
  ascent (:func:`rho_sharpness`).

Each measure is taken at the latent weights ``w`` (``at="latent"``) or at the deployed
point ``q(w)`` (``at="quantized"``), where ``q`` is the scaled binarizer of
:mod:`bqsam.quantizers` applied to the tensors chosen by ``binarized``. The parameters hold
``q(w)`` during the measurement and get their latent values back, bit for bit, afterwards.

Example:
    >>> import torch
    >>> from bqsam.sharpness import lanczos_top_eigenvalue
    >>> w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    >>> A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    >>> result = lanczos_top_eigenvalue(lambda: 0.5 * w @ A @ w, [w], tol=1e-10)
    >>> round(result.eigenvalue, 10), result.hvp_count
    (3.0, 2)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from bqsam.hvp import hvp_exact
from bqsam.quantizers import binarize

__all__ = [
    "LossFn",
    "HessianOperator",
    "hessian_vector_product",
    "EigenResult",
    "lanczos_top_eigenvalue",
    "power_iteration_top_eigenvalue",
    "TraceResult",
    "hutchinson_trace",
    "RhoSharpnessResult",
    "rho_sharpness",
    "restored_after",
    "quantized_point",
]

LossFn = Callable[[], Tensor]
"""A closure that returns the scalar loss at the current values of the parameters."""

_POINTS = ("latent", "quantized")


# ---------------------------------------------------------------------------------------------
# Argument checks and flat-vector helpers


def _check_params(params: Sequence[Tensor]) -> list[Tensor]:
    params = list(params)
    if not params:
        raise ValueError("params is empty; pass at least one parameter tensor")
    for index, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"params[{index}] must be a torch.Tensor, got {type(p).__name__}")
        if not p.is_floating_point():
            raise ValueError(f"params[{index}] must be a floating-point tensor, got dtype {p.dtype}")
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1:
        raise ValueError(f"params must share one dtype, got {sorted(str(d) for d in dtypes)}")
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ValueError(f"params must live on one device, got {sorted(str(d) for d in devices)}")
    return params


def _check_differentiable(params: Sequence[Tensor]) -> None:
    for index, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(
                f"params[{index}] does not require grad; Hessian-vector products need "
                "tensors created with requires_grad=True"
            )


def _check_like(tensors: Sequence[Tensor], params: Sequence[Tensor], name: str) -> list[Tensor]:
    tensors = list(tensors)
    if len(tensors) != len(params):
        raise ValueError(f"{name} needs one tensor per parameter: got {len(tensors)}, expected {len(params)}")
    for index, (t, p) in enumerate(zip(tensors, params)):
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(
                f"{name}[{index}] has shape {tuple(t.shape)}, expected the parameter's shape {tuple(p.shape)}"
            )
    return tensors


def _check_tol(tol: float) -> None:
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")


def _check_count(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_at(at: str) -> None:
    if at not in _POINTS:
        raise ValueError(f"at must be one of {_POINTS}, got {at!r}")


def _binarized_mask(binarized: Sequence[bool] | Sequence[Tensor] | None, params: Sequence[Tensor]) -> list[bool]:
    """Return one flag per parameter: which tensors the quantizer replaces by ``q(w)``.

    ``binarized`` is None (every tensor), a sequence of booleans aligned with ``params``, or
    a sequence of tensors taken from ``params`` (matched by identity).
    """
    if binarized is None:
        return [True] * len(params)
    binarized = list(binarized)
    if all(isinstance(flag, (bool, np.bool_)) for flag in binarized):
        if len(binarized) != len(params):
            raise ValueError(
                f"binarized has {len(binarized)} flags, expected one per parameter ({len(params)})"
            )
        return [bool(flag) for flag in binarized]
    if all(isinstance(t, Tensor) for t in binarized):
        chosen = {id(t) for t in binarized}
        known = {id(p) for p in params}
        if not chosen <= known:
            raise ValueError("binarized contains a tensor that is not in params; pass tensors from params")
        return [id(p) in chosen for p in params]
    raise ValueError("binarized must be None, a sequence of booleans, or a sequence of tensors from params")


def _flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflatten(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    pieces = torch.split(vector, [p.numel() for p in like])
    return [piece.view_as(p) for piece, p in zip(pieces, like)]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_unit_vector(n: int, like: Tensor, seed: int) -> Tensor:
    vector = torch.randn(n, generator=_generator(seed), dtype=torch.float64)
    vector = vector.to(dtype=like.dtype, device=like.device)
    return vector / vector.norm()


def _relative_change(new: float, old: float) -> float:
    if new == old:
        return 0.0
    if new == 0.0:
        return math.inf
    return abs(new - old) / abs(new)


# ---------------------------------------------------------------------------------------------
# Evaluation points


@contextlib.contextmanager
def restored_after(params: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    """Save the values of ``params`` and copy them back, bit for bit, on exit.

    Yields the saved copies. The restore runs on an exception too. Gradients in ``.grad``
    are not touched.
    """
    params = list(params)
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)


@contextlib.contextmanager
def quantized_point(
    params: Sequence[Tensor],
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    *,
    scale: bool = True,
    per_channel: bool = False,
) -> Iterator[None]:
    """Hold ``q(w)`` in the binarized tensors inside the block and ``w`` again after it.

    ``q`` is :func:`bqsam.quantizers.binarize` with ``scale`` and ``per_channel``;
    ``binarized`` is None (every tensor), one boolean per tensor, or the tensors themselves.
    """
    params = _check_params(params)
    mask = _binarized_mask(binarized, params)
    with restored_after(params):
        with torch.no_grad():
            for p, flag in zip(params, mask):
                if flag:
                    p.copy_(binarize(p.detach(), scale=scale, per_channel=per_channel))
        yield


def _evaluation_point(
    params: list[Tensor],
    at: str,
    binarized: Sequence[bool] | Sequence[Tensor] | None,
    scale: bool,
    per_channel: bool,
) -> contextlib.AbstractContextManager:
    if at == "latent":
        return contextlib.nullcontext()
    return quantized_point(params, binarized, scale=scale, per_channel=per_channel)


# ---------------------------------------------------------------------------------------------
# Hessian-vector products


class HessianOperator:
    """The Hessian of ``loss_fn`` at the current parameter values, applied by double
    backpropagation, with a count of the products taken.

    The gradient graph is built on the first product and reused (``retain_graph=True``), so
    each product costs one backward pass through it. Build a new operator after the
    parameters change.
    """

    def __init__(self, loss_fn: LossFn, params: Sequence[Tensor]) -> None:
        self.params = _check_params(params)
        _check_differentiable(self.params)
        self.loss_fn = loss_fn
        self.hvp_count = 0
        self._grads: tuple[Tensor, ...] | None = None

    @property
    def numel(self) -> int:
        """The dimension ``n`` of the parameter space."""
        return sum(p.numel() for p in self.params)

    def _gradient_graph(self) -> tuple[Tensor, ...]:
        if self._grads is None:
            loss = self.loss_fn()
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(f"loss_fn must return a scalar (0-dim) tensor, got {shape}")
            grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            self._grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads))
        return self._grads

    def __call__(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """Return ``H v`` as one tensor per parameter."""
        vectors = _check_like(vectors, self.params, "vectors")
        grads = self._gradient_graph()
        self.hvp_count += 1

        if not any(g.requires_grad for g in grads):
            # The loss is at most linear in params: H = 0.
            return [torch.zeros_like(p) for p in self.params]
        return hvp_exact(grads, self.params, vectors, retain_graph=True)

    def matvec(self, vector: Tensor) -> Tensor:
        """Return ``H v`` for a flat vector ``v`` of length :attr:`numel`."""
        return _flatten(self(_unflatten(vector, self.params)))


def hessian_vector_product(loss_fn: LossFn, params: Sequence[Tensor], vectors: Sequence[Tensor]) -> list[Tensor]:
    """Return ``H v = grad_w <grad f(w), v>`` at the current parameters by double backpropagation.

    Costs one forward pass and two backward passes. For many products at one point use
    :class:`HessianOperator`, which builds the gradient graph once.
    """
    params = _check_params(params)
    _check_like(vectors, params, "vectors")
    return HessianOperator(loss_fn, params)(vectors)


# ---------------------------------------------------------------------------------------------
# Top eigenvalue


@dataclass
class EigenResult:
    """The outcome of an eigenvalue iteration.

    Attributes:
        eigenvalue: the estimate of the top eigenvalue.
        eigenvalues: the top ``k`` estimates in descending order (Lanczos), or
            ``[eigenvalue]`` (power iteration).
        hvp_count: Hessian-vector products used.
        converged: whether the stopping rule held before ``max_iter`` products.
        history: the estimate of the top eigenvalue after each product.
        residuals: Lanczos only: the residual bound ``beta_j |s_j|`` of the top Ritz
            pair after each product. Some eigenvalue of ``H`` lies within this distance of
            the Ritz value.
        eigenvector: a unit eigenvector estimate (one tensor per parameter), when requested.
    """

    eigenvalue: float
    eigenvalues: list[float]
    hvp_count: int
    converged: bool
    history: list[float] = field(default_factory=list)
    residuals: list[float] = field(default_factory=list)
    eigenvector: list[Tensor] | None = None


def lanczos_top_eigenvalue(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    *,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    at: str = "latent",
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    scale: bool = True,
    per_channel: bool = False,
    return_eigenvector: bool = False,
) -> EigenResult:
    """Estimate the ``k`` largest (algebraic) Hessian eigenvalues by the Lanczos method.

    From a random unit vector ``q_0`` (``seed``), step ``j`` computes

        w = H q_j - alpha_j q_j - beta_{j-1} q_{j-1},   alpha_j = q_j^T H q_j,
        w <- w - Q_j Q_j^T w (twice),   beta_j = ||w||,   q_{j+1} = w / beta_j,

    where ``Q_j = [q_0 ... q_j]`` (full reorthogonalisation, so stored Lanczos vectors take
    ``max_iter * n`` numbers). The Ritz values are the eigenvalues ``theta`` of the
    tridiagonal matrix ``T_j = tridiag(beta, alpha, beta)``, with eigenvectors ``s``. The
    residual bound of a Ritz pair is ``beta_j |s_j|``, where ``s_j`` is the last component of ``s``.
    The iteration stops after product ``j`` when, for each of the top ``k`` Ritz values,
    either the relative change since step ``j - 1`` is at most ``tol`` or the relative
    residual bound ``beta_j |s_j| / |theta|`` is at most ``tol``; it also stops when
    ``beta_j`` vanishes (an invariant subspace: the Ritz values are exact eigenvalues) or after
    ``min(max_iter, n)`` products.

    Args:
        loss_fn: returns the scalar loss at the current parameter values.
        params: the tensors to differentiate with respect to (``requires_grad=True``).
        k: how many of the largest eigenvalues to return.
        tol: relative tolerance of the stopping rule, ``> 0``.
        max_iter: the maximum number of Hessian-vector products.
        seed: seeds the starting vector.
        at: ``"latent"`` for ``H(w)``, ``"quantized"`` for ``H(q(w))`` with ``q`` applied to
            the tensors chosen by ``binarized`` (None: every tensor).
        scale, per_channel: options of :func:`bqsam.quantizers.binarize`.
        return_eigenvector: also return the top Ritz vector.
    """
    params = _check_params(params)
    _check_count("k", k)
    _check_tol(tol)
    _check_count("max_iter", max_iter)
    _check_at(at)
    _binarized_mask(binarized, params)
    _check_differentiable(params)

    with _evaluation_point(params, at, binarized, scale, per_channel):
        operator = HessianOperator(loss_fn, params)
        return _lanczos(operator, k, tol, max_iter, seed, return_eigenvector)


def _lanczos(
    operator: HessianOperator, k: int, tol: float, max_iter: int, seed: int, return_eigenvector: bool
) -> EigenResult:
    n = operator.numel
    steps = min(max_iter, n)
    like = operator.params[0]
    eps = torch.finfo(like.dtype).eps

    basis = [_random_unit_vector(n, like, seed)]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    residuals: list[float] = []
    previous_top: np.ndarray | None = None
    converged = False
    ritz_values = np.zeros(0)
    ritz_vectors = np.zeros((0, 0))
    norm_estimate = 0.0

    for j in range(steps):
        q = basis[j]
        w = operator.matvec(q)
        alpha = float(w @ q)
        w = w - alpha * q
        if j > 0:
            w = w - betas[j - 1] * basis[j - 1]
        stacked = torch.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        alphas.append(alpha)
        betas.append(beta)

        tridiagonal = np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)
        ritz_values, ritz_vectors = np.linalg.eigh(tridiagonal)
        top = ritz_values[::-1][:k]
        bounds = beta * np.abs(ritz_vectors[-1, ::-1][:k])
        history.append(float(top[0]))
        residuals.append(float(bounds[0]))

        norm_estimate = max(norm_estimate, abs(alpha), beta, float(np.max(np.abs(ritz_values))))
        exhausted = beta <= 100 * eps * max(norm_estimate, eps)
        if len(top) == k:
            small_residual = bounds <= tol * np.abs(top)
            if previous_top is not None and len(previous_top) == k:
                small_change = np.array([_relative_change(t, p) <= tol for t, p in zip(top, previous_top)])
            else:
                small_change = np.zeros(k, dtype=bool)
            if np.all(small_residual | small_change) or exhausted:
                converged = True
        previous_top = top
        if converged or exhausted:
            break
        basis.append(w / beta)

    top = ritz_values[::-1][:k]
    eigenvector = None
    if return_eigenvector:
        coefficients = torch.as_tensor(ritz_vectors[:, -1].copy(), dtype=like.dtype, device=like.device)
        vector = torch.stack(basis[: len(alphas)]).T @ coefficients
        eigenvector = _unflatten(vector / vector.norm(), operator.params)
    return EigenResult(
        eigenvalue=float(top[0]),
        eigenvalues=[float(t) for t in top],
        hvp_count=operator.hvp_count,
        converged=converged,
        history=history,
        residuals=residuals,
        eigenvector=eigenvector,
    )


def power_iteration_top_eigenvalue(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    *,
    tol: float = 1e-3,
    max_iter: int = 1000,
    seed: int = 0,
    at: str = "latent",
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    scale: bool = True,
    per_channel: bool = False,
    return_eigenvector: bool = False,
) -> EigenResult:
    """Estimate the Hessian eigenvalue of largest magnitude by power iteration.

    From a random unit vector ``v_0`` (``seed``):

        u = H v_i,   lambda_i = v_i^T u,   v_{i+1} = u / ||u||,

    stopping when ``|lambda_i - lambda_{i-1}| <= tol |lambda_i|`` or after ``max_iter``
    products. PyHessian's ``hessian.eigenvalues`` uses the same relative-change rule, with
    ``|lambda_{i-1}| + 1e-6`` as the denominator and ``tol = 1e-3`` by default. Power iteration converges to the eigenvalue of largest
    ``|lambda|``, which is the top eigenvalue only when it dominates the most negative one.
    Its error shrinks like ``(lambda_2 / lambda_1)^(2i)``, so it is slow when the top two
    eigenvalues are close; :func:`lanczos_top_eigenvalue` needs fewer products.

    Args are as in :func:`lanczos_top_eigenvalue`.
    """
    params = _check_params(params)
    _check_tol(tol)
    _check_count("max_iter", max_iter)
    _check_at(at)
    _binarized_mask(binarized, params)
    _check_differentiable(params)

    with _evaluation_point(params, at, binarized, scale, per_channel):
        operator = HessianOperator(loss_fn, params)
        vector = _random_unit_vector(operator.numel, params[0], seed)
        history: list[float] = []
        converged = False
        for _ in range(max_iter):
            product = operator.matvec(vector)
            estimate = float(vector @ product)
            history.append(estimate)
            size = product.norm()
            if size == 0:
                # v is in the null space of H: the estimate 0 is an exact eigenvalue.
                converged = True
                break
            vector = product / size
            if len(history) > 1 and _relative_change(history[-1], history[-2]) <= tol:
                converged = True
                break

    return EigenResult(
        eigenvalue=history[-1],
        eigenvalues=[history[-1]],
        hvp_count=operator.hvp_count,
        converged=converged,
        history=history,
        eigenvector=_unflatten(vector, params) if return_eigenvector else None,
    )


# ---------------------------------------------------------------------------------------------
# Trace


@dataclass
class TraceResult:
    """Hutchinson's estimate of ``tr H``.

    Attributes:
        trace: the sample mean of ``z^T H z``.
        standard_error: the sample standard deviation divided by ``sqrt(n_samples)``; NaN
            for a single sample.
        samples: the values ``z^T H z``, one per Rademacher vector.
        hvp_count: Hessian-vector products used (one per sample).
    """

    trace: float
    standard_error: float
    samples: list[float]
    hvp_count: int


def hutchinson_trace(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    *,
    n_samples: int = 100,
    seed: int = 0,
    at: str = "latent",
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    scale: bool = True,
    per_channel: bool = False,
) -> TraceResult:
    """Estimate ``tr H`` by Hutchinson's estimator ``mean_i z_i^T H z_i``.

    Each ``z_i`` has independent Rademacher entries (+1 or -1 with probability 1/2), so the
    estimator is unbiased with variance ``2 sum_{a != b} H_ab^2`` per sample. A diagonal
    ``H`` therefore gives the exact trace from every sample.

    Args:
        n_samples: the number of Rademacher vectors, ``>= 1``.
        Other arguments are as in :func:`lanczos_top_eigenvalue`.
    """
    params = _check_params(params)
    _check_count("n_samples", n_samples)
    _check_at(at)
    _binarized_mask(binarized, params)
    _check_differentiable(params)

    generator = _generator(seed)
    like = params[0]
    with _evaluation_point(params, at, binarized, scale, per_channel):
        operator = HessianOperator(loss_fn, params)
        samples = []
        for _ in range(n_samples):
            signs = torch.randint(0, 2, (operator.numel,), generator=generator)
            z = (2 * signs - 1).to(dtype=like.dtype, device=like.device)
            samples.append(float(z @ operator.matvec(z)))

    values = np.asarray(samples, dtype=np.float64)
    standard_error = float(values.std(ddof=1) / math.sqrt(n_samples)) if n_samples > 1 else math.nan
    return TraceResult(
        trace=float(values.mean()),
        standard_error=standard_error,
        samples=samples,
        hvp_count=operator.hvp_count,
    )


# ---------------------------------------------------------------------------------------------
# Worst-case rho-sharpness


@dataclass
class RhoSharpnessResult:
    """The outcome of projected gradient ascent on ``f(w + e) - f(w)`` over ``||e|| <= rho``.

    Attributes:
        value: the largest ``f(w + e) - f(w)`` seen, a lower bound on the maximum.
        perturbation: the ``e`` that attains ``value`` (one tensor per parameter).
        base_loss: ``f(w)``.
        steps: ascent steps taken.
        converged: whether ``||e_{k+1} - e_k|| <= tol rho`` held before ``steps`` ran out.
        history: ``f(w + e_k) - f(w)`` for each iterate, starting with ``e_0``.
    """

    value: float
    perturbation: list[Tensor]
    base_loss: float
    steps: int
    converged: bool
    history: list[float] = field(default_factory=list)


def _loss_and_gradient(loss_fn: LossFn, params: list[Tensor]) -> tuple[float, Tensor]:
    with torch.enable_grad():
        loss = loss_fn()
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar (0-dim) tensor, got {shape}")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return float(loss.detach()), _flatten(grads).detach()


def _project_onto_ball(vector: Tensor, radius: float) -> Tensor:
    size = float(vector.norm())
    if size <= radius:
        return vector
    return vector * (radius / size)


def rho_sharpness(
    loss_fn: LossFn,
    params: Sequence[Tensor],
    rho: float,
    *,
    steps: int = 100,
    lr: float | None = None,
    tol: float = 1e-8,
    seed: int = 0,
    at: str = "latent",
    binarized: Sequence[bool] | Sequence[Tensor] | None = None,
    scale: bool = True,
    per_channel: bool = False,
) -> RhoSharpnessResult:
    """Estimate ``max_{||e|| <= rho} f(w + e) - f(w)`` by projected gradient ascent.

    The ascent starts from the SAM perturbation ``e_0 = rho g / ||g||`` with
    ``g = grad f(w)`` (a random direction of norm ``rho``, from ``seed``, when ``g = 0``) and
    iterates

        e_{k+1} = P(e_k + lr grad f(w + e_k)),   P(v) = v min(1, rho / ||v||),

    until ``||e_{k+1} - e_k|| <= tol rho`` or ``steps`` steps. ``lr=None`` takes
    ``lr = rho / ||grad f(w + e_0)||``, so the first step has length ``rho``. The result is
    the best iterate, so ``value`` never decreases with more steps. Each step costs one
    forward and one backward pass. Like every local method it can stop at a local maximum;
    on a quadratic the trust-region solution gives the exact value.

    Args:
        rho: the radius, ``>= 0``; ``rho = 0`` returns value 0 without any pass.
        steps: the maximum number of ascent steps, ``>= 0``.
        lr: the ascent step size, ``> 0``, or None for the rule above.
        tol: stop when an iterate moves less than ``tol rho``, ``> 0``.
        seed: seeds the starting direction when the gradient at ``w`` is zero.
        Other arguments are as in :func:`lanczos_top_eigenvalue`.
    """
    params = _check_params(params)
    if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
    _check_count("steps", steps, minimum=0)
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 or None, got {lr!r}")
    _check_tol(tol)
    _check_at(at)
    _binarized_mask(binarized, params)
    _check_differentiable(params)

    with _evaluation_point(params, at, binarized, scale, per_channel), restored_after(params) as origin:
        flat_origin = _flatten(origin)

        def loss_and_gradient_at(e: Tensor) -> tuple[float, Tensor]:
            with torch.no_grad():
                for p, w0, de in zip(params, origin, _unflatten(e, params)):
                    p.copy_(w0 + de)
            return _loss_and_gradient(loss_fn, params)

        base_loss, gradient = loss_and_gradient_at(torch.zeros_like(flat_origin))
        if rho == 0:
            return RhoSharpnessResult(0.0, [torch.zeros_like(p) for p in params], base_loss, 0, True, [0.0])

        size = float(gradient.norm())
        if size > 0:
            e = gradient * (rho / size)
        else:
            e = _random_unit_vector(flat_origin.numel(), flat_origin, seed) * rho

        loss, gradient = loss_and_gradient_at(e)
        history = [loss - base_loss]
        best_value, best_e = history[0], e
        step_size = lr
        if step_size is None:
            size = float(gradient.norm())
            step_size = rho / size if size > 0 else 1.0

        converged = False
        taken = 0
        for _ in range(steps):
            new_e = _project_onto_ball(e + step_size * gradient, rho)
            taken += 1
            moved = float((new_e - e).norm())
            e = new_e
            loss, gradient = loss_and_gradient_at(e)
            history.append(loss - base_loss)
            if history[-1] > best_value:
                best_value, best_e = history[-1], e
            if moved <= tol * rho:
                converged = True
                break

    return RhoSharpnessResult(
        value=best_value,
        perturbation=[t.clone() for t in _unflatten(best_e, params)],
        base_loss=base_loss,
        steps=taken,
        converged=converged,
        history=history,
    )
