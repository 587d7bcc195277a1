"""Tests for theory.symbolic: each derivation holds and agrees with theory.bounds."""

import math

import pytest
import sympy as sp

from theory import bounds, symbolic

L, eta, rho = sp.symbols("L eta rho", positive=True)


@pytest.mark.parametrize(
    "derive",
    [
        symbolic.usam_stability_threshold,
        symbolic.sam_two_cycle,
        symbolic.one_step_inequality,
        symbolic.one_minibatch_step,
    ],
)
def test_every_named_check_holds(derive):
    result = derive()
    failed = [name for name, passed in result.checks.items() if not passed]
    assert failed == []
    assert result.check is True
    assert len(result.checks) >= 3


def symbols_of(expression):
    return {symbol.name: symbol for symbol in expression.free_symbols}


def test_usam_threshold_expression():
    expression = symbolic.usam_stability_threshold().expression
    names = symbols_of(expression)
    assert sp.simplify(expression - 2 / (names["L"] + names["rho"] * names["L"] ** 2)) == 0


@pytest.mark.parametrize("L_value, rho_value", [(1.0, 0.0), (4.0, 0.05), (10.0, 1.0)])
def test_usam_threshold_matches_bounds(L_value, rho_value):
    expression = symbolic.usam_stability_threshold().expression
    names = symbols_of(expression)
    numeric = float(expression.subs({names["L"]: L_value, names["rho"]: rho_value}))
    assert math.isclose(numeric, bounds.t4_threshold(L_value, rho_value), rel_tol=1e-15)


def test_two_cycle_expression():
    expression = symbolic.sam_two_cycle().expression
    assert sp.simplify(expression - eta * L * rho / (2 - eta * L)) == 0


@pytest.mark.parametrize("eta_value, L_value, rho_value", [(0.5, 1.0, 0.1), (0.25, 4.0, 0.3), (0.19, 10.0, 1.0)])
def test_two_cycle_matches_bounds(eta_value, L_value, rho_value):
    expression = symbolic.sam_two_cycle().expression
    numeric = float(expression.subs({eta: eta_value, L: L_value, rho: rho_value}))
    assert math.isclose(numeric, bounds.sam_two_cycle_amplitude(eta_value, L_value, rho_value), rel_tol=1e-14)


def test_one_step_expression_matches_bounds():
    expression = symbolic.one_step_inequality().expression
    names = symbols_of(expression)
    values = {"f": 3.0, "A2": 2.0, "B2": 5.0, "L": 1.5, "eta": 0.4, "r": 0.2}
    numeric = float(expression.subs({names[key]: value for key, value in values.items()}))
    expected = bounds.one_step_bound(3.0, 2.0, 5.0, 1.5, 0.4, 0.2)
    assert math.isclose(numeric, expected, rel_tol=1e-14)


def test_one_minibatch_step_coefficients():
    expression = symbolic.one_minibatch_step().expression
    names = symbols_of(expression)
    coefficient = sp.Poly(expression, names["A2"]).coeffs()[0]
    assert sp.simplify(coefficient + names["eta"] / 4) == 0
