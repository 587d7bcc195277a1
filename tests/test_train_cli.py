"""Tests of `bqsam train`, `bqsam export` and `bqsam data` as a user runs them."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bqsam.cli import main as bqsam_main
from bqsam.train.data import CIFAR10_CLASSES

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def train_arguments(data_dir, out, *extra):
    return [
        "train", "--method", "bqsam", "--data-dir", str(data_dir), "--model", "smallcnn",
        "--epochs", "3", "--train-subset", "200", "--test-subset", "100", "--batch-size", "50",
        "--threads", "1", "--out", str(out), *extra,
    ]


# ------------------------------------------------------------------ resume with stored settings
def test_resume_with_only_out_uses_stored_settings(cifar10_dir, tmp_path, caplog):
    out = tmp_path / "run"
    arguments = train_arguments(cifar10_dir, out)
    arguments[arguments.index("--epochs") + 1] = "1"
    assert bqsam_main(arguments) == 0
    weights = torch.load(out / "checkpoint.pt", weights_only=True)["model"]

    assert bqsam_main(["train", "--out", str(out), "--resume"]) == 0
    again = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    for name, value in weights.items():
        assert torch.equal(again[name], value), name


def test_resume_rejects_a_changed_option(cifar10_dir, tmp_path, caplog):
    out = tmp_path / "run"
    arguments = train_arguments(cifar10_dir, out)
    arguments[arguments.index("--epochs") + 1] = "1"
    assert bqsam_main(arguments) == 0

    with caplog.at_level(logging.ERROR):
        assert bqsam_main(["train", "--out", str(out), "--resume", "--lr", "0.5"]) == 2
    assert "lr" in caplog.text


# ------------------------------------------------------------------ train and export
def test_train_then_export(cifar10_dir, tmp_path, capsys):
    out = tmp_path / "run"
    arguments = train_arguments(cifar10_dir, out)
    arguments[arguments.index("--epochs") + 1] = "1"
    assert bqsam_main(arguments) == 0
    for name in ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))

    assert bqsam_main(["export", str(out)]) == 0
    report = capsys.readouterr().out
    assert "binarized layers: 2 tensors, 17,536 weights" in report
    assert (out / "model-binary.npz").is_file()


def test_resume_after_sigkill_gives_same_weights(cifar10_dir, tmp_path):
    straight = tmp_path / "straight"
    assert bqsam_main(train_arguments(cifar10_dir, straight)) == 0

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "bqsam.cli", *train_arguments(cifar10_dir, killed)],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (killed / "checkpoint.pt").exists():
            assert process.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    epoch_at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"]
    assert epoch_at_kill < 3

    assert bqsam_main(train_arguments(cifar10_dir, killed, "--resume")) == 0
    expected = torch.load(straight / "checkpoint.pt", weights_only=True)
    resumed = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert resumed["epoch"] == 3
    for name, value in expected["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    for key in ("momentum_buffer",):
        for index, state in expected["optimizer"]["state"].items():
            assert torch.equal(resumed["optimizer"]["state"][index][key], state[key])


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--method", "adamw", "method='adamw' is invalid"),
        ("--rho", "-1", "rho=-1.0 is out of range; expected >= 0"),
        ("--lr", "0", "lr=0.0 is out of range; expected > 0"),
        ("--lam", "-0.5", "lam=-0.5 is out of range"),
        ("--quantizer", "relax", "quantizer='relax' is invalid for method 'bc'"),
        ("--epochs", "0", "epochs=0 is out of range"),
        ("--model", "resnet56", "model='resnet56' is invalid"),
        ("--keep-float", "middle", "keep_float='middle' is invalid"),
    ],
)
def test_train_rejects_invalid_arguments_before_work(option, value, message, tmp_path, caplog):
    out = tmp_path / "never"
    arguments = ["train", "--method", "bc", "--data-dir", str(tmp_path), "--out", str(out), option, value]
    assert bqsam_main(arguments) == 2
    assert message in caplog.text
    assert not out.exists()


def test_train_reports_missing_data(tmp_path, caplog):
    out = tmp_path / "run"
    assert bqsam_main(["train", "--data-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "data root not found" in caplog.text


def test_train_diverging_exits_with_message(cifar10_dir, tmp_path, caplog):
    out = tmp_path / "run"
    arguments = train_arguments(cifar10_dir, out, "--lr", "1e30")
    arguments[arguments.index("--method") + 1] = "sgd"
    assert bqsam_main(arguments) == 1
    assert "training loss is" in caplog.text
    assert "Lower --lr (now 1e+30)" in caplog.text
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


# ------------------------------------------------------------------ data
@pytest.fixture
def image_folder(tmp_path):
    """A CIFAR-10 class-folder tree with 2 training and 1 test image per class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for name in CIFAR10_CLASSES:
            folder = tmp_path / "images" / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:04d}.png")
    return tmp_path / "images"


