"""The problem instances of the suites, their start points and their run lengths.

Every instance is a ``theory.problems`` problem whose constants (L, mu, M, f*) are known
exactly or certified, plus a fixed start point. Random draws use fixed generator seeds,
so two runs of the suites give the same numbers.

Example:
    >>> settings = Settings.make(quick=True)
    >>> sorted(build_instances(settings))
    ['least-squares', 'logistic', 'quadratic', 'robust-regression']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from theory.problems import LeastSquares, Logistic, Problem, Quadratic, RobustRegression

from .methods import SWEEP_METHODS

__all__ = ["Instance", "Settings", "build_instances", "f_star_lower"]

DTYPE = torch.float64

# The quick sweep keeps one method of each kind: SGD, SAM, USAM, both Hessian-corrected
# gradient types (exact unquantized, central difference with STE), BinaryConnect,
# BinaryRelax (every lam row) and BQ-SAM with STE and with the relaxation.
QUICK_METHODS = (
    "sgd", "sam", "usam", "sam-hessian-exact", "bc", "br", "bqsam-ste", "bqsam-ste-hessian-fd", "bqsam-relax",
)


@dataclass(frozen=True)
class Settings:
    """Sizes of one verification run (default or quick).

    Attributes:
        quick: the reduced run for CI.
        dim, n_samples: problem size n and number of samples N.
        steps: K, the steps of every deterministic run.
        eta_factors: step sizes of the sweep in units of 1/L.
        rhos: SAM radii of the sweep.
        stochastic_runs: independent runs (rows) per stochastic configuration.
        stochastic_steps: K of the stochastic runs.
        batch_size: minibatch size of the stochastic runs.
        stability_steps: K of the stability (T4) runs.
        methods: the methods of the deterministic sweep (names in ``verify.methods.METHODS``).
    """

    quick: bool
    dim: int
    n_samples: int
    steps: int
    eta_factors: tuple[float, ...]
    rhos: tuple[float, ...]
    stochastic_runs: int
    stochastic_steps: int
    batch_size: int
    stability_steps: int
    methods: tuple[str, ...] = SWEEP_METHODS

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if quick:
            return cls(True, 6, 32, 20, (0.5, 1.0), (0.1,), 64, 30, 2, 150, QUICK_METHODS)
        return cls(False, 8, 64, 100, (0.1, 0.5, 1.0), (0.05, 0.2), 256, 100, 2, 400)


@dataclass
class Instance:
    """A problem with a name and a start point w0 of shape (n,)."""

    name: str
    problem: Problem
    w0: Tensor


def f_star_lower(problem: Problem) -> float | None:
    """Return a certified lower bound on inf f, or None when none is known.

    Quadratic and least squares: f* itself (closed form or a least-squares solve).
    Logistic with c > 0: the Newton value minus its PL certificate ||grad||^2 / (2 c).
    Robust regression: 0, since psi >= 0.
    """
    if isinstance(problem, Logistic):
        if problem.f_star is None:
            return None
        return problem.f_star - problem.f_star_error_bound
    if isinstance(problem, RobustRegression):
        return 0.0
    value = problem.f_star
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _start(dim: int, seed: int, scale: float = 1.0) -> Tensor:
    """Draw a Gaussian start point whose last coordinate is exactly 0.

    The zero coordinate tests sgn(0) = +1: a binarizer with sgn(0) = 0 puts x_0 off the
    binary set, and the update-rule check reports the mismatch.
    """
    generator = torch.Generator().manual_seed(seed)
    point = scale * torch.randn(dim, generator=generator, dtype=DTYPE)
    point[-1] = 0.0
    return point


def build_instances(settings: Settings) -> dict[str, Instance]:
    """Build the four synthetic problems of the sweep (the same ones on every run)."""
    n, N = settings.dim, settings.n_samples
    return {
        "quadratic": Instance("quadratic", Quadratic.random(n=n, L=2.0, mu=0.05, seed=11), _start(n, 21)),
        "least-squares": Instance("least-squares", LeastSquares.random(N, n, seed=12), _start(n, 22)),
        "logistic": Instance("logistic", Logistic.random(N, n, seed=13, c=0.05), _start(n, 23)),
        "robust-regression": Instance(
            "robust-regression", RobustRegression.random(N, n, seed=14), _start(n, 24)
        ),
    }
