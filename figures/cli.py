"""``bqsam figures``: regenerate the theory and network figures as PNG and PDF files.

    bqsam figures                                   # every figure into figures/out/
    bqsam figures --only stability floor --quick    # two cheap figures at tiny sizes
    bqsam figures --data-dir data/cifar10-jpeg      # where the CIFAR-10 images are

The theory figures need no data. The network figures (landscape-1d, landscape-2d, sharpness)
read the real CIFAR-10 images from ``--data-dir`` (default: ``$BQSAM_CIFAR10_DIR``, else
``data/cifar10-jpeg``) and cache the trained networks in ``<out>/cache``. A cached network
is reused only when every setting, the data files and the training code are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from figures.common import save_figure

__all__ = ["FIGURES", "configure_parser", "main", "generate_figures"]

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("figures") / "out"
DEFAULT_DATA_DIR = "data/cifar10-jpeg"


@dataclass(frozen=True)
class FigureSpec:
    """One figure: what it shows and whether it needs the CIFAR-10 images."""

    description: str
    needs_data: bool


FIGURES: dict[str, FigureSpec] = {
    "convergence": FigureSpec("running averages of ||grad f||^2 against the T1, T2, T3(a) bounds", False),
    "floor": FigureSpec("stationarity floor against rho and against the quantization error", False),
    "gradient-error": FigureSpec("SAM gradient error against rho, central-difference error against delta", False),
    "stability": FigureSpec("USAM converged/diverged grid and the T4 boundary eta = 2/(L + rho L^2)", False),
    "landscape-1d": FigureSpec("1-D loss slices of small CNNs on CIFAR-10, continuous and quantized", True),
    "landscape-2d": FigureSpec("2-D loss slices of small CNNs on CIFAR-10, continuous and quantized", True),
    "sharpness": FigureSpec("top Hessian eigenvalue at w and q(w) per epoch, per method", True),
}


class _Context:
    """Generates each figure's data on request and shares the trained networks between figures."""

    def __init__(self, quick: bool, data_dir: Path, out_dir: Path) -> None:
        from figures import network_data, theory_data

        self.theory_sizes = theory_data.QUICK if quick else theory_data.FULL
        self.network_settings = network_data.QUICK_NETWORK if quick else network_data.FULL_NETWORK
        self.data_dir = data_dir
        self.cache_dir = out_dir / "cache"
        self._networks: dict | None = None

    def networks(self) -> dict:
        if self._networks is None:
            from figures.network_data import network_data

            self._networks = network_data(self.data_dir, self.network_settings, cache_dir=self.cache_dir)
        return self._networks

    def build(self, name: str):
        """Return the Figure named ``name``."""
        from figures import network_plots, theory_data, theory_plots

        builders: dict[str, Callable[[], object]] = {
            "convergence": lambda: theory_plots.build_convergence(theory_data.convergence_data(self.theory_sizes)),
            "floor": lambda: theory_plots.build_floor(theory_data.floor_data(self.theory_sizes)),
            "gradient-error": lambda: theory_plots.build_gradient_error(theory_data.gradient_error_data(self.theory_sizes)),
            "stability": lambda: theory_plots.build_stability(theory_data.stability_data(self.theory_sizes)),
            "landscape-1d": lambda: network_plots.build_landscape_1d(self.networks()),
            "landscape-2d": lambda: network_plots.build_landscape_2d(self.networks()),
            "sharpness": lambda: network_plots.build_sharpness(self.networks()),
        }
        return builders[name]()


def _missing_data_message(data_dir: Path) -> str | None:
    if (data_dir / "train.zip").is_file() and (data_dir / "test.zip").is_file():
        return None
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        return None
    return (f"CIFAR-10 images not found in {data_dir}: expected train.zip and test.zip (entries "
            "<split>/<class>/<name>.jpg) or train/ and test/ class folders; pass their folder with "
            "--data-dir or set BQSAM_CIFAR10_DIR")


def generate_figures(names: list[str], out_dir: Path, *, quick: bool, data_dir: Path) -> list[str]:
    """Build and save the figures ``names`` into ``out_dir``; return the names that failed.

    A figure that needs the CIFAR-10 images fails, with a logged error, when they are missing.
    """
    context = _Context(quick, data_dir, out_dir)
    failed = []
    for index, name in enumerate(names, start=1):
        if FIGURES[name].needs_data:
            message = _missing_data_message(data_dir)
            if message is not None:
                logger.error("figure %s skipped: %s", name, message)
                failed.append(name)
                continue
        started = time.perf_counter()
        logger.info("figure %d/%d %s: %s", index, len(names), name, FIGURES[name].description)
        figure = context.build(name)
        paths = save_figure(figure, out_dir, name)
        logger.info("figure %s written to %s in %.1f s", name, ", ".join(str(p) for p in paths),
                    time.perf_counter() - started)
    return failed


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``bqsam figures`` to ``parser``."""
    names = ", ".join(FIGURES)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help=f"build only these figures (default: all). Valid names: {names}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the PNG and PDF files and the network cache (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for tests and previews (all figures in about a minute on 2 CPU cores)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the CIFAR-10 train.zip and test.zip, for the network figures "
                             f"(default: $BQSAM_CIFAR10_DIR, else {DEFAULT_DATA_DIR})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default: 1; more threads help only on idle cores)")


def main(args: argparse.Namespace) -> int:
    """Run ``bqsam figures``; return 0 when every requested figure was written, 1 otherwise, 2 on invalid input."""
    names = list(dict.fromkeys(args.only)) if args.only else list(FIGURES)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        logger.error("unknown figure name(s) %s; valid names: %s", ", ".join(unknown), ", ".join(FIGURES))
        return 2
    if args.threads < 1:
        logger.error("--threads must be a positive integer, got %d", args.threads)
        return 2
    data_dir = args.data_dir or Path(os.environ.get("BQSAM_CIFAR10_DIR", DEFAULT_DATA_DIR))

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    failed = generate_figures(names, args.out, quick=args.quick, data_dir=data_dir)
    logger.info("%d of %d figures written to %s in %.1f s", len(names) - len(failed), len(names), args.out,
                time.perf_counter() - started)
    if failed:
        logger.error("figures not written: %s", ", ".join(failed))
        return 1
    return 0
