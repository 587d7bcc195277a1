"""Test problems with known smoothness constants, for checking the convergence bounds.

Each problem is a function f(w) = (1/N) sum_i f_i(w) on w in R^n with exact gradients,
Hessians and per-sample gradients, plus the constants that the bounds need:

- ``L``: smoothness, ||grad f(x) - grad f(y)|| <= L ||x - y|| (assumption A1),
- ``L_i``: the largest per-sample smoothness constant max_i L_i (assumption A1'),
- ``mu``: the Polyak-Lojasiewicz constant (A5), or None where none holds,
- ``M``: the Hessian-Lipschitz constant (A4), 0 for quadratics and least squares,
- ``f_star``: inf f where it is known, else None.

Every method accepts a batch of points: ``w`` of shape (..., n) gives ``loss`` of shape
(...,), ``grad`` of shape (..., n) and ``hessian`` of shape (..., n, n), so a sweep over C
configurations is one tensor computation. ``loss`` is built from differentiable torch
operations, so ``torch.autograd`` reproduces ``grad``.

Example::

    import torch
    from theory.problems import Quadratic

    problem = Quadratic.random(n=5, L=10.0, mu=0.1, seed=0)
    w = torch.randn(8, 5, dtype=torch.float64)      # 8 configurations
    problem.loss(w).shape                            # torch.Size([8])
    problem.grad(w).shape                            # torch.Size([8, 5])
    problem.L, problem.mu                            # (10.0, 0.1)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Problem",
    "Quadratic",
    "LeastSquares",
    "Logistic",
    "RobustRegression",
    "LOGISTIC_THIRD_DERIVATIVE_MAX",
    "ROBUST_SECOND_DERIVATIVE_MAX",
    "ROBUST_THIRD_DERIVATIVE_MAX",
    "random_orthogonal",
]

DTYPE = torch.float64
ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]

# max_t |phi'''(t)| for phi(t) = log(1 + exp(-t)). With s = sigmoid(t) and u = s - 1/2,
# |phi'''| = 2 |u| (1/4 - u^2), maximised at u^2 = 1/12, which gives 1/(6 sqrt 3).
LOGISTIC_THIRD_DERIVATIVE_MAX = 1.0 / (6.0 * math.sqrt(3.0))

# psi(t) = t^2/(1 + t^2): psi''(t) = (2 - 6 t^2)/(1 + t^2)^3 lies in [-1/2, 2] (extremes
# at t = 0 and t^2 = 1), and psi'''(t) = 24 t (t^2 - 1)/(1 + t^2)^4 has its largest modulus
# where 5 t^4 - 10 t^2 + 1 = 0, at t^2 = 1 - 2/sqrt(5).
ROBUST_SECOND_DERIVATIVE_MAX = 2.0


def _robust_third_derivative_max() -> float:
    t2 = 1.0 - 2.0 / math.sqrt(5.0)
    t = math.sqrt(t2)
    return 24.0 * t * (1.0 - t2) / (1.0 + t2) ** 4


ROBUST_THIRD_DERIVATIVE_MAX = _robust_third_derivative_max()


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """Draw an n x n orthogonal matrix from the Haar distribution (QR of a Gaussian matrix)."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    generator = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(n, n, generator=generator, dtype=DTYPE)
    q, r = torch.linalg.qr(gaussian)
    # Fixing the signs of diag(R) makes the distribution of Q exactly Haar.
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs


def _as_tensor(value: ArrayLike, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=DTYPE).detach().clone()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must contain only finite values")
    return tensor


def _largest_gram_eigenvalue(X: torch.Tensor) -> float:
    """Return lambda_max(X^T X), computed on the smaller of the two Gram matrices."""
    gram = X @ X.T if X.shape[0] < X.shape[1] else X.T @ X
    return float(torch.linalg.eigvalsh(gram)[-1])


def _smallest_positive_gram_eigenvalue(X: torch.Tensor) -> Optional[float]:
    """Return the smallest nonzero eigenvalue of X^T X, or None when X is zero.

    Eigenvalues below lambda_max * max(N, n) * eps count as zero (the rank rule of
    numpy.linalg.matrix_rank).
    """
    gram = X @ X.T if X.shape[0] < X.shape[1] else X.T @ X
    eigenvalues = torch.linalg.eigvalsh(gram)
    cutoff = float(eigenvalues[-1]) * max(X.shape) * torch.finfo(DTYPE).eps
    positive = eigenvalues[eigenvalues > cutoff]
    if positive.numel() == 0:
        return None
    return float(positive[0])


