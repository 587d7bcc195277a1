"""Tests of bqsam.train.models: shapes, parameter counts, BatchNorm switch, kept layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bqsam import binarizable_param_groups
from bqsam.train.models import (
    MODEL_NAMES,
    ShortcutA,
    build_model,
    count_parameters,
    first_and_last,
)

# Parameter counts for 10 classes with each model's default BatchNorm choice.
PARAMETER_COUNTS = {
    "resnet20": 269_722,
    "resnet18": 11_173_962,
    "vgg11": 9_228_362,
    "vgg16": 14_724_042,
    "smallcnn": 17_962,
    "mlp": 201_482,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build_model(name) for name in MODEL_NAMES}


def test_model_names_cover_required_architectures():
    assert set(MODEL_NAMES) == set(PARAMETER_COUNTS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape(models, name):
    model = models[name].eval()
    with torch.no_grad():
        logits = model(torch.randn(3, 3, 32, 32))
    assert logits.shape == (3, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["resnet20", "smallcnn", "mlp"])
def test_forward_shape_other_class_count(name):
    model = build_model(name, num_classes=100).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count(models, name):
    assert count_parameters(models[name]) == PARAMETER_COUNTS[name]


def test_resnet20_has_027m_parameters(models):
    assert round(count_parameters(models["resnet20"]) / 1e6, 2) == 0.27


def test_resnet20_shortcuts_have_no_parameters(models):
    shortcuts = [module for module in models["resnet20"].modules() if isinstance(module, ShortcutA)]
    assert len(shortcuts) == 2
    assert all(count_parameters(shortcut) == 0 for shortcut in shortcuts)
    convolutions = [module for module in models["resnet20"].modules() if isinstance(module, nn.Conv2d)]
    assert len(convolutions) == 19  # stem + 9 blocks x 2; with the classifier, 20 layers


def test_shortcut_a_subsamples_and_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert (out[:, :8] == 0).all()
    assert (out[:, 24:] == 0).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_batchnorm_false_removes_batchnorm(name):
    model = build_model(name, batchnorm=False)
    assert not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name, default_has_batchnorm", [
    ("resnet20", True), ("resnet18", True), ("vgg11", True), ("vgg16", True), ("smallcnn", False), ("mlp", False),
])
def test_default_batchnorm_choice(models, name, default_has_batchnorm):
    has_batchnorm = any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in models[name].modules())
    assert has_batchnorm is default_has_batchnorm


@pytest.mark.parametrize("name", ["smallcnn", "mlp"])
def test_small_models_accept_batchnorm(name):
    model = build_model(name, batchnorm=True).train()
    assert any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)


# ---------------------------------------------------------------------------------------
# Layers kept in full precision
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_first_and_last_are_the_layers_kept_float(models, name):
    model = models[name]
    first, last = first_and_last(model)
    groups = binarizable_param_groups(model, keep_first_and_last=True)
    binarized = {id(p) for group in groups if group["binarize"] for p in group["params"]}
    float_ids = {id(p) for group in groups if not group["binarize"] for p in group["params"]}

    assert id(last.weight) in float_ids
    if first is not None:
        assert id(first.weight) in float_ids
    weight_layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    kept = {id(first), id(last)}
    for layer in weight_layers:
        assert (id(layer.weight) in binarized) is (id(layer) not in kept), layer
    assert binarized, "every model must have at least one binarized layer"


@pytest.mark.parametrize("name, first_path, last_path", [
    ("resnet20", "conv1", "fc"),
    ("resnet18", "conv1", "fc"),
    ("vgg11", "features.0", "classifier"),
    ("vgg16", "features.0", "classifier"),
    ("smallcnn", "conv1", "fc2"),
])
def test_first_touches_input_last_gives_logits(models, name, first_path, last_path):
    model = models[name]
    first, last = first_and_last(model)
    assert first is model.get_submodule(first_path)
    assert last is model.get_submodule(last_path)
    assert first.in_channels == 3
    assert last.out_features == 10


def test_first_and_last_of_mlp_has_no_convolution(models):
    first, last = first_and_last(models["mlp"])
    assert first is None
    assert last is models["mlp"].layers[-1]


def test_first_and_last_requires_linear_layer():
    with pytest.raises(ValueError, match="no nn.Linear"):
        first_and_last(nn.Sequential(nn.Conv2d(3, 4, 3)))


# ---------------------------------------------------------------------------------------
# Training behaviour and invalid usage
# ---------------------------------------------------------------------------------------


def test_resnet20_every_parameter_gets_gradient():
    torch.manual_seed(0)
    model = build_model("resnet20").train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="resnet50"), "name='resnet50'"),
    (dict(name="resnet20", num_classes=0), "num_classes=0"),
    (dict(name="resnet20", num_classes=2.0), "num_classes=2.0"),
    (dict(name="vgg11", batchnorm="yes"), "batchnorm='yes'"),
])
def test_build_model_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)
