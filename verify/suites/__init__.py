"""The verification suites, by name.

Each suite is a module with ``run(ctx: verify.context.Context) -> list[Check]`` that
returns its checks and its negative controls.

========================  ===============================================================
suite                     what it checks
========================  ===============================================================
descent                   update rule, one-step inequality, T1, T2, radius lemma, T2
                          corollaries on every problem, method and setting of the sweep
tightness                 the T1 equality case and the SAM 2-cycle on f = L w^2 / 2
stochastic                T3a and T3b: means over many independent runs
stability                 T4: the USAM / gradient-descent step-size threshold
pl                        T5 under the PL inequality
sam                       S1, S2, the type-1 gradient error, type-2 exactness, S3
diminishment              the latent perturbation keeps the signs when rho < min |w_i|
cifar                     the descent and T5 checks on real CIFAR-10 images (--data-dir)
========================  ===============================================================
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["SUITES", "DEFAULT_SUITES", "load_suite"]

SUITES: dict[str, str] = {
    "descent": "update rule, one-step inequality, T1, T2, radius lemma, T2 corollaries",
    "tightness": "T1 equality case and the SAM 2-cycle",
    "stochastic": "T3a and T3b over many independent runs",
    "stability": "T4 step-size threshold of USAM and gradient descent",
    "pl": "T5 under the PL inequality",
    "sam": "S1, S2, type-1 gradient error, type-2 exactness, S3",
    "diminishment": "perturbation diminishment of the latent perturbation",
    "cifar": "descent and T5 checks on two CIFAR-10 classes (needs --data-dir)",
}

# Suites that run without --data-dir.
DEFAULT_SUITES: tuple[str, ...] = tuple(name for name in SUITES if name != "cifar")


def load_suite(name: str) -> Callable:
    """Return the ``run`` function of the suite ``name``."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid suites: {', '.join(SUITES)}")
    return importlib.import_module(f"verify.suites.{name}").run
