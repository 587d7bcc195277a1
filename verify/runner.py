"""Run ``bqsam.BinarySAM`` on a problem as one batched sweep and record where it looked.

The suites never re-implement an update. They run the optimizer itself, in float64, with
one param group per step size (``batched=True``) and one row per configuration, and the
closure records the parameter values at each call. BinarySAM calls the closure first at
``x_k`` (the quantized or relaxed point), then at the descent point ``x_k + e_k`` (or
``q(w_k + e_k)`` with the latent perturbation), then, for the Hessian-corrected
gradients, at further points. Exact losses and gradients at those points come from the
problem afterwards.

Example:
    >>> import torch
    >>> from theory.problems import Quadratic
    >>> from verify.methods import METHODS
    >>> problem = Quadratic(torch.tensor([1.0, 2.0]))
    >>> trace = run_sweep(problem, METHODS["sam"], etas=[0.25], rhos=[0.1], lams=[1.0],
    ...                   w0=torch.tensor([1.0, -1.0]), steps=3)
    >>> trace.w.shape, trace.z.shape
    (torch.Size([4, 1, 1, 2]), torch.Size([3, 1, 1, 2]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from bqsam.optim import BinarySAM
from theory.problems import Problem

from .methods import Method

__all__ = ["Trace", "run_sweep", "SAMPLING_MODES"]

DTYPE = torch.float64

# Minibatch sampling modes of a stochastic group: new indices at every closure call (T3a,
# independent samples for the ascent and the descent gradient) or one draw per step
# shared by all calls of the step (T3b, practical SAM).
SAMPLING_MODES = ("independent", "shared")


@dataclass
class Trace:
    """The points one batched run visited.

    Shapes: G step sizes (param groups), C configurations (rows), K steps, n coordinates.

    Attributes:
        w: latent weights w_0..w_K, shape (K + 1, G, C, n).
        x: the first closure point of each step (x_k), shape (K, G, C, n).
        z: the second closure point of each step, shape (K, G, C, n). It is the descent
            point, and equals x when the method takes no ascent step.
        etas: step sizes, shape (G,).
        rhos, lams: per-row radius and relaxation weight lam_0, shape (C,).
    """

    problem: Problem
    method: Method
    etas: Tensor
    rhos: Tensor
    lams: Tensor
    fd_delta: float
    w: Tensor
    x: Tensor
    z: Tensor

    @property
    def steps(self) -> int:
        return self.x.shape[0]


def _rows(values: Sequence[float] | Tensor, count: int, name: str) -> Tensor:
    tensor = torch.as_tensor(values, dtype=DTYPE).reshape(-1)
    if tensor.numel() != count:
        raise ValueError(f"{name} needs {count} entries (one per row), got {tensor.numel()}")
    return tensor


def run_sweep(
    problem: Problem,
    method: Method,
    *,
    etas: Sequence[float],
    rhos: Sequence[float],
    lams: Sequence[float],
    w0: Tensor,
    steps: int,
    fd_delta: float = 1e-3,
    sampling: Sequence[str] | None = None,
    batch_size: int = 1,
    generator: torch.Generator | None = None,
) -> Trace:
    """Run ``steps`` steps of BinarySAM with one param group per step size.

    Args:
        problem: a ``theory.problems`` problem; its loss is evaluated on (C, n) batches.
        method: the BinarySAM settings.
        etas: step sizes, one param group each.
        rhos, lams: one radius and one relaxation weight lam_0 per row (configuration).
        w0: start point, shape (n,) (the same for every row) or (C, n).
        steps: number of optimizer steps K.
        fd_delta: the central-difference step of ``sam_grad="hessian-fd"``.
        sampling: ``None`` for full-batch gradients, else one entry of ``SAMPLING_MODES``
            per group: minibatch gradients of ``batch_size`` indices drawn uniformly with
            replacement, independently for every row.
        generator: random source of the minibatch indices.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rho_rows = _rows(rhos, len(rhos), "rhos")
    count = rho_rows.numel()
    lam_rows = _rows(lams, count, "lams")
    if sampling is not None:
        if len(sampling) != len(etas) or any(mode not in SAMPLING_MODES for mode in sampling):
            raise ValueError(f"sampling needs one of {SAMPLING_MODES} per step size, got {list(sampling)}")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)

    start = torch.as_tensor(w0, dtype=DTYPE)
    start = start.expand(count, problem.dim) if start.dim() == 1 else start
    params = [torch.nn.Parameter(start.clone()) for _ in etas]
    groups = [
        {
            "params": [p],
            "lr": float(eta),
            "rho": rho_rows.clone() if method.sam else torch.zeros(count, dtype=DTYPE),
            "lam": lam_rows.clone(),
            "lam_growth": method.lam_growth,
            "batched": True,
        }
        for p, eta in zip(params, etas)
    ]
    optimizer = BinarySAM(
        groups,
        torch.optim.SGD,
        rho=0.0,
        quantizer=method.quantizer,
        sam_grad=method.sam_grad,
        perturb=method.perturb,
        normalize=method.normalize,
        fd_delta=fd_delta,
        lr=float(etas[0]),
    )

    calls: list[Tensor] = []
    step_indices: list[Tensor | None] = [None] * len(params)

    def batch_loss(group: int, point: Tensor) -> Tensor:
        if sampling is None:
            return problem.loss(point).sum()
        if sampling[group] == "independent" or step_indices[group] is None:
            step_indices[group] = torch.randint(
                problem.n_samples, (count, batch_size), generator=generator
            )
        return problem.minibatch_loss(point, step_indices[group]).sum()

    def closure() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        first_call = not calls
        calls.append(torch.stack([p.detach().clone() for p in params]))
        if first_call:
            for group in range(len(params)):
                step_indices[group] = None
        loss = sum(batch_loss(group, p) for group, p in enumerate(params))
        loss.backward(create_graph=optimizer.create_graph)
        return loss.detach()

    w_trace = [torch.stack([p.detach().clone() for p in params])]
    x_trace, z_trace = [], []
    for _ in range(steps):
        calls.clear()
        optimizer.step(closure)
        x_trace.append(calls[0])
        z_trace.append(calls[1] if len(calls) > 1 else calls[0])
        w_trace.append(torch.stack([p.detach().clone() for p in params]))

    return Trace(
        problem=problem,
        method=method,
        etas=torch.as_tensor(list(etas), dtype=DTYPE),
        rhos=rho_rows if method.sam else torch.zeros(count, dtype=DTYPE),
        lams=lam_rows,
        fd_delta=float(fd_delta),
        w=torch.stack(w_trace),
        x=torch.stack(x_trace),
        z=torch.stack(z_trace),
    )
