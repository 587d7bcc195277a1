"""Training configuration: one dataclass, its validation and the method table.

Every method of the comparison is :class:`bqsam.optim.BinarySAM` with different settings:

    method   quantizer        rho      notes
    sgd      none             0        plain (momentum) SGD or Adam
    sam      none             > 0      Foret et al. (2021)
    bc       ste              0        BinaryConnect, optional latent clip to [-c, c]
    br       relax            0        BinaryRelax, lam_k = lam * lam_growth**k
    bqsam    ste or relax     > 0      one-bit SAM of Liu, Bian and Zhang (2023)

Example:
    >>> from bqsam.train.config import TrainConfig
    >>> config = TrainConfig(method="bqsam", data_dir="data/cifar10", out="runs/a").resolved()
    >>> config.rho, config.quantizer, config.lr
    (0.05, 'ste', 0.1)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "METHODS",
    "DATASETS",
    "OPTIMIZERS",
    "SCHEDULES",
    "KEEP_FLOAT_CHOICES",
    "RUNTIME_FIELDS",
    "TrainConfig",
    "binarysam_kwargs",
]

METHODS = ("sgd", "sam", "bc", "br", "bqsam")
DATASETS = ("cifar10", "svhn")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
SAM_GRADS = ("first-order", "hessian-fd", "hessian-exact")
PERTURBS = ("quantized", "latent")
DEVICES = ("auto", "cpu", "cuda")
KEEP_FLOAT_CHOICES = ("first,last", "first", "last", "none")

# Defaults that depend on the method; ``None`` in a TrainConfig field means "take these".
_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"rho": 0.0, "quantizer": None},
    "sam": {"rho": 0.05, "quantizer": None},
    "bc": {"rho": 0.0, "quantizer": "ste"},
    "br": {"rho": 0.0, "quantizer": "relax"},
    "bqsam": {"rho": 0.05, "quantizer": "ste"},
}

# Fields that change how a run executes but not the numbers it computes on CPU; a resumed
# run may change them.
RUNTIME_FIELDS = frozenset(
    {"out", "resume", "device", "threads", "log_every", "data_dir", "cache_dir"}
)


@dataclass
class TrainConfig:
    """Settings of one training run (the fields of ``bqsam train``).

    Fields left at ``None`` take the method's or optimizer's default in :meth:`resolved`.
    """

    method: str = "bqsam"
    dataset: str = "cifar10"
    data_dir: str | None = None
    cache_dir: str | None = None
    model: str = "resnet20"
    # Optimizer (BinarySAM settings).
    rho: float | None = None
    quantizer: str | None = None
    sam_grad: str = "first-order"
    perturb: str = "quantized"
    lam: float = 1.0
    lam_growth: float | None = None
    clip: float | None = None
    keep_float: str = "first,last"
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None
    schedule: str = "cosine"
    # Data and length.
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 500
    train_subset: int | None = None
    test_subset: int | None = None
    augment: bool = True
    seed: int = 0
    # Run directory and execution.
    out: str | None = None
    resume: bool = False
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    threads: int | None = None
    log_every: int = 50

    # ------------------------------------------------------------------ validation
    def resolved(self) -> "TrainConfig":
        """Return a validated copy with every ``None`` default filled in.

        Raises:
            ValueError: naming the invalid value and its valid range, before any work.
        """
        config = dataclasses.replace(self)
        _check_choice("method", config.method, METHODS)
        defaults = _METHOD_DEFAULTS[config.method]
        _check_choice("dataset", config.dataset, DATASETS)
        _check_choice("optimizer", config.optimizer, OPTIMIZERS)
        _check_choice("schedule", config.schedule, SCHEDULES)
        _check_choice("sam_grad", config.sam_grad, SAM_GRADS)
        _check_choice("perturb", config.perturb, PERTURBS)
        _check_choice("device", config.device, DEVICES)
        _check_choice("keep_float", config.keep_float, KEEP_FLOAT_CHOICES)

        config.rho = _resolve_rho(config.method, config.rho, defaults["rho"])
        config.quantizer = _resolve_quantizer(config.method, config.quantizer, defaults["quantizer"])
        if config.lam_growth is None:
            # Per-step growth: BinaryRelax needs lam_k -> inf so that the trained point
            # approaches q(w); 1.001 per step multiplies lam by about 2.7e4 over 10^4 steps.
            config.lam_growth = 1.001 if config.quantizer == "relax" else 1.0
        _check_range("lam", config.lam, low=0.0, allow_inf=True)
        _check_range("lam_growth", config.lam_growth, low=1.0)
        if config.clip is not None:
            if config.quantizer is None:
                raise ValueError(
                    f"clip={config.clip} applies to binarized weights only; method "
                    f"{config.method!r} quantizes nothing (use bc, br or bqsam)"
                )
            _check_range("clip", config.clip, low=0.0, low_open=True)
        if config.quantizer is None and config.perturb != "quantized":
            raise ValueError(
                f"perturb={config.perturb!r} needs a quantizer; method {config.method!r} has none"
            )

        if config.lr is None:
            config.lr = 0.1 if config.optimizer == "sgd" else 1e-3
        _check_range("lr", config.lr, low=0.0, low_open=True)
        if config.weight_decay is None:
            config.weight_decay = 5e-4 if config.optimizer == "sgd" else 0.0
        _check_range("weight_decay", config.weight_decay, low=0.0)
        _check_range("momentum", config.momentum, low=0.0, high=1.0, high_open=True)
        if config.nesterov and (config.optimizer != "sgd" or config.momentum == 0):
            raise ValueError(
                f"nesterov=True needs optimizer 'sgd' with momentum > 0, got optimizer "
                f"{config.optimizer!r} and momentum {config.momentum}"
            )

        _check_int("epochs", config.epochs, low=1)
        _check_int("batch_size", config.batch_size, low=1)
        _check_int("eval_batch_size", config.eval_batch_size, low=1)
        _check_int("train_subset", config.train_subset, low=1, optional=True)
        _check_int("test_subset", config.test_subset, low=1, optional=True)
        _check_int("seed", config.seed, low=0)
        _check_int("threads", config.threads, low=1, optional=True)
        _check_int("log_every", config.log_every, low=1)
        from .models import MODEL_NAMES

        _check_choice("model", config.model, MODEL_NAMES)
        return config

    # --------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build a config from :meth:`to_dict` output; unknown keys raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; valid names: {sorted(names)}")
        return cls(**values)

    def differences(self, other: "TrainConfig") -> dict[str, tuple[Any, Any]]:
        """Return ``{name: (self value, other value)}`` for fields that change the numbers."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {
            name: (mine[name], theirs[name])
            for name in mine
            if name not in RUNTIME_FIELDS and mine[name] != theirs[name]
        }


