"""Networks for 32x32 images (CIFAR-10, SVHN) and the layers kept in full precision.

``build_model(name)`` returns one of:

=========  ==========================================================  ===============
name       architecture                                                parameters (10
                                                                       classes, default BN)
=========  ==========================================================  ===============
resnet20   He et al. (2016) CIFAR ResNet, 3 stages of 3 basic blocks,  269,722
           16/32/64 channels, parameter-free shortcut (option A)
resnet18   ResNet-18 with a 3x3 stride-1 stem and no max pooling,      11,173,962
           4 stages of 2 blocks, 64..512 channels, 1x1 projection
           shortcuts (option B)
vgg11      VGG-11 with BatchNorm after every convolution, 5 poolings   9,228,362
           to 1x1x512, one linear classifier
vgg16      VGG-16, same design                                         14,724,042
smallcnn   two 3x3 convolutions and two linear layers, no BatchNorm    17,962
           unless requested (fast tests, distributed checks)
mlp        3072-64-64-classes perceptron, no BatchNorm unless          201,482
           requested
=========  ==========================================================  ===============

The counts are checked by the tests. One-bit training keeps the first convolution (its
input is the raw image) and the last linear layer (its output is the logits) in full
precision. ``first_and_last(model)`` returns those two modules, the same ones that
``bqsam.binarizable_param_groups(model, keep_first_and_last=True)`` puts in the
full-precision group: the first ``nn.Conv2d`` and the last ``nn.Linear`` in
``model.modules()`` order. Every model here registers its stem convolution first and its
classifier last, so these are the layers that touch the input and the output. ``mlp`` has
no convolution, so only its last layer stays in full precision.

Example:
    >>> import torch
    >>> from bqsam.train.models import build_model, first_and_last
    >>> model = build_model("resnet20")
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> first, last = first_and_last(model)
    >>> first is model.conv1, last is model.fc
    (True, True)
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MODEL_NAMES",
    "ShortcutA",
    "BasicBlock",
    "CifarResNet",
    "VGG",
    "SmallCNN",
    "MLP",
    "resnet20",
    "resnet18",
    "vgg11",
    "vgg16",
    "build_model",
    "first_and_last",
    "count_parameters",
]


def _norm2d(channels: int, batchnorm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


def _conv3x3(in_channels: int, out_channels: int, stride: int, batchnorm: bool) -> nn.Conv2d:
    # BatchNorm's shift makes a convolution bias redundant, so it only exists without BN.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not batchnorm)


def _init_weights(model: nn.Module) -> None:
    """Initialise convolutions as He et al. (2015) do for ReLU networks, BN as identity."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ShortcutA(nn.Module):
    """Parameter-free shortcut (option A of He et al. 2016) for a block that downsamples.

    Takes every second pixel in both directions and pads the channel dimension with zeros,
    ``extra // 2`` channels before and the rest after, to reach ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection: ``relu(F(x) + shortcut(x))``.

    ``shortcut`` chooses the connection used when the block changes the resolution or the
    width: ``"A"`` (``ShortcutA``, no parameters) or ``"B"`` (1x1 convolution and BN).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride, batchnorm)
        self.bn1 = _norm2d(out_channels, batchnorm)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, batchnorm)
        self.bn2 = _norm2d(out_channels, batchnorm)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batchnorm),
                _norm2d(out_channels, batchnorm),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, stages of ``BasicBlock``, global average pool, linear.

    Stage ``s`` has ``blocks[s]`` blocks of ``widths[s]`` channels; every stage after the
    first starts with a stride-2 block.
    """

    def __init__(
        self,
        blocks: tuple[int, ...],
        widths: tuple[int, ...],
        *,
        shortcut: str,
        num_classes: int = 10,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut={shortcut!r} must be 'A' or 'B'")
        self.conv1 = _conv3x3(3, widths[0], 1, batchnorm)
        self.bn1 = _norm2d(widths[0], batchnorm)
        stages = []
        in_channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths)):
            stride = 1 if index == 0 else 2
            layers = []
            for block_index in range(count):
                layers.append(BasicBlock(in_channels, width, stride if block_index == 0 else 1, shortcut, batchnorm))
                in_channels = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


