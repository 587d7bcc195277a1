"""Deterministic descent checks: the update rule, the one-step inequality, T1, T2 and the
radius lemma, at every step of every run of the sweep.

For each problem, method, step size eta = c/L (c in {0.1, 0.5, 1}) and row (rho, lam):

- ``ALG``: BinarySAM's x_k, descent point and applied direction d_k = (w_k - w_{k+1})/eta
  equal the definitions (x_k = q(w_k), r_lam_k(w_k) or w_k; descent point x_k + e(x_k)
  with e(x) = rho grad f(x)/||grad f(x)|| or rho grad f(x); d_k = grad f(x_k + e_k), plus
  J^T G1 for the Hessian-corrected types) to a relative 1e-10;
- ``one-step``: f(w_{k+1}) <= f(w_k) - (eta/2)||a_k||^2 - (eta/2)(1 - L eta)||d_k||^2
  + (eta/2) D_k^2 at every k, with D_k = L r_k (first-order) or the Type-2 bound;
- ``T1`` (unquantized) / ``T2`` (quantized): (1/K) sum_{k<K} ||grad f(w_k)||^2
  <= 2 (f(w_0) - f(w_K))/(eta K) + (1/K) sum_{k<K} D_k^2 at every K;
- ``lemma-e``: ||x_k + e_k - w_k|| <= r_k = rho + theta delta_k at every k;
- ``T2c-grad`` / ``T2c-loss``: the deployed-point corollaries of T2 at every k.

Negative controls: T2 with the quantization error left out (BinaryConnect started at
the minimizer, where any step raises f), both corollaries without their delta terms
there, the radius lemma without theta delta_k, T1 at eta = 2.5/L (diverging), and the
update-rule check with the perturbation taken at w_k instead of q(w_k).
"""

from __future__ import annotations

import torch
from torch import Tensor

from theory import bounds
from theory.symbolic import one_step_inequality

from ..analysis import Analysis, analyse, reference_binarize, row_norm
from ..checks import Check, identity_check, inequality_check
from ..context import Context, format_number, row_settings, setting_label
from ..methods import METHODS, Method
from ..runner import run_sweep

__all__ = ["run", "sweep_checks", "pl_checks"]

TINY = torch.finfo(torch.float64).tiny


def _row_id(theorem: str, problem: str, method: Method, label: str) -> str:
    return f"{theorem}/{problem}/{method.name}/{label}"


def algorithm_errors(run: Analysis, g: int, c: int) -> Tensor:
    """Return, per step, the largest relative deviation of BinarySAM from the definition."""
    trace = run.trace
    eta = float(trace.etas[g])
    w_k, w_next = trace.w[:-1, g, c], trace.w[1:, g, c]
    x, z = trace.x[:, g, c], trace.z[:, g, c]

    x_error = row_norm(x - run.x_ref[:, g, c]) / (row_norm(run.x_ref[:, g, c]) + row_norm(w_k) + TINY)
    if trace.method.sam:
        z_error = row_norm(z - run.z_ref[:, g, c]) / (row_norm(run.z_ref[:, g, c]) + row_norm(x) + TINY)
    else:
        z_error = torch.zeros_like(x_error)
    # d_k is a difference quotient of two stored iterates: its rounding scale is ||w|| / eta.
    gap = (row_norm(run.d[:, g, c] - run.d_ref[:, g, c]) - run.fd_allowance[:, g, c]).clamp_min(0)
    d_scale = row_norm(run.d_ref[:, g, c]) + (row_norm(w_k) + row_norm(w_next)) / eta + TINY
    return torch.stack([x_error, z_error, gap / d_scale]).amax(dim=0)


