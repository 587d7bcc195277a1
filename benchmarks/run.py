#!/usr/bin/env python
"""Run the bqsam benchmarks, print a table of ratios and write the raw timings as JSON.

Usage (from the repository root):

    python benchmarks/run.py                           # all benchmarks, < 10 minutes
    python benchmarks/run.py sam_step lanczos --repeats 5
    python benchmarks/run.py --quick --out bench.json  # all benchmarks, < 1 minute

Benchmarks:
    sam_step   BinarySAM step time per method / a plain SGD-with-momentum step
    trainer    ResNet-20 training throughput (images/s) and the data-loading share
    verify     batched sweep vs one configuration at a time; ``bqsam verify`` wall time
    lanczos    Hessian-vector products to 1e-3 relative error: Lanczos vs power iteration

Each ratio is measured side by side in one process (configurations interleaved
round-robin) and reported as min / median / max over the repeats; a target is checked
on the median.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import lanczos, sam_step, trainer, verify_sweep  # noqa: E402
from benchmarks.common import BenchmarkResult, machine_info  # noqa: E402

BENCHMARKS: dict[str, Callable[..., BenchmarkResult]] = {
    "sam_step": sam_step.run,
    "trainer": trainer.run,
    "verify": verify_sweep.run,
    "lanczos": lanczos.run,
}

logger = logging.getLogger("benchmarks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run the bqsam benchmarks and print ratios (min / median / max over repeats).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per benchmark (default: per benchmark)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: all benchmarks in under 1 minute")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes for the test suite; the numbers mean nothing"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results and raw timings to this JSON file")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; the timings in docs use 1)"
    )
    parser.add_argument(
        "--device", default="cpu", help="device of the sam_step and lanczos benchmarks: cpu or cuda (default cpu)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="CIFAR-10 folder for the trainer benchmark (default: $BQSAM_CIFAR10_DIR or ../shared/data/cifar10-jpeg)",
    )
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; valid names: {', '.join(BENCHMARKS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was given but torch.cuda.is_available() is False")


def _format(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and abs(value) < 1e-2:
        return f"{value:.1e}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def format_table(results: list[BenchmarkResult]) -> str:
    """Render the rows of every result as a fixed-width text table."""
    header = ("benchmark", "quantity", "unit", "min", "median", "max", "floor", "target", "met")
    lines = [header]
    for result in results:
        for row in result.rows:
            met = "-"
            if row.met is not None:
                met = "yes" if row.met else "NO"
            lines.append(
                (
                    result.name,
                    row.quantity,
                    row.unit,
                    _format(row.min),
                    _format(row.median),
                    _format(row.max),
                    _format(row.floor),
                    row.target or "-",
                    met,
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    for result in results:
        for note in result.notes:
            text.append(f"{result.name}: {note}")
    return "\n".join(text)


def _benchmark_kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if name in ("sam_step", "lanczos"):
        kwargs["device"] = args.device
    if name == "trainer" and args.data_dir is not None:
        kwargs["data_dir"] = args.data_dir
    return kwargs


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    torch.set_num_threads(args.threads)
    scale = "full"
    if args.quick:
        scale = "quick"
    elif args.smoke:
        scale = "smoke"
    names = args.names or list(BENCHMARKS)
    started = time.perf_counter()
    machine_before = machine_info()

    results = []
    for name in names:
        logger.info("running %s (%s)", name, scale)
        result = BENCHMARKS[name](scale, repeats=args.repeats, **_benchmark_kwargs(name, args))
        logger.info("finished %s in %.1f s", name, result.seconds)
        results.append(result)

    print(format_table(results))
    total = time.perf_counter() - started
    print(f"total {total:.1f} s, {args.threads} thread(s), torch {torch.__version__}")

    if args.out is not None:
        payload = {
            "command": " ".join(["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
            "scale": scale,
            "seconds": total,
            "machine": machine_before,
            "load_average_after": os.getloadavg(),
            "benchmarks": {result.name: result.to_dict() for result in results},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.out.with_name(args.out.name + ".tmp")
        temporary.write_text(json.dumps(payload, indent=2) + "\n")
        temporary.replace(args.out)
        logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
