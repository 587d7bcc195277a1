"""Step time of BinarySAM per method, relative to a plain SGD-with-momentum step.

Every method runs on its own copy of the same small CNN (three 3x3 convolutions with
BatchNorm, CIFAR-sized input) and the same float32 batch. The baseline step is what a
plain training loop does, ``zero_grad(); loss = f(model(x)); loss.backward();
torch.optim.SGD.step()``. A BinarySAM step includes its closure's forward-backward passes:

==========================  =============================  ===================
method                      closure calls per step         floor (baseline=1)
==========================  =============================  ===================
sgd, bc, br (rho = 0)       1 (at x_k)                     1.0
sam, bqsam-ste, bqsam-relax 2 (x_k, x_k + e_k)             2.0
bqsam-ste-hessian-fd        4 (x_k, x_k + e_k, x_k +- d u) 4.0
bqsam-ste-hessian-exact     3, the last one with           3.0 + one double
                            create_graph=True              backward
==========================  =============================  ===================

Each method step is timed back to back with one baseline step (see
:func:`benchmarks.common.paired_timings`), and its ratio divides the two. The binarization
overhead is the BQ-SAM ratio over the SAM ratio of the same repeat.

Example:
    >>> from benchmarks.sam_step import run
    >>> result = run("smoke", repeats=1)       # doctest: +SKIP
    >>> [row.quantity for row in result.rows][:2]
    ['sgd / SGD', 'sam / SGD']
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from bqsam import BinarySAM, binarizable_param_groups

from .common import BenchmarkResult, Row, check_scale, paired_timings, ratios, summarize

__all__ = ["SmallCNN", "METHODS", "run"]

# name -> BinarySAM settings. Hessian-corrected gradients are timed on BQ-SAM (STE).
METHODS: dict[str, dict[str, Any]] = {
    "sgd": dict(rho=0.0, quantizer=None),
    "sam": dict(rho=0.05, quantizer=None),
    "bc": dict(rho=0.0, quantizer="ste"),
    "br": dict(rho=0.0, quantizer="relax", lam=1.0, lam_growth=1.001),
    "bqsam-ste": dict(rho=0.05, quantizer="ste"),
    "bqsam-relax": dict(rho=0.05, quantizer="relax", lam=1.0, lam_growth=1.001),
    "bqsam-ste-hessian-fd": dict(rho=0.05, quantizer="ste", sam_grad="hessian-fd"),
    "bqsam-ste-hessian-exact": dict(rho=0.05, quantizer="ste", sam_grad="hessian-exact"),
}

# Physical lower bound of each ratio: forward-backward passes per step.
FLOORS = {
    "sgd": 1.0,
    "bc": 1.0,
    "br": 1.0,
    "sam": 2.0,
    "bqsam-ste": 2.0,
    "bqsam-relax": 2.0,
    "bqsam-ste-hessian-fd": 4.0,
    "bqsam-ste-hessian-exact": 3.0,
}
SAM_FIRST_ORDER = ("sam", "bqsam-ste", "bqsam-relax")
FIRST_ORDER_TARGET = "<= 2.1"
BINARIZATION_TARGET = "<= 1.05"

# Per scale: batch size, image side, default repeats, warm-up steps.
SIZES = {
    "full": dict(batch=128, side=32, repeats=15, warmup=2),
    "quick": dict(batch=32, side=32, repeats=3, warmup=1),
    "smoke": dict(batch=4, side=16, repeats=1, warmup=0),
}


class SmallCNN(nn.Module):
    """Three 3x3 convolutions (32, 64, 128 channels) with BatchNorm, then a linear layer.

    With the usual split the first convolution and the linear layer stay full precision
    and the two inner convolutions (92k weights) are binarized.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _baseline_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