def test_data_check_reports_format_and_counts(image_folder, capsys):
    assert bqsam_main(["data", "check", "--data-dir", str(image_folder)]) == 0
    output = capsys.readouterr().out
    assert f"train: image folders {image_folder / 'train'}" in output
    assert "20 images of shape (3, 32, 32)" in output
    assert "10 images of shape (3, 32, 32)" in output
    assert "airplane 2, automobile 2" in output


def test_data_prepare_builds_cache_used_by_train(image_folder, tmp_path, capsys, caplog):
    cache = tmp_path / "cache"
    assert bqsam_main(["data", "prepare", "--data-dir", str(image_folder), "--cache-dir", str(cache)]) == 0
    assert len(list(cache.glob("*.images.npy"))) == 2
    assert "cached:" in capsys.readouterr().out

    caplog.set_level(logging.INFO, logger="bqsam.train.data")
    arguments = [
        "train", "--method", "bc", "--data-dir", str(image_folder), "--cache-dir", str(cache),
        "--model", "smallcnn", "--epochs", "1", "--batch-size", "10", "--threads", "1",
        "--out", str(tmp_path / "run"),
    ]
    assert bqsam_main(arguments) == 0
    assert caplog.text.count("from cache") == 2


def test_data_check_names_missing_files(tmp_path, caplog):
    assert bqsam_main(["data", "check", "--data-dir", str(tmp_path)]) == 2
    assert "no CIFAR-10 data found" in caplog.text
    assert bqsam_main(["data"]) == 2
    assert "missing action" in caplog.text


@pytest.fixture
def archive_server(tmp_path):
    """An http.server on 127.0.0.1 serving a small CIFAR-10 python archive."""
    import functools
    import hashlib
    import http.server
    import tarfile
    import threading

    from bqsam.train.data import write_cifar_python_batches

    rng = np.random.default_rng(1)
    batches = tmp_path / "source" / "cifar-10-batches-py"
    for split, count in (("train", 20), ("test", 10)):
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        write_cifar_python_batches(images, np.arange(count) % 10, batches, split=split)
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(batches, arcname="cifar-10-batches-py")

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    yield url, hashlib.md5(archive.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()


def test_data_download_extracts_archive(archive_server, tmp_path, capsys):
    url, md5 = archive_server
    target = tmp_path / "downloaded"
    assert bqsam_main(["data", "download", "--data-dir", str(target), "--url", url, "--md5", md5]) == 0
    assert (target / "cifar-10-batches-py" / "batches.meta").is_file()
    assert not (target / "cifar-10-python.tar.gz").exists()
    capsys.readouterr()

    assert bqsam_main(["data", "check", "--data-dir", str(target)]) == 0
    output = capsys.readouterr().out
    assert "train: CIFAR-10 python batches in" in output
    assert "20 images of shape (3, 32, 32)" in output


def test_data_download_rejects_wrong_md5(archive_server, tmp_path, caplog):
    url, _ = archive_server
    target = tmp_path / "downloaded"
    arguments = ["data", "download", "--data-dir", str(target), "--url", url, "--md5", "0" * 32]
    assert bqsam_main(arguments) == 2
    assert "MD5 mismatch" in caplog.text
    assert not (target / "cifar-10-batches-py").exists()
    assert not list(target.glob("*.part"))
    assert not (target / "cifar-10-python.tar.gz").exists()
