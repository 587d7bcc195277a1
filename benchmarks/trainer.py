"""Training throughput of ``bqsam train`` (ResNet-20, CPU) and the data-loading share.

Each method runs one short epoch of the real trainer (:class:`bqsam.train.loop.Trainer`,
the code behind ``bqsam train``) on a subset of CIFAR-10. A timer wraps the trainer's
batch loader and counts the time spent producing each batch (index shuffling, gathering,
random crop and flip, normalisation). The trainer's summary gives the training images per
second by wall clock, without the test evaluations. The data-loading share is the
loader's time over the training time of the epoch.

The methods run round-robin, one epoch each per repeat, so their throughputs are
compared under the same machine load. Without the CIFAR-10 files the benchmark trains on
random uint8 images of the same shape and adds a note about it.

Example:
    >>> from benchmarks.trainer import run
    >>> result = run("smoke", repeats=1)       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from .common import BenchmarkResult, Row, check_scale

__all__ = ["TimedLoader", "default_data_dir", "run"]

logger = logging.getLogger(__name__)

METHODS = ("sgd", "sam", "bc", "br", "bqsam")
DATA_SHARE_TARGET = "< 0.1"
ROOT = Path(__file__).resolve().parents[1]

# Per scale: model, batch size, training images (steps = images / batch), test images, repeats.
SIZES = {
    "full": dict(model="resnet20", batch=128, train=512, test=128, repeats=3),
    "quick": dict(model="resnet20", batch=32, train=64, test=32, repeats=1),
    "smoke": dict(model="resnet20", batch=8, train=16, test=8, repeats=1),
}


class TimedLoader:
    """Wrap a ``BatchLoader`` and add up the seconds spent producing its batches."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.seconds = 0.0
        self.batches_made = 0
        self.images = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]:
        iterator = iter(self.loader.batches(epoch, start))
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                self.seconds += time.perf_counter() - started
                return
            self.seconds += time.perf_counter() - started
            self.batches_made += 1
            self.images += int(batch[1].numel())
            yield batch


def default_data_dir() -> Path:
    """Return $BQSAM_CIFAR10_DIR, or ``../shared/data/cifar10-jpeg`` beside the repository."""
    return Path(os.environ.get("BQSAM_CIFAR10_DIR", ROOT.parent / "shared" / "data" / "cifar10-jpeg"))


def _synthetic_data(sizes: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (sizes["train"], 3, 32, 32), generator=generator, dtype=torch.uint8)
    test = torch.randint(0, 256, (sizes["test"], 3, 32, 32), generator=generator, dtype=torch.uint8)
    return (
        train,
        torch.randint(0, 10, (sizes["train"],), generator=generator),
        test,
        torch.randint(0, 10, (sizes["test"],), generator=generator),
    )


def _one_epoch(method: str, sizes: dict[str, Any], data_dir: Path | None, work: Path, run_index: int) -> dict[str, float]:
    """Train ``method`` for one epoch and return its throughput and data-loading time."""
    from bqsam.train.config import TrainConfig
    from bqsam.train.loop import Trainer

    config = TrainConfig(
        method=method,
        model=sizes["model"],
        data_dir=str(data_dir) if data_dir is not None else None,
        cache_dir=str(work / "cache"),
        epochs=1,
        batch_size=sizes["batch"],
        eval_batch_size=max(sizes["test"], 1),
        train_subset=sizes["train"],
        test_subset=sizes["test"],
        out=str(work / f"{method}-{run_index}"),
        device="cpu",
        threads=torch.get_num_threads(),
        log_every=10**6,
    )
    trainer = Trainer(config, data=None if data_dir is not None else _synthetic_data(sizes))
    try:
        trainer.setup()
        timed = TimedLoader(trainer.loader)
        trainer.loader = timed
        summary = trainer.run()
    finally:
        trainer.close()

    # The summary's rate is images / training seconds of the epoch (evaluations excluded).
    images_per_second = float(summary["train_images_per_second"])
    train_seconds = timed.images / images_per_second
    return {
        "images_per_second": images_per_second,
        "train_seconds": train_seconds,
        "data_seconds": timed.seconds,
        "batches": timed.batches_made,
        "images": timed.images,
    }


def run(scale: str = "full", repeats: int | None = None, data_dir: Path | None = None) -> BenchmarkResult:
    """Measure images/s per method and the share of training time spent loading data."""
    check_scale(scale)
    started = time.perf_counter()
    sizes = SIZES[scale]
    repeats = repeats or sizes["repeats"]
    notes = []

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not (data_dir / "train.zip").is_file() and not (data_dir / "cifar-10-batches-py").is_dir():
        notes.append(f"CIFAR-10 not found in {data_dir}; trained on random uint8 images of the same shape")
        data_dir = None

    measured: dict[str, list[dict[str, float]]] = {method: [] for method in METHODS}
    # The table reports the numbers, so the trainer's per-epoch INFO lines are silenced.
    train_logger = logging.getLogger("bqsam.train")
    level = train_logger.level
    train_logger.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory() as work:
            for repeat in range(repeats):
                shift = repeat % len(METHODS)
                for method in METHODS[shift:] + METHODS[:shift]:
                    measured[method].append(_one_epoch(method, sizes, data_dir, Path(work), repeat))
    finally:
        train_logger.setLevel(level)

    rows = []
    for method in METHODS:
        rows.append(Row(f"{method} images/s", [m["images_per_second"] for m in measured[method]], unit="img/s"))
    for method in METHODS:
        rows.append(
            Row(
                f"{method} data-loading share",
                [m["data_seconds"] / m["train_seconds"] for m in measured[method]],
                unit="frac",
                target=DATA_SHARE_TARGET,
            )
        )
    base = measured["sgd"]
    for method in ("sam", "bqsam"):
        rows.append(
            Row(
                f"sgd / {method} throughput",
                [b["images_per_second"] / m["images_per_second"] for b, m in zip(base, measured[method])],
                floor=2.0,
            )
        )
    notes.append(
        f"{sizes['model']}, batch {sizes['batch']}, {sizes['train']} training images per epoch, "
        "one epoch per method per repeat; images/s from the trainer's summary (test evaluations excluded)"
    )
    settings = {**sizes, "repeats": repeats, "threads": torch.get_num_threads(), "data": str(data_dir) if data_dir else "random"}
    return BenchmarkResult(
        name="trainer", rows=rows, settings=settings, raw=measured, notes=notes, seconds=time.perf_counter() - started
    )