class Problem:
    """Common interface: f(w) = (1/N) sum_i f_i(w), evaluated on batches of points."""

    dim: int
    n_samples: int
    L: float
    L_i: Optional[float]
    mu: Optional[float]
    M: Optional[float]

    @property
    def f_star(self) -> Optional[float]:
        return None

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_losses(self, w: torch.Tensor, idx: Optional[ArrayLike] = None) -> torch.Tensor:
        raise NotImplementedError

    def sample_grads(self, w: torch.Tensor, idx: Optional[ArrayLike] = None) -> torch.Tensor:
        raise NotImplementedError

    def minibatch_loss(self, w: torch.Tensor, idx: ArrayLike) -> torch.Tensor:
        """Return (1/B) sum_{i in idx} f_i(w): idx of shape (B,), or (..., B) with one
        minibatch per configuration (leading shape equal to that of w)."""
        raise NotImplementedError

    def minibatch_grad(self, w: torch.Tensor, idx: ArrayLike) -> torch.Tensor:
        """Return (1/B) sum_{i in idx} grad f_i(w), with idx shaped as in minibatch_loss."""
        raise NotImplementedError

    def gradient_variance(
        self, w: torch.Tensor, batch_size: int, *, replacement: bool = True
    ) -> torch.Tensor:
        """Return sigma^2(w) = E ||g_B(w) - grad f(w)||^2 exactly, for the minibatch mean g_B.

        With V(w) = (1/N) sum_i ||grad f_i(w) - grad f(w)||^2, the variance of the mean of
        B indices drawn uniformly is V/B when drawn with replacement (independent draws)
        and V (N - B) / (B (N - 1)) when drawn without replacement (a uniformly random
        subset). The result has the batch shape of w.
        """
        if not 1 <= batch_size <= self.n_samples:
            raise ValueError(
                f"batch_size must be in [1, n_samples={self.n_samples}], got {batch_size}"
            )
        per_sample = self.sample_grads(w)
        full = per_sample.mean(dim=-2, keepdim=True)
        spread = ((per_sample - full) ** 2).sum(dim=-1).mean(dim=-1)
        if replacement:
            return spread / batch_size
        if self.n_samples == 1:
            return torch.zeros_like(spread)
        factor = (self.n_samples - batch_size) / (batch_size * (self.n_samples - 1))
        return spread * factor

    def _check_point(self, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor):
            raise ValueError(f"w must be a torch.Tensor, got {type(w).__name__}")
        if w.dim() < 1 or w.shape[-1] != self.dim:
            raise ValueError(
                f"w must have shape (..., {self.dim}) for this problem, got {tuple(w.shape)}"
            )
        if not w.is_floating_point():
            raise ValueError(f"w must be a floating-point tensor, got dtype {w.dtype}")
        return w

    def _check_indices(self, idx: Optional[ArrayLike]) -> torch.Tensor:
        if idx is None:
            return torch.arange(self.n_samples)
        index = torch.as_tensor(idx)
        if index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"idx must hold integer sample indices, got dtype {index.dtype}")
        index = index.long()
        if index.dim() == 0 or index.shape[-1] == 0:
            raise ValueError(f"idx must hold at least one sample index, got shape {tuple(index.shape)}")
        if index.min() < 0 or index.max() >= self.n_samples:
            raise ValueError(
                f"idx must lie in [0, {self.n_samples - 1}], got values in "
                f"[{int(index.min())}, {int(index.max())}]"
            )
        return index


