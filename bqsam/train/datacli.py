"""``bqsam data check | prepare | download``: inspect, cache and fetch the data files.

``check`` names the format found for each split (official CIFAR-10 python batches, a zip
or folder of class-folder images, SVHN ``.mat`` files), reads every image and prints the
image count per class. ``prepare`` decodes each split once and stores it as two ``.npy``
files (uint8 images, int64 labels) in a cache folder. ``bqsam train --cache-dir`` (or the
``BQSAM_CACHE_DIR`` variable) then loads those instead of decoding JPEG files again.
``download`` fetches the official files (the CIFAR-10 python archive, extracted, or the
SVHN ``.mat`` files) over HTTP(S) into the data folder.

Example:
    bqsam data check --data-dir data/cifar10-jpeg
    bqsam data prepare --data-dir data/cifar10-jpeg --cache-dir data/cache
    bqsam data download --data-dir data/cifar10
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from . import data as data_module

__all__ = [
    "CIFAR10_ARCHIVE_URL",
    "SVHN_BASE_URL",
    "describe_source",
    "check_dataset",
    "prepare_cache",
    "download_file",
    "download_dataset",
    "configure_parser",
    "main",
]

logger = logging.getLogger(__name__)

CIFAR10_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# NOTE: this expected MD5 sum of the python archive was not checked against a download,
# because these machines have no network access. Pass --md5 to override it.
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
SVHN_BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
_CHUNK_BYTES = 1 << 20


def describe_source(dataset: str, root: Path, split: str) -> str:
    """Return a short description of the files ``load_dataset`` reads for one split."""
    if dataset == "svhn":
        path = root if root.is_file() else root / f"{split}_32x32.mat"
        return f"SVHN MATLAB file {path}"
    if root.is_file():
        return f"zip of image folders {root}"
    for candidate in (root / "cifar-10-batches-py", root):
        if (candidate / "batches.meta").is_file() or (candidate / "test_batch").is_file():
            return f"CIFAR-10 python batches in {candidate}"
    if (root / f"{split}.zip").is_file():
        return f"zip of image folders {root / f'{split}.zip'}"
    if (root / split).is_dir():
        return f"image folders {root / split}"
    return "nothing found"


def check_dataset(dataset: str, root: str | Path, splits: tuple[str, ...] = ("train", "test")) -> list[dict[str, Any]]:
    """Read every image of each split and return format, count and per-class counts."""
    root = Path(root)
    classes = data_module.CIFAR10_CLASSES if dataset == "cifar10" else data_module.SVHN_CLASSES
    results = []
    for split in splits:
        started = time.perf_counter()
        images, labels = data_module.load_dataset(dataset, root, split)
        counts = np.bincount(labels, minlength=len(classes))
        results.append(
            {
                "split": split,
                "format": describe_source(dataset, root, split),
                "images": int(len(labels)),
                "shape": list(images.shape[1:]),
                "per_class": {name: int(count) for name, count in zip(classes, counts)},
                "seconds": time.perf_counter() - started,
            }
        )
    return results


def prepare_cache(
    dataset: str, root: str | Path, cache_dir: str | Path, splits: tuple[str, ...] = ("train", "test")
) -> list[Path]:
    """Decode each full split once into ``cache_dir``; return the image cache files."""
    cache_dir = Path(cache_dir)
    for split in splits:
        data_module.load_dataset(dataset, root, split, cache_dir=cache_dir)
    # load_dataset names a full-split cache "<dataset>-<split>-all-<key>.images.npy".
    return sorted(cache_dir.glob(f"{dataset}-*-all-*.images.npy"))


def download_file(url: str, target: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` (via ``target.part``) and check its MD5 sum if given.

    Raises:
        ValueError: when the download fails or the MD5 sum differs; no target is left behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.md5()
    size = 0
    logger.info("downloading %s to %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as stream:
            while chunk := response.read(_CHUNK_BYTES):
                stream.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise ValueError(f"download of {url} failed ({error}); check the address and the network") from error
    if md5 is not None and digest.hexdigest() != md5.lower():
        partial.unlink(missing_ok=True)
        raise ValueError(
            f"MD5 mismatch for {url}: got {digest.hexdigest()}, expected {md5}; the file is "
            "corrupt or not the official one"
        )
    os.replace(partial, target)
    logger.info("downloaded %s (%d bytes)", target, size)
    return target


def download_dataset(
    dataset: str, data_dir: str | Path, url: str | None = None, md5: str | None = None
) -> list[Path]:
    """Fetch the official files of ``dataset`` into ``data_dir``; return what is there.

    CIFAR-10: the python archive, extracted to ``data_dir/cifar-10-batches-py``; ``url`` is
    the archive's address and ``md5`` its sum (default: the official ones). SVHN:
    ``train_32x32.mat`` and ``test_32x32.mat``; ``url`` is the folder address and ``md5``
    is not checked. Files already present are kept.
    """
    data_dir = Path(data_dir)
    if dataset == "cifar10":
        batches = data_dir / "cifar-10-batches-py"
        if (batches / "batches.meta").is_file():
            logger.info("%s already exists; nothing to download", batches)
            return [batches]
        archive = download_file(
            url or CIFAR10_ARCHIVE_URL, data_dir / "cifar-10-python.tar.gz",
            md5 or (CIFAR10_ARCHIVE_MD5 if url is None else None),
        )
        with tarfile.open(archive, "r:gz") as bundle:
            # The "data" filter rejects absolute paths, parent references and special files.
            bundle.extractall(data_dir, filter="data")
        if not (batches / "batches.meta").is_file():
            shutil.rmtree(batches, ignore_errors=True)
            raise ValueError(f"{archive} did not contain cifar-10-batches-py/batches.meta; not the CIFAR-10 archive")
        archive.unlink()
        return [batches]

    base = (url or SVHN_BASE_URL).rstrip("/") + "/"
    paths = []
    for split in ("train", "test"):
        target = data_dir / f"{split}_32x32.mat"
        if not target.is_file():
            download_file(base + target.name, target, md5=None)
        paths.append(target)
    return paths


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``check``, ``prepare`` and ``download`` subcommands to ``parser``."""
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    for name, help_text in (
        ("check", "report the format found for each split and count the images per class"),
        ("prepare", "decode each split once into .npy cache files for fast loading"),
        ("download", "download the official CIFAR-10 python archive or SVHN .mat files"),
    ):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("--data-dir", required=True, help="folder with the data set files")
        action.add_argument("--dataset", default="cifar10", metavar="cifar10|svhn",
                            help="data set (default: %(default)s)")
        if name == "prepare":
            action.add_argument("--cache-dir", required=True,
                                help="folder for the cache files; pass it to `bqsam train --cache-dir`")
        if name == "download":
            action.add_argument("--url", default=None,
                                help="address of the CIFAR-10 archive or of the SVHN folder "
                                "(default: the official one)")
            action.add_argument("--md5", default=None, help="expected MD5 sum of the CIFAR-10 archive")


