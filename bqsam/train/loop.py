"""The training loop of ``bqsam train``: one method, one run directory.

Each step is one :meth:`bqsam.optim.BinarySAM.step` with a closure that evaluates the
minibatch loss at the parameter values the optimizer chose (``x_k``, then the descent point).
Each epoch ends with two test evaluations:

* the deployed binary model ``q(w)`` (inside ``opt.deployed()``), the number that counts;
* the latent model ``w``, a diagnostic of the gap between latent and deployed weights.

The run directory receives ``config.json``, ``metrics.jsonl`` and ``metrics.csv`` (one row
per epoch), ``checkpoint.pt`` (after every epoch) and ``summary.json``, each written
atomically. A run resumed from its checkpoint ends with the same weights, bit for bit on
CPU, as an uninterrupted run: data order and augmentation are functions of (seed, epoch),
and the checkpoint holds the model, the optimizer state (momentum, BinarySAM step count),
the scheduler and every random-number-generator state.

Example (needs the data files)::

    from bqsam.train import TrainConfig, train
    summary = train(TrainConfig(method="bqsam", data_dir="data/cifar10-jpeg",
                                model="resnet20", epochs=2, out="runs/bqsam"))
    print(summary["final"]["deployed_test_acc"])
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..modules import binarizable_modules
from ..optim import BinarySAM
from . import inputs
from .checkpoint import (
    CHECKPOINT_NAME,
    capture_rng_state,
    load_checkpoint,
    read_json,
    restore_rng_state,
    save_checkpoint,
    write_json_atomic,
    write_metrics_atomic,
)
from .config import TrainConfig, binarysam_kwargs
from .distributed import (
    DistributedContext,
    all_reduce_optimizer,
    all_reduce_sum,
    average_buffers,
    broadcast_parameters,
    init_distributed,
    shutdown_distributed,
)
from .schedule import build_scheduler

__all__ = [
    "METRIC_COLUMNS",
    "CHECKPOINT_FORMAT",
    "TrainingDiverged",
    "Trainer",
    "train",
    "evaluate",
    "resolve_device",
    "build_param_groups",
    "binarized_parameter_names",
]

logger = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "deployed_test_loss",
    "deployed_test_acc",
    "latent_test_loss",
    "latent_test_acc",
    "lr",
    "seconds",
)
CHECKPOINT_FORMAT = "bqsam-checkpoint-1"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and a fix."""


# --------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``auto``, ``cpu`` or ``cuda`` (``auto``: CUDA if present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch finds no CUDA device; use --device cpu")
    return torch.device(name)


def _weight_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def build_param_groups(model: nn.Module, keep_float: str, quantized: bool = True) -> list[dict[str, Any]]:
    """Split parameters into a binarized and a float group.

    ``keep_float`` names the layers kept in full precision: ``"first,last"`` (first
    convolution and last linear layer), ``"first"``, ``"last"`` or ``"none"``. Without
    ``quantized`` every parameter is in the float group.
    """
    if not quantized:
        return [{"params": list(model.parameters()), "binarize": False}]
    layers = binarizable_modules(model, keep_first_and_last=False)
    kept = set()
    if "first" in keep_float.split(","):
        convs = [m for m in layers if not isinstance(m, nn.Linear)]
        if convs:
            kept.add(id(convs[0]))
    if "last" in keep_float.split(","):
        linears = [m for m in layers if isinstance(m, nn.Linear)]
        if linears:
            kept.add(id(linears[-1]))
    binarized = [m.weight for m in layers if id(m) not in kept]
    binarized_ids = {id(p) for p in binarized}
    others = [p for p in model.parameters() if id(p) not in binarized_ids]
    groups = []
    if binarized:
        groups.append({"params": binarized, "binarize": True})
    if others:
        groups.append({"params": others, "binarize": False})
    return groups