def one_step_terms(run: Analysis, g: int, c: int, L: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Return (empirical, bound, scale) of the one-step inequality at every k.

    empirical = f(w_{k+1}) - [f(w_k) - (eta/2)||a||^2 - (eta/2)(1 - L eta)||d||^2],
    bound = (eta/2) D_k^2, both taken from ``theory.bounds.one_step_bound``. ``L``
    overrides the problem's constant (negative controls); D_k then scales with it.
    """
    L_true = run.L
    L = L_true if L is None else L
    eta = float(run.trace.etas[g])
    f = run.f_w[:, g, c]
    a2 = row_norm(run.a[:-1, g, c]) ** 2
    d2 = row_norm(run.d[:, g, c]) ** 2
    D = run.D[:, g, c] * (L / L_true)
    base = f[:-1] - 0.5 * eta * a2 - 0.5 * eta * (1 - L * eta) * d2
    rhs = bounds.one_step_bound(f[:-1], a2, d2, L, eta, D / L)
    scale = f[:-1].abs() + f[1:].abs() + eta * (a2 + d2)
    return f[1:] - base, rhs - base, scale


def averaged_terms(
    run: Analysis, g: int, c: int, *, L: float | None = None, r_effective: Tensor | None = None, check_step: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Return (empirical, bound, scale) of T1/T2 at every K = 1..K_max."""
    L = run.L if L is None else L
    eta = float(run.trace.etas[g])
    f = run.f_w[:, g, c]
    a2 = row_norm(run.a[:-1, g, c]) ** 2
    r = run.r_effective[:, g, c] if r_effective is None else r_effective
    lhs = bounds.running_mean(a2)
    rhs = bounds.t2_bound_along_run(f, r, eta, L, check_step=check_step)
    K = torch.arange(1, a2.numel() + 1, dtype=torch.float64)
    scale = lhs.abs() + rhs.abs() + 2 * (f[0].abs() + f[1:].abs()) / (eta * K)
    return lhs, rhs, scale


def deployed_terms(run: Analysis, g: int, c: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return ||grad f(q(w_k))||, its bound, f(q(w_k)) and its bound, for k = 0..K."""
    problem = run.trace.problem
    w = run.trace.w[:, g, c]
    q = reference_binarize(w)
    grad_norm = row_norm(run.a[:, g, c])
    delta = run.delta[:, g, c]
    grad_q = row_norm(problem.grad(q))
    loss_q = problem.loss(q)
    return (
        grad_q,
        bounds.deployed_grad_norm_bound(grad_norm, run.L, delta),
        loss_q,
        bounds.deployed_loss_bound(run.f_w[:, g, c], grad_norm, run.L, delta),
    )


def sweep_checks(problem_name: str, run: Analysis, settings_rows: list[tuple[float, float]], eta_factors) -> list[Check]:
    """Return the ALG, one-step, T1/T2, lemma and T2c checks of every row of one sweep."""
    method = run.trace.method
    checks: list[Check] = []
    for g, factor in enumerate(eta_factors):
        for c, (rho, lam) in enumerate(settings_rows):
            label = setting_label(method, factor, rho, lam)
            method_name = method.name

            checks.append(
                identity_check(
                    _row_id("ALG", problem_name, method, label), "A (update rule)", problem_name, method_name,
                    algorithm_errors(run, g, c),
                    detail="x_k, descent point and applied direction against their definitions",
                )
            )

            empirical, bound, scale = one_step_terms(run, g, c)
            checks.append(
                inequality_check(
                    _row_id("one-step", problem_name, method, label), "one-step inequality", problem_name,
                    method_name, empirical, bound, scale=scale,
                    detail="empirical = f(w_k+1) minus the descent-lemma part; bound = (eta/2) D_k^2",
                )
            )

            lhs, rhs, scale = averaged_terms(run, g, c)
            checks.append(
                inequality_check(
                    _row_id(method.theorem, problem_name, method, label), method.theorem, problem_name,
                    method_name, lhs, rhs, scale=scale, index_name="K", first_index=1,
                    detail="(1/K) sum ||grad f(w_k)||^2 against the bound at every K",
                )
            )

            if method.perturb == "quantized":
                z, w_k = run.trace.z[:, g, c], run.trace.w[:-1, g, c]
                checks.append(
                    inequality_check(
                        _row_id("lemma-e", problem_name, method, label), "lemma ||e_k|| <= rho + theta delta_k",
                        problem_name, method_name, row_norm(z - w_k), run.r[:, g, c],
                        # z - w_k is a difference of stored points: its rounding scale is ||z|| + ||w_k||.
                        scale=row_norm(z) + row_norm(w_k) + run.r[:, g, c],
                    )
                )

            if method.quantizer is not None:
                grad_q, grad_bound, loss_q, loss_bound = deployed_terms(run, g, c)
                checks.append(
                    inequality_check(
                        _row_id("T2c-grad", problem_name, method, label), "T2 corollary (gradient at q(w))",
                        problem_name, method_name, grad_q, grad_bound,
                    )
                )
                checks.append(
                    inequality_check(
                        _row_id("T2c-loss", problem_name, method, label), "T2 corollary (loss at q(w))",
                        problem_name, method_name, loss_q, loss_bound,
                    )
                )
    return checks


def pl_checks(problem_name: str, run: Analysis, f_star_low: float, mu: float, settings_rows, eta_factors) -> list[Check]:
    """Return the T5 checks of every row of one sweep on a PL problem.

    The checked bound is the unrolled recursion B_{k+1} = (1 - eta mu) B_k + (eta/2) D_k^2,
    which is at most the closed form (1 - eta mu)^K B_0 + max_k D_k^2 / (2 mu) of T5, so it is
    the stronger statement. f* is replaced by a certified lower bound, which can only make
    the check stricter.
    """
    method = run.trace.method
    checks = []
    for g, factor in enumerate(eta_factors):
        eta = float(run.trace.etas[g])
        for c, (rho, lam) in enumerate(settings_rows):
            label = setting_label(method, factor, rho, lam)
            f = run.f_w[:, g, c]
            gap0 = f[0] - f_star_low
            unrolled = bounds.t5_bound_along_run(gap0, eta, mu, run.L, run.r_effective[:, g, c] ** 2)
            closed = bounds.t5_bound(
                gap0, eta, mu, run.L, torch.arange(1, f.numel(), dtype=torch.float64),
                torch.cummax(run.r_effective[:, g, c] ** 2, dim=0).values,
            )
            empirical = f[1:] - f_star_low
            scale = f[1:].abs() + abs(f_star_low) + unrolled.abs()
            checks.append(
                inequality_check(
                    _row_id("T5", problem_name, method, label), "T5", problem_name, method.name,
                    empirical, torch.minimum(unrolled, closed), scale=scale, index_name="K", first_index=1,
                    detail="f(w_K) - f* against the unrolled PL recursion at every K",
                )
            )
    return checks


def _controls(ctx: Context) -> list[Check]:
    """Negative controls of ALG, T1, T2, the lemma and the T2 corollaries."""
    checks: list[Check] = []
    quadratic = ctx.instances["quadratic"]
    problem = quadratic.problem
    steps = ctx.settings.steps

    # BinaryConnect from the (non-binary) minimizer: q(w*) != w*, so the first step moves
    # away from the unique minimizer and f(w_1) > f(w_0) = f*. Without the quantization
    # term the T2 bound is 2 (f0 - fK)/(eta K) < 0 <= the average squared gradient.
    trace = run_sweep(
        problem, METHODS["bc"], etas=[0.5 / problem.L], rhos=[0.0], lams=[1.0], w0=problem.minimizer, steps=steps
    )
    run = analyse(trace)
    lhs, rhs, scale = averaged_terms(run, 0, 0, r_effective=torch.zeros(steps, dtype=torch.float64))
    checks.append(
        inequality_check(
            "T2/quadratic/bc/eta=0.5L^-1,from-minimizer,no-quantization-term", "T2", "quadratic", "bc",
            lhs, rhs, scale=scale, control=True, index_name="K", first_index=1,
            detail="theta delta_k left out of r_k on a run started at the non-binary minimizer",
        )
    )
    grad_q, _, loss_q, _ = deployed_terms(run, 0, 0)
    checks.append(
        inequality_check(
            "T2c-grad/quadratic/bc/from-minimizer,no-L-delta", "T2 corollary (gradient at q(w))", "quadratic",
            "bc", grad_q, row_norm(run.a[:, 0, 0]), control=True,
            detail="||grad f(q(w))|| <= ||grad f(w)|| without L delta; grad f(w_0) = 0",
        )
    )
    checks.append(
        inequality_check(
            "T2c-loss/quadratic/bc/from-minimizer,no-delta-terms", "T2 corollary (loss at q(w))", "quadratic",
            "bc", loss_q, run.f_w[:, 0, 0], control=True,
            detail="f(q(w)) <= f(w) without the delta terms; w_0 is the unique minimizer",
        )
    )
    checks.append(
        inequality_check(
            "lemma-e/quadratic/bc/from-minimizer,no-theta-delta", "lemma ||e_k|| <= rho + theta delta_k",
            "quadratic", "bc", row_norm(trace.z[:, 0, 0] - trace.w[:-1, 0, 0]), run.rho_step[:, 0, 0],
            control=True, detail="r_k = rho = 0 without the quantization term",
        )
    )

    # SAM at eta = 2.5/L on a quadratic: the top mode is multiplied by 1 - 2.5 = -1.5 per
    # step, so f(w_K) grows and the T1 bound turns negative.
    rho = ctx.settings.rhos[0]
    trace = run_sweep(problem, METHODS["sam"], etas=[2.5 / problem.L], rhos=[rho], lams=[1.0], w0=quadratic.w0, steps=steps)
    run = analyse(trace)
    lhs, rhs, scale = averaged_terms(run, 0, 0, check_step=False)
    checks.append(
        inequality_check(
            f"T1/quadratic/sam/eta=2.5L^-1,rho={format_number(rho)}", "T1", "quadratic", "sam",
            lhs, rhs, scale=scale, control=True, index_name="K", first_index=1,
            detail="step size beyond the hypothesis eta <= 1/L; the run diverges",
        )
    )

    # The update-rule check must tell the quantized perturbation e(q(w)) from e(w).
    run = ctx.analysis("quadratic", "bqsam-ste")
    trace = run.trace
    g, c = 0, 0
    rho_row = trace.rhos[c]
    g_w = problem.grad(trace.w[:-1, g, c])
    e_at_w = rho_row * g_w / row_norm(g_w).unsqueeze(-1)
    z_error = row_norm(trace.z[:, g, c] - (trace.x[:, g, c] + e_at_w)) / (row_norm(trace.z[:, g, c]) + TINY)
    checks.append(
        identity_check(
            f"ALG/quadratic/bqsam-ste/eta={format_number(ctx.settings.eta_factors[g])}L^-1,"
            f"rho={format_number(float(rho_row))},reference-e-at-w",
            "A (update rule)", "quadratic", "bqsam-ste", z_error, control=True,
            detail="reference perturbation rho g(w_k)/||g(w_k)|| instead of rho g(q(w_k))/||g(q(w_k))||",
        )
    )
    return checks


def run(ctx: Context) -> list[Check]:
    """Run the descent suite on every problem and method of the sweep."""
    checks: list[Check] = []
    derivation = one_step_inequality()
    checks.append(
        identity_check(
            "one-step/symbolic/any/derivation", "one-step inequality", "symbolic", "any",
            0.0 if derivation.check else float("inf"),
            detail="sympy: polarisation identity and the slack (eta/2)(L^2 r^2 - ||a - b||^2) >= 0",
        )
    )
    for name in ctx.instances:
        for method_name in ctx.settings.methods:
            analysis = ctx.analysis(name, method_name)
            checks += sweep_checks(name, analysis, row_settings(METHODS[method_name], ctx.settings), ctx.settings.eta_factors)
    checks += _controls(ctx)
    return checks
