"""Data for the network figures: small CNNs trained on real CIFAR-10 images with BinarySAM.

Three methods train the same small network from the same initialisation and batches:
SGD (``rho = 0``, no quantizer), BinaryConnect (``rho = 0``, straight-through estimator) and
BQ-SAM (``rho > 0``, straight-through estimator), all with SGD and momentum as the base
optimizer. After every epoch the top Hessian eigenvalue of the training loss is measured
by Lanczos at the latent weights w and at the deployed point q(w). After training the
loss is sliced along filter-normalised random directions (Li et al., 2018), both
continuous f(w + t d) and quantized f(q(w + t d)).

Trained results are cached in ``<cache_dir>/network-<method>-<key>.pt``. The key hashes
every setting, the data files' sizes and modification times, the torch version and the
source of the code that produced the result, so a change to any of them retrains.

Example::

    from figures.network_data import QUICK_NETWORK, network_data

    data = network_data("data/cifar10-jpeg", QUICK_NETWORK, cache_dir="figures/out/cache")
    data["sharpness"]["BQ-SAM"]["latent"]        # top eigenvalue after each epoch
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import bqsam
from bqsam import BinarySAM, binarizable_param_groups
from bqsam.atomic import write_atomic
from bqsam.landscape import filter_normalized_direction, loss_slice_1d, loss_slice_2d
from bqsam.sharpness import lanczos_top_eigenvalue
from theory.cifar_logistic import CIFAR10_CLASSES, load_class_images

__all__ = [
    "NetworkSettings",
    "QUICK_NETWORK",
    "FULL_NETWORK",
    "METHODS",
    "FigureCNN",
    "load_cifar_subset",
    "network_data",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NetworkSettings:
    """Sizes and hyperparameters of the network figures.

    Attributes:
        train_per_class: training images per class (the first ones in file-name order).
        test_per_class: test images per class for the reported accuracy.
        epochs: training epochs.
        batch_size: minibatch size.
        lr: SGD learning rate (constant).
        momentum: SGD momentum.
        rho: BQ-SAM radius.
        measure_images: training images of the fixed batch for the sharpness and landscapes.
        lanczos_iterations: maximum Hessian-vector products per Lanczos run.
        slice_points: points of a 1-D slice, in t from -1 to 1.
        grid_points: points per axis of a 2-D slice, from -1 to 1.
        seed: seeds the initialisation, the batch order and the directions.
    """

    train_per_class: int
    test_per_class: int
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    rho: float
    measure_images: int
    lanczos_iterations: int
    slice_points: int
    grid_points: int
    seed: int = 0


QUICK_NETWORK = NetworkSettings(train_per_class=20, test_per_class=10, epochs=2, batch_size=50, lr=0.05,
                                momentum=0.9, rho=0.05, measure_images=100, lanczos_iterations=5,
                                slice_points=7, grid_points=5)
FULL_NETWORK = NetworkSettings(train_per_class=500, test_per_class=100, epochs=12, batch_size=100, lr=0.05,
                               momentum=0.9, rho=0.05, measure_images=1000, lanczos_iterations=20,
                               slice_points=41, grid_points=21)

# method name -> (quantizer, uses the BQ-SAM radius)
METHODS: dict[str, tuple[str | None, bool]] = {
    "SGD": (None, False),
    "BC": ("ste", False),
    "BQ-SAM": ("ste", True),
}

# Code whose behaviour a cached result depends on: a change to any of these files retrains.
_CACHED_CODE = ("bqsam.optim", "bqsam.quantizers", "bqsam.perturbation", "bqsam.sharpness", "bqsam.modules")
_CACHE_FORMAT = 1


class FigureCNN(nn.Module):
    """Conv(3->8) - ReLU - pool - Conv(8->16) - ReLU - pool - Linear(1024->32) - ReLU - Linear(32->10).

    No BatchNorm, so the loss depends on the weights only and a slice or a Hessian needs no
    running statistics. ``binarizable_param_groups`` binarizes conv2 and fc1.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.max_pool2d(F.relu(self.conv1(x)), 2)
        out = F.max_pool2d(F.relu(self.conv2(out)), 2)
        out = F.relu(self.fc1(out.flatten(1)))
        return self.fc2(out)


