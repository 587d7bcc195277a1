"""Tests for bqsam.landscape: filter-normalised directions and 1-D / 2-D loss slices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bqsam.landscape import filter_normalized_direction, loss_slice_1d, loss_slice_2d
from bqsam.quantizers import binarize


def small_model():
    """A float64 conv + BatchNorm + linear model in eval mode, with a loss on fixed data."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    ).double()
    model.eval()
    inputs = torch.randn(16, 3, 6, 6, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,))

    def loss_fn():
        return nn.functional.cross_entropy(model(inputs), labels)

    return model, loss_fn


def snapshot(params):
    return [p.detach().clone() for p in params]


def assert_bitwise_equal(params, saved):
    for index, (p, value) in enumerate(zip(params, saved)):
        assert torch.equal(p.detach(), value), f"params[{index}] changed"


# ---------------------------------------------------------------------------------------------
# Filter normalisation


def test_direction_filter_norms_match_weights():
    model, _ = small_model()
    params = list(model.parameters())
    direction = filter_normalized_direction(params, seed=1)

    for p, d in zip(params, direction):
        assert d.shape == p.shape
        if p.dim() <= 1:
            continue
        weight_norms = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        direction_norms = d.reshape(p.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(direction_norms, weight_norms, rtol=1e-12, atol=0)


def test_direction_is_zero_for_biases_and_batchnorm():
    model, _ = small_model()
    params = list(model.parameters())
    direction = filter_normalized_direction(params, seed=1)
    one_dimensional = [d for p, d in zip(params, direction) if p.dim() <= 1]
    assert len(one_dimensional) == 4  # conv bias, BatchNorm weight and bias, linear bias
    for d in one_dimensional:
        assert torch.count_nonzero(d) == 0


def test_direction_of_zero_filter_is_zero():
    weight = torch.randn(3, 4, dtype=torch.float64)
    weight[1] = 0.0
    (direction,) = filter_normalized_direction([weight], seed=0)
    assert torch.count_nonzero(direction[1]) == 0
    assert torch.count_nonzero(direction[0]) == 4


def test_direction_depends_only_on_seed():
    model, _ = small_model()
    params = list(model.parameters())
    first = filter_normalized_direction(params, seed=5)
    second = filter_normalized_direction(params, seed=5)
    other = filter_normalized_direction(params, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])


# ---------------------------------------------------------------------------------------------
# Slices


def test_slice_1d_at_zero_is_unperturbed_loss():
    model, loss_fn = small_model()
    params = list(model.parameters())
    direction = filter_normalized_direction(params, seed=0)
    with torch.no_grad():
        expected = float(loss_fn())

    losses = loss_slice_1d(loss_fn, params, direction, [-0.5, 0.0, 0.5])

    assert losses.shape == (3,)
    assert losses.dtype == torch.float64
    assert float(losses[1]) == expected
    assert float(losses[0]) != expected


def test_quantized_slice_at_zero_is_quantized_loss():
    model, loss_fn = small_model()
    params = list(model.parameters())
    mask = [p.dim() > 1 for p in params]
    direction = filter_normalized_direction(params, seed=0)
    saved = snapshot(params)
    with torch.no_grad():
        for p, flag in zip(params, mask):
            if flag:
                p.copy_(binarize(p))
        expected = float(loss_fn())
        for p, value in zip(params, saved):
            p.copy_(value)

    losses = loss_slice_1d(loss_fn, params, direction, [0.0, 0.3], loss="quantized", binarized=mask)

    assert float(losses[0]) == expected


def test_quantized_slice_binarizes_after_step():
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    direction = [torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64)]

    def loss_fn():
        return ((w - target) ** 2).sum()

    t = 1.0  # w + t d = (-0.5, -1, 2): the first sign flips
    moved = torch.tensor([-0.5, -1.0, 2.0], dtype=torch.float64)
    expected = float(((binarize(moved) - target) ** 2).sum())

    losses = loss_slice_1d(loss_fn, [w], direction, [t], loss="quantized")

    assert float(losses[0]) == pytest.approx(expected, rel=1e-15)


