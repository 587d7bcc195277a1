"""Choose which tensors of a network are binarized.

The usual split for one-bit networks (Courbariaux et al. 2015; Rastegari et al. 2016)
binarizes the weights of every convolution and linear layer except the first convolution,
which sees the raw image, and the last linear layer, which produces the logits. Biases and
BatchNorm parameters stay full precision, as do the activations.

Example:
    >>> import torch
    >>> from bqsam import BinarySAM, binarizable_param_groups
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3),
    ...                             torch.nn.Flatten(), torch.nn.Linear(8 * 28 * 28, 10))
    >>> groups = binarizable_param_groups(model)
    >>> [len(g["params"]) for g in groups]          # conv2.weight | the other five tensors
    [1, 5]
    >>> opt = BinarySAM(groups, quantizer="ste", rho=0.05, lr=0.1)
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["binarizable_param_groups", "binarizable_modules"]

_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def binarizable_modules(model: nn.Module, keep_first_and_last: bool = True) -> list[nn.Module]:
    """Return the convolution and linear modules whose weights are binarized.

    With ``keep_first_and_last`` the first convolution and the last linear layer in
    ``model.modules()`` order stay full precision.
    """
    layers = [m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)]
    if not keep_first_and_last:
        return layers

    convs = [m for m in layers if not isinstance(m, nn.Linear)]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    kept = {id(convs[0])} if convs else set()
    if linears:
        kept.add(id(linears[-1]))
    return [m for m in layers if id(m) not in kept]


def binarizable_param_groups(
    model: nn.Module, *, keep_first_and_last: bool = True, **group_options: Any
) -> list[dict[str, Any]]:
    """Split the parameters of ``model`` into a binarized group and a full-precision group.

    Args:
        model: the network.
        keep_first_and_last: keep the first convolution and the last linear layer in full
            precision (default ``True``).
        **group_options: options copied into both groups (``lr``, ``weight_decay``, ...).

    Returns:
        ``[{"params": binarized weights, "binarize": True, ...},
        {"params": all other parameters, "binarize": False, ...}]``; a group with no
        tensors is left out.
    """
    binarized = [m.weight for m in binarizable_modules(model, keep_first_and_last)]
    binarized_ids = {id(p) for p in binarized}
    others = [p for p in model.parameters() if id(p) not in binarized_ids]

    groups = []
    if binarized:
        groups.append({"params": binarized, "binarize": True, **group_options})
    if others:
        groups.append({"params": others, "binarize": False, **group_options})
    return groups
