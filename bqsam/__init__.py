"""bqsam: one-bit (binary-weight) network training with sharpness-aware minimization.

Implements the method of Liu, Bian and Zhang, "Binary Quantized Network Training With
Sharpness-Aware Minimization" (J. Sci. Comput., 2023): the one-bit quantizer and its
relaxation, SAM perturbations and gradient types, and the ``BinarySAM`` optimizer that
covers SGD, SAM, BinaryConnect, BinaryRelax and one-bit SAM.

Example:
    >>> import torch, bqsam
    >>> bqsam.binarize(torch.tensor([0.5, -1.5, 0.0, 1.0]))
    tensor([ 0.7500, -0.7500,  0.7500,  0.7500])
"""

from .modules import binarizable_modules, binarizable_param_groups
from .optim import BinarySAM
from .perturbation import sam_perturbation
from .quantizers import binarize, quantization_error, relax, scale_factor, sgn

__all__ = [
    "BinarySAM",
    "binarizable_modules",
    "binarizable_param_groups",
    "binarize",
    "quantization_error",
    "relax",
    "sam_perturbation",
    "scale_factor",
    "sgn",
]

__version__ = "0.1.0"
