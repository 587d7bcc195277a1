"""State shared by the suites of one verification run: sizes, problems and cached runs.

Several suites read the same deterministic sweep (the descent checks, T5 and the SAM
geometry checks), so ``Context.analysis`` runs each (problem, method) sweep once.

Example:
    >>> ctx = Context(Settings.make(quick=True))
    >>> run = ctx.analysis("quadratic", "sam")          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .analysis import Analysis, analyse
from .instances import Instance, Settings, build_instances
from .methods import METHODS, Method
from .runner import Trace, run_sweep

__all__ = ["Context", "format_number", "setting_label", "row_settings"]

logger = logging.getLogger(__name__)


def format_number(value: float) -> str:
    """Format a setting for a check id: 0.5, 1, 0.05, inf."""
    if math.isinf(value):
        return "inf"
    return f"{value:g}"


def row_settings(method: Method, settings: Settings) -> list[tuple[float, float]]:
    """Return the (rho, lam_0) of each row of a method's sweep."""
    rhos = settings.rhos if method.sam else (0.0,)
    return [(rho, lam) for rho in rhos for lam in method.lams]


def setting_label(method: Method, eta_factor: float, rho: float, lam: float) -> str:
    """Return the setting part of a check id, e.g. 'eta=0.5L^-1,rho=0.05,lam=1,growth=1.1'."""
    parts = [f"eta={format_number(eta_factor)}L^-1", f"rho={format_number(rho)}"]
    if method.quantizer == "relax":
        parts.append(f"lam={format_number(lam)}")
        if method.lam_growth != 1.0:
            parts.append(f"growth={format_number(method.lam_growth)}")
    return ",".join(parts)


@dataclass
class Context:
    """Settings, problem instances, optional CIFAR-10 folder and a cache of analysed sweeps."""

    settings: Settings
    data_dir: Path | None = None
    instances: dict[str, Instance] = field(default_factory=dict)
    # Problems on real data, kept apart so that the synthetic sweeps do not iterate over them.
    real_data: dict[str, Instance] = field(default_factory=dict)
    _cache: dict[tuple[str, str], Analysis] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.instances:
            self.instances = build_instances(self.settings)

    def sweep(self, problem_name: str, method_name: str, instance: Instance | None = None) -> Trace:
        """Run the standard sweep (every eta factor as a group, every (rho, lam) as a row)."""
        instance = instance or self.instances[problem_name]
        method = METHODS[method_name]
        rows = row_settings(method, self.settings)
        L = float(instance.problem.L)
        with warnings.catch_warnings():
            # Hessian-exact steps call backward(create_graph=True); BinarySAM clears the
            # gradients afterwards, so the reference-cycle warning does not apply.
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            return run_sweep(
                instance.problem,
                method,
                etas=[factor / L for factor in self.settings.eta_factors],
                rhos=[rho for rho, _ in rows],
                lams=[lam for _, lam in rows],
                w0=instance.w0,
                steps=self.settings.steps,
            )

    def analysis(self, problem_name: str, method_name: str, instance: Instance | None = None) -> Analysis:
        """Return the analysed standard sweep, running it on first use."""
        key = (problem_name, method_name)
        if key not in self._cache:
            self._cache[key] = analyse(self.sweep(problem_name, method_name, instance))
        return self._cache[key]