class _BinarySAMStep:
    """One BinarySAM step on a fixed batch, callable, that also records the CPU time spent
    inside its closure calls (the forward-backward passes) at every step."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict[str, Any]) -> None:
        # Unquantized methods take every tensor as one float group.
        params = binarizable_param_groups(model) if settings.get("quantizer") else model.parameters()
        self.optimizer = BinarySAM(params, torch.optim.SGD, lr=0.01, momentum=0.9, model=model, **settings)
        self.model, self.x, self.y = model, x, y
        self.closure_seconds: list[float] = []
        self._inside = 0.0

    def _closure(self) -> torch.Tensor:
        started = time.process_time()
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward(create_graph=self.optimizer.create_graph)
        self._inside += time.process_time() - started
        return loss.detach()

    def __call__(self) -> None:
        self._inside = 0.0
        self.optimizer.step(self._closure)
        self.closure_seconds.append(self._inside)


def build_tasks(
    scale: str, device: torch.device, methods: dict[str, dict[str, Any]] | None = None
) -> dict[str, Callable[[], None]]:
    """Return one step function per configuration, ``"SGD"`` (the baseline) first."""
    sizes = SIZES[scale]
    torch.manual_seed(0)
    reference = SmallCNN().to(device)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(sizes["batch"], 3, sizes["side"], sizes["side"], generator=generator).to(device)
    y = torch.randint(0, 10, (sizes["batch"],), generator=generator).to(device)

    tasks = {"SGD": _baseline_step(copy.deepcopy(reference), x, y)}
    for name, settings in (methods or METHODS).items():
        tasks[name] = _BinarySAMStep(copy.deepcopy(reference), x, y, settings)
    return tasks


def run(scale: str = "full", repeats: int | None = None, device: str = "cpu") -> BenchmarkResult:
    """Time every method's step next to an SGD baseline step and return the ratios."""
    check_scale(scale)
    started = time.perf_counter()
    sizes = SIZES[scale]
    repeats = repeats or sizes["repeats"]
    target = torch.device(device)
    synchronize = torch.cuda.synchronize if target.type == "cuda" else None

    tasks = build_tasks(scale, target)
    baseline = tasks.pop("SGD")
    with warnings.catch_warnings():
        # Hessian-exact steps call backward(create_graph=True); BinarySAM sets the gradients
        # to None after the product, which breaks the reference cycle the warning is about.
        warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
        timings = paired_timings(baseline, tasks, repeats=repeats, warmup=sizes["warmup"], synchronize=synchronize)
    # CPU time of the process on CPU (robust to waiting for a shared core), wall clock on GPU.
    clock = "cpu" if target.type == "cpu" else "wall"
    seconds = timings[clock]

    def over_sgd(name: str, chosen: dict[str, list[float]]) -> list[float]:
        return ratios(chosen[name], chosen[f"baseline:{name}"])

    all_baselines = [t for name in METHODS for t in seconds[f"baseline:{name}"]]
    rows = [Row("SGD step (baseline)", [1e3 * s for s in all_baselines], unit="ms")]
    for name in METHODS:
        rows.append(
            Row(
                f"{name} / SGD",
                over_sgd(name, seconds),
                target=FIRST_ORDER_TARGET if name in SAM_FIRST_ORDER else None,
                floor=FLOORS[name],
            )
        )
    # Each method is divided by its own paired baseline first, so that the two methods'
    # pairs may sit at different moments of the repeat.
    for name, reference, target_ratio in (
        ("bqsam-ste", "sam", BINARIZATION_TARGET),
        ("bqsam-relax", "sam", BINARIZATION_TARGET),
        ("bc", "sgd", None),
        ("br", "sgd", None),
    ):
        rows.append(
            Row(
                f"{name} / {reference} (binarization)",
                ratios(over_sgd(name, seconds), over_sgd(reference, seconds)),
                target=target_ratio,
                floor=1.0,
            )
        )
    overhead = [1e3 * (a - b) for a, b in zip(seconds["sgd"], seconds["baseline:sgd"])]
    rows.append(Row("BinarySAM(sgd) - SGD", overhead, unit="ms", note="optimizer bookkeeping per step"))

    # CPU time of a step outside its closure calls: the optimizer's own work (copies,
    # quantization, perturbation, base step). Its difference between BQ-SAM and SAM is the
    # binarization cost, free of the scatter of the forward-backward passes.
    outside = {}
    for name in ("sgd", "sam", "bc", "br", "bqsam-ste", "bqsam-relax"):
        inside = tasks[name].closure_seconds[-repeats:]
        outside[name] = [total - closure for total, closure in zip(timings["cpu"][name], inside)]
        rows.append(Row(f"{name}: CPU time outside closures", [1e3 * v for v in outside[name]], unit="ms"))
    for name in ("bqsam-ste", "bqsam-relax"):
        extra = [(b - a) / step for a, b, step in zip(outside["sam"], outside[name], timings["cpu"]["sam"])]
        rows.append(Row(f"{name} optimizer work - sam's, / sam step", extra, unit="frac"))

    settings = {
        "model": "SmallCNN (3 conv + BatchNorm + linear)",
        "parameters": sum(p.numel() for p in SmallCNN().parameters()),
        "dtype": "float32",
        "device": str(target),
        "batch": sizes["batch"],
        "image": [3, sizes["side"], sizes["side"]],
        "pairing": "each method step timed back to back with one SGD step",
        "warmup_steps": sizes["warmup"],
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "clock": clock,
        "methods": {name: {k: v for k, v in s.items()} for name, s in METHODS.items()},
    }
    wall_sam = summarize(over_sgd("sam", timings["wall"]))
    notes = [
        "baseline: zero_grad + forward + backward + torch.optim.SGD(momentum=0.9).step()",
        "BinarySAM steps include their closure's forward-backward passes",
        f"ratios of {clock} time per step; by wall clock, sam / SGD has median "
        f"{wall_sam['median']:.3f} (min {wall_sam['min']:.3f}, max {wall_sam['max']:.3f})",
    ]
    return BenchmarkResult(
        name="sam_step",
        rows=rows,
        settings=settings,
        raw={"seconds_per_step": timings},
        notes=notes,
        seconds=time.perf_counter() - started,
    )
