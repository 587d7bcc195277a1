"""The descent and PL checks on real data: two-class logistic regression on CIFAR-10 pixels.

The problem is ``theory.cifar_logistic.load_cifar_two_class`` (airplane against
automobile, standardised pixels, l2 weight c = 1e-3), whose L = lambda_max(X^T X)/(4N) + c
is computed by an eigendecomposition and whose mu = c. The suite runs the first-order
methods of the sweep. The Hessian-corrected ones are left out because their reference
values would need 3072 x 3072 Hessians at every visited point. It applies the update-rule,
one-step, T1/T2, radius-lemma, T2-corollary and T5 checks at every step and every K, and
one negative control on the same real run.
"""

from __future__ import annotations

import logging

import torch

from theory.cifar_logistic import load_cifar_two_class

from ..analysis import row_norm
from ..checks import Check, inequality_check
from ..context import Context, row_settings
from ..instances import Instance, f_star_lower
from ..methods import METHODS
from .descent import pl_checks, sweep_checks

__all__ = ["run", "CIFAR_METHODS"]

logger = logging.getLogger(__name__)

CIFAR_METHODS = ("sgd", "sam", "usam", "bc", "br", "bqsam-ste", "bqsam-relax")
NAME = "cifar10-logistic"


def run(ctx: Context) -> list[Check]:
    """Run the CIFAR-10 suite; ``ctx.data_dir`` must hold the CIFAR-10 images."""
    if ctx.data_dir is None:
        raise ValueError("the cifar suite needs a CIFAR-10 folder (--data-dir DIR)")
    per_class = 100 if ctx.settings.quick else 250
    problem = load_cifar_two_class(ctx.data_dir, n_per_class=per_class)
    logger.info("cifar: N = %d images, n = %d pixels, L = %.6g, mu = %.3g", problem.n_samples, problem.dim,
                problem.L, problem.mu)
    generator = torch.Generator().manual_seed(41)
    instance = Instance(NAME, problem, 0.01 * torch.randn(problem.dim, generator=generator, dtype=torch.float64))
    ctx.real_data[NAME] = instance
    f_low = f_star_lower(problem)

    checks: list[Check] = []
    for method_name in CIFAR_METHODS:
        run_ = ctx.analysis(NAME, method_name, instance)
        rows = row_settings(METHODS[method_name], ctx.settings)
        checks += sweep_checks(NAME, run_, rows, ctx.settings.eta_factors)
        checks += pl_checks(NAME, run_, f_low, float(problem.mu), rows, ctx.settings.eta_factors)
        if method_name == "bc":
            checks.append(_radius_control(run_))
    return checks


def _radius_control(run_) -> Check:
    """Return the radius lemma for BinaryConnect with the quantization term left out.

    BinaryConnect takes its gradient at q(w_k), so the displacement ||q(w_k) - w_k|| equals
    delta_k, which is positive on every step of this run (real-valued pixel weights are never
    exactly binary). Without theta delta_k the radius is rho = 0, so the check must fail.
    """
    trace = run_.trace
    displacement = row_norm(trace.z[:, 0, 0] - trace.w[:-1, 0, 0])
    return inequality_check(
        f"lemma-e/{NAME}/bc/no-theta-delta", "lemma ||e_k|| <= rho + theta delta_k", NAME, "bc",
        displacement, run_.rho_step[:, 0, 0], control=True,
        detail="r_k = rho = 0 without the quantization term, on real CIFAR-10 data",
    )
