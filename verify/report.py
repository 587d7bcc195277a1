"""Verification reports: the printed table, report.json and report.md.

report.json has exactly the keys ``{"checks": [{"id", "theorem", "problem", "method",
"empirical", "bound", "ratio", "passed", "control"}], "summary": {"total", "passed",
"failed", "controls", "seconds"}}``; numbers that are not finite are written as null.
Both files are written atomically: to a temporary file in the same folder, then renamed
over the target with ``os.replace``.

Example:
    >>> from verify.checks import inequality_check
    >>> checks = [inequality_check("T1/demo/sam/x", "T1", "demo", "sam", [1.0], [2.0])]
    >>> summary(checks, seconds=0.1)["passed"]
    1
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

from bqsam.atomic import write_text_atomic

from .checks import Check

__all__ = ["summary", "format_table", "write_json", "write_markdown", "atomic_write_text", "THEOREM_ORDER"]

# Report sections in reading order; theorems not listed come last.
THEOREM_ORDER = (
    "A (update rule)",
    "one-step inequality",
    "lemma ||e_k|| <= rho + theta delta_k",
    "T1",
    "T2",
    "T2 corollary (gradient at q(w))",
    "T2 corollary (loss at q(w))",
    "T3a",
    "T3b",
    "T4",
    "T5",
    "S1",
    "S2",
    "S type-1 error",
    "S type-2 gradient",
    "S3",
    "perturbation diminishment",
)


def summary(checks: Sequence[Check], seconds: float) -> dict:
    """Return the report.json summary of ``checks``."""
    passed = sum(1 for c in checks if c.passed)
    return {
        "total": len(checks),
        "passed": passed,
        "failed": len(checks) - passed,
        "controls": sum(1 for c in checks if c.control),
        "seconds": round(float(seconds), 3),
    }


def grouped(checks: Iterable[Check]) -> "OrderedDict[str, list[Check]]":
    """Group checks by theorem in ``THEOREM_ORDER``, keeping their order inside a group."""
    groups: dict[str, list[Check]] = {}
    for check in checks:
        groups.setdefault(check.theorem, []).append(check)
    order = {name: i for i, name in enumerate(THEOREM_ORDER)}
    keys = sorted(groups, key=lambda name: (order.get(name, len(order)), name))
    return OrderedDict((key, groups[key]) for key in keys)


def format_number(value: float) -> str:
    """Format a check value with 4 significant digits; nan and inf spelled out."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def status(check: Check) -> str:
    """Return the status word of a check: ok, FAIL, ok (control) or FAIL (control held)."""
    if check.control:
        return "ok (control violated)" if check.passed else "FAIL (control held)"
    return "ok" if check.passed else "FAIL"


def format_table(checks: Sequence[Check]) -> str:
    """Return the plain-text table printed by ``bqsam verify``, grouped by theorem."""
    headers = ("id", "theorem", "problem", "method", "empirical", "bound", "ratio", "status")
    rows = []
    for theorem, members in grouped(checks).items():
        for c in members:
            rows.append(
                (c.id, theorem, c.problem, c.method, format_number(c.empirical), format_number(c.bound), format_number(c.ratio), status(c))
            )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    # The id and theorem columns can be long; cap them so a row fits a wide terminal.
    widths[0] = min(widths[0], 72)
    widths[1] = min(widths[1], 28)

    def line(values: Sequence[str]) -> str:
        cells = []
        for i, (value, width) in enumerate(zip(values, widths)):
            text = value if len(value) <= width else value[: width - 1] + "~"
            cells.append(text.rjust(width) if 4 <= i <= 6 else text.ljust(width))
        return "  ".join(cells).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def format_summary_table(checks: Sequence[Check]) -> str:
    """Return one line per theorem: checks held, the worst ratio, and the negative controls.

    The worst ratio is the largest empirical / bound ratio over the theorem's ordinary checks
    (1 means the bound is attained, above 1 violated).
    """
    headers = ("theorem", "checks", "held", "worst ratio", "controls failed as they must")
    rows = []
    for theorem, members in grouped(checks).items():
        ordinary = [c for c in members if not c.control]
        controls = [c for c in members if c.control]
        ratios = [c.ratio for c in ordinary if c.ratio is not None and math.isfinite(c.ratio)]
        rows.append(
            (
                theorem,
                str(len(ordinary)),
                str(sum(c.passed for c in ordinary)),
                format_number(max(ratios)) if ratios else "-",
                f"{sum(c.passed for c in controls)} of {len(controls)}",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        cells = [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    write_text_atomic(path, text)


def write_json(path: Path, checks: Sequence[Check], seconds: float) -> None:
    """Write report.json (atomically)."""
    document = {"checks": [c.to_json() for c in checks], "summary": summary(checks, seconds)}
    atomic_write_text(Path(path), json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_markdown(path: Path, text: str) -> None:
    """Write report.md (atomically); the text comes from ``verify.report_text``."""
    atomic_write_text(Path(path), text)
