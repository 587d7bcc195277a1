"""Numerical verification of the convergence theory of one-bit SAM (``bqsam verify``).

The suites run ``bqsam.BinarySAM`` itself, in float64, on problems with known constants
(``theory.problems``). They compare what it does with the bounds of ``theory.bounds``:
the one-step inequality at every step, the averaged bounds T1, T2, T3 at every horizon K,
the stability threshold T4, the PL rate T5, the SAM lemmas S1-S3 and the perturbation
diminishment property. Every theorem also has negative controls: cases where its
hypothesis is broken and the check must fail.

Example:
    >>> from verify import run_verification
    >>> result = run_verification(["tightness"], quick=True)     # doctest: +SKIP
    >>> result.all_passed                                        # doctest: +SKIP
    True
"""

from __future__ import annotations

from .api import VerificationResult, run_verification
from .checks import Check
from .suites import DEFAULT_SUITES, SUITES

__all__ = ["run_verification", "VerificationResult", "Check", "SUITES", "DEFAULT_SUITES"]
