"""Two-class logistic regression on real CIFAR-10 pixels, with L computed exactly.

The problem is ``theory.problems.Logistic`` on flattened 32x32x3 images of two classes,
pixels scaled to [0, 1] (optionally standardised per pixel), labels -1 for the first
class and +1 for the second. Its smoothness constant L = lambda_max(X^T X)/(4N) + c is
exact up to rounding, so the convergence bounds can be checked on real data.

Accepted layouts for ``data_dir`` (``split`` is "train" or "test"):

- a zip file whose entries are ``<split>/<class>/<name>.jpg`` or ``<class>/<name>.jpg``,
- a folder holding ``<split>.zip`` with those entries,
- a folder holding ``<split>/<class>/`` image folders, or ``<class>/`` image folders.

Images are taken in sorted file-name order, the first ``n_per_class`` of each class.

Example::

    from theory.cifar_logistic import load_cifar_two_class

    problem = load_cifar_two_class("data/cifar10-jpeg", n_per_class=200)
    problem.n_samples, problem.dim, problem.L       # (400, 3072, ...)
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image

from theory.problems import Logistic

__all__ = ["CIFAR10_CLASSES", "load_cifar_two_class", "load_class_images"]

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
IMAGE_SHAPE = (32, 32, 3)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
EXPECTED_LAYOUT = (
    "expected a zip of '<split>/<class>/<name>.jpg' entries, a folder holding '<split>.zip', "
    "or a folder of '<split>/<class>/' or '<class>/' image folders "
    "(for example the CIFAR-10 JPEG archive train.zip)"
)


def _decode(data: bytes, source: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    except (OSError, ValueError) as error:
        raise ValueError(f"failed to decode image {source}: {error}") from error
    if pixels.shape != IMAGE_SHAPE:
        raise ValueError(f"image {source} has shape {pixels.shape}, expected {IMAGE_SHAPE} (CIFAR-10 size)")
    return pixels / 255.0


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _read_zip(path: Path, split: str, class_name: str, count: int) -> list[np.ndarray]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot open {path} as a zip archive ({error}); {EXPECTED_LAYOUT}") from error
    with archive:
        names = archive.namelist()
        for prefix in (f"{split}/{class_name}/", f"{class_name}/"):
            members = sorted(name for name in names if name.startswith(prefix) and _is_image(name))
            if members:
                break
        else:
            raise ValueError(
                f"no images of class {class_name!r} in {path}: found no entries under "
                f"'{split}/{class_name}/' or '{class_name}/'; {EXPECTED_LAYOUT}"
            )
        if len(members) < count:
            raise ValueError(
                f"{path} holds {len(members)} images of class {class_name!r}, fewer than the "
                f"n_per_class={count} requested"
            )
        return [_decode(archive.read(name), f"{path}:{name}") for name in members[:count]]


def _read_folder(folder: Path, class_name: str, count: int) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))
    if len(files) < count:
        raise ValueError(
            f"{folder} holds {len(files)} images of class {class_name!r}, fewer than the "
            f"n_per_class={count} requested"
        )
    return [_decode(p.read_bytes(), str(p)) for p in files[:count]]


def load_class_images(
    data_dir: Union[str, os.PathLike], class_name: str, count: int, split: str = "train"
) -> np.ndarray:
    """Load the first ``count`` images of one class as an array (count, 32, 32, 3) in [0, 1]."""
    root = Path(data_dir)
    if not root.exists():
        raise FileNotFoundError(f"CIFAR-10 data not found at {root}; {EXPECTED_LAYOUT}")
    if root.is_file():
        images = _read_zip(root, split, class_name, count)
    elif (root / f"{split}.zip").is_file():
        images = _read_zip(root / f"{split}.zip", split, class_name, count)
    elif (root / split / class_name).is_dir():
        images = _read_folder(root / split / class_name, class_name, count)
    elif (root / class_name).is_dir():
        images = _read_folder(root / class_name, class_name, count)
    else:
        raise FileNotFoundError(
            f"no images of class {class_name!r} for split {split!r} under {root}; {EXPECTED_LAYOUT}"
        )
    return np.stack(images)


def load_cifar_two_class(
    data_dir: Union[str, os.PathLike],
    classes: Sequence[str] = ("airplane", "automobile"),
    n_per_class: int = 250,
    split: str = "train",
    *,
    c: float = 1e-3,
    standardize: bool = True,
) -> Logistic:
    """Build a logistic regression problem from two CIFAR-10 classes.

    Args:
        data_dir: a zip or folder in one of the layouts listed in the module docstring.
        classes: two distinct CIFAR-10 class names; the first gets label -1, the second +1.
        n_per_class: images per class (the first ones in sorted file-name order).
        split: "train" or "test".
        c: l2 weight of the logistic loss (>= 0), which is also mu.
        standardize: subtract each pixel's mean and divide by its standard deviation over
            the loaded images (pixels with zero spread are only centred).

    Returns:
        ``Logistic`` with X of shape (2 n_per_class, 3072), float64, and
        L = lambda_max(X^T X)/(4N) + c computed by an eigendecomposition.
    """
    if len(classes) != 2 or classes[0] == classes[1]:
        raise ValueError(f"classes must be two distinct class names, got {tuple(classes)}")
    unknown = [name for name in classes if name not in CIFAR10_CLASSES]
    if unknown:
        raise ValueError(f"unknown CIFAR-10 class {unknown[0]!r}; valid names: {', '.join(CIFAR10_CLASSES)}")
    if not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not c >= 0:
        raise ValueError(f"c (the l2 weight) must be >= 0, got {c}")

    logger.info("loading %d images of each of %s (%s split) from %s", n_per_class, classes, split, data_dir)
    blocks = [load_class_images(data_dir, name, n_per_class, split) for name in classes]
    features = np.concatenate(blocks).reshape(2 * n_per_class, -1)
    if standardize:
        features = features - features.mean(axis=0)
        spread = features.std(axis=0)
        features = features / np.where(spread > 0, spread, 1.0)
    labels = np.concatenate([-np.ones(n_per_class), np.ones(n_per_class)])
    return Logistic(torch.from_numpy(features), torch.from_numpy(labels), c=c)
