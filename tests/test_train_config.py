"""Tests of the training configuration (bqsam.train.config) and the LR schedules."""

from __future__ import annotations

import dataclasses
import math

import pytest

from bqsam.train.config import TrainConfig, binarysam_kwargs
from bqsam.train.schedule import lr_multiplier


@pytest.mark.parametrize(
    "method, rho, quantizer, lam_growth",
    [
        ("sgd", 0.0, None, 1.0),
        ("sam", 0.05, None, 1.0),
        ("bc", 0.0, "ste", 1.0),
        ("br", 0.0, "relax", 1.001),
        ("bqsam", 0.05, "ste", 1.0),
    ],
)
def test_method_defaults(method, rho, quantizer, lam_growth):
    config = TrainConfig(method=method).resolved()
    assert config.rho == rho
    assert config.quantizer == quantizer
    assert config.lam_growth == lam_growth
    assert config.lr == 0.1
    assert config.weight_decay == 5e-4


def test_bqsam_accepts_relax_quantizer():
    config = TrainConfig(method="bqsam", quantizer="relax", rho=0.1).resolved()
    assert (config.quantizer, config.rho, config.lam_growth) == ("relax", 0.1, 1.001)


def test_adam_defaults_and_kwargs():
    config = TrainConfig(method="sam", optimizer="adam").resolved()
    assert config.lr == 1e-3
    assert config.weight_decay == 0.0
    kwargs = binarysam_kwargs(config)
    assert "momentum" not in kwargs
    assert kwargs["rho"] == 0.05


def test_resolved_leaves_original_unchanged():
    config = TrainConfig(method="bc")
    config.resolved()
    assert config.rho is None


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(method="adamw"), "method='adamw' is invalid; valid choices: sgd, sam, bc, br, bqsam"),
        (dict(method="sam", rho=-0.1), "rho=-0.1 is out of range; expected >= 0"),
        (dict(method="sam", rho=math.nan), "rho=nan is invalid"),
        (dict(method="sgd", rho=0.1), "rho=0.1 is invalid for method 'sgd'"),
        (dict(method="bqsam", rho=0.0), "rho=0 is invalid for method 'bqsam'"),
        (dict(lr=0.0), "lr=0.0 is out of range; expected > 0"),
        (dict(lr=-1.0), "lr=-1.0 is out of range; expected > 0"),
        (dict(lam=-1.0), "lam=-1.0 is out of range; expected >= 0"),
        (dict(method="br", lam_growth=0.5), "lam_growth=0.5 is out of range; expected >= 1"),
        (dict(method="bc", quantizer="relax"), "quantizer='relax' is invalid for method 'bc'; valid: 'ste'"),
        (dict(method="bqsam", quantizer="sign"), "quantizer='sign' is invalid for method 'bqsam'"),
        (dict(method="sgd", clip=1.0), "clip=1.0 applies to binarized weights only"),
        (dict(method="bc", clip=0.0), "clip=0.0 is out of range; expected > 0"),
        (dict(method="sam", perturb="latent"), "perturb='latent' needs a quantizer"),
        (dict(momentum=1.0), "momentum=1.0 is out of range; expected >= 0 and < 1"),
        (dict(optimizer="adam", nesterov=True), "nesterov=True needs optimizer 'sgd'"),
        (dict(epochs=0), "epochs=0 is out of range; expected an integer >= 1"),
        (dict(batch_size=0), "batch_size=0 is out of range"),
        (dict(train_subset=0), "train_subset=0 is out of range"),
        (dict(seed=-1), "seed=-1 is out of range"),
        (dict(model="resnet56"), "model='resnet56' is invalid; valid choices: resnet20"),
        (dict(keep_float="middle"), "keep_float='middle' is invalid"),
        (dict(device="tpu"), "device='tpu' is invalid"),
        (dict(schedule="linear"), "schedule='linear' is invalid"),
        (dict(sam_grad="second-order"), "sam_grad='second-order' is invalid"),
        (dict(dataset="mnist"), "dataset='mnist' is invalid"),
    ],
)
def test_invalid_settings_raise(changes, message):
    with pytest.raises(ValueError) as caught:
        dataclasses.replace(TrainConfig(), **changes).resolved()
    assert message in str(caught.value)


def test_differences_ignore_runtime_fields():
    first = TrainConfig(method="sam", out="a", device="cpu", threads=1).resolved()
    second = dataclasses.replace(first, out="b", device="auto", threads=2, resume=True)
    assert first.differences(second) == {}
    third = dataclasses.replace(first, seed=1, epochs=3)
    assert first.differences(third) == {"seed": (0, 1), "epochs": (200, 3)}


def test_from_dict_round_trip_and_unknown_key():
    config = TrainConfig(method="br", lam=2.0).resolved()
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training settings \\['colour'\\]"):
        TrainConfig.from_dict({**config.to_dict(), "colour": "blue"})


@pytest.mark.parametrize(
    "schedule, step, expected",
    [
        ("constant", 70, 1.0),
        ("cosine", 0, 1.0),
        ("cosine", 50, 0.5),
        ("cosine", 100, 0.0),
        ("step", 49, 1.0),
        ("step", 50, 0.1),
        ("step", 75, 0.1**2),
    ],
)
def test_lr_multiplier(schedule, step, expected):
    assert lr_multiplier(schedule, step, total_steps=100) == pytest.approx(expected, abs=1e-15)
