"""Properties Q1-Q6 of the one-bit quantizer and the BinaryRelax relaxation."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bqsam import binarize, quantization_error, relax, scale_factor, sgn

pytestmark = pytest.mark.usefixtures("float64_default")

finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)


def vectors(min_size=1, max_size=8):
    return st.integers(min_size, max_size).flatmap(
        lambda d: arrays(np.float64, d, elements=finite).map(torch.from_numpy)
    )


lams = st.floats(min_value=0, max_value=1e3, allow_nan=False)


def distance_squared_to_binary_set(z: torch.Tensor) -> torch.Tensor:
    """dist(z, {alpha s})^2 = ||z||^2 - ||z||_1^2 / d, the closed form of Q2."""
    return z.pow(2).sum() - z.abs().sum() ** 2 / z.numel()


# ---------------------------------------------------------------- sign and scale


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.0], [1.0]),
        ([-0.0], [1.0]),
        ([-1e-300, 1e-300], [-1.0, 1.0]),
        ([3.0, -2.0, 0.0], [1.0, -1.0, 1.0]),
    ],
)
def test_sgn_never_returns_zero(values, expected):
    assert sgn(torch.tensor(values)).tolist() == expected


def test_binarize_zero_tensor_is_all_plus_alpha():
    assert binarize(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    assert binarize(torch.zeros(3), scale=False).tolist() == [1.0, 1.0, 1.0]


def test_binarize_per_channel_uses_one_alpha_per_row():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    assert binarize(w, per_channel=True).tolist() == [[2.0, -2.0], [0.5, 0.5]]
    assert scale_factor(w, per_channel=True).shape == (2, 1)


# ---------------------------------------------------------------- Q1: projection


@settings(max_examples=60, deadline=None)
@given(vectors(1, 6))
def test_binarize_is_projection_onto_scaled_binary_set(v):
    # Brute force over all 2^d sign patterns with the best alpha >= 0 for each.
    d = v.numel()
    best = math.inf
    for signs in itertools.product([-1.0, 1.0], repeat=d):
        s = torch.tensor(signs)
        alpha = max(float(v @ s) / d, 0.0)
        best = min(best, float((v - alpha * s).pow(2).sum()))
    achieved = float((v - binarize(v)).pow(2).sum())
    assert achieved <= best + 1e-10 * (1 + best)


# ---------------------------------------------------------------- Q2, Q3


@settings(max_examples=100, deadline=None)
@given(vectors())
def test_quantization_error_closed_form(v):
    d = v.numel()
    error2 = float(quantization_error(v)) ** 2
    closed = float(v.pow(2).sum() - v.abs().sum() ** 2 / d)
    assert error2 == pytest.approx(closed, rel=1e-10, abs=1e-10)
    assert error2 <= (1 - 1 / d) * float(v.pow(2).sum()) + 1e-10


@settings(max_examples=100, deadline=None)
@given(vectors(), st.floats(min_value=1e-3, max_value=1e3))
def test_binarize_idempotent_and_positively_homogeneous(v, c):
    q = binarize(v)
    assert torch.allclose(binarize(q), q, rtol=1e-12, atol=1e-12)
    assert torch.allclose(binarize(c * v), c * q, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- Q4: proximal map


@settings(max_examples=40, deadline=None)
@given(vectors(2, 5), lams, st.integers(0, 2**31 - 1))
def test_relax_minimises_proximal_objective(v, lam, seed):
    def objective(z):
        return 0.5 * (z - v).pow(2).sum() + 0.5 * lam * distance_squared_to_binary_set(z)

    r = relax(v, lam)
    value = float(objective(r))
    generator = torch.Generator().manual_seed(seed)
    scale = float(v.abs().max()) + 1.0
    for _ in range(200):
        z = r + scale * torch.randn(v.shape, generator=generator) * 10 ** float(torch.empty(1).uniform_(-4, 0, generator=generator))
        assert value <= float(objective(z)) + 1e-9 * (1 + abs(value))


@pytest.mark.parametrize("lam", [0.0, 1.0, 10.0, math.inf])
def test_relax_end_points(lam):
    v = torch.tensor([0.3, -2.0, 0.0, 1.1])
    r = relax(v, lam)
    if lam == 0:
        assert torch.equal(r, v)
    elif math.isinf(lam):
        assert torch.equal(r, binarize(v))
    else:
        assert torch.allclose(r, (v + lam * binarize(v)) / (1 + lam), rtol=1e-15)


def test_relax_converges_to_quantizer_as_lam_grows():
    v = torch.tensor([0.3, -2.0, 0.7])
    gaps = [float((relax(v, lam) - binarize(v)).norm()) for lam in (1.0, 1e2, 1e4, 1e6)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-5


# ---------------------------------------------------------------- Q5


@settings(max_examples=100, deadline=None)
@given(vectors(), lams)
def test_relax_distances_and_keeps_quantized_point(v, lam):
    q = binarize(v)
    r = relax(v, lam)
    delta = float((v - q).norm())
    theta = lam / (1 + lam)
    assert float((r - q).norm()) == pytest.approx(delta / (1 + lam), rel=1e-9, abs=1e-9)
    assert float((r - v).norm()) == pytest.approx(theta * delta, rel=1e-9, abs=1e-9)
    assert torch.allclose(binarize(r), q, rtol=1e-10, atol=1e-10)


def test_relax_keeps_quantized_point_per_channel():
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    lam = torch.tensor([0.0, 1.0, 10.0, math.inf])
    r = relax(w, lam, per_channel=True)
    assert torch.allclose(binarize(r, per_channel=True), binarize(w, per_channel=True), rtol=1e-12)
    for i in range(4):
        assert torch.allclose(r[i], relax(w[i], float(lam[i])), rtol=1e-14)


# ---------------------------------------------------------------- Q6: Jacobians


@settings(max_examples=40, deadline=None)
@given(vectors(2, 6).filter(lambda v: bool((v.abs() > 1e-3).all())), lams)
def test_relax_jacobian_inside_orthant(v, lam):
    d = v.numel()
    s = sgn(v)
    jacobian_q = torch.autograd.functional.jacobian(binarize, v)
    assert torch.allclose(jacobian_q, torch.outer(s, s) / d, rtol=1e-12, atol=1e-12)

    jacobian_r = torch.autograd.functional.jacobian(lambda t: relax(t, lam), v)
    expected = (torch.eye(d) + lam * torch.outer(s, s) / d) / (1 + lam)
    assert torch.allclose(jacobian_r, expected, rtol=1e-10, atol=1e-12)
    assert float(torch.linalg.matrix_norm(jacobian_r, ord=2)) == pytest.approx(1.0, rel=1e-10)


# ---------------------------------------------------------------- invalid usage


@pytest.mark.parametrize("lam", [-1.0, math.nan, "1"])
def test_relax_rejects_invalid_lam(lam):
    with pytest.raises(ValueError, match="lam"):
        relax(torch.ones(3), lam)


def test_relax_rejects_negative_lam_tensor():
    with pytest.raises(ValueError, match=r"lam must be >= 0"):
        relax(torch.ones(2, 3), torch.tensor([1.0, -2.0]), per_channel=True)
