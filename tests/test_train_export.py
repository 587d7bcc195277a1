"""Tests of the one-bit export (bqsam.train.export): packing, size and exact accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bqsam.train.config import TrainConfig
from bqsam.train.data import load_dataset
from bqsam.train.export import export_run, format_size_report, load_exported, read_exported_state
from bqsam.train.loop import evaluate, train


@pytest.fixture(scope="module")
def trained_run(cifar10_dir, tmp_path_factory):
    """A 1-epoch BQ-SAM ResNet-20 run on 64 real images, tested on 100."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("export") / "run"
    config = TrainConfig(
        method="bqsam", data_dir=str(cifar10_dir), model="resnet20", epochs=1, batch_size=32,
        train_subset=64, test_subset=100, eval_batch_size=50, threads=1, out=str(out),
    )
    summary = train(config)
    images, labels = load_dataset("cifar10", cifar10_dir, "test", subset=100, seed=0)
    yield out, summary, torch.from_numpy(images), torch.from_numpy(labels)
    torch.set_num_threads(previous)


def test_exported_model_reproduces_deployed_accuracy(trained_run):
    out, summary, images, labels = trained_run
    export_run(out)
    model = load_exported(out / "model-binary.npz")
    loss, accuracy = evaluate(model, images, labels, batch_size=50, device=torch.device("cpu"))
    assert accuracy == summary["final"]["deployed_test_acc"]
    assert loss == summary["final"]["deployed_test_loss"]
    assert not model.training


def test_exported_binarized_tensors_are_plus_minus_alpha(trained_run):
    out, summary, _, _ = trained_run
    export_run(out, out / "again.npz")
    meta, state = read_exported_state(out / "again.npz")
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert meta["binarized"] == summary["binarized"]
    assert len(meta["binarized"]) == 18  # ResNet-20 without its first conv and last linear
    for name in meta["binarized"]:
        latent = checkpoint["model"][name]
        alpha = latent.abs().mean()
        assert torch.equal(torch.unique(state[name]), torch.stack([-alpha, alpha])), name
        assert torch.equal(state[name] > 0, latent >= 0), name
    for name, value in checkpoint["model"].items():
        if name not in meta["binarized"]:
            assert torch.equal(state[name], value), name


def test_export_packs_eight_weights_per_byte(trained_run):
    out, _, _, _ = trained_run
    report = export_run(out, out / "sized.npz")
    archive = np.load(out / "sized.npz", allow_pickle=False)
    meta = json.loads(str(archive["meta"]))
    for name, shape in meta["shapes"].items():
        assert archive[f"bits/{name}"].dtype == np.uint8
        assert archive[f"bits/{name}"].size == -(-int(np.prod(shape)) // 8)
    assert report["binarized_float32_bytes"] == 4 * report["binarized_weights"]
    assert 31.0 < report["binarized_ratio"] <= 32.0
    assert report["model_exported_bytes"] < report["model_float32_bytes"] / 10
    assert "x larger" in format_size_report(report)


def test_export_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        export_run(tmp_path)
    foreign = tmp_path / "other.npz"
    np.savez(foreign, meta=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(ValueError, match="expected 'bqsam-binary-export-1'"):
        load_exported(foreign)
