"""Tests of the training loop (bqsam.train.loop) on real CIFAR-10 images.

Each run uses at most a few hundred images and the small networks of bqsam.train.models,
so most tests take one or two seconds on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from bqsam.train.checkpoint import load_checkpoint
from bqsam.train.config import METHODS, TrainConfig
from bqsam.train.data import load_dataset
from bqsam.train.loop import METRIC_COLUMNS, Trainer, TrainingDiverged, train
from bqsam.train.models import SmallCNN, build_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def real_data(cifar10_dir):
    """200 training and 200 test images of the real CIFAR-10, balanced over classes."""
    train_images, train_labels = load_dataset("cifar10", cifar10_dir, "train", subset=200, seed=0)
    test_images, test_labels = load_dataset("cifar10", cifar10_dir, "test", subset=200, seed=0)
    return tuple(torch.from_numpy(a) for a in (train_images, train_labels, test_images, test_labels))


def small_config(tmp_path, **changes) -> TrainConfig:
    values = dict(
        method="bqsam", model="smallcnn", epochs=1, batch_size=50, eval_batch_size=100,
        threads=1, log_every=1000, out=str(tmp_path / "run"),
    )
    values.update(changes)
    return TrainConfig(**values)


def run_trainer(config: TrainConfig, data, model: nn.Module | None = None) -> Trainer:
    trainer = Trainer(config, model=model, data=data)
    trainer.setup()
    trainer.run()
    trainer.close()
    return trainer


def latent_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ------------------------------------------------------------------ one epoch per method
@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_writes_run_files(method, tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method=method), real_data)
    run_dir = tmp_path / "run"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["method"] == method
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    assert set(METRIC_COLUMNS) <= set(rows[0])
    assert all(math.isfinite(rows[0][name]) for name in METRIC_COLUMNS)
    assert (run_dir / "metrics.csv").read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == method
    assert config["train_size"] == 200

    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert checkpoint["history"] == trainer.history


@pytest.mark.parametrize("method", ["bc", "br", "bqsam"])
def test_deployed_weights_are_plus_minus_alpha(method, tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method=method), real_data)
    named = dict(trainer.model.named_parameters())
    assert trainer.binarized_names == ["conv2.weight", "fc1.weight"]

    latent = latent_weights(trainer.model)
    with trainer.optimizer.deployed():
        for name in trainer.binarized_names:
            alpha = latent[name].abs().mean()
            values = torch.unique(named[name].detach())
            assert torch.equal(values, torch.stack([-alpha, alpha])), name
        for name, value in latent.items():
            if name not in trainer.binarized_names:
                assert torch.equal(named[name], value), name


@pytest.mark.parametrize("method", ["sgd", "sam"])
def test_unquantized_methods_binarize_nothing(method, tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method=method), real_data)
    assert trainer.binarized_names == []
    row = trainer.history[-1]
    assert row["deployed_test_acc"] == row["latent_test_acc"]
    assert row["deployed_test_loss"] == row["latent_test_loss"]


@pytest.mark.parametrize(
    "keep_float, binarized",
    [
        ("first,last", ["conv2.weight", "fc1.weight"]),
        ("first", ["conv2.weight", "fc1.weight", "fc2.weight"]),
        ("last", ["conv1.weight", "conv2.weight", "fc1.weight"]),
        ("none", ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]),
    ],
)
def test_keep_float_chooses_binarized_layers(keep_float, binarized, tmp_path, real_data):
    trainer = Trainer(small_config(tmp_path, method="bc", keep_float=keep_float), data=real_data)
    trainer.setup()
    assert trainer.binarized_names == binarized


def test_relax_lambda_grows_per_step(tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method="br", lam=2.0, lam_growth=1.5), real_data)
    group = next(g for g in trainer.optimizer.param_groups if g["binarize"])
    assert group["k"] == trainer.steps_per_epoch == 4
    assert trainer.optimizer._lam_k(group) == 2.0 * 1.5**4


@pytest.mark.parametrize(
    "changes",
    [
        dict(amp=True, channels_last=True),
        dict(sam_grad="hessian-fd"),
        dict(sam_grad="hessian-exact"),
        dict(perturb="latent", quantizer="relax"),
        dict(optimizer="adam", schedule="step"),
    ],
    ids=["amp-channels-last", "hessian-fd", "hessian-exact", "latent-relax", "adam-step"],
)
def test_bqsam_options_train_finite(changes, tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method="bqsam", **changes), real_data)
    row = trainer.history[-1]
    assert math.isfinite(row["train_loss"])
    assert math.isfinite(row["deployed_test_loss"])
    named = dict(trainer.model.named_parameters())
    with trainer.optimizer.deployed():
        assert torch.unique(named["conv2.weight"].detach()).numel() == 2


# ------------------------------------------------------------------ evaluation
def test_evaluate_twice_identical_keeps_latent(tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method="bqsam"), real_data)
    before = latent_weights(trainer.model)
    first = trainer.evaluate_both()
    second = trainer.evaluate_both()
    assert first == second
    after = latent_weights(trainer.model)
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert trainer.model.training


def test_final_row_matches_fresh_evaluation(tmp_path, real_data):
    trainer = run_trainer(small_config(tmp_path, method="bc"), real_data)
    scores = trainer.evaluate_both()
    for name, value in scores.items():
        assert trainer.history[-1][name] == value, name


# ------------------------------------------------------------------ BatchNorm
def test_batchnorm_statistics_update_once_per_step(tmp_path, real_data):
    train_images, train_labels, test_images, test_labels = real_data
    data = (train_images[:64], train_labels[:64], test_images[:20], test_labels[:20])
    config = small_config(tmp_path, method="bqsam", model="resnet20", batch_size=32)
    trainer = run_trainer(config, data)

    batchnorms = [m for m in trainer.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms
    for module in batchnorms:
        assert int(module.num_batches_tracked) == 2


def test_batchnorm_statistics_come_from_first_pass(tmp_path, real_data):
    # One step on one batch without augmentation: the running mean must be
    # 0.1 * (batch mean at x_0 = q(w_0)), as after a single forward pass.
    train_images, train_labels, test_images, test_labels = real_data
    data = (train_images[:32], train_labels[:32], test_images[:20], test_labels[:20])
    torch.manual_seed(3)
    model = build_model("resnet20")
    reference = build_model("resnet20")
    reference.load_state_dict(model.state_dict())
    config = small_config(tmp_path, method="bqsam", model="resnet20", batch_size=32, augment=False, rho=0.5)
    trainer = Trainer(config, model=model, data=data)
    trainer.setup()

    from bqsam.train.data import normalize

    with trainer.optimizer.deployed():
        reference.load_state_dict(model.state_dict())
    reference.train()
    with torch.no_grad():
        reference(normalize(train_images[:32], "cifar10"))
    trainer.run()
    for (name, expected), actual in zip(reference.state_dict().items(), model.state_dict().values()):
        if "running" in name:
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------ divergence
class NaNAfter(SmallCNN):
    """SmallCNN whose training forward passes return NaN logits after a number of calls."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def forward(self, x):
        logits = super().forward(x)
        if self.training:
            self.calls_left -= 1
            if self.calls_left < 0:
                return logits * float("nan")
        return logits