def binarized_parameter_names(model: nn.Module, optimizer: BinarySAM) -> list[str]:
    """Return the names (as in ``model.state_dict()``) of the tensors the optimizer binarizes."""
    binarized = {id(p) for group in optimizer.param_groups if group["binarize"] for p in group["params"]}
    return [name for name, p in model.named_parameters() if id(p) in binarized]


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    # bfloat16 needs no loss scaling, which a closure-based optimizer could not apply.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    dataset: str = "cifar10",
    amp: bool = False,
    channels_last: bool = False,
    context: DistributedContext | None = None,
) -> tuple[float, float]:
    """Return (mean cross-entropy, accuracy) of ``model`` on a test set, in eval mode.

    ``images`` are uint8 (normalised here with the statistics of ``dataset``) or float inputs.

    With a process group, each replica evaluates every ``world_size``-th batch and the sums
    are all-reduced. The model's train/eval mode is restored afterwards; no parameter or
    buffer changes, so two calls return the same numbers.
    """
    context = context or DistributedContext()
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    try:
        starts = range(context.rank * batch_size, len(labels), batch_size * context.world_size)
        for start in starts:
            x = inputs.prepare_inputs(images[start : start + batch_size], dataset, device, channels_last)
            y = labels[start : start + batch_size].to(device, non_blocking=True)
            with _autocast(device, amp):
                logits = model(x)
            totals[0] += F.cross_entropy(logits.float(), y, reduction="sum").double()
            totals[1] += (logits.argmax(dim=1) == y).sum().double()
            totals[2] += y.numel()
    finally:
        model.train(was_training)
    totals = all_reduce_sum(totals)
    loss_sum, correct, count = totals.tolist()
    return loss_sum / count, correct / count


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- trainer
@dataclass
class _EpochTotals:
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0


@dataclass
class Trainer:
    """One training run; :func:`train` builds it, runs it and returns the summary.

    ``model`` and ``data`` replace what the config names: a library user's own network, or
    in-memory tensors ``(train_images, train_labels, test_images, test_labels)`` with uint8
    images of shape (N, C, H, W).
    """

    config: TrainConfig
    model: nn.Module | None = None
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Validation first: no file is touched and nothing is loaded for invalid settings.
        self.config = self.config.resolved()
        if self.config.out is None:
            raise ValueError("out is missing: pass --out RUN_DIR, the folder for this run's files")
        if self.data is None and self.config.data_dir is None:
            raise ValueError("data_dir is missing: pass --data-dir DIR with the data set files")
        self.run_dir = Path(self.config.out)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        if self.checkpoint_path.exists() and not self.config.resume:
            raise ValueError(
                f"{self.run_dir} already contains a run ({CHECKPOINT_NAME}); pass --resume to continue "
                "it, or choose another --out"
            )
        self.device = resolve_device(self.config.device)
        if self.config.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("--amp uses bfloat16, which this CUDA device does not support; drop --amp")

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Join the process group, load data, build model, optimizer and scheduler."""
        config = self.config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.context = init_distributed(self.device.type)
        if self.context.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        if self.context.enabled and config.batch_size % self.context.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} is not divisible by the {self.context.world_size} "
                "processes; the global batch is split evenly across them"
            )
        _seed_everything(config.seed)

        if self.data is None:
            self.splits = inputs.load_splits(config)
        else:
            self.splits = inputs.splits_from_tensors(config, *self.data)
        self.loader = inputs.train_loader(
            config, self.splits, self.context.rank, self.context.world_size, self.device
        )
        self.test_images = self.splits.test_images.to(self.device)
        self.test_labels = self.splits.test_labels.to(self.device)

        if self.model is None:
            self.model = inputs.build_model(config.model, self.splits.num_classes)
        self.model.to(self.device)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
        broadcast_parameters(self.model)

        base = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
        if self.context.enabled:
            base = all_reduce_optimizer(base)
        self.optimizer = BinarySAM(
            build_param_groups(self.model, config.keep_float, quantized=config.quantizer is not None),
            base,
            model=self.model,
            **binarysam_kwargs(config),
        )
        self.steps_per_epoch = len(self.loader)
        self.scheduler = build_scheduler(
            self.optimizer, config.schedule, config.epochs * self.steps_per_epoch
        )
        self.binarized_names = binarized_parameter_names(self.model, self.optimizer)
        self.start_epoch = 0
        if config.resume and self.checkpoint_path.exists():
            self._load(self.checkpoint_path)
        elif config.resume and self.context.is_main:
            logger.info("no checkpoint in %s; starting a new run", self.run_dir)

        if not self.context.is_main:
            return
        self._write_config()
        logger.info(
            "run %s: method %s, model %s, %d training and %d test images, %d steps per epoch, "
            "%d binarized tensors, device %s, %d process(es)",
            self.run_dir, config.method, config.model, len(self.splits.train_labels), len(self.test_labels),
            self.steps_per_epoch, len(self.binarized_names), self.device, self.context.world_size,
        )

    def _write_config(self) -> None:
        payload = {
            **self.config.to_dict(),
            "world_size": self.context.world_size,
            "num_classes": self.splits.num_classes,
            "train_size": len(self.splits.train_labels),
            "test_size": len(self.test_labels),
            "binarized": self.binarized_names,
            "torch_version": torch.__version__,
        }
        write_json_atomic(self.run_dir / "config.json", payload)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_payload(self, epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "config": self.config.to_dict(),
            "num_classes": self.splits.num_classes,
            "binarized": list(self.binarized_names),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "history": list(self.history),
        }

    def _load(self, path: Path) -> None:
        # NOTE: every process reads the checkpoint that rank 0 wrote, so a multi-node job
        # can resume only from a file system that all nodes share.
        payload = load_checkpoint(path, map_location=self.device)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} has format {payload.get('format')!r}; expected {CHECKPOINT_FORMAT!r}")
        stored = TrainConfig.from_dict(payload["config"])
        differences = stored.differences(self.config)
        if differences:
            listed = ", ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in
                               ((k, *v) for k, v in sorted(differences.items())))
            raise ValueError(
                f"--resume needs the settings of the run in {self.run_dir}; these differ: {listed}"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        restore_rng_state(payload["rng"])
        self.history = list(payload["history"])
        self.start_epoch = int(payload["epoch"])
        logger.info("resumed %s after epoch %d", path, self.start_epoch)

    def _save(self, epoch: int) -> None:
        if not self.context.is_main:
            return
        save_checkpoint(self.checkpoint_path, self._checkpoint_payload(epoch))
        write_metrics_atomic(self.run_dir, self.history, METRIC_COLUMNS)

    # ------------------------------------------------------------------ epochs
    def _closure_factory(self, x: torch.Tensor, y: torch.Tensor, record: dict[str, Any]) -> Callable[[], torch.Tensor]:
        model, optimizer, device, amp = self.model, self.optimizer, self.device, self.config.amp

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward(create_graph=optimizer.create_graph)
            if "correct" not in record:
                # The first pass is at x_k: training accuracy of the point gradients are taken at.
                record["correct"] = (logits.detach().argmax(dim=1) == y).sum()
            return loss.detach()

        return closure

    def _train_epoch(self, epoch: int) -> _EpochTotals:
        config = self.config
        self.model.train()
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        started = time.perf_counter()
        for step, (images, labels) in enumerate(self.loader.batches(epoch)):
            x = inputs.prepare_inputs(images, config.dataset, self.device, config.channels_last)
            y = labels.to(self.device, non_blocking=True)
            record: dict[str, Any] = {}
            loss = self.optimizer.step(self._closure_factory(x, y, record))

            step_totals = torch.stack(
                [loss.double() * y.numel(), record["correct"].double(), torch.tensor(
                    float(y.numel()), dtype=torch.float64, device=self.device)]
            )
            # Summed over replicas every step, so that all of them see a NaN at the same step.
            step_totals = all_reduce_sum(step_totals)
            if not math.isfinite(step_totals[0].item()):
                self._diverged(epoch, step, step_totals[0].item())
            totals += step_totals
            self.scheduler.step()

            if (step + 1) % config.log_every == 0 and self.context.is_main:
                elapsed = time.perf_counter() - started
                seen = totals[2].item()
                logger.info(
                    "epoch %d step %d/%d: loss %.4f, acc %.4f, %.1f images/s",
                    epoch + 1, step + 1, self.steps_per_epoch, totals[0].item() / seen,
                    totals[1].item() / seen, seen / max(elapsed, 1e-9),
                )
        loss_sum, correct, count = totals.tolist()
        return _EpochTotals(loss_sum, correct, count)

    def _diverged(self, epoch: int, step: int, value: float) -> None:
        good = f"{self.checkpoint_path} (after epoch {epoch})" if epoch > 0 else "none (no epoch finished)"
        raise TrainingDiverged(
            f"training loss is {value} at epoch {epoch + 1}, step {step + 1} of {self.steps_per_epoch}; "
            f"the run stopped and the last good checkpoint is {good}. Lower --lr (now {self.config.lr:g})"
            + (f" or --rho (now {self.config.rho:g})" if self.config.rho > 0 else "")
            + (", or drop --amp" if self.config.amp else "")
            + ", then start a new run or resume from that checkpoint."
        )

    def evaluate_both(self) -> dict[str, float]:
        """Evaluate the deployed model ``q(w)`` and the latent model ``w`` on the test set."""
        config = self.config
        arguments = dict(
            batch_size=config.eval_batch_size, device=self.device, dataset=config.dataset,
            amp=config.amp, channels_last=config.channels_last, context=self.context,
        )
        images, labels = self.test_images, self.test_labels
        with self.optimizer.deployed():
            deployed_loss, deployed_acc = evaluate(self.model, images, labels, **arguments)
        if self.binarized_names:
            latent_loss, latent_acc = evaluate(self.model, images, labels, **arguments)
        else:
            # Nothing is binarized, so the latent model is the deployed one.
            latent_loss, latent_acc = deployed_loss, deployed_acc
        return {
            "deployed_test_loss": deployed_loss,
            "deployed_test_acc": deployed_acc,
            "latent_test_loss": latent_loss,
            "latent_test_acc": latent_acc,
        }

    def run(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to ``config.epochs`` and return the summary."""
        config = self.config
        summary_path = self.run_dir / "summary.json"
        if self.start_epoch >= config.epochs and summary_path.is_file():
            summary = read_json(summary_path)
            if summary.get("status") == "completed":
                logger.info("%s is already complete after %d epochs", self.run_dir, config.epochs)
                return summary
        run_started = time.perf_counter()
        images_trained = 0.0
        train_seconds = 0.0
        for epoch in range(self.start_epoch, config.epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            started = time.perf_counter()
            totals = self._train_epoch(epoch)
            epoch_train_seconds = time.perf_counter() - started
            average_buffers(self.model)
            scores = self.evaluate_both()
            row = {
                "epoch": epoch + 1,
                "train_loss": totals.loss_sum / totals.count,
                "train_acc": totals.correct / totals.count,
                **scores,
                "lr": lr,
                "seconds": time.perf_counter() - started,
            }
            self.history.append(row)
            self._save(epoch + 1)
            images_trained += totals.count
            train_seconds += epoch_train_seconds
            if self.context.is_main:
                logger.info(
                    "epoch %d/%d: train loss %.4f acc %.4f | deployed test loss %.4f acc %.4f | "
                    "latent test acc %.4f | lr %.4g | %.1f s (%.1f images/s)",
                    epoch + 1, config.epochs, row["train_loss"], row["train_acc"],
                    row["deployed_test_loss"], row["deployed_test_acc"], row["latent_test_acc"],
                    lr, row["seconds"], totals.count / max(epoch_train_seconds, 1e-9),
                )
        summary = self._summary(time.perf_counter() - run_started, images_trained, train_seconds)
        if self.context.is_main:
            write_json_atomic(summary_path, summary)
        return summary

    def _summary(self, seconds: float, images: float, train_seconds: float) -> dict[str, Any]:
        final = self.history[-1] if self.history else {}
        best = max(self.history, key=lambda row: row["deployed_test_acc"]) if self.history else {}
        return {
            "status": "completed",
            "method": self.config.method,
            "model": self.config.model,
            "dataset": self.config.dataset,
            "seed": self.config.seed,
            "epochs": self.config.epochs,
            "world_size": self.context.world_size,
            "final": final,
            "best_deployed_test_acc": best.get("deployed_test_acc"),
            "best_epoch": best.get("epoch"),
            "seconds": seconds,
            "train_images_per_second": images / train_seconds if train_seconds > 0 else None,
            "binarized": list(self.binarized_names),
        }

    def write_failure(self, error: BaseException) -> None:
        """Record a stopped run in ``summary.json`` (status ``diverged`` or ``failed``)."""
        if not getattr(self, "context", DistributedContext()).is_main:
            return
        status = "diverged" if isinstance(error, TrainingDiverged) else "failed"
        final = self.history[-1] if self.history else {}
        write_json_atomic(
            self.run_dir / "summary.json",
            {"status": status, "message": str(error), "method": self.config.method,
             "seed": self.config.seed, "epochs_completed": len(self.history), "final": final},
        )

    def close(self) -> None:
        """Leave the process group if the trainer joined one."""
        if hasattr(self, "context"):
            shutdown_distributed(self.context)


def train(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Run one training run and return its summary (also written to ``summary.json``).

    Raises:
        ValueError: for invalid settings, before any work.
        TrainingDiverged: when the loss becomes NaN or infinite; ``checkpoint.pt`` keeps the
            last completed epoch and ``summary.json`` records the message.
    """
    trainer = Trainer(config, model=model, data=data)
    try:
        trainer.setup()
        return trainer.run()
    except TrainingDiverged as error:
        trainer.write_failure(error)
        raise
    finally:
        trainer.close()
