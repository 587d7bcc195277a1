"""The ``bqsam`` command line: one entry point, one subcommand per job.

Each subcommand lives in its own module, imported only when it runs, so that
``bqsam verify`` does not load the trainer and the library does not depend on the
verification suites:

    bqsam verify [--suite NAME ...] [--quick] [--out DIR] [--data-dir DIR]
    bqsam figures [--only NAME ...] [--out DIR]
    bqsam train | compare | export | data ...
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

__all__ = ["main", "SUBCOMMANDS"]

# name -> (module, parser function, main function, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str, str, str]] = {
    "verify": ("verify.cli", "configure_parser", "main",
               "run the convergence verification suites and write report.json / report.md"),
    "figures": ("figures.cli", "configure_parser", "main", "regenerate the theory figures"),
    "train": ("bqsam.train.cli", "configure_train_parser", "train_main",
              "train a network on CIFAR-10 or SVHN with one method"),
    "compare": ("bqsam.train.cli", "configure_compare_parser", "compare_main",
                "run or collect several methods x seeds and tabulate them"),
    "export": ("bqsam.train.cli", "configure_export_parser", "export_main",
               "export the deployed binary model of a run, 8 weights per byte"),
    "data": ("bqsam.train.cli", "configure_data_parser", "data_main",
             "check or prepare the CIFAR-10 / SVHN data files"),
}


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bqsam",
        description="One-bit network training with sharpness-aware minimization, and "
        "numerical verification of its convergence theory.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, configure_name, _, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if name == command:
            # Only the chosen subcommand's module is imported.
            configure = getattr(importlib.import_module(module_name), configure_name)
            configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bqsam`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in SUBCOMMANDS:
        command = None

    parser = _build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    module_name, _, main_name, _ = SUBCOMMANDS[args.command]
    run = getattr(importlib.import_module(module_name), main_name)
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
