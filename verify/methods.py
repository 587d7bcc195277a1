"""The methods the suites run: each one is ``bqsam.BinarySAM`` with fixed settings.

==================  ==========  ============  =========  ==============================
name                quantizer   rho           normalize  gradient
==================  ==========  ============  =========  ==============================
sgd                 None        0             -          g(w)
sam                 None        > 0           yes        first-order G1 = g(w + e)
usam                None        > 0           no         first-order
sam-hessian-exact   None        > 0           yes        G1 + J^T G1, double backprop
sam-hessian-fd      None        > 0           yes        G1 + J^T G1, central difference
bc                  ste         0             -          g(q(w))  (BinaryConnect)
br                  relax       0             -          g(r_lam(w))  (BinaryRelax)
br-growth           relax       0             -          lam_k = lam_0 gamma^k
bqsam-ste           ste         > 0           yes        first-order at q(w) + e
bqsam-ste-hx/-hfd   ste         > 0           yes        Hessian-corrected
bqsam-relax(-hx/-hfd) relax     > 0           yes        at r_lam_k(w) + e
bqsam-latent        ste         > 0           yes        at q(w + e)  (latent ablation)
==================  ==========  ============  =========  ==============================

Example:
    >>> METHODS["bqsam-ste"].theta(torch.tensor([1.0]), 0)
    tensor([1.])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Method", "METHODS", "SWEEP_METHODS"]


@dataclass(frozen=True)
class Method:
    """Settings of ``BinarySAM`` that make one method of the comparison.

    Attributes:
        name: the method's name in check ids.
        quantizer: ``None``, ``"ste"`` or ``"relax"`` (BinarySAM's ``quantizer``).
        sam: whether the method takes a SAM ascent step (rho > 0 rows).
        normalize: ``rho g / ||g||`` (True) or USAM's ``rho g`` (False).
        sam_grad: BinarySAM's ``sam_grad``.
        perturb: BinarySAM's ``perturb``.
        lam_growth: the factor gamma of ``lam_k = lam_0 gamma^k`` (relaxed methods).
        lams: the relaxation weights ``lam_0`` swept as rows (relaxed methods).
    """

    name: str
    quantizer: str | None
    sam: bool
    normalize: bool = True
    sam_grad: str = "first-order"
    perturb: str = "quantized"
    lam_growth: float = 1.0
    lams: tuple[float, ...] = (1.0,)

    @property
    def hessian(self) -> bool:
        return self.sam_grad != "first-order"

    @property
    def theorem(self) -> str:
        """T1 covers the unquantized methods, T2 the quantized ones."""
        return "T1" if self.quantizer is None else "T2"

    def theta(self, lam: Tensor, k: int) -> Tensor:
        """Return theta_k, with ||x_k - w_k|| = theta_k ||q(w_k) - w_k||, for each row's lam_0."""
        if self.quantizer is None:
            return torch.zeros_like(lam)
        if self.quantizer == "ste":
            return torch.ones_like(lam)
        lam_k = lam * self.lam_growth**k
        return torch.where(torch.isinf(lam_k), torch.ones_like(lam_k), lam_k / (1 + lam_k))


_INF = math.inf

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sgd", None, False),
        Method("sam", None, True),
        Method("usam", None, True, normalize=False),
        Method("sam-hessian-exact", None, True, sam_grad="hessian-exact"),
        Method("sam-hessian-fd", None, True, sam_grad="hessian-fd"),
        Method("bc", "ste", False),
        Method("br", "relax", False, lams=(0.0, 1.0, 10.0, _INF)),
        Method("br-growth", "relax", False, lam_growth=1.2, lams=(0.1,)),
        Method("bqsam-ste", "ste", True),
        Method("bqsam-ste-hessian-exact", "ste", True, sam_grad="hessian-exact"),
        Method("bqsam-ste-hessian-fd", "ste", True, sam_grad="hessian-fd"),
        Method("bqsam-relax", "relax", True, lam_growth=1.1, lams=(1.0,)),
        Method("bqsam-relax-hessian-exact", "relax", True, sam_grad="hessian-exact", lam_growth=1.1, lams=(1.0,)),
        Method("bqsam-relax-hessian-fd", "relax", True, sam_grad="hessian-fd", lam_growth=1.1, lams=(1.0,)),
        Method("bqsam-latent", "ste", True, perturb="latent"),
    )
}

# The methods of the deterministic sweep (the latent ablation has its own suite).
SWEEP_METHODS: tuple[str, ...] = tuple(name for name in METHODS if name != "bqsam-latent")
