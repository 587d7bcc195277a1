"""Shared fixtures: float64 as the default dtype for a module, and the real CIFAR-10 files."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def float64_default():
    """Make float64 the default dtype for one test module, then restore the previous one."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def cifar10_jpeg_dir() -> Path:
    """Folder with the real CIFAR-10 train.zip and test.zip, or BQSAM_CIFAR10_DIR if set."""
    return Path(os.environ.get("BQSAM_CIFAR10_DIR", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"))


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    path = cifar10_jpeg_dir()
    if not (path / "train.zip").is_file() or not (path / "test.zip").is_file():
        pytest.skip(f"real CIFAR-10 zips not found in {path}; set BQSAM_CIFAR10_DIR to their folder")
    return path
