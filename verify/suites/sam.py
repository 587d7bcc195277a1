"""The SAM lemmas: S1, S2, the type-1 gradient error, type-2 exactness and S3.

At the points x_k visited by the sweeps (and the perturbation e_k = z_k - x_k that
BinarySAM applied there):

- ``S1``: f(x) + rho||g|| - L rho^2/2 <= f(x + e) <= f_rho(x) <= f(x) + rho||g|| + L rho^2/2
  and 0 <= f_rho(x) - f(x + e) <= L rho^2. f_rho is exact on the quadratic (trust-region
  subproblem, ``Quadratic.sam_objective``); there the solver is also checked against
  random points of the sphere. On the other problems the two outer inequalities are
  checked on f(x + e).
- ``S2``: ||grad f(x + e) - grad f(x)|| <= L ||e|| and ||e|| <= rho.
- ``S type-1 error``: ||grad F(x) - G1|| <= ||J|| ||G1|| with F(x) = f(x + e(x)), G1 =
  grad f(x + e), ||J|| <= rho L / ||g|| (normalised) or rho L (USAM). grad F is computed by
  automatic differentiation through e(x), independently of the Hessian formula.
- ``S type-2 gradient``: the Hessian-corrected direction that BinarySAM applied equals
  grad F(x_k) to 1e-10 (double backpropagation), or within the S3 bound (central difference
  with step delta along v/||v||, rescaled by ||v||: error at most (M delta / 2) ||v||).
- ``S3``: ||HVP_delta(w, v) - H(w) v|| <= (M delta / 2) ||v||^2 with
  ``bqsam.hvp.hvp_central_difference`` on logistic and robust regression.

Negative controls: S1 and S2 with L understated tenfold (at the origin of a quadratic, and
on a 1-D quadratic where S2 is an equality), the type-1 bound with L/10 on a 1-D quadratic
where it is an equality for USAM, and S3 with M/10 on 1-D logistic regression at 0 with
delta = 2 (where the error is 62% of the bound).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bqsam.hvp import hvp_central_difference
from theory import bounds
from theory.problems import Logistic, Problem, Quadratic

from ..analysis import Analysis, gradient_scale, row_norm
from ..checks import Check, identity_check, inequality_check
from ..context import Context, format_number
from ..methods import METHODS

__all__ = ["run", "sam_objective_gradient"]

DTYPE = torch.float64
TR_DIRECTIONS = 64
HVP_POINTS = 32
FD_DELTAS = (1e-3, 1e-2, 1e-1, 1.0, 2.0)
V_NORMS = (0.1, 1.0, 3.0)


def sam_objective_gradient(problem: Problem, x: Tensor, rho: Tensor, normalize: bool) -> Tensor:
    """Return grad F(x) for F(x) = f(x + e(x)) by automatic differentiation through e(x).

    ``rho`` broadcasts against the batch shape of ``x`` (shape (...,)).
    """
    point = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(problem.loss(point).sum(), point, create_graph=True)
    radius = rho.unsqueeze(-1)
    e = radius * g / g.norm(dim=-1, keepdim=True) if normalize else radius * g
    (gradient,) = torch.autograd.grad(problem.loss(point + e).sum(), point)
    return gradient.detach()


def _per_rho(run: Analysis) -> list[tuple[float, Tensor, Tensor]]:
    """Return (rho, x, z) for each row of a sweep, the points flattened over k and eta."""
    trace = run.trace
    out = []
    for c, rho in enumerate(trace.rhos.tolist()):
        x = trace.x[:, :, c].reshape(-1, trace.problem.dim)
        z = trace.z[:, :, c].reshape(-1, trace.problem.dim)
        out.append((rho, x, z))
    return out


def _s1_checks(name: str, run: Analysis) -> list[Check]:
    """S1 at the visited points, written as increments over f(x) so that ratios mean something."""
    problem, L = run.trace.problem, run.L
    checks = []
    for rho, x, z in _per_rho(run):
        tag = f"sam/rho={format_number(rho)}"
        f_x, f_xe = problem.loss(x), problem.loss(z)
        g_norm = row_norm(problem.grad(x))
        lower, upper = bounds.s1_bounds(f_x, g_norm, L, rho)
        first_order = f_x + rho * g_norm  # f(x) + rho ||g||, the centre of the sandwich
        half_curvature = upper - first_order  # L rho^2 / 2
        scale = f_x.abs() + rho * g_norm + L * rho**2
        checks.append(
            inequality_check(f"S1/{name}/{tag},lower", "S1", name, "sam", first_order - f_xe, first_order - lower,
                             scale=scale, detail="f(x) + rho||g|| - f(x + e) <= L rho^2/2")
        )
        if isinstance(problem, Quadratic):
            f_rho = problem.sam_objective(x, rho)
            checks.append(
                inequality_check(f"S1/{name}/{tag},order", "S1", name, "sam", f_xe - f_x, f_rho - f_x, scale=scale,
                                 detail="f(x + e) - f(x) <= f_rho(x) - f(x), f_rho exact (trust-region solver)")
            )
            checks.append(
                inequality_check(f"S1/{name}/{tag},upper", "S1", name, "sam", f_rho - first_order, half_curvature,
                                 scale=scale, detail="f_rho(x) - f(x) - rho||g|| <= L rho^2/2")
            )
            checks.append(
                inequality_check(f"S1/{name}/{tag},gap", "S1", name, "sam", f_rho - f_xe,
                                 bounds.s1_gap_bound(L, rho), scale=scale,
                                 detail="f_rho(x) - f(x + e) <= L rho^2")
            )
            generator = torch.Generator().manual_seed(5)
            directions = torch.randn(TR_DIRECTIONS, *x.shape, generator=generator, dtype=DTYPE)
            directions = rho * directions / row_norm(directions).unsqueeze(-1)
            sampled = problem.loss(x.unsqueeze(0) + directions).amax(dim=0)
            checks.append(
                inequality_check(f"S1/{name}/{tag},solver-vs-sphere", "S1", name, "sam", sampled - f_x, f_rho - f_x,
                                 scale=scale,
                                 detail=f"max over {TR_DIRECTIONS} random points e' of the sphere of f(x + e') - f(x)")
            )
        else:
            checks.append(
                inequality_check(f"S1/{name}/{tag},upper", "S1", name, "sam", f_xe - first_order, half_curvature,
                                 scale=scale, detail="f(x + e) - f(x) - rho||g|| <= L rho^2/2")
            )
    return checks


def _s2_checks(name: str, run: Analysis) -> list[Check]:
    problem, L = run.trace.problem, run.L
    checks = []
    for rho, x, z in _per_rho(run):
        tag = f"sam/rho={format_number(rho)}"
        e_norm = row_norm(z - x)
        difference = row_norm(problem.grad(z) - problem.grad(x))
        scale = gradient_scale(problem, z) + gradient_scale(problem, x) + L * e_norm
        checks.append(
            inequality_check(f"S2/{name}/{tag}", "S2", name, "sam", difference, bounds.s2_bound(L, e_norm),
                             scale=scale, detail="||grad f(x + e) - grad f(x)|| <= L ||e||")
        )
        checks.append(
            inequality_check(f"S2/{name}/{tag},radius", "S2", name, "sam", e_norm, torch.full_like(e_norm, rho),
                             scale=row_norm(z) + row_norm(x), detail="||e|| <= rho")
        )
    return checks


def _type1_checks(name: str, run: Analysis) -> list[Check]:
    problem, L, method = run.trace.problem, run.L, run.trace.method
    checks = []
    for rho, x, z in _per_rho(run):
        rho_rows = torch.full(x.shape[:-1], rho, dtype=DTYPE)
        exact = sam_objective_gradient(problem, x, rho_rows, method.normalize)
        first_order = problem.grad(z)
        g_norm = row_norm(problem.grad(x))
        error = row_norm(exact - first_order)
        bound = bounds.type1_error_bound(row_norm(first_order), L, rho, g_norm, normalize=method.normalize)
        checks.append(
            inequality_check(
                f"S-type1/{name}/{method.name}/rho={format_number(rho)}", "S type-1 error", name, method.name,
                error, bound, scale=gradient_scale(problem, x) + gradient_scale(problem, z),
                detail="||grad F - grad f(x + e)|| <= ||J|| ||grad f(x + e)||",
            )
        )
    return checks


def _type2_checks(name: str, run: Analysis) -> list[Check]:
    """Compare the applied Hessian-corrected direction with grad F at x_k."""
    trace = run.trace
    problem, method = trace.problem, trace.method
    checks = []
    for g, eta in enumerate(trace.etas.tolist()):
        eta_factor = eta * run.L
        for c, rho in enumerate(trace.rhos.tolist()):
            x = trace.x[:, g, c]
            exact = sam_objective_gradient(problem, x, torch.full(x.shape[:-1], rho, dtype=DTYPE), method.normalize)
            gap = row_norm(run.d[:, g, c] - exact)
            rounding = (
                gradient_scale(problem, x) + gradient_scale(problem, trace.z[:, g, c])
                + (row_norm(trace.w[:-1, g, c]) + row_norm(trace.w[1:, g, c])) / eta
            )
            check_id = f"S-type2/{name}/{method.name}/eta={format_number(round(eta_factor, 12))}L^-1,rho={format_number(rho)}"
            if method.sam_grad == "hessian-exact":
                checks.append(
                    identity_check(check_id, "S type-2 gradient", name, method.name, gap / rounding,
                                   detail="applied direction against grad F(x_k) by automatic differentiation")
                )
            else:
                checks.append(
                    inequality_check(check_id, "S type-2 gradient", name, method.name, gap, run.fd_allowance[:, g, c],
                                     scale=rounding,
                                     detail="central-difference direction within (M delta/2)||v|| of grad F(x_k)")
                )
    return checks


def _s3_checks(name: str, problem: Problem) -> list[Check]:
    generator = torch.Generator().manual_seed(17)
    points = torch.randn(HVP_POINTS, problem.dim, generator=generator, dtype=DTYPE)
    directions = torch.randn(len(V_NORMS), HVP_POINTS, problem.dim, generator=generator, dtype=DTYPE)
    directions = directions / row_norm(directions).unsqueeze(-1)
    directions = directions * torch.tensor(V_NORMS, dtype=DTYPE).reshape(-1, 1, 1)
    w = points.expand_as(directions)
    exact = torch.einsum("...ij,...j->...i", problem.hessian(w), directions)
    checks = []
    for delta in FD_DELTAS:
        (approx,) = hvp_central_difference(lambda pts: [problem.grad(pts[0])], [w], [directions], delta)
        error = row_norm(approx - exact).reshape(-1)
        bound = bounds.s3_fd_bound(problem.M, delta, row_norm(directions)).reshape(-1)
        scale = (row_norm(exact) + row_norm(problem.grad(w)) / delta).reshape(-1)
        checks.append(
            inequality_check(
                f"S3/{name}/hvp-fd/delta={format_number(delta)}", "S3", name, "hvp-fd", error, bound, scale=scale,
                index_name="pair", detail=f"{HVP_POINTS} points x {len(V_NORMS)} directions, ||v|| in {V_NORMS}",
            )
        )
    return checks


def _one_dim_logistic() -> tuple[Logistic, float, float]:
    """Return f(w) = log(1 + e^-w), the HVP error at w = 0 with delta = 2, and M."""
    problem = Logistic(torch.tensor([[1.0]], dtype=DTYPE), torch.tensor([1.0], dtype=DTYPE), c=0.0)
    w, v = torch.zeros(1, dtype=DTYPE), torch.ones(1, dtype=DTYPE)
    (approx,) = hvp_central_difference(lambda pts: [problem.grad(pts[0])], [w], [v], 2.0)
    error = float((approx - problem.hessian(w) @ v).norm())
    return problem, error, float(problem.M)


def _controls(ctx: Context) -> list[Check]:
    checks = []
    # S1 at the origin of a quadratic with b = 0: g = 0, e = 0, f_rho = L rho^2/2 > (L/10) rho^2.
    quadratic = Quadratic(ctx.instances["quadratic"].problem.A)
    rho = 0.1
    origin = torch.zeros(1, quadratic.dim, dtype=DTYPE)
    gap = quadratic.sam_objective(origin, rho) - quadratic.loss(origin)
    checks.append(
        inequality_check("S1/quadratic/sam/rho=0.1,at-origin,L-understated-10x", "S1", "quadratic", "sam",
                         gap, bounds.s1_gap_bound(quadratic.L / 10, rho), control=True,
                         detail="f_rho(0) - f(0 + e(0)) = L rho^2/2 against (L/10) rho^2")
    )
    # S2 and the type-1 bound on f = L w^2/2: both are equalities there.
    line = Quadratic(torch.tensor([2.0], dtype=DTYPE))
    x = torch.tensor([[0.7]], dtype=DTYPE)
    e = rho * torch.sign(line.grad(x))
    difference = row_norm(line.grad(x + e) - line.grad(x))
    checks.append(
        inequality_check("S2/quadratic-1d/sam/rho=0.1,L-understated-10x", "S2", "quadratic-1d", "sam",
                         difference, bounds.s2_bound(line.L / 10, row_norm(e)), control=True,
                         detail="||grad f(x + e) - grad f(x)|| = L rho on a 1-D quadratic")
    )
    exact = sam_objective_gradient(line, x, torch.full((1,), rho, dtype=DTYPE), normalize=False)
    first_order = line.grad(x + rho * line.grad(x))
    checks.append(
        inequality_check("S-type1/quadratic-1d/usam/rho=0.1,L-understated-10x", "S type-1 error", "quadratic-1d",
                         "usam", row_norm(exact - first_order),
                         bounds.type1_error_bound(row_norm(first_order), line.L / 10, rho, normalize=False),
                         control=True, detail="USAM on L w^2/2: the error equals rho L ||G1||")
    )
    # Type 2 with the projection I - u u^T left out of J: the applied direction must differ
    # from G1 + (rho/||g||) H G1 by (rho/||g||) H u <u, G1>, which is nonzero off eigenvectors.
    run_ = ctx.analysis("quadratic", "sam-hessian-exact")
    trace = run_.trace
    problem = trace.problem
    g, c = trace.etas.numel() - 1, 0
    x, z = trace.x[:, g, c], trace.z[:, g, c]
    rho_row = float(trace.rhos[c])
    g_x, G1 = problem.grad(x), problem.grad(z)
    unprojected = G1 + (rho_row / row_norm(g_x)).unsqueeze(-1) * torch.einsum("...ij,...j->...i", problem.hessian(x), G1)
    rounding = gradient_scale(problem, x) + (row_norm(trace.w[:-1, g, c]) + row_norm(trace.w[1:, g, c])) / float(trace.etas[g])
    checks.append(
        identity_check(
            f"S-type2/quadratic/sam-hessian-exact/eta=1L^-1,rho={format_number(rho_row)},projection-left-out",
            "S type-2 gradient", "quadratic", "sam-hessian-exact", row_norm(run_.d[:, g, c] - unprojected) / rounding,
            control=True, detail="reference J = (rho/||g||) H without the projection I - u u^T",
        )
    )

    _, error, M = _one_dim_logistic()
    checks.append(
        inequality_check("S3/logistic-1d/hvp-fd/delta=2,at-0", "S3", "logistic-1d", "hvp-fd",
                         error, bounds.s3_fd_bound(M, 2.0, 1.0),
                         detail="log(1 + e^-w) at w = 0, v = 1: error 0.0596, bound 0.0962")
    )
    checks.append(
        inequality_check("S3/logistic-1d/hvp-fd/delta=2,at-0,M-understated-10x", "S3", "logistic-1d", "hvp-fd",
                         error, bounds.s3_fd_bound(M / 10, 2.0, 1.0), control=True,
                         detail="the same case with M/10 in the bound")
    )
    return checks


def run(ctx: Context) -> list[Check]:
    """Run the SAM-lemma suite."""
    checks: list[Check] = []
    for name in ctx.instances:
        sam_run = ctx.analysis(name, "sam")
        checks += _s1_checks(name, sam_run)
        checks += _s2_checks(name, sam_run)
        checks += _type1_checks(name, sam_run)
        checks += _type1_checks(name, ctx.analysis(name, "usam"))
        for method_name in ctx.settings.methods:
            if METHODS[method_name].hessian:
                checks += _type2_checks(name, ctx.analysis(name, method_name))
    for name in ("logistic", "robust-regression"):
        checks += _s3_checks(name, ctx.instances[name].problem)
    checks += _controls(ctx)
    return checks

