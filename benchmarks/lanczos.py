"""Hessian-vector products to the top Hessian eigenvalue: Lanczos against power iteration.

On a small float64 CNN at a fixed batch, a reference top eigenvalue comes from Lanczos
run to a relative tolerance of 1e-10 (its own start vector). Then, for each start-vector
seed, both :func:`bqsam.sharpness.lanczos_top_eigenvalue` and
:func:`bqsam.sharpness.power_iteration_top_eigenvalue` run with tolerance 1e-6, and
the benchmark reads off their estimate histories the first product count whose estimate
lies within 1e-3 (relative) of the reference. Each method also runs once with its own
stopping rule at ``tol=1e-3``, where the benchmark records the product count and the
error at the stop.

Power iteration converges to the eigenvalue of largest magnitude at the rate
``(lambda_2 / lambda_1)^(2i)``; Lanczos converges at a rate set by the gap relative to
the spectral width, which is why it needs fewer products when the top eigenvalues are
close.

Example:
    >>> from benchmarks.lanczos import run
    >>> result = run("smoke", repeats=1)       # doctest: +SKIP
    >>> result.rows[2].quantity
    'Lanczos / power HVPs (init)'
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from bqsam.sharpness import lanczos_top_eigenvalue, power_iteration_top_eigenvalue

from .common import BenchmarkResult, Row, check_scale

__all__ = ["TinyCNN", "first_within", "run"]

ERROR = 1e-3
TARGET = "<= 0.5"
REFERENCE_SEED = 10_000

# Per scale: batch size, image side, start-vector seeds, product caps, SGD steps before.
SIZES = {
    "full": dict(batch=64, side=16, seeds=5, lanczos_cap=100, power_cap=300, warm_steps=150),
    "quick": dict(batch=32, side=16, seeds=2, lanczos_cap=60, power_cap=150, warm_steps=50),
    "smoke": dict(batch=8, side=8, seeds=1, lanczos_cap=10, power_cap=10, warm_steps=1),
}


class TinyCNN(nn.Module):
    """Three 3x3 convolutions (8, 16, 32 channels, ReLU), global average pooling, linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def first_within(history: list[float], reference: float, error: float = ERROR) -> int | None:
    """Return the product count after which the estimate first lies within ``error``
    (relative) of ``reference``, or None when no estimate of ``history`` does."""
    for index, estimate in enumerate(history):
        if abs(estimate - reference) <= error * abs(reference):
            return index + 1
    return None


