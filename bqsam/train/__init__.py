"""Full-scale trainer: CIFAR-10 / SVHN runs of SGD, SAM, BinaryConnect, BinaryRelax and BQ-SAM.

Every method is :class:`bqsam.optim.BinarySAM` with different settings (see
:mod:`bqsam.train.config`). A run writes its files to one run directory, which
``bqsam export`` turns into a packed one-bit model and ``bqsam compare`` tabulates.

Example (needs the data files)::

    from bqsam.train import TrainConfig, train
    summary = train(TrainConfig(method="bqsam", data_dir="data/cifar10-jpeg",
                                model="resnet20", epochs=2, train_subset=2000,
                                out="runs/bqsam-s0"))
    print(summary["final"]["deployed_test_acc"])

The names below are imported on first use, so ``import bqsam.train.data`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainConfig", "train", "Trainer", "TrainingDiverged", "evaluate", "load_exported", "export_run"]

_LOCATIONS = {
    "TrainConfig": "config",
    "train": "loop",
    "Trainer": "loop",
    "TrainingDiverged": "loop",
    "evaluate": "loop",
    "load_exported": "export",
    "export_run": "export",
}


def __getattr__(name: str) -> Any:
    if name not in _LOCATIONS:
        raise AttributeError(f"module 'bqsam.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LOCATIONS[name]}", __name__), name)