def test_nan_loss_keeps_last_checkpoint(tmp_path, real_data):
    # 4 steps per epoch, 2 forward passes per SAM step: pass 10 (the descent pass of epoch 2,
    # step 1) is the first NaN, so the weights turn NaN and step 2 reports the loss.
    config = small_config(tmp_path, method="bqsam", epochs=3)
    model = NaNAfter(calls=9)
    with pytest.raises(TrainingDiverged) as caught:
        train(config, model=model, data=real_data)
    message = str(caught.value)
    assert "nan" in message
    assert "epoch 2, step 2" in message
    assert "--lr" in message
    assert "checkpoint.pt (after epoch 1)" in message

    run_dir = tmp_path / "run"
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "epoch 2, step 2" in summary["message"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_nan_in_first_epoch_names_no_checkpoint(tmp_path, real_data):
    with pytest.raises(TrainingDiverged, match="no epoch finished"):
        train(small_config(tmp_path, method="sgd"), model=NaNAfter(calls=0), data=real_data)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ------------------------------------------------------------------ resume
class DropoutNet(nn.Module):
    """Small network with dropout, so that training draws from the global torch RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.dropout = nn.Dropout(0.3)
        self.fc1 = nn.Linear(8 * 16 * 16, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc2(torch.relu(self.fc1(self.dropout(x.flatten(1)))))


class Interrupted(Exception):
    pass


class InterruptedNet(DropoutNet):
    """DropoutNet that raises after a number of training forward passes, like a killed job."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def forward(self, x):
        if self.training:
            self.calls_left -= 1
            if self.calls_left < 0:
                raise Interrupted
        return super().forward(x)


@pytest.mark.parametrize("method", ["sgd", "br", "bqsam"])
def test_resume_gives_bitwise_same_weights(method, tmp_path, real_data):
    config = small_config(tmp_path, method=method, epochs=3, optimizer="sgd", nesterov=True)
    torch.manual_seed(5)
    reference = DropoutNet()
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    train(dataclasses.replace(config, out=str(tmp_path / "straight")), model=reference, data=real_data)

    interrupted = InterruptedNet(calls=4 * 2 + 3)  # stops inside epoch 2 (or 3 without SAM)
    interrupted.load_state_dict(initial)
    with pytest.raises(Interrupted):
        train(config, model=interrupted, data=real_data)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] >= 1

    torch.manual_seed(123)  # the checkpoint, not this state, must decide what follows
    resumed = DropoutNet()
    train(dataclasses.replace(config, resume=True), model=resumed, data=real_data)

    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(actual, expected), name
    straight_rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed_rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for straight, again in zip(straight_rows, resumed_rows, strict=True):
        assert {k: v for k, v in straight.items() if k != "seconds"} == {
            k: v for k, v in again.items() if k != "seconds"
        }


def test_resume_rejects_changed_settings(tmp_path, real_data):
    config = small_config(tmp_path, method="bqsam")
    train(config, data=real_data)
    with pytest.raises(ValueError, match="rho: 0.05 in the run, 0.1 now"):
        train(dataclasses.replace(config, resume=True, rho=0.1), data=real_data)


def test_existing_run_needs_resume(tmp_path, real_data):
    config = small_config(tmp_path, method="sgd")
    train(config, data=real_data)
    with pytest.raises(ValueError, match="pass --resume"):
        train(config, data=real_data)


def test_checkpoint_loads_weights_only(tmp_path, real_data):
    run_trainer(small_config(tmp_path, method="bqsam"), real_data)
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert set(payload) >= {"model", "optimizer", "scheduler", "rng", "epoch", "history", "config"}
    assert payload["optimizer"]["param_groups"][0]["k"] == 4


def test_resume_of_finished_run_trains_nothing(tmp_path, real_data):
    config = small_config(tmp_path, method="bc")
    first = train(config, data=real_data)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    again = train(dataclasses.replace(config, resume=True), model=NaNAfter(calls=0), data=real_data)
    assert again == json.loads(json.dumps(first))
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics
