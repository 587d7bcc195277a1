"""Command-line front ends of the trainer: ``bqsam train | compare | export | data``.

``bqsam.cli`` imports this module only for these subcommands. Each pair of functions
``configure_<name>_parser(parser)`` / ``<name>_main(args) -> int`` adds the options and
runs the command. A main logs the reason of a failure and returns 0 on success, 1 when a
run diverged and 2 for invalid arguments or missing files.

Example:
    bqsam train --method bqsam --data-dir data/cifar10-jpeg --model resnet20 \\
        --epochs 2 --train-subset 2000 --out runs/bqsam-s0
    bqsam export runs/bqsam-s0 --out runs/bqsam-s0/model.npz
    bqsam compare --runs runs/ --out runs/table
    bqsam data check --data-dir data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from .config import (
    DATASETS,
    KEEP_FLOAT_CHOICES,
    METHODS,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
)

__all__ = [
    "configure_train_parser",
    "train_main",
    "configure_compare_parser",
    "compare_main",
    "configure_export_parser",
    "export_main",
    "configure_data_parser",
    "data_main",
    "config_from_args",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- train
def add_training_options(parser: argparse.ArgumentParser, *, with_method: bool = True) -> None:
    """Add the options of :class:`TrainConfig` (shared by ``train`` and ``compare``)."""
    defaults = TrainConfig()
    group = parser.add_argument_group("method and optimizer")
    if with_method:
        group.add_argument("--method", default=defaults.method, metavar="|".join(METHODS),
                           help="training method, each a BinarySAM setting (default: %(default)s)")
    group.add_argument("--rho", type=float, default=None,
                       help="SAM radius rho > 0 for sam and bqsam (default 0.05); the other methods use 0")
    group.add_argument("--quantizer", default=None, metavar="ste|relax",
                       help="point where gradients are taken: ste = q(w), relax = r_lam(w); "
                       "bqsam may choose, bc is ste and br is relax")
    group.add_argument("--lam", type=float, default=defaults.lam,
                       help="relaxation weight lam_0 >= 0 of the relax quantizer (default: %(default)s)")
    group.add_argument("--lam-growth", type=float, default=None,
                       help="per-step factor gamma >= 1, lam_k = lam_0 gamma^k "
                       "(default 1.001 for the relax quantizer, 1 otherwise)")
    group.add_argument("--sam-grad", default=defaults.sam_grad,
                       metavar="first-order|hessian-fd|hessian-exact",
                       help="SAM gradient type (default: %(default)s)")
    group.add_argument("--perturb", default=defaults.perturb, metavar="quantized|latent",
                       help="descent point x + e (quantized) or q(w + e) (latent) (default: %(default)s)")
    group.add_argument("--clip", type=float, default=None,
                       help="clamp binarized latent weights to [-c, c] after each step (BinaryConnect)")
    group.add_argument("--keep-float", default=defaults.keep_float, metavar="|".join(KEEP_FLOAT_CHOICES),
                       help="layers kept in full precision: the first convolution and/or the last "
                       "linear layer (default: %(default)s)")
    group.add_argument("--optimizer", default=defaults.optimizer, metavar="|".join(OPTIMIZERS),
                       help="base optimizer (default: %(default)s)")
    group.add_argument("--lr", type=float, default=None,
                       help="initial learning rate > 0 (default 0.1 for sgd, 0.001 for adam)")
    group.add_argument("--momentum", type=float, default=defaults.momentum,
                       help="SGD momentum in [0, 1) (default: %(default)s)")
    group.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd only)")
    group.add_argument("--weight-decay", type=float, default=None,
                       help="L2 weight decay >= 0 (default 5e-4 for sgd, 0 for adam)")
    group.add_argument("--schedule", default=defaults.schedule, metavar="|".join(SCHEDULES),
                       help="learning-rate schedule, stepped every optimizer step (default: %(default)s)")

    group = parser.add_argument_group("data and length")
    group.add_argument("--dataset", default=defaults.dataset, metavar="|".join(DATASETS),
                       help="data set (default: %(default)s)")
    group.add_argument("--data-dir", default=None,
                       help="folder with the data set files (see `bqsam data check`)")
    group.add_argument("--cache-dir", default=None,
                       help="folder for decoded-image caches (default: $BQSAM_CACHE_DIR, else none)")
    group.add_argument("--model", default=defaults.model,
                       help="network: resnet20, resnet18, vgg11, vgg16, smallcnn, mlp (default: %(default)s)")
    group.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs (default: %(default)s)")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="global batch size, split evenly across processes (default: %(default)s)")
    group.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size,
                       help="test batch size (default: %(default)s)")
    group.add_argument("--train-subset", type=int, default=None,
                       help="train on this many images, balanced over classes (default: all)")
    group.add_argument("--test-subset", type=int, default=None,
                       help="test on this many images, balanced over classes (default: all)")
    group.add_argument("--no-augment", dest="augment", action="store_false",
                       help="turn off random crop and flip")
    group.add_argument("--seed", type=int, default=defaults.seed,
                       help="seed of initialisation, data order and augmentation (default: %(default)s)")

    group = parser.add_argument_group("execution")
    group.add_argument("--device", default=defaults.device, metavar="auto|cpu|cuda",
                       help="device (default: %(default)s, CUDA when available)")
    group.add_argument("--amp", action="store_true", help="bfloat16 autocast for forward passes")
    group.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    group.add_argument("--threads", type=int, default=None,
                       help="torch CPU threads per process (default: torch's choice)")
    group.add_argument("--log-every", type=int, default=defaults.log_every,
                       help="log a progress line every N steps (default: %(default)s)")


def configure_train_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``bqsam train``."""
    add_training_options(parser)
    parser.add_argument("--out", required=True, metavar="RUN_DIR",
                        help="run directory: config.json, metrics.csv/jsonl, checkpoint.pt, summary.json")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR from its checkpoint with the settings "
                        "stored in its config.json (options given again must match them); "
                        "starts a new run when RUN_DIR has none")


_CONFIG_FIELDS = (
    "method", "dataset", "data_dir", "cache_dir", "model", "rho", "quantizer", "sam_grad",
    "perturb", "lam", "lam_growth", "clip", "keep_float", "optimizer", "lr", "momentum",
    "nesterov", "weight_decay", "schedule", "epochs", "batch_size", "eval_batch_size",
    "train_subset", "test_subset", "augment", "seed", "device", "amp", "channels_last",
    "threads", "log_every",
)


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from parsed ``train``/``compare`` options."""
    values = {name: getattr(args, name) for name in _CONFIG_FIELDS if hasattr(args, name)}
    values.update(overrides)
    return TrainConfig(**values)


def _explicit_train_options(args: argparse.Namespace) -> dict[str, Any]:
    """Return the training options whose value differs from the parser default."""
    parser = argparse.ArgumentParser()
    configure_train_parser(parser)
    defaults = parser.parse_args(["--out", str(args.out)])
    return {
        name: getattr(args, name)
        for name in _CONFIG_FIELDS
        if hasattr(args, name) and getattr(args, name) != getattr(defaults, name)
    }


def resume_config(args: argparse.Namespace) -> TrainConfig:
    """Build the config of ``bqsam train --resume``: the run's stored settings, with the
    options given on the command line on top (a changed setting is then rejected by the
    trainer, naming it)."""
    from .checkpoint import read_json

    stored = read_json(Path(args.out) / "config.json")
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    values = {name: value for name, value in stored.items() if name in names}
    values.update(_explicit_train_options(args))
    values.update(out=args.out, resume=True)
    return TrainConfig(**values)


def train_main(args: argparse.Namespace) -> int:
    """Run ``bqsam train``."""
    from .loop import TrainingDiverged, train

    try:
        if args.resume and (Path(args.out) / "config.json").is_file():
            config = resume_config(args)
        else:
            config = config_from_args(args, out=args.out, resume=args.resume)
        summary = train(config)
    except TrainingDiverged as error:
        logger.error("%s", error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for every process of a torchrun job
    final = summary["final"]
    logger.info(
        "finished %s: deployed test accuracy %.4f (latent %.4f) at epoch %d, %.1f s",
        args.out, final["deployed_test_acc"], final["latent_test_acc"], final["epoch"], summary["seconds"],
    )
    return 0


# ---------------------------------------------------------------------------- export
def configure_export_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``bqsam export``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory with checkpoint.pt")
    parser.add_argument("--out", default=None,
                        help="output .npz file (default: RUN_DIR/model-binary.npz)")


def export_main(args: argparse.Namespace) -> int:
    """Run ``bqsam export``."""
    from .export import export_run, format_size_report

    try:
        report = export_run(args.run_dir, args.out)
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    print(format_size_report(report))
    return 0


# ---------------------------------------------------------------------------- compare
def configure_compare_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``bqsam compare``."""
    parser.add_argument("--runs", nargs="*", default=[], metavar="DIR",
                        help="run directories, or folders holding run directories, to collect")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods to launch, e.g. sgd,sam,bc,br,bqsam")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds to launch (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for comparison.md, comparison.csv, curves.png and launched runs")
    add_training_options(parser, with_method=False)


def compare_main(args: argparse.Namespace) -> int:
    """Run ``bqsam compare``."""
    from .compare import run_comparison

    try:
        outputs = run_comparison(args)
    except (ValueError, FileNotFoundError) as error:
        logger.error("%s", error)
        return 2
    print(outputs["markdown"])
    return 0


# ---------------------------------------------------------------------------- data
def configure_data_parser(parser: argparse.ArgumentParser) -> None:
    """Add the subcommands of ``bqsam data``: check, prepare, download."""
    from .datacli import configure_parser

    configure_parser(parser)


def data_main(args: argparse.Namespace) -> int:
    """Run ``bqsam data``."""
    from .datacli import main

    return main(args)
