"""``bqsam verify``: run the verification suites, print the table, write the reports.

    bqsam verify [--suite NAME ...] [--quick] [--out DIR] [--data-dir DIR] [--all]

The exit status is 0 only when every check holds and every negative control fails as it
must; 1 when any check is red; 2 for invalid arguments.

Example:
    $ bqsam verify --quick --out /tmp/verify-report
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .api import run_verification
from .report import format_summary_table, format_table, summary, write_json, write_markdown
from .report_text import markdown_report
from .suites import SUITES

__all__ = ["configure_parser", "main", "EXIT_FAILED", "EXIT_USAGE"]

logger = logging.getLogger(__name__)

EXIT_FAILED = 1
EXIT_USAGE = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``bqsam verify`` to ``parser``."""
    parser.add_argument(
        "--suite",
        action="append",
        metavar="NAME",
        help=f"run only this suite (repeatable); one of: {', '.join(SUITES)}. Default: all, "
        "with cifar only when --data-dir is given",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the reduced run for CI: fewer steps, step sizes, radii, methods and stochastic runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("verify-report"),
        metavar="DIR",
        help="folder for report.json and report.md (default: ./verify-report)",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="print every check (default: one line per theorem, then the negative controls "
        "and any failed check); report.md and report.json always hold every check",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="CIFAR-10 folder (holding train.zip, or class folders) for the cifar suite",
    )


def main(args: argparse.Namespace) -> int:
    """Run the suites selected by ``args`` and return the exit status."""
    suites = args.suite or []
    unknown = [name for name in suites if name not in SUITES]
    if unknown:
        print(f"bqsam verify: unknown suite {unknown[0]!r}; valid suites: {', '.join(SUITES)}", file=sys.stderr)
        return EXIT_USAGE
    if "cifar" in suites and args.data_dir is None:
        print("bqsam verify: the cifar suite needs --data-dir DIR (a folder with the CIFAR-10 train.zip)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.data_dir is not None and not args.data_dir.exists():
        print(f"bqsam verify: --data-dir {args.data_dir} does not exist; pass the folder holding the "
              "CIFAR-10 train.zip (or its class folders)", file=sys.stderr)
        return EXIT_USAGE

    result = run_verification(suites, quick=args.quick, data_dir=args.data_dir)

    if args.all:
        print(format_table(result.checks))
    else:
        print(format_summary_table(result.checks))
        print("(T4: the empirical value is the contraction rate; its checks on the divergent side "
              "hold with a rate above 1.)")
        shown = [c for c in result.checks if c.control or not c.passed]
        print("\nNegative controls and failed checks:\n")
        print(format_table(shown))
    counts = summary(result.checks, result.seconds)
    out = Path(args.out)
    write_json(out / "report.json", result.checks, result.seconds)
    write_markdown(out / "report.md", markdown_report(result, quick=args.quick))
    controls = [c for c in result.checks if c.control]
    ordinary = [c for c in result.checks if not c.control]
    print(
        f"\n{sum(c.passed for c in ordinary)} of {len(ordinary)} checks hold and "
        f"{sum(c.passed for c in controls)} of {len(controls)} negative controls fail as they must "
        f"({counts['total']} in all), {counts['seconds']:.1f} s; reports in {out}/report.json and {out}/report.md"
    )
    if not result.all_passed:
        failed = [c.id for c in result.checks if not c.passed]
        logger.error("%d checks failed, first: %s", len(failed), ", ".join(failed[:5]))
        return EXIT_FAILED
    return 0