def main(args: argparse.Namespace) -> int:
    """Run ``bqsam data ACTION``; returns 0, or 2 for missing or malformed files."""
    command = getattr(args, "data_command", None)
    if command is None:
        logger.error("missing action: use `bqsam data check`, `prepare` or `download`")
        return 2
    if args.dataset not in data_module.DATASETS:
        logger.error("dataset=%r is invalid; valid choices: %s", args.dataset, ", ".join(data_module.DATASETS))
        return 2
    try:
        if command == "check":
            for result in check_dataset(args.dataset, args.data_dir):
                per_class = ", ".join(f"{name} {count}" for name, count in result["per_class"].items())
                print(f"{result['split']}: {result['format']}")
                print(f"  {result['images']} images of shape {tuple(result['shape'])}, read in "
                      f"{result['seconds']:.1f} s")
                print(f"  per class: {per_class}")
        elif command == "download":
            for path in download_dataset(args.dataset, args.data_dir, args.url, args.md5):
                print(f"ready: {path}")
        else:
            for path in prepare_cache(args.dataset, args.data_dir, args.cache_dir):
                print(f"cached: {path} ({path.stat().st_size:,} bytes)")
            print(f"train with: bqsam train --data-dir {args.data_dir} --cache-dir {args.cache_dir} ...")
    except (FileNotFoundError, ValueError) as error:
        logger.error("%s", error)
        return 2
    return 0
