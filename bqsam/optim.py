"""BinarySAM: one optimizer for SGD, SAM, BinaryConnect, BinaryRelax and one-bit SAM.

Every method of the comparison is the same update with different settings, so the
verification suites and the trainer run the very same code:

============  =========================================  ======================
method        settings                                   gradient taken at
============  =========================================  ======================
SGD           ``rho=0, quantizer=None``                  ``w``
SAM           ``rho>0, quantizer=None``                  ``w + e(w)``
BinaryConnect ``rho=0, quantizer="ste"``                 ``q(w)``
BinaryRelax   ``rho=0, quantizer="relax"``               ``r_lam(w)``
BQ-SAM        ``rho>0, quantizer="ste"`` or ``"relax"``  ``x + e(x)``
============  =========================================  ======================

Example:
    >>> import torch
    >>> from bqsam import BinarySAM, binarizable_param_groups
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> opt = BinarySAM(binarizable_param_groups(model), torch.optim.SGD, rho=0.05,
    ...                 quantizer="ste", lr=0.1, momentum=0.9, model=model)
    >>> x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(model(x), y)
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
    >>> with opt.deployed():             # binarized layers hold q(w) here
    ...     logits = model(x)
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .hvp import hvp_central_difference, hvp_exact
from .perturbation import safe_reciprocal, sam_perturbation, scale_rows, squared_norm
from .quantizers import binarize, relax

__all__ = ["BinarySAM", "QUANTIZERS", "SAM_GRADS", "PERTURB_MODES"]

QUANTIZERS = (None, "ste", "relax")
GROUP_OPTIONS = ("rho", "binarize", "lam", "lam_growth", "scale", "per_channel", "clip", "batched", "k")
SAM_GRADS = ("first-order", "hessian-exact", "hessian-fd")
PERTURB_MODES = ("quantized", "latent")


def _is_nonnegative_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


class BinarySAM(torch.optim.Optimizer):
    r"""Sharpness-aware minimization for one-bit (binary-weight) networks.

    The optimizer keeps latent full-precision weights ``w_k``. At step ``k`` it takes
    gradients at a point ``x_k`` built from them, perturbs it by the SAM ascent step, and
    hands the gradient at the perturbed point to a base optimizer that updates ``w_k``:

    .. math::
        \begin{aligned}
        x_k &= q(w_k) \text{ (STE)},\quad r_{\lambda_k}(w_k) \text{ (relaxed)},\quad
               \text{or } w_k \text{ (tensors not binarized)},
               \qquad \lambda_k = \lambda_0 \gamma^k \\
        e_k &= \rho\, g(x_k) / \lVert g(x_k) \rVert
               \quad (\rho\, g(x_k) \text{ unnormalised};\;
               \rho\, T^2 g / \lVert T g \rVert,\ T = \mathrm{diag}|x_k| \text{ adaptive}) \\
        G_k &= g(x_k + e_k) \quad \text{(first-order)}, \qquad
        G_k = g(x_k + e_k) + J_k^\top g(x_k + e_k) \quad \text{(Hessian-corrected)} \\
        w_{k+1} &= \mathrm{BaseStep}(w_k, G_k)
               \quad (\text{SGD: } w_{k+1} = w_k - \eta\, G_k)
        \end{aligned}

    where ``q(v) = (||v||_1 / d) sgn(v)``, ``r_lam(v) = (v + lam q(v)) / (1 + lam)`` and
    ``J = (rho / ||g||) (I - u u^T) H(x_k)`` with ``u = g / ||g||`` (``J = rho H`` unnormalised)
    is the Jacobian of the perturbation. ``rho = 0`` skips the ascent pass: that is SGD,
    BinaryConnect or BinaryRelax. With ``perturb="latent"`` the descent point on binarized
    tensors is ``Q_k(w_k + e_k)`` instead of ``x_k + e_k`` (the latent-perturbation
    ablation). The deployed model is always ``q(w_K)`` on binarized tensors; see
    :meth:`deployed`.

    Args:
        params: parameters or param groups. A group's ``binarize`` flag chooses whether its
            tensors are quantized when ``quantizer`` is set (default: all groups). With
            ``quantizer=None`` nothing is quantized, so the same groups from
            ``bqsam.binarizable_param_groups(model)`` serve every method.
        base_optimizer: a ``torch.optim.Optimizer`` class (default ``torch.optim.SGD``)
            built on the same param groups, so an LR scheduler given this object changes
            the rate the base step uses.
        rho: SAM radius ``>= 0`` (default 0.05). With ``batched=True`` a group may hold a
            tensor of shape ``(C,)``, one radius per row.
        quantizer: ``None``, ``"ste"`` (straight-through estimator at ``q(w)``) or
            ``"relax"`` (BinaryRelax point ``r_lam_k(w)``).
        sam_grad: ``"first-order"`` (Foret et al. 2021), ``"hessian-exact"`` (the
            Jacobian term by double backpropagation) or ``"hessian-fd"`` (the Jacobian term
            by a central difference of gradients with step ``fd_delta``).
        perturb: ``"quantized"`` (default) or ``"latent"``.
        adaptive: ASAM scaling ``T = diag(|x|)`` (first-order gradient only).
        normalize: ``True`` for ``rho g / ||g||``, ``False`` for unnormalised SAM (USAM).
        lam: BinaryRelax weight ``lam_0 >= 0`` (``inf`` gives ``q``); default 1.0.
        lam_growth: factor ``gamma > 0`` with ``lam_k = lam_0 gamma^k``; default 1.0.
        scale: binarize to ``alpha sgn(w)`` (default) or to ``sgn(w)``.
        per_channel: one scale ``alpha`` per slice along dim 0 instead of one per tensor.
        clip: ``None`` or ``c > 0``: clamp latent binarized weights to ``[-c, c]`` after
            each step (BinaryConnect's clipping).
        fd_delta: length ``delta > 0`` of the central-difference step along the unit
            direction ``v / ||v||`` for ``"hessian-fd"``.
        model: the ``nn.Module`` being trained. When given, BatchNorm running statistics
            are updated by the first forward pass of a step only; later passes of the same
            step leave them as they were.
        **base_kwargs: options of the base optimizer (``lr``, ``momentum``, ...).

    A param group may override ``rho``, ``binarize``, ``lam``, ``lam_growth``, ``scale``,
    ``per_channel``, ``clip`` and ``batched``. With ``batched=True`` every index along dim 0
    of the group's tensors is an independent problem: the perturbation norm and the
    quantizer scale are taken per row, and ``rho`` and ``lam`` may hold one value per row.
    The verification suites use it to run a sweep of configurations as one computation.

    ``step(closure)`` calls ``closure`` as ``torch.optim.LBFGS`` does: the closure zeroes
    the gradients, computes the loss at the current parameter values, calls ``backward``
    and returns the loss. BinarySAM calls it at ``x_k``, then at the descent point, and, for
    the Hessian-corrected gradients, at further points. With ``sam_grad="hessian-exact"``
    the closure must call ``loss.backward(create_graph=opt.create_graph)``. ``step`` returns
    the loss of the first call, the loss at ``x_k``.
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        *,
        rho: float = 0.05,
        quantizer: str | None = None,
        sam_grad: str = "first-order",
        perturb: str = "quantized",
        adaptive: bool = False,
        normalize: bool = True,
        lam: float = 1.0,
        lam_growth: float = 1.0,
        scale: bool = True,
        per_channel: bool = False,
        clip: float | None = None,
        fd_delta: float = 1e-3,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        if quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {quantizer!r}")
        if sam_grad not in SAM_GRADS:
            raise ValueError(f"sam_grad must be one of {SAM_GRADS}, got {sam_grad!r}")
        if perturb not in PERTURB_MODES:
            raise ValueError(f"perturb must be one of {PERTURB_MODES}, got {perturb!r}")
        if perturb == "latent" and quantizer is None:
            raise ValueError("perturb='latent' needs a quantizer ('ste' or 'relax'); got quantizer=None")
        if adaptive and sam_grad != "first-order":
            raise ValueError(
                f"adaptive=True supports sam_grad='first-order' only, got sam_grad={sam_grad!r}"
            )
        if not (isinstance(fd_delta, (int, float)) and fd_delta > 0):
            raise ValueError(f"fd_delta must be a number > 0, got {fd_delta!r}")
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer)):
            raise ValueError(
                f"base_optimizer must be a torch.optim.Optimizer class such as torch.optim.SGD, "
                f"got {base_optimizer!r}"
            )
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module or None, got {type(model).__name__}")
        if "lr" in base_kwargs and not float(base_kwargs["lr"]) > 0:
            raise ValueError(f"lr must be > 0, got {base_kwargs['lr']!r}")

        self.quantizer = quantizer
        self.sam_grad = sam_grad
        self.perturb = perturb
        self.adaptive = adaptive
        self.normalize = normalize
        self.fd_delta = float(fd_delta)
        self.model = model
        self.create_graph = False

        defaults = dict(
            rho=rho,
            binarize=quantizer is not None,
            lam=lam,
            lam_growth=lam_growth,
            scale=scale,
            per_channel=per_channel,
            clip=clip,
            batched=False,
            k=0,
        )
        super().__init__(params, defaults)

        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)

    # ------------------------------------------------------------------ param groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):
            super().add_param_group(param_group)
            self._check_group(self.param_groups[-1])
            return

        for key in GROUP_OPTIONS:
            param_group.setdefault(key, self.defaults[key])
        self._check_group(param_group)
        self.base_optimizer.add_param_group(param_group)

    def _check_group(self, group: dict[str, Any]) -> None:
        rho, lam = group["rho"], group["lam"]
        batched = group["batched"]

        if isinstance(rho, Tensor):
            if rho.dim() > 0 and not batched:
                raise ValueError(f"rho of shape {tuple(rho.shape)} needs batched=True in its param group")
            if torch.isnan(rho).any() or torch.isinf(rho).any() or (rho < 0).any():
                raise ValueError(f"rho must be finite and >= 0, got {rho.tolist()}")
        elif not (_is_nonnegative_number(rho) and math.isfinite(rho)):
            raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")

        if isinstance(lam, Tensor):
            if lam.dim() > 0 and not batched:
                raise ValueError(f"lam of shape {tuple(lam.shape)} needs batched=True in its param group")
            if torch.isnan(lam).any() or (lam < 0).any():
                raise ValueError(f"lam must be >= 0 (inf allowed), got {lam.tolist()}")
        elif not _is_nonnegative_number(lam) or math.isnan(lam):
            raise ValueError(f"lam must be a number >= 0 (inf allowed), got {lam!r}")

        growth = group["lam_growth"]
        if not (_is_nonnegative_number(growth) and growth > 0 and math.isfinite(growth)):
            raise ValueError(f"lam_growth must be a finite number > 0, got {growth!r}")

        clip = group["clip"]
        if clip is not None and not (_is_nonnegative_number(clip) and clip > 0):
            raise ValueError(f"clip must be None or a number > 0, got {clip!r}")

        if batched and any(p.dim() == 0 for p in group["params"]):
            raise ValueError("batched=True needs tensors with a leading row dimension; got a 0-dim tensor")
        if "lr" in group and not float(group["lr"]) > 0:
            raise ValueError(f"lr must be > 0, got {group['lr']!r}")

    # ------------------------------------------------------------------ state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.base_optimizer.param_groups = self.param_groups
        self.base_optimizer.state = self.state

    # ------------------------------------------------------------------ points

    def _per_row(self, group: dict[str, Any]) -> bool:
        return bool(group["per_channel"] or group["batched"])

    def _lam_k(self, group: dict[str, Any]) -> float | Tensor:
        return group["lam"] * group["lam_growth"] ** group["k"]

    def _binarized(self, group: dict[str, Any]) -> bool:
        """Return True when the group's tensors are quantized: its flag is set and so is a quantizer."""
        return bool(group["binarize"]) and self.quantizer is not None

    def _quantize(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        """Return the point ``x`` where gradients are taken for a tensor of ``group``."""
        if not self._binarized(group):
            return p
        if self.quantizer == "ste":
            return binarize(p, scale=group["scale"], per_channel=self._per_row(group))
        return relax(p, self._lam_k(group), scale=group["scale"], per_channel=self._per_row(group))

    def _params(self) -> list[tuple[dict[str, Any], Tensor]]:
        return [(group, p) for group in self.param_groups for p in group["params"]]

    def _scopes(self) -> list[tuple[bool, list[int]]]:
        """Group the parameter indices into sets that share one perturbation norm.

        The non-batched groups share one global norm, as in Foret et al. (2021); each
        batched group is a scope of its own with one norm per row.
        """
        shared, scopes, index = [], [], 0
        for group in self.param_groups:
            indices = list(range(index, index + len(group["params"])))
            index += len(indices)
            if group["batched"]:
                scopes.append((True, indices))
            else:
                shared.extend(indices)
        if shared:
            scopes.insert(0, (False, shared))
        return scopes

    @staticmethod
    def _write(params: list[Tensor], values: list[Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)

    @staticmethod
    def _grads(params: list[Tensor]) -> list[Tensor]:
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]

    # ------------------------------------------------------------------ BatchNorm

    def _batchnorm_buffers(self) -> list[tuple[Tensor, Tensor]]:
        if self.model is None:
            return []
        saved = []
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                for buffer in (module.running_mean, module.running_var, module.num_batches_tracked):
                    if buffer is not None:
                        saved.append((buffer, buffer.detach().clone()))
        return saved

    @staticmethod
    def _restore_buffers(saved: list[tuple[Tensor, Tensor]]) -> None:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)

    # ------------------------------------------------------------------ SAM pieces

    def _perturbation(self, points: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        entries = self._params()
        perturbation: list[Tensor] = [torch.zeros_like(p) for p in points]
        for rows, indices in self._scopes():
            unit = sam_perturbation(
                [grads[i] for i in indices],
                1.0,
                normalize=self.normalize,
                adaptive=self.adaptive,
                params=[points[i] for i in indices],
                rows=rows,
            )
            for i, e in zip(indices, unit):
                perturbation[i] = scale_rows(e, entries[i][0]["rho"], rows)
        return perturbation

    def _jacobian_direction(self, grads: list[Tensor], descent_grads: list[Tensor]) -> list[Tensor]:
        """Return ``v`` with ``J^T G1 = H(x) v``.

        Normalised: ``v = D G1 - u <u, D G1>`` with ``u = g / ||g||`` and ``D = rho / ||g||``
        per tensor; unnormalised: ``v = rho G1``. A zero gradient gives ``v = 0``.
        """
        entries = self._params()
        direction: list[Tensor] = [torch.zeros_like(g) for g in grads]
        for rows, indices in self._scopes():
            rhos = [entries[i][0]["rho"] for i in indices]
            scaled = [scale_rows(descent_grads[i], rho, rows) for i, rho in zip(indices, rhos)]
            if not self.normalize:
                for i, v in zip(indices, scaled):
                    direction[i] = v
                continue

            # 1 / ||g||, and 0 where the gradient vanishes (there the perturbation is 0).
            inverse = safe_reciprocal(squared_norm([grads[i] for i in indices], rows).sqrt())
            units = [scale_rows(grads[i], inverse, rows) for i in indices]
            weighted = [scale_rows(s, inverse, rows) for s in scaled]
            if rows:
                inner = sum((u * s).reshape(u.shape[0], -1).sum(dim=1) for u, s in zip(units, weighted))
            else:
                inner = sum((u * s).sum() for u, s in zip(units, weighted))
            for i, u, s in zip(indices, units, weighted):
                direction[i] = s - scale_rows(u, inner, rows)
        return direction

    def _hessian_vector_product(
        self, closure: Callable[[], Tensor], params: list[Tensor], x: list[Tensor], v: list[Tensor]
    ) -> list[Tensor]:
        if self.sam_grad == "hessian-exact":
            self._write(params, x)
            self.create_graph = True
            try:
                closure()
            finally:
                self.create_graph = False
            grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
            if not any(g.requires_grad for g in grads):
                raise RuntimeError(
                    "sam_grad='hessian-exact' needs a closure that calls "
                    "loss.backward(create_graph=opt.create_graph); the gradients carried no graph"
                )
            product = hvp_exact(grads, params, v)
            for p in params:
                p.grad = None
            return product

        def grad_at(points: list[Tensor]) -> list[Tensor]:
            self._write(params, points)
            closure()
            return self._grads(params)

        # H v = ||v|| H u with u = v / ||v||: stepping fd_delta along the unit direction keeps
        # the truncation error at (M fd_delta / 2) ||v|| whatever the scale of v.
        units: list[Tensor] = list(v)
        lengths: list[Tensor | float] = [1.0] * len(v)
        for rows, indices in self._scopes():
            norm = squared_norm([v[i] for i in indices], rows).sqrt()
            inverse = safe_reciprocal(norm)
            for i in indices:
                units[i] = scale_rows(v[i], inverse, rows)
                lengths[i] = norm
        products = hvp_central_difference(grad_at, x, units, self.fd_delta)
        return [scale_rows(hu, length, rows_of) for hu, length, rows_of in zip(products, lengths, self._row_flags())]

    def _row_flags(self) -> list[bool]:
        return [bool(group["batched"]) for group, _ in self._params()]

    def _rho_is_zero(self) -> bool:
        for group in self.param_groups:
            rho = group["rho"]
            if (bool((rho != 0).any()) if isinstance(rho, Tensor) else rho != 0):
                return False
        return True

    # ------------------------------------------------------------------ step

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Perform one optimization step; see the class docstring for the update rule."""
        rho_zero = self._rho_is_zero()
        if closure is None:
            if not rho_zero or self.quantizer is not None:
                raise ValueError(
                    "step() needs a closure when rho > 0 or a quantizer is set: the gradient is "
                    "taken at points the optimizer chooses"
                )
            self.base_optimizer.step()
            self._finish_step()
            return None

        closure = torch.enable_grad()(closure)
        params = [p for _, p in self._params()]
        latent = [p.detach().clone() for p in params]

        # x_k: the quantized or relaxed point on binarized tensors, w_k elsewhere.
        with torch.no_grad():
            x = [self._quantize(p, group).detach().clone() for group, p in self._params()]
        self._write(params, x)
        loss = closure()
        used = [p.grad is not None for p in params]

        if rho_zero:
            descent_grads = self._grads(params)
        else:
            grads = self._grads(params)
            descent_grads = self._sam_gradient(closure, params, latent, x, grads)

        self._write(params, latent)
        for p, g, has_grad in zip(params, descent_grads, used):
            p.grad = g if has_grad else None
        self.base_optimizer.step()
        self._finish_step()
        return loss

    def _sam_gradient(
        self,
        closure: Callable[[], Tensor],
        params: list[Tensor],
        latent: list[Tensor],
        x: list[Tensor],
        grads: list[Tensor],
    ) -> list[Tensor]:
        perturbation = self._perturbation(x, grads)
        if self.perturb == "latent":
            with torch.no_grad():
                descent_point = [
                    self._quantize(w + e, group)
                    for (group, _), w, e in zip(self._params(), latent, perturbation)
                ]
        else:
            descent_point = [xi + e for xi, e in zip(x, perturbation)]

        saved_buffers = self._batchnorm_buffers()
        try:
            self._write(params, descent_point)
            closure()
            descent_grads = self._grads(params)

            if self.sam_grad != "first-order":
                v = self._jacobian_direction(grads, descent_grads)
                hv = self._hessian_vector_product(closure, params, x, v)
                descent_grads = [g + h for g, h in zip(descent_grads, hv)]
        finally:
            self._restore_buffers(saved_buffers)
        return descent_grads

    def _finish_step(self) -> None:
        with torch.no_grad():
            for group in self.param_groups:
                if self._binarized(group) and group["clip"] is not None:
                    for p in group["params"]:
                        p.clamp_(-group["clip"], group["clip"])
                group["k"] += 1

    # ------------------------------------------------------------------ deployment

    @contextmanager
    def deployed(self) -> Iterator[None]:
        """Hold the deployed weights ``q(w)`` in binarized tensors inside the block.

        The latent weights are restored bit for bit on exit, also when the block raises.
        """
        saved = []
        with torch.no_grad():
            for group, p in self._params():
                if self._binarized(group):
                    saved.append((p, p.detach().clone()))
                    p.copy_(binarize(p, scale=group["scale"], per_channel=self._per_row(group)))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in saved:
                    p.copy_(w)