def test_slice_1d_matches_quadratic_formula():
    # f(w + t d) = f(w) + t g^T d + t^2 d^T A d / 2 for f(w) = w^T A w / 2.
    matrix = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    w = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    d = torch.tensor([0.3, 0.7], dtype=torch.float64)
    ts = torch.linspace(-2, 2, 9, dtype=torch.float64)

    losses = loss_slice_1d(lambda: 0.5 * w @ matrix @ w, [w], [d], ts)

    w0 = w.detach()
    expected = 0.5 * w0 @ matrix @ w0 + ts * (matrix @ w0 @ d) + ts**2 * (d @ matrix @ d) / 2
    torch.testing.assert_close(losses, expected, rtol=1e-13, atol=1e-13)


def test_slice_2d_grid_and_origin():
    model, loss_fn = small_model()
    params = list(model.parameters())
    d1 = filter_normalized_direction(params, seed=1)
    d2 = filter_normalized_direction(params, seed=2)
    with torch.no_grad():
        expected = float(loss_fn())

    surface = loss_slice_2d(loss_fn, params, d1, d2, [-0.2, 0.0, 0.2], [0.0, 0.1])
    row = loss_slice_1d(loss_fn, params, d1, [-0.2, 0.0, 0.2])
    column = loss_slice_1d(loss_fn, params, d2, [0.0, 0.1])

    assert surface.shape == (3, 2)
    assert float(surface[1, 0]) == expected
    torch.testing.assert_close(surface[:, 0], row, rtol=0, atol=0)
    torch.testing.assert_close(surface[1, :], column, rtol=0, atol=0)


@pytest.mark.parametrize("loss", ["continuous", "quantized"])
def test_slices_restore_parameters_bitwise(loss):
    model, loss_fn = small_model()
    params = list(model.parameters())
    saved = snapshot(params)
    d1 = filter_normalized_direction(params, seed=1)
    d2 = filter_normalized_direction(params, seed=2)

    loss_slice_1d(loss_fn, params, d1, [-1.0, 0.37, 1.0], loss=loss)
    assert_bitwise_equal(params, saved)
    loss_slice_2d(loss_fn, params, d1, d2, [-1.0, 0.37], [0.11, 1.0], loss=loss)
    assert_bitwise_equal(params, saved)


def test_slice_restores_parameters_after_exception():
    model, loss_fn = small_model()
    params = list(model.parameters())
    saved = snapshot(params)
    direction = filter_normalized_direction(params, seed=0)
    calls = []

    def failing_loss():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("loss failed")
        return loss_fn()

    with pytest.raises(RuntimeError, match="loss failed"):
        loss_slice_1d(failing_loss, params, direction, [0.5, 1.0, 1.5])
    assert_bitwise_equal(params, saved)


# ---------------------------------------------------------------------------------------------
# Invalid usage


def _setup():
    w = torch.ones(2, 3, dtype=torch.float64, requires_grad=True)
    return w, (lambda: (w**2).sum()), [torch.ones(2, 3, dtype=torch.float64)]


INVALID_CALLS = [
    ("direction", lambda w, f, d: loss_slice_1d(f, [w], [torch.ones(3, 2)], [0.0])),
    ("direction", lambda w, f, d: loss_slice_1d(f, [w], d + d, [0.0])),
    ("d2", lambda w, f, d: loss_slice_2d(f, [w], d, [torch.ones(6)], [0.0], [0.0])),
    ("ts", lambda w, f, d: loss_slice_1d(f, [w], d, [])),
    ("ts", lambda w, f, d: loss_slice_1d(f, [w], d, [0.0, float("nan")])),
    ("ts2", lambda w, f, d: loss_slice_2d(f, [w], d, d, [0.0], [[0.0, 1.0]])),
    ("loss", lambda w, f, d: loss_slice_1d(f, [w], d, [0.0], loss="binary")),
    ("binarized", lambda w, f, d: loss_slice_1d(f, [w], d, [0.0], loss="quantized", binarized=[True, True])),
    ("params is empty", lambda w, f, d: filter_normalized_direction([])),
]


@pytest.mark.parametrize("name,call", INVALID_CALLS, ids=[f"{i}-{case[0]}" for i, case in enumerate(INVALID_CALLS)])
def test_invalid_argument_raises_value_error(name, call):
    w, loss_fn, direction = _setup()
    with pytest.raises(ValueError, match=name):
        call(w, loss_fn, direction)
