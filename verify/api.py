"""Run a selection of verification suites and collect their checks.

Example:
    >>> from verify.api import run_verification
    >>> result = run_verification(["stability"], quick=True)     # doctest: +SKIP
    >>> len(result.checks) > 0                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from .checks import Check
from .context import Context
from .instances import Settings
from .suites import DEFAULT_SUITES, SUITES, load_suite

__all__ = ["VerificationResult", "run_verification"]

logger = logging.getLogger(__name__)


@dataclass
class VerificationResult:
    """The checks of one verification run, the suites that ran and their times (seconds)."""

    checks: list[Check]
    seconds: float
    suite_seconds: dict[str, float] = field(default_factory=dict)
    context: Context | None = None

    @property
    def all_passed(self) -> bool:
        """True when every check holds and every negative control fails, as it must."""
        return all(c.passed for c in self.checks)


def run_verification(
    suites: Sequence[str] | None = None,
    *,
    quick: bool = False,
    data_dir: str | Path | None = None,
) -> VerificationResult:
    """Run the named suites (default: all, with ``cifar`` only when ``data_dir`` is given).

    Raises:
        ValueError: an unknown suite name, or the ``cifar`` suite without ``data_dir``.
    """
    if suites is None or len(suites) == 0:
        names = list(DEFAULT_SUITES) + (["cifar"] if data_dir is not None else [])
    else:
        names = list(dict.fromkeys(suites))
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite {unknown[0]!r}; valid suites: {', '.join(SUITES)}")
    if "cifar" in names and data_dir is None:
        raise ValueError("the cifar suite needs --data-dir DIR (a folder with the CIFAR-10 train.zip)")

    ctx = Context(Settings.make(quick), data_dir=Path(data_dir) if data_dir is not None else None)
    checks: list[Check] = []
    suite_seconds: dict[str, float] = {}
    # The sweeps are many small tensor operations; extra intra-op threads only add
    # synchronisation cost on them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        for name in names:
            logger.info("suite %s: started", name)
            began = time.perf_counter()
            produced = load_suite(name)(ctx)
            suite_seconds[name] = time.perf_counter() - began
            failed = sum(1 for c in produced if not c.passed)
            logger.info(
                "suite %s: %d checks (%d controls), %d failed, %.1f s",
                name, len(produced), sum(1 for c in produced if c.control), failed, suite_seconds[name],
            )
            checks += produced
    finally:
        torch.set_num_threads(threads)
    return VerificationResult(checks, time.perf_counter() - start, suite_seconds, ctx)