def load_cifar_subset(data_dir: str | os.PathLike, per_class: int, split: str) -> tuple[Tensor, Tensor]:
    """Load the first ``per_class`` images of each CIFAR-10 class as float32 (N, 3, 32, 32) in [0, 1].

    Returns the images and int64 labels in the official class order.
    """
    images, labels = [], []
    for label, name in enumerate(CIFAR10_CLASSES):
        block = load_class_images(data_dir, name, per_class, split)          # (count, 32, 32, 3)
        images.append(torch.from_numpy(block).permute(0, 3, 1, 2).float())
        labels.append(torch.full((per_class,), label, dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def _data_identity(data_dir: Path) -> list:
    """Return (name, size, modification time) of the files under data_dir, for the cache key."""
    root = Path(data_dir).resolve()
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file())
    return [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in files]


def _cache_key(method: str, settings: NetworkSettings, data_dir: Path) -> str:
    import importlib

    sources = [inspect.getsource(importlib.import_module(name)) for name in _CACHED_CODE]
    sources.append(inspect.getsource(inspect.getmodule(_cache_key)))
    description = {
        "format": _CACHE_FORMAT,
        "method": method,
        "settings": dataclasses.asdict(settings),
        "data": _data_identity(data_dir),
        "torch": torch.__version__,
        "bqsam": bqsam.__version__,
        "code": hashlib.sha256("\n".join(sources).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def _build_optimizer(model: nn.Module, method: str, settings: NetworkSettings) -> tuple[BinarySAM, list[bool]]:
    """Return the optimizer of ``method`` and, per parameter of the model, whether q binarizes it."""
    quantizer, uses_rho = METHODS[method]
    rho = settings.rho if uses_rho else 0.0
    groups = binarizable_param_groups(model)
    binarized_ids = {id(p) for p in groups[0]["params"]}
    mask = [id(p) in binarized_ids for p in model.parameters()]
    if quantizer is None:
        groups = [{"params": list(model.parameters())}]
    optimizer = BinarySAM(groups, torch.optim.SGD, rho=rho, quantizer=quantizer,
                          lr=settings.lr, momentum=settings.momentum, model=model)
    return optimizer, mask


def _top_eigenvalues(model: nn.Module, images: Tensor, labels: Tensor, mask: list[bool], iterations: int) -> tuple[float, float]:
    params = list(model.parameters())

    def loss_fn() -> Tensor:
        return F.cross_entropy(model(images), labels)

    latent = lanczos_top_eigenvalue(loss_fn, params, tol=1e-3, max_iter=iterations, at="latent")
    quantized = lanczos_top_eigenvalue(loss_fn, params, tol=1e-3, max_iter=iterations, at="quantized", binarized=mask)
    return latent.eigenvalue, quantized.eigenvalue


def _accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(dim=1) == labels).float().mean())


def _train(method: str, settings: NetworkSettings, data: dict) -> dict:
    """Train one method and return its final state, sharpness per epoch and accuracies."""
    torch.manual_seed(settings.seed)
    model = FigureCNN()
    optimizer, mask = _build_optimizer(model, method, settings)
    images, labels = data["train_images"], data["train_labels"]
    measure_images, measure_labels = data["measure_images"], data["measure_labels"]
    generator = torch.Generator().manual_seed(settings.seed)

    latent_history, quantized_history, loss_history = [], [], []
    latent, quantized = _top_eigenvalues(model, measure_images, measure_labels, mask, settings.lanczos_iterations)
    latent_history.append(latent)
    quantized_history.append(quantized)
    for epoch in range(settings.epochs):
        order = torch.randperm(len(labels), generator=generator)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            x, y = images[batch], labels[batch]

            def closure() -> Tensor:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            losses.append(float(optimizer.step(closure).detach()))
        latent, quantized = _top_eigenvalues(model, measure_images, measure_labels, mask, settings.lanczos_iterations)
        latent_history.append(latent)
        quantized_history.append(quantized)
        loss_history.append(float(np.mean(losses)))
        logger.info("%s epoch %d/%d: training loss %.4f, top Hessian eigenvalue %.4g at w, %.4g at q(w)",
                    method, epoch + 1, settings.epochs, loss_history[-1], latent, quantized)

    with optimizer.deployed():
        deployed_accuracy = _accuracy(model, data["test_images"], data["test_labels"])
    return {
        "state_dict": {name: value.detach().clone() for name, value in model.state_dict().items()},
        "mask": mask,
        "sharpness_latent": latent_history,
        "sharpness_quantized": quantized_history,
        "training_loss": loss_history,
        "test_accuracy_latent": _accuracy(model, data["test_images"], data["test_labels"]),
        "test_accuracy_deployed": deployed_accuracy,
    }


def _trained(method: str, settings: NetworkSettings, data: dict, data_dir: Path, cache_dir: Path | None) -> dict:
    """Return the training result of ``method`` from the cache, or train and cache it."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"network-{method}-{_cache_key(method, settings, data_dir)}.pt"
        if path.is_file():
            logger.info("%s: loading the trained network from the cache %s", method, path)
            return torch.load(path, weights_only=True)
    started = time.perf_counter()
    logger.info("%s: training on %d CIFAR-10 images for %d epochs", method, len(data["train_labels"]), settings.epochs)
    result = _train(method, settings, data)
    logger.info("%s: trained in %.1f s", method, time.perf_counter() - started)
    if path is not None:
        write_atomic(path, lambda stream: torch.save(result, stream))
    return result


def _slices(model: nn.Module, mask: list[bool], images: Tensor, labels: Tensor, settings: NetworkSettings) -> dict:
    params = list(model.parameters())

    def loss_fn() -> Tensor:
        return F.cross_entropy(model(images), labels)

    d1 = filter_normalized_direction(params, seed=settings.seed + 1)
    d2 = filter_normalized_direction(params, seed=settings.seed + 2)
    ts = torch.linspace(-1.0, 1.0, settings.slice_points, dtype=torch.float64)
    grid = torch.linspace(-1.0, 1.0, settings.grid_points, dtype=torch.float64)
    result = {"t": ts.numpy(), "grid": grid.numpy()}
    for loss in ("continuous", "quantized"):
        result[f"slice_{loss}"] = loss_slice_1d(loss_fn, params, d1, ts, loss=loss, binarized=mask).numpy()
        result[f"plane_{loss}"] = loss_slice_2d(loss_fn, params, d1, d2, grid, grid, loss=loss, binarized=mask).numpy()
    return result


def network_data(data_dir: str | os.PathLike, settings: NetworkSettings, cache_dir: str | os.PathLike | None = None) -> dict:
    """Train (or load) the three methods and measure their sharpness and loss slices.

    Returns ``{"settings", "methods", "sharpness", "landscape", "accuracy"}``:
    ``sharpness[method]`` contains ``epoch``, ``latent`` and ``quantized`` arrays (epoch 0 is
    the initialisation), ``landscape[method]`` the 1-D slices ``slice_continuous`` and
    ``slice_quantized`` over ``t`` and the 2-D slices ``plane_continuous`` and
    ``plane_quantized`` over ``grid x grid``, and ``accuracy[method]`` the test accuracy at
    w and at the deployed q(w). Raises FileNotFoundError when ``data_dir`` lacks the images.
    """
    data_dir = Path(data_dir)
    logger.info("network figures: loading %d training and %d test images per class from %s",
                settings.train_per_class, settings.test_per_class, data_dir)
    train_images, train_labels = load_cifar_subset(data_dir, settings.train_per_class, "train")
    test_images, test_labels = load_cifar_subset(data_dir, settings.test_per_class, "test")
    mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
    std = train_images.std(dim=(0, 2, 3), keepdim=True)
    train_images = (train_images - mean) / std
    test_images = (test_images - mean) / std

    # A fixed, class-balanced batch of training images for the sharpness and the slices.
    generator = torch.Generator().manual_seed(settings.seed + 7)
    measure = torch.randperm(len(train_labels), generator=generator)[: settings.measure_images]
    data = {
        "train_images": train_images, "train_labels": train_labels,
        "test_images": test_images, "test_labels": test_labels,
        "measure_images": train_images[measure], "measure_labels": train_labels[measure],
    }

    sharpness, landscape, accuracy = {}, {}, {}
    for method in METHODS:
        result = _trained(method, settings, data, data_dir, cache_dir)
        model = FigureCNN()
        model.load_state_dict(result["state_dict"])
        model.eval()
        sharpness[method] = {
            "epoch": np.arange(len(result["sharpness_latent"])),
            "latent": np.asarray(result["sharpness_latent"]),
            "quantized": np.asarray(result["sharpness_quantized"]),
        }
        accuracy[method] = {"latent": result["test_accuracy_latent"], "deployed": result["test_accuracy_deployed"]}
        logger.info("%s: loss slices on a %d-point line and a %dx%d grid",
                    method, settings.slice_points, settings.grid_points, settings.grid_points)
        landscape[method] = _slices(model, list(result["mask"]), data["measure_images"], data["measure_labels"], settings)

    return {
        "settings": dataclasses.asdict(settings),
        "methods": list(METHODS),
        "sharpness": sharpness,
        "landscape": landscape,
        "accuracy": accuracy,
        "train_images": len(train_labels),
        "measure_images": settings.measure_images,
    }
