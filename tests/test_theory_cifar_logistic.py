"""Tests for theory.cifar_logistic on the real CIFAR-10 JPEG files and on small fake layouts."""

import io
import math
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from theory.cifar_logistic import load_cifar_two_class


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_real_two_class_problem(cifar10_dir):
    problem = load_cifar_two_class(cifar10_dir, n_per_class=20, c=1e-2)
    assert (problem.n_samples, problem.dim) == (40, 3072)
    assert problem.X.dtype == torch.float64
    torch.testing.assert_close(problem.targets, torch.cat([-torch.ones(20), torch.ones(20)]).double())
    torch.testing.assert_close(problem.X.mean(dim=0), torch.zeros(3072, dtype=torch.float64), rtol=0, atol=1e-12)
    top_singular = float(torch.linalg.matrix_norm(problem.X, ord=2))
    assert math.isclose(problem.L, top_singular**2 / (4 * 40) + 1e-2, rel_tol=1e-12)


def test_real_pixels_scaled_to_unit_interval(cifar10_dir):
    problem = load_cifar_two_class(cifar10_dir, classes=("ship", "truck"), n_per_class=5, split="test", standardize=False)
    assert float(problem.X.min()) >= 0.0
    assert float(problem.X.max()) <= 1.0
    assert float(problem.X.max()) > 0.5


def test_folder_of_class_folders(tmp_path):
    for name, value in [("cat", 0), ("dog", 255)]:
        (tmp_path / "train" / name).mkdir(parents=True)
        for index in range(3):
            (tmp_path / "train" / name / f"{index:04d}.png").write_bytes(png_bytes(value))
    problem = load_cifar_two_class(tmp_path, classes=("cat", "dog"), n_per_class=3, standardize=False)
    assert float(problem.X[:3].max()) == 0.0
    assert float(problem.X[3:].min()) == 1.0


def test_missing_data_names_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cifar_two_class(missing, n_per_class=2)


def test_zip_without_class_names_layout(tmp_path):
    archive = tmp_path / "train.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("images/0000.png", png_bytes(10))
    with pytest.raises(ValueError, match=r"no images of class 'airplane'.*train\.zip.*expected"):
        load_cifar_two_class(tmp_path, n_per_class=1)


def test_wrong_image_size_is_rejected(tmp_path):
    folder = tmp_path / "airplane"
    folder.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, format="PNG")
    (folder / "0000.png").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match=r"\(8, 8, 3\)"):
        load_cifar_two_class(tmp_path, n_per_class=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": ("airplane", "airplane")}, "distinct"),
        ({"classes": ("airplane", "plane")}, "'plane'"),
        ({"n_per_class": 0}, "got 0"),
        ({"split": "valid"}, "'valid'"),
        ({"c": -1.0}, "got -1.0"),
    ],
)
def test_invalid_arguments_raise_value_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_cifar_two_class(tmp_path, **kwargs)
