"""Data and model inputs of a training run, built from a :class:`TrainConfig`.

A thin layer over :mod:`bqsam.train.data` and :mod:`bqsam.train.models`: it loads the two
splits a run needs, builds the training :class:`~bqsam.train.data.BatchLoader` for this
process's shard and turns uint8 test images into normalised model inputs.

Example (needs the data files)::

    from bqsam.train.config import TrainConfig
    from bqsam.train.inputs import load_splits
    splits = load_splits(TrainConfig(data_dir="data/cifar10-jpeg", train_subset=200).resolved())
    print(splits.train_images.shape)  # torch.Size([200, 3, 32, 32])
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from . import data as data_module
from .config import TrainConfig

__all__ = ["Splits", "load_splits", "splits_from_tensors", "train_loader", "prepare_inputs", "build_model"]

NUM_CLASSES = {"cifar10": 10, "svhn": 10}


@dataclass
class Splits:
    """Training and test images (uint8, ``(N, 3, 32, 32)``) and labels (int64) of a run."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int


def _cache_dir(config: TrainConfig) -> str | None:
    return config.cache_dir or os.environ.get("BQSAM_CACHE_DIR") or None


def load_splits(config: TrainConfig) -> Splits:
    """Load the training split (``train_subset`` images) and test split (``test_subset``)."""
    cache_dir = _cache_dir(config)
    train_images, train_labels = data_module.load_dataset(
        config.dataset, config.data_dir, "train",
        subset=config.train_subset, seed=config.seed, cache_dir=cache_dir,
    )
    test_images, test_labels = data_module.load_dataset(
        config.dataset, config.data_dir, "test",
        subset=config.test_subset, seed=config.seed, cache_dir=cache_dir,
    )
    return Splits(
        torch.from_numpy(train_images), torch.from_numpy(train_labels),
        torch.from_numpy(test_images), torch.from_numpy(test_labels),
        NUM_CLASSES[config.dataset],
    )


def splits_from_tensors(
    config: TrainConfig,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> Splits:
    """Wrap in-memory uint8 images and labels; ``train_subset``/``test_subset`` take a prefix."""
    def take(tensor: torch.Tensor, count: int | None) -> torch.Tensor:
        return tensor if count is None else tensor[:count]

    return Splits(
        take(torch.as_tensor(train_images), config.train_subset),
        take(torch.as_tensor(train_labels).long(), config.train_subset),
        take(torch.as_tensor(test_images), config.test_subset),
        take(torch.as_tensor(test_labels).long(), config.test_subset),
        NUM_CLASSES[config.dataset],
    )


def train_loader(
    config: TrainConfig, splits: Splits, rank: int, world_size: int, device: torch.device
) -> data_module.BatchLoader:
    """Return the shuffled, augmented loader of this process's part of every global batch."""
    return data_module.BatchLoader(
        splits.train_images,
        splits.train_labels,
        batch_size=config.batch_size,
        dataset=config.dataset,
        train=True,
        seed=config.seed,
        augment=config.augment,
        rank=rank,
        world_size=world_size,
        device=device,
    )


def prepare_inputs(images: torch.Tensor, dataset: str, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Return normalised float32 model inputs on ``device`` for uint8 or float ``images``."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = data_module.normalize(images, dataset)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def build_model(name: str, num_classes: int) -> nn.Module:
    """Build the named network of :mod:`bqsam.train.models`."""
    from . import models

    return models.build_model(name, num_classes=num_classes)
