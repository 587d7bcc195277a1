"""Check primitives: inequality, identity and stochastic checks, and negative controls."""

import json
import math

import pytest
import torch

from verify.checks import identity_check, inequality_check, stochastic_check


def _inequality(empirical, bound, **kwargs):
    return inequality_check("T1/p/m/s", "T1", "p", "m", torch.tensor(empirical, dtype=torch.float64),
                            torch.tensor(bound, dtype=torch.float64), **kwargs)


@pytest.mark.parametrize(
    "empirical, bound, holds, ratio",
    [
        ([1.0, 2.0], [2.0, 4.0], True, 0.5),
        ([1.0, 3.0], [2.0, 4.0], True, 0.75),
        ([1.0, 5.0], [2.0, 4.0], False, 1.25),
        ([0.0, 0.0], [0.0, 0.0], True, 0.0),
        ([1.0], [-1.0], False, math.inf),
    ],
)
def test_inequality_reports_worst_entry(empirical, bound, holds, ratio):
    check = _inequality(empirical, bound)
    assert check.holds is holds
    assert check.passed is holds
    assert check.ratio == pytest.approx(ratio)


def test_inequality_rounding_allowance():
    assert _inequality([1.0 + 1e-14], [1.0]).holds
    assert not _inequality([1.0 + 1e-8], [1.0]).holds


def test_inequality_nan_fails():
    assert not _inequality([float("nan")], [1.0]).holds


def test_control_passes_when_violated():
    violated = _inequality([2.0], [1.0], control=True)
    kept = _inequality([0.5], [1.0], control=True)
    assert violated.passed
    assert not kept.passed


def test_worst_ratio_ignores_rounding_level_bounds():
    check = _inequality([1e-17, 0.5], [1e-17, 1.0], scale=torch.tensor([1.0, 1.0]))
    assert check.ratio == pytest.approx(0.5)


def test_identity_check_tolerance():
    assert identity_check("A/p/m/s", "A", "p", "m", [0.0, 1e-12]).holds
    assert not identity_check("A/p/m/s", "A", "p", "m", [0.0, 1e-9]).holds


def test_json_has_no_nonfinite_numbers():
    entry = _inequality([1.0], [-1.0]).to_json()
    assert entry["ratio"] is None
    json.dumps(entry, allow_nan=False)


def test_stochastic_check_needs_three_standard_errors():
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(200, 5, generator=generator, dtype=torch.float64)
    empirical = 1.0 + 0.1 * noise
    assert stochastic_check("T3a/p/m/s", "T3a", "p", "m", empirical, torch.full_like(empirical, 1.5)).holds
    assert not stochastic_check("T3a/p/m/s", "T3a", "p", "m", empirical, torch.full_like(empirical, 1.0)).holds


def test_stochastic_check_rejects_one_run():
    with pytest.raises(ValueError, match="at least 2 runs"):
        stochastic_check("T3a/p/m/s", "T3a", "p", "m", torch.ones(1, 3), torch.ones(1, 3))


def test_inequality_rejects_empty_input():
    with pytest.raises(ValueError, match="no entries"):
        _inequality([], [])