def _problem(sizes: dict[str, Any], steps: int, device: torch.device) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Build the CNN and a batch with random labels, then take ``steps`` SGD steps on it."""
    torch.manual_seed(0)
    model = TinyCNN().to(device=device, dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(sizes["batch"], 3, sizes["side"], sizes["side"], generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (sizes["batch"],), generator=generator)
    x, y = x.to(device), y.to(device)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, x, y


def _measure_point(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, sizes: dict[str, Any], seeds: int
) -> tuple[dict[str, list[float]], dict[str, Any], list[str]]:
    """Run both methods from ``seeds`` start vectors at the current weights of ``model``."""
    params = list(model.parameters())

    def loss_fn() -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    reference = lanczos_top_eigenvalue(
        loss_fn, params, k=2, tol=1e-10, max_iter=sizes["lanczos_cap"], seed=REFERENCE_SEED
    )
    top = reference.eigenvalue
    values: dict[str, list[float]] = {key: [] for key in ("lanczos", "power", "lanczos_stop", "power_stop", "lanczos_err", "power_err")}
    raw: dict[str, Any] = {"reference": reference.eigenvalues, "reference_hvps": reference.hvp_count, "seeds": []}
    notes = []
    for seed in range(seeds):
        # With a tolerance 1000x below the error studied, the histories run past the 1e-3
        # point but stop before the product cap.
        lanczos = lanczos_top_eigenvalue(loss_fn, params, tol=1e-6, max_iter=sizes["lanczos_cap"], seed=seed)
        power = power_iteration_top_eigenvalue(loss_fn, params, tol=1e-6, max_iter=sizes["power_cap"], seed=seed)
        lanczos_reached = first_within(lanczos.history, top)
        power_reached = first_within(power.history, top)
        if power_reached is None:
            notes.append(
                f"seed {seed}: power iteration did not reach 1e-3 within {sizes['power_cap']} products; "
                "its count is the cap, so the ratio is an upper bound"
            )
        if lanczos_reached is None:
            notes.append(f"seed {seed}: Lanczos did not reach 1e-3 within {sizes['lanczos_cap']} products")
        values["lanczos"].append(lanczos_reached or sizes["lanczos_cap"])
        values["power"].append(power_reached or sizes["power_cap"])

        lanczos_rule = lanczos_top_eigenvalue(loss_fn, params, tol=ERROR, max_iter=sizes["lanczos_cap"], seed=seed)
        power_rule = power_iteration_top_eigenvalue(loss_fn, params, tol=ERROR, max_iter=sizes["power_cap"], seed=seed)
        values["lanczos_stop"].append(lanczos_rule.hvp_count)
        values["power_stop"].append(power_rule.hvp_count)
        values["lanczos_err"].append(abs(lanczos_rule.eigenvalue - top) / abs(top))
        values["power_err"].append(abs(power_rule.eigenvalue - top) / abs(top))
        raw["seeds"].append(
            {
                "seed": seed,
                "lanczos_history": lanczos.history,
                "power_history": power.history,
                "lanczos_hvps_to_error": lanczos_reached,
                "power_hvps_to_error": power_reached,
                "lanczos_stop_rule": {"hvps": lanczos_rule.hvp_count, "eigenvalue": lanczos_rule.eigenvalue},
                "power_stop_rule": {"hvps": power_rule.hvp_count, "eigenvalue": power_rule.eigenvalue},
            }
        )
    return values, raw, notes


def run(scale: str = "full", repeats: int | None = None, device: str = "cpu") -> BenchmarkResult:
    """Count Hessian-vector products to 1e-3 relative error of the top eigenvalue.

    Two points are measured: the random initialization and the weights after
    ``warm_steps`` SGD steps on the batch. The gap between the top two eigenvalues sets
    both convergence rates, and it differs between the two points.
    """
    check_scale(scale)
    started = time.perf_counter()
    sizes = SIZES[scale]
    seeds = repeats or sizes["seeds"]
    rows, notes = [], []
    raw: dict[str, Any] = {}
    for label, steps in (("init", 0), (f"{sizes['warm_steps']} SGD steps", sizes["warm_steps"])):
        model, x, y = _problem(sizes, steps, torch.device(device))
        values, raw[label], point_notes = _measure_point(model, x, y, sizes, seeds)
        top, second = raw[label]["reference"][:2]
        rows += [
            Row(f"Lanczos HVPs to 1e-3 error ({label})", values["lanczos"], unit="HVP"),
            Row(f"power HVPs to 1e-3 error ({label})", values["power"], unit="HVP"),
            Row(
                f"Lanczos / power HVPs ({label})",
                [a / b for a, b in zip(values["lanczos"], values["power"])],
                target=TARGET,
            ),
            Row(f"Lanczos HVPs at stop, tol 1e-3 ({label})", values["lanczos_stop"], unit="HVP"),
            Row(f"power HVPs at stop, tol 1e-3 ({label})", values["power_stop"], unit="HVP"),
            Row(f"Lanczos rel. error at stop ({label})", values["lanczos_err"], unit="rel"),
            Row(f"power rel. error at stop ({label})", values["power_err"], unit="rel"),
        ]
        notes += [f"{label}: {note}" for note in point_notes]
        notes.append(
            f"{label}: reference top eigenvalues {top:.6g}, {second:.6g} (ratio {second / top:.3f}; "
            f"Lanczos, tol 1e-10, {raw[label]['reference_hvps']} products)"
        )
    notes.append("one repeat = one start-vector seed")

    settings = {
        "model": "TinyCNN (3 conv + linear, ReLU), float64",
        "parameters": sum(p.numel() for p in TinyCNN().parameters()),
        "device": device,
        "batch": sizes["batch"],
        "image": [3, sizes["side"], sizes["side"]],
        "sgd_steps_before": [0, sizes["warm_steps"]],
        "seeds": seeds,
        "lanczos_cap": sizes["lanczos_cap"],
        "power_cap": sizes["power_cap"],
        "error": ERROR,
    }
    return BenchmarkResult(
        name="lanczos", rows=rows, settings=settings, raw=raw, notes=notes, seconds=time.perf_counter() - started
    )