_VGG_LAYERS = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG for 32x32 inputs: 3x3 convolutions (each followed by BN and ReLU) and 2x2 max
    pools from ``layers`` (``"M"`` marks a pool), reaching 1x1x512, then one linear layer."""

    def __init__(self, layers: tuple[int | str, ...], *, num_classes: int = 10, batchnorm: bool = True) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        in_channels = 3
        for item in layers:
            if item == "M":
                modules.append(nn.MaxPool2d(2))
            else:
                modules += [_conv3x3(in_channels, int(item), 1, batchnorm), _norm2d(int(item), batchnorm), nn.ReLU(inplace=True)]
                in_channels = int(item)
        self.features = nn.Sequential(*modules)
        self.classifier = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class SmallCNN(nn.Module):
    """Conv(3->8) - ReLU - pool - Conv(8->16) - ReLU - pool - Linear(1024->16) - ReLU - Linear.

    A few milliseconds per batch on a CPU; its middle convolution and first linear layer
    are the binarized ones. BatchNorm after each hidden layer only when requested.
    """

    def __init__(self, num_classes: int = 10, batchnorm: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 8, 1, batchnorm)
        self.bn1 = _norm2d(8, batchnorm)
        self.conv2 = _conv3x3(8, 16, 1, batchnorm)
        self.bn2 = _norm2d(16, batchnorm)
        self.fc1 = nn.Linear(16 * 8 * 8, 16, bias=not batchnorm)
        self.bn3 = nn.BatchNorm1d(16) if batchnorm else nn.Identity()
        self.fc2 = nn.Linear(16, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        out = F.max_pool2d(F.relu(self.bn2(self.conv2(out))), 2)
        out = F.relu(self.bn3(self.fc1(out.flatten(1))))
        return self.fc2(out)


class MLP(nn.Module):
    """Perceptron 3072 - 64 - 64 - classes with ReLU, BatchNorm only when requested.

    It has no convolution, so ``binarizable_param_groups`` keeps only its last layer in
    full precision and binarizes the first.
    """

    def __init__(self, num_classes: int = 10, batchnorm: bool = False, hidden: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = 3 * 32 * 32
        for _ in range(2):
            layers.append(nn.Linear(in_features, hidden, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU(inplace=True))
            in_features = hidden
        layers.append(nn.Linear(in_features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def resnet20(num_classes: int = 10, batchnorm: bool = True) -> CifarResNet:
    """ResNet-20 of He et al. (2016) with option-A shortcuts: 269,722 parameters (0.27M).

    He et al. report 0.27M parameters for this network. Option A adds no parameters,
    whereas a 1x1 projection (option B) would add three convolutions that get binarized.
    """
    return CifarResNet((3, 3, 3), (16, 32, 64), shortcut="A", num_classes=num_classes, batchnorm=batchnorm)


def resnet18(num_classes: int = 10, batchnorm: bool = True) -> CifarResNet:
    """ResNet-18 for CIFAR (3x3 stem, no max pool, projection shortcuts): 11,173,962 parameters."""
    return CifarResNet((2, 2, 2, 2), (64, 128, 256, 512), shortcut="B", num_classes=num_classes, batchnorm=batchnorm)


def vgg11(num_classes: int = 10, batchnorm: bool = True) -> VGG:
    """VGG-11 with BatchNorm for CIFAR: 9,228,362 parameters."""
    return VGG(_VGG_LAYERS["vgg11"], num_classes=num_classes, batchnorm=batchnorm)


def vgg16(num_classes: int = 10, batchnorm: bool = True) -> VGG:
    """VGG-16 with BatchNorm for CIFAR: 14,724,042 parameters."""
    return VGG(_VGG_LAYERS["vgg16"], num_classes=num_classes, batchnorm=batchnorm)


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    # name: (builder, BatchNorm by default)
    "resnet20": (resnet20, True),
    "resnet18": (resnet18, True),
    "vgg11": (vgg11, True),
    "vgg16": (vgg16, True),
    "smallcnn": (SmallCNN, False),
    "mlp": (MLP, False),
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, num_classes: int = 10, batchnorm: bool | None = None) -> nn.Module:
    """Build the model ``name`` (one of ``MODEL_NAMES``) for 32x32 RGB inputs.

    ``batchnorm=None`` takes the model's usual choice: BatchNorm for the ResNets and VGGs,
    none for ``smallcnn`` and ``mlp``. ``batchnorm=False`` replaces every BatchNorm by the
    identity and gives the convolutions a bias.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name={name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
    if batchnorm is not None and not isinstance(batchnorm, bool):
        raise ValueError(f"batchnorm={batchnorm!r} must be True, False or None")
    builder, default_batchnorm = _BUILDERS[name]
    return builder(num_classes=num_classes, batchnorm=default_batchnorm if batchnorm is None else batchnorm)


def first_and_last(model: nn.Module) -> tuple[nn.Conv2d | None, nn.Linear]:
    """Return the first ``nn.Conv2d`` (None without convolutions) and the last ``nn.Linear``.

    These are the modules that ``binarizable_param_groups(model, keep_first_and_last=True)``
    keeps in full precision.
    """
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to keep as the last layer")
    return (convolutions[0] if convolutions else None), linears[-1]


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameter values of ``model``."""
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