def binarysam_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Return the BinarySAM keyword arguments (without params/model) for a resolved config."""
    kwargs: dict[str, Any] = {
        "rho": config.rho,
        "quantizer": config.quantizer,
        "sam_grad": config.sam_grad,
        "perturb": config.perturb,
        "lam": config.lam,
        "lam_growth": config.lam_growth,
        "clip": config.clip,
        "lr": config.lr,
        "weight_decay": config.weight_decay,
    }
    if config.optimizer == "sgd":
        kwargs["momentum"] = config.momentum
        kwargs["nesterov"] = config.nesterov
    return kwargs


# ---------------------------------------------------------------------- helpers
def _resolve_rho(method: str, rho: float | None, default: float) -> float:
    if rho is None:
        return default
    _check_range("rho", rho, low=0.0)
    if default == 0.0 and rho != 0.0:
        raise ValueError(
            f"rho={rho} is invalid for method {method!r}, which takes no ascent step (rho = 0); "
            "use method 'sam' or 'bqsam' for rho > 0"
        )
    if default > 0.0 and rho == 0.0:
        raise ValueError(
            f"rho=0 is invalid for method {method!r}, which needs rho > 0; "
            "use method 'sgd', 'bc' or 'br' for rho = 0"
        )
    return float(rho)


def _resolve_quantizer(method: str, quantizer: str | None, default: str | None) -> str | None:
    if quantizer is None or quantizer == default:
        return default
    if method == "bqsam" and quantizer in ("ste", "relax"):
        return quantizer
    valid = "'ste' or 'relax'" if method == "bqsam" else repr(default)
    raise ValueError(f"quantizer={quantizer!r} is invalid for method {method!r}; valid: {valid}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is invalid; valid choices: {', '.join(choices)}")


def _check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_inf: bool = False,
) -> None:
    valid = _describe_range(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is invalid; expected a number {valid}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name}={value!r} is invalid; expected a finite number {valid}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{name}={value!r} is out of range; expected {valid}")


def _describe_range(low, high, low_open, high_open) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts) if parts else "(any value)"


def _check_int(name: str, value: Any, *, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {low}")
    if value < low:
        raise ValueError(f"{name}={value} is out of range; expected an integer >= {low}")