class Quadratic(Problem):
    """Quadratic f(w) = w^T A w / 2 + b^T w with A symmetric.

    Constants: L = max_i |lambda_i(A)| (equal to lambda_max(A) for positive semidefinite
    A), mu = lambda_min(A) when A is positive definite (else None), M = 0. f_star is
    -b^T A^+ b / 2 when A is positive semidefinite and b lies in its range, -inf when f is
    unbounded below. The problem is a single sample (n_samples = 1).

    ``A`` may be a symmetric matrix or a 1-D tensor of eigenvalues (then A = diag).
    """

    def __init__(self, A: ArrayLike, b: Optional[ArrayLike] = None) -> None:
        matrix = _as_tensor(A, "A")
        if matrix.dim() == 1:
            eigenvalues = matrix.clone()
            matrix = torch.diag(matrix)
        elif matrix.dim() == 2 and matrix.shape[0] == matrix.shape[1]:
            asymmetry = float((matrix - matrix.T).abs().max())
            scale = float(matrix.abs().max())
            if asymmetry > 1e-12 * max(scale, 1.0):
                raise ValueError(
                    f"A must be symmetric, got max |A - A^T| = {asymmetry:.3g}; "
                    "pass (A + A.T) / 2 for the same quadratic form"
                )
            matrix = (matrix + matrix.T) / 2
            eigenvalues = torch.linalg.eigvalsh(matrix)
        else:
            raise ValueError(
                f"A must be a square matrix or a 1-D tensor of eigenvalues, got shape {tuple(matrix.shape)}"
            )

        n = matrix.shape[0]
        if n == 0:
            raise ValueError("A must have at least one row, got an empty matrix")
        if b is None:
            vector = torch.zeros(n, dtype=DTYPE)
        else:
            vector = _as_tensor(b, "b")
            if vector.shape != (n,):
                raise ValueError(f"b must have shape ({n},) to match A, got {tuple(vector.shape)}")

        self.A = matrix
        self.b = vector
        self.eigenvalues = torch.sort(eigenvalues).values
        self.dim = n
        self.n_samples = 1
        self.L = float(self.eigenvalues.abs().max())
        self.L_i = self.L
        lam_min = float(self.eigenvalues[0])
        self.mu = lam_min if lam_min > 0 else None
        self.M = 0.0
        self._eigh: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @classmethod
    def random(
        cls, n: int, L: float, mu: float, seed: int, *, b_scale: float = 1.0
    ) -> "Quadratic":
        """Build a quadratic with eigenvalues linspace(mu, L, n) in a Haar-random basis.

        The stored ``eigenvalues``, ``L`` and ``mu`` are the chosen values themselves, and b
        is Gaussian with standard deviation ``b_scale`` (drawn from the same seed).
        """
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        if not (0 <= mu <= L) or L <= 0:
            raise ValueError(f"need 0 <= mu <= L and L > 0, got mu={mu}, L={L}")
        if n == 1 and mu != L:
            raise ValueError(f"a 1-D quadratic has one eigenvalue, so mu must equal L; got mu={mu}, L={L}")
        eigenvalues = torch.linspace(mu, L, n, dtype=DTYPE)
        eigenvalues[0], eigenvalues[-1] = mu, L
        basis = random_orthogonal(n, seed)
        matrix = (basis * eigenvalues) @ basis.T
        matrix = (matrix + matrix.T) / 2
        generator = torch.Generator().manual_seed(seed + 1)
        vector = b_scale * torch.randn(n, generator=generator, dtype=DTYPE)
        problem = cls(matrix, vector)
        problem.eigenvalues = eigenvalues
        problem.L = float(L)
        problem.L_i = float(L)
        problem.mu = float(mu) if mu > 0 else None
        problem._eigh = (eigenvalues, basis)
        return problem

    def eigh(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (eigenvalues ascending, orthonormal eigenvectors as columns) of A."""
        if self._eigh is None:
            values, vectors = torch.linalg.eigh(self.A)
            self._eigh = (values, vectors)
        return self._eigh

    @property
    def minimizer(self) -> Optional[torch.Tensor]:
        """Return argmin f = -A^{-1} b when A is positive definite, else None."""
        if self.mu is None:
            return None
        return -torch.linalg.solve(self.A, self.b)

    @property
    def f_star(self) -> Optional[float]:
        values, vectors = self.eigh()
        if float(values[0]) < -1e-12 * self.L:
            return -math.inf
        coefficients = vectors.T @ self.b
        cutoff = self.L * self.dim * torch.finfo(DTYPE).eps
        null = values.abs() <= cutoff
        if bool(null.any()) and float(coefficients[null].abs().max()) > 1e-10 * max(1.0, float(self.b.norm())):
            return -math.inf
        active = ~null
        return float(-0.5 * (coefficients[active] ** 2 / values[active]).sum())

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        w = self._check_point(w)
        A, b = self.A.to(w), self.b.to(w)
        return 0.5 * ((w @ A) * w).sum(dim=-1) + w @ b

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        w = self._check_point(w)
        return w @ self.A.to(w) + self.b.to(w)

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        w = self._check_point(w)
        return self.A.to(w).expand(*w.shape[:-1], self.dim, self.dim).clone()

    def sample_losses(self, w: torch.Tensor, idx: Optional[ArrayLike] = None) -> torch.Tensor:
        index = self._check_indices(idx)
        return self.loss(w).unsqueeze(-1).expand(*w.shape[:-1], index.shape[-1])

    def sample_grads(self, w: torch.Tensor, idx: Optional[ArrayLike] = None) -> torch.Tensor:
        index = self._check_indices(idx)
        return self.grad(w).unsqueeze(-2).expand(*w.shape[:-1], index.shape[-1], self.dim)

    def minibatch_loss(self, w: torch.Tensor, idx: ArrayLike) -> torch.Tensor:
        self._check_indices(idx)
        return self.loss(w)

    def minibatch_grad(self, w: torch.Tensor, idx: ArrayLike) -> torch.Tensor:
        self._check_indices(idx)
        return self.grad(w)

    def sam_objective(
        self, w: torch.Tensor, rho: Union[float, ArrayLike], *, return_perturbation: bool = False
    ):
        """Return f_rho(w) = max_{||e|| <= rho} f(w + e) exactly (trust-region subproblem).

        f(w + e) = f(w) + g^T e + e^T A e / 2 with g = grad f(w), so f_rho(w) is f(w) plus
        the maximum of that quadratic in e over the ball. With ``return_perturbation`` the
        maximiser e is returned too. Shapes: w (..., n), rho scalar or (...,).
        """
        from theory.trust_region import max_quadratic_on_ball

        w = self._check_point(w)
        values, vectors = self.eigh()
        gain, perturbation = max_quadratic_on_ball(
            self.A, self.grad(w).detach(), rho, eigh=(values, vectors)
        )
        objective = self.loss(w).detach() + torch.as_tensor(gain, dtype=w.dtype)
        if return_perturbation:
            return objective, perturbation
        return objective


class _LinearModelProblem(Problem):
    """f(w) = (1/N) sum_i h_i(x_i^T w) + (c/2) ||w||^2 for a scalar function h_i per sample.

    Subclasses define h_i and its first two derivatives through ``_link`` methods that act
    on the margins z = X w (shape (..., N) or (..., B)).
    """

    def __init__(self, X: ArrayLike, targets: ArrayLike, c: float = 0.0) -> None:
        design = _as_tensor(X, "X")
        if design.dim() != 2 or design.shape[0] == 0 or design.shape[1] == 0:
            raise ValueError(f"X must be a non-empty matrix of shape (N, n), got {tuple(design.shape)}")
        target = _as_tensor(targets, "targets").reshape(-1)
        if target.shape[0] != design.shape[0]:
            raise ValueError(
                f"X has {design.shape[0]} rows but the targets have {target.shape[0]} entries; "
                "they must match"
            )
        if not (c >= 0 and math.isfinite(c)):
            raise ValueError(f"c (the l2 weight) must be a finite number >= 0, got {c}")
        self.X = design
        self.targets = target
        self.c = float(c)
        self.n_samples, self.dim = design.shape
        self.row_norms_squared = (design ** 2).sum(dim=1)
        self.gram_max = _largest_gram_eigenvalue(design)

    # h_i(z), h_i'(z), h_i''(z) on margins z with the matching targets t.
    def _link(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _link_d1(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _link_d2(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _regularizer(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.c * (w * w).sum(dim=-1)

    def loss(self, w: torch.Tensor) -> torch.Tensor:
        w = self._check_point(w)
        X, t = self.X.to(w), self.targets.to(w)
        return self._link(w @ X.T, t).mean(dim=-1) + self._regularizer(w)

    def grad(self, w: torch.Tensor) -> torch.Tensor:
        w = self._check_point(w)
        X, t = self.X.to(w), self.targets.to(w)
        slopes = self._link_d1(w @ X.T, t)
        return slopes @ X / self.n_samples + self.c * w

    def hessian(self, w: torch.Tensor) -> torch.Tensor:
        w = self._check_point(w)
        X, t = self.X.to(w), self.targets.to(w)
        curvature = self._link_d2(w @ X.T, t) / self.n_samples
        hessian = torch.einsum("...i,ij,ik->...jk", curvature, X, X)
        return hessian + self.c * torch.eye(self.dim, dtype=w.dtype, device=w.device)

    def _rows(self, w: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the margins x_i^T w, the rows x_i and the targets for the given indices."""
        X, t = self.X.to(w)[index], self.targets.to(w)[index]
        if index.dim() == 1:
            return w @ X.T, X, t
        if tuple(index.shape[:-1]) != tuple(w.shape[:-1]):
            raise ValueError(
                f"idx must have shape (B,) or {tuple(w.shape[:-1])} + (B,) to match w, "
                f"got {tuple(index.shape)}"
            )
        return torch.einsum("...bn,...n->...b", X, w), X, t

    def sample_losses(self, w: torch.Tensor, idx: Optional[ArrayLike] = None) -> torch.Tensor:
        """Return f_i(w) = h_i(x_i^T w) + (c/2)||w||^2 for each index (shape (..., B))."""
        w = self._check_point(w)
        margins, _, t = self._rows(w, self._check_indices(idx))
        return self._link(margins, t) + self._regularizer(w).unsqueeze(-1)

    def sample_grads(self, w: torch.Tensor, idx: Optional[ArrayLike] = None) -> torch.Tensor:
        """Return grad f_i(w) = h_i'(x_i^T w) x_i + c w for each index (shape (..., B, n))."""
        w = self._check_point(w)
        margins, X, t = self._rows(w, self._check_indices(idx))
        return self._link_d1(margins, t).unsqueeze(-1) * X + self.c * w.unsqueeze(-2)

    def minibatch_loss(self, w: torch.Tensor, idx: ArrayLike) -> torch.Tensor:
        return self.sample_losses(w, idx).mean(dim=-1)

    def minibatch_grad(self, w: torch.Tensor, idx: ArrayLike) -> torch.Tensor:
        w = self._check_point(w)
        margins, X, t = self._rows(w, self._check_indices(idx))
        slopes = self._link_d1(margins, t) / margins.shape[-1]
        if X.dim() == 2:
            return slopes @ X + self.c * w
        return torch.einsum("...b,...bn->...n", slopes, X) + self.c * w


class LeastSquares(_LinearModelProblem):
    """Least squares f(w) = (1/2N) ||X w - y||^2, with f_i(w) = (x_i^T w - y_i)^2 / 2.

    Constants: L = lambda_max(X^T X)/N, L_i = max_i ||x_i||^2, M = 0, and mu = the smallest
    nonzero eigenvalue of X^T X / N, which is the PL constant (the strong-convexity
    constant when X has full column rank). f_star is f at the minimum-norm solution
    from torch.linalg.lstsq in float64.
    """

    def __init__(self, X: ArrayLike, y: ArrayLike) -> None:
        super().__init__(X, y, c=0.0)
        self.L = self.gram_max / self.n_samples
        self.L_i = float(self.row_norms_squared.max())
        smallest = _smallest_positive_gram_eigenvalue(self.X)
        self.mu = None if smallest is None else smallest / self.n_samples
        self.M = 0.0
        self._minimizer: Optional[torch.Tensor] = None

    @classmethod
    def random(
        cls, n_samples: int, dim: int, seed: int, *, noise: float = 0.1
    ) -> "LeastSquares":
        """Draw X with N(0, 1/dim) entries and y = X w_true + noise * N(0, 1)."""
        if n_samples < 1 or dim < 1:
            raise ValueError(f"n_samples and dim must be positive, got {n_samples} and {dim}")
        generator = torch.Generator().manual_seed(seed)
        X = torch.randn(n_samples, dim, generator=generator, dtype=DTYPE) / math.sqrt(dim)
        w_true = torch.randn(dim, generator=generator, dtype=DTYPE)
        y = X @ w_true + noise * torch.randn(n_samples, generator=generator, dtype=DTYPE)
        return cls(X, y)

    @property
    def minimizer(self) -> torch.Tensor:
        """Return the minimum-norm least-squares solution."""
        if self._minimizer is None:
            self._minimizer = torch.linalg.lstsq(
                self.X, self.targets.unsqueeze(-1), driver="gelsd"
            ).solution.squeeze(-1)
        return self._minimizer

    @property
    def f_star(self) -> float:
        return float(self.loss(self.minimizer))

    def _link(self, z, t):
        return 0.5 * (z - t) ** 2

    def _link_d1(self, z, t):
        return z - t

    def _link_d2(self, z, t):
        return torch.ones_like(z)


class Logistic(_LinearModelProblem):
    """Logistic regression f(w) = (1/N) sum_i log(1 + exp(-y_i x_i^T w)) + (c/2) ||w||^2.

    Labels y_i are +1 or -1 and f_i includes the l2 term, so f = (1/N) sum_i f_i.
    With phi(t) = log(1 + exp(-t)), 0 < phi'' <= 1/4 and |phi'''| <= 1/(6 sqrt 3), so

    - L = lambda_max(X^T X)/(4N) + c, attained at w = 0 (every margin is 0 there),
    - L_i = max_i ||x_i||^2 / 4 + c, mu = c (None when c = 0),
    - M = max_i ||x_i|| lambda_max(X^T X) / (6 sqrt(3) N).

    f_star is computed numerically (Newton's method with backtracking, float64) when c > 0;
    ``f_star_error_bound`` = ||grad f(w_hat)||^2 / (2c) certifies f(w_hat) - f_star.
    With c = 0 the infimum may not be attained, so f_star is None.
    """

    def __init__(self, X: ArrayLike, labels: ArrayLike, c: float = 0.0) -> None:
        super().__init__(X, labels, c=c)
        bad = ~((self.targets == 1) | (self.targets == -1))
        if bool(bad.any()):
            raise ValueError(
                f"labels must be +1 or -1, got {float(self.targets[bad][0])} at index "
                f"{int(bad.nonzero()[0])}"
            )
        self.L = self.gram_max / (4 * self.n_samples) + self.c
        self.L_i = float(self.row_norms_squared.max()) / 4 + self.c
        self.mu = self.c if self.c > 0 else None
        max_row_norm = float(self.row_norms_squared.max().sqrt())
        self.M = LOGISTIC_THIRD_DERIVATIVE_MAX * max_row_norm * self.gram_max / self.n_samples
        self._solution: Optional[tuple[torch.Tensor, float]] = None

    @classmethod
    def random(
        cls, n_samples: int, dim: int, seed: int, *, c: float = 1e-2, flip: float = 0.1
    ) -> "Logistic":
        """Draw X with N(0, 1/dim) entries and labels sign(X w_true), a fraction ``flip``
        of them flipped at random so the classes overlap."""
        if n_samples < 1 or dim < 1:
            raise ValueError(f"n_samples and dim must be positive, got {n_samples} and {dim}")
        if not 0 <= flip <= 1:
            raise ValueError(f"flip must be a fraction in [0, 1], got {flip}")
        generator = torch.Generator().manual_seed(seed)
        X = torch.randn(n_samples, dim, generator=generator, dtype=DTYPE) / math.sqrt(dim)
        w_true = 3.0 * torch.randn(dim, generator=generator, dtype=DTYPE)
        labels = torch.where(X @ w_true >= 0, 1.0, -1.0).to(DTYPE)
        flipped = torch.rand(n_samples, generator=generator, dtype=DTYPE) < flip
        labels[flipped] = -labels[flipped]
        return cls(X, labels, c=c)

    def _link(self, z, t):
        return F.softplus(-t * z)

    def _link_d1(self, z, t):
        return -t * torch.sigmoid(-t * z)

    def _link_d2(self, z, t):
        margin = t * z
        return torch.sigmoid(margin) * torch.sigmoid(-margin)

    def _newton_step(self, w: torch.Tensor) -> torch.Tensor:
        """Solve H(w) p = grad f(w), by the Woodbury identity when N < n."""
        gradient = self.grad(w)
        curvature = self._link_d2(self.X @ w, self.targets)
        N = self.n_samples
        if N >= self.dim:
            return torch.linalg.solve(self.hessian(w), gradient)
        # H = c I + X^T D X / N, so H^{-1} g = (g - X^T (N c I + D X X^T)^{-1} D X g) / c.
        system = N * self.c * torch.eye(N, dtype=DTYPE) + curvature.unsqueeze(-1) * (self.X @ self.X.T)
        inner = torch.linalg.solve(system, curvature * (self.X @ gradient))
        return (gradient - self.X.T @ inner) / self.c

    def _solve(self) -> tuple[torch.Tensor, float]:
        if self._solution is not None:
            return self._solution
        w = torch.zeros(self.dim, dtype=DTYPE)
        value = float(self.loss(w))
        for _ in range(100):
            step = self._newton_step(w)
            decrement = float(self.grad(w) @ step)
            if decrement <= 1e-30:
                break
            t = 1.0
            while t > 1e-12:
                candidate = w - t * step
                candidate_value = float(self.loss(candidate))
                if candidate_value <= value - 0.25 * t * decrement:
                    break
                t *= 0.5
            if candidate_value > value:
                break
            w, value = candidate, candidate_value
            if decrement < 1e-28 * max(1.0, abs(value)):
                break
        self._solution = (w, value)
        return self._solution

    @property
    def minimizer(self) -> Optional[torch.Tensor]:
        """Return the Newton estimate of argmin f (None when c = 0)."""
        if self.c == 0:
            return None
        return self._solve()[0]

    @property
    def f_star(self) -> Optional[float]:
        if self.c == 0:
            return None
        return self._solve()[1]

    @property
    def f_star_error_bound(self) -> Optional[float]:
        """Return ||grad f(w_hat)||^2 / (2 mu), an upper bound on f(w_hat) - f_star (PL)."""
        if self.c == 0:
            return None
        w, _ = self._solve()
        return float(self.grad(w).norm() ** 2 / (2 * self.c))


class RobustRegression(_LinearModelProblem):
    """Nonconvex robust regression f(w) = (1/N) sum_i psi(x_i^T w - y_i), psi(t) = t^2/(1+t^2).

    psi''(t) = (2 - 6t^2)/(1 + t^2)^3 lies in [-1/2, 2], so L = 2 lambda_max(X^T X)/N
    (attained at a point with zero residuals) and L_i = 2 max_i ||x_i||^2.
    |psi'''| <= ROBUST_THIRD_DERIVATIVE_MAX (about 4.67), so
    M = ROBUST_THIRD_DERIVATIVE_MAX max_i ||x_i|| lambda_max(X^T X)/N.
    No PL constant is claimed (mu = None) and f_star is unknown in general (f >= 0).
    """

    def __init__(self, X: ArrayLike, y: ArrayLike) -> None:
        super().__init__(X, y, c=0.0)
        self.L = ROBUST_SECOND_DERIVATIVE_MAX * self.gram_max / self.n_samples
        self.L_i = ROBUST_SECOND_DERIVATIVE_MAX * float(self.row_norms_squared.max())
        self.mu = None
        max_row_norm = float(self.row_norms_squared.max().sqrt())
        self.M = ROBUST_THIRD_DERIVATIVE_MAX * max_row_norm * self.gram_max / self.n_samples

    @classmethod
    def random(
        cls,
        n_samples: int,
        dim: int,
        seed: int,
        *,
        noise: float = 0.1,
        outlier_fraction: float = 0.1,
        outlier_scale: float = 10.0,
    ) -> "RobustRegression":
        """Draw X with N(0, 1/dim) entries and y = X w_true + noise, then add
        outlier_scale * N(0, 1) to a fraction ``outlier_fraction`` of the targets."""
        if n_samples < 1 or dim < 1:
            raise ValueError(f"n_samples and dim must be positive, got {n_samples} and {dim}")
        if not 0 <= outlier_fraction <= 1:
            raise ValueError(f"outlier_fraction must be in [0, 1], got {outlier_fraction}")
        generator = torch.Generator().manual_seed(seed)
        X = torch.randn(n_samples, dim, generator=generator, dtype=DTYPE) / math.sqrt(dim)
        w_true = torch.randn(dim, generator=generator, dtype=DTYPE)
        y = X @ w_true + noise * torch.randn(n_samples, generator=generator, dtype=DTYPE)
        outliers = torch.rand(n_samples, generator=generator, dtype=DTYPE) < outlier_fraction
        y[outliers] += outlier_scale * torch.randn(int(outliers.sum()), generator=generator, dtype=DTYPE)
        return cls(X, y)

    def _link(self, z, t):
        r2 = (z - t) ** 2
        return r2 / (1 + r2)

    def _link_d1(self, z, t):
        r = z - t
        return 2 * r / (1 + r * r) ** 2

    def _link_d2(self, z, t):
        r2 = (z - t) ** 2
        return (2 - 6 * r2) / (1 + r2) ** 3
