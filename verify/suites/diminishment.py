"""Perturbation diminishment of the latent perturbation.

With the latent ablation (``perturb="latent"``) the descent point is q(w_k + e_k) instead
of q(w_k) + e_k. When rho < min_i |w_i| every |e_i| <= ||e|| = rho < |w_i|, so the signs of
w + e are those of w and q(w + e) = (alpha(w) + <s, e>/n) s with s = sgn(w): the binary
point only changes scale, by ||q(w + e) - q(w)|| = |<s, e>| / sqrt(n) <= rho, and the
sharpness-aware perturbation of the binary weights is (mostly) lost. The quantized
perturbation keeps ||(x + e) - x|| = rho (checked by the update-rule checks).

At every step where rho < min_i |w_k,i| the suite checks that no sign flips and that the
binary point moved by exactly |<s, e>| / sqrt(n); the detail reports the average of that
movement over rho (the diminishment factor).

Negative control: a 2-D quadratic where rho > min_i |w_i| and the perturbation flips
the small coordinate, checked with the same "signs kept" claim.
"""

from __future__ import annotations

import math

import torch

from theory.problems import Quadratic

from ..analysis import analyse, reference_binarize, row_norm
from ..checks import Check, identity_check, inequality_check
from ..context import Context, format_number
from ..methods import METHODS
from ..runner import run_sweep
from .descent import algorithm_errors

__all__ = ["run"]

DTYPE = torch.float64
RHOS = (0.01, 0.05, 0.2)
ETA_FACTORS = (0.1, 0.5)
PROBLEMS = ("quadratic", "logistic")


def _start(dim: int) -> torch.Tensor:
    """Draw a start point with |w_i| in [0.5, 1.5] and mixed signs."""
    generator = torch.Generator().manual_seed(31)
    magnitudes = 0.5 + torch.rand(dim, generator=generator, dtype=DTYPE)
    signs = torch.where(torch.rand(dim, generator=generator, dtype=DTYPE) < 0.5, -1.0, 1.0).to(DTYPE)
    return magnitudes * signs


def _signs_kept_check(check_id: str, problem_name: str, w: torch.Tensor, z: torch.Tensor, control: bool, detail: str) -> Check:
    flips = (torch.sign(z) != torch.sign(w)).sum(dim=-1).to(DTYPE)
    return inequality_check(
        check_id, "perturbation diminishment", problem_name, "bqsam-latent", flips, torch.zeros_like(flips),
        control=control, detail=detail,
    )


def run(ctx: Context) -> list[Check]:
    """Run the diminishment suite."""
    checks: list[Check] = []
    steps = ctx.settings.steps
    for name in PROBLEMS:
        problem = ctx.instances[name].problem
        L = float(problem.L)
        trace = run_sweep(
            problem, METHODS["bqsam-latent"], etas=[f / L for f in ETA_FACTORS], rhos=list(RHOS),
            lams=[1.0] * len(RHOS), w0=_start(problem.dim), steps=steps,
        )
        run_ = analyse(trace)
        for g, factor in enumerate(ETA_FACTORS):
            for c, rho in enumerate(RHOS):
                checks.append(
                    identity_check(
                        f"ALG/{name}/bqsam-latent/eta={format_number(factor)}L^-1,rho={format_number(rho)}",
                        "A (update rule)", name, "bqsam-latent", algorithm_errors(run_, g, c),
                        detail="x_k = q(w_k), descent point q(w_k + e(x_k)), applied direction at that point",
                    )
                )
                w = trace.w[:-1, g, c]
                x, z = trace.x[:, g, c], trace.z[:, g, c]
                applies = w.abs().amin(dim=-1) > rho
                if not bool(applies.any()):
                    continue
                w, x, z = w[applies], x[applies], z[applies]
                label = f"eta={format_number(factor)}L^-1,rho={format_number(rho)}"
                count = int(applies.sum())
                checks.append(
                    _signs_kept_check(
                        f"DIM/{name}/bqsam-latent/{label},signs-kept", name, w, z, False,
                        f"sign flips of q(w + e) against w at the {count} of {steps} steps with rho < min |w_i|",
                    )
                )
                gradient = problem.grad(x)
                e = rho * gradient / row_norm(gradient).clamp_min(torch.finfo(DTYPE).tiny).unsqueeze(-1)
                signs = torch.where(w >= 0, 1.0, -1.0).to(DTYPE)
                predicted = (signs * e).sum(dim=-1).abs() / math.sqrt(problem.dim)
                moved = row_norm(z - reference_binarize(w))
                error = (moved - predicted).abs() / (row_norm(z) + row_norm(w))
                factor_mean = float((moved / rho).mean())
                checks.append(
                    identity_check(
                        f"DIM/{name}/bqsam-latent/{label},scale-only", "perturbation diminishment", name,
                        "bqsam-latent", error,
                        detail=f"||q(w + e) - q(w)|| = |<sgn w, e>|/sqrt(n); mean ||q(w + e) - q(w)||/rho = "
                        f"{factor_mean:.3f} (the quantized perturbation moves x by exactly rho)",
                    )
                )

    # Control: f = ||w - c||^2 / 2 with c = (1, 1), w = (1, 0.01), rho = 0.5 > 0.01. The
    # gradient at q(w) = (0.505, 0.505) is (-0.495, -0.495), so e_2 = -0.354 flips w_2.
    problem = Quadratic(torch.ones(2, dtype=DTYPE), -torch.ones(2, dtype=DTYPE))
    trace = run_sweep(
        problem, METHODS["bqsam-latent"], etas=[0.1], rhos=[0.5], lams=[1.0],
        w0=torch.tensor([1.0, 0.01], dtype=DTYPE), steps=1,
    )
    checks.append(
        _signs_kept_check(
            "DIM/quadratic-2d/bqsam-latent/rho=0.5,rho-above-min-w", "quadratic-2d", trace.w[:-1, 0, 0],
            trace.z[:, 0, 0], True, "rho = 0.5 > min |w_i| = 0.01: the claim 'signs kept' without its condition",
        )
    )
    return checks
