"""Planted bugs in the optimizer (or a wrong constant) must turn specific checks red.

Each test patches BinarySAM or a problem constant for the duration of the test, reruns
the affected part of the quick suites and asserts which check ids fail.
"""

import pytest
import torch

from bqsam.optim import BinarySAM
from verify.context import Context, row_settings
from verify.instances import Settings
from verify.methods import METHODS
from verify.suites import descent, sam, tightness

PROBLEM = "quadratic"


@pytest.fixture(autouse=True)
def single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _sweep_checks(method_name, problem=PROBLEM):
    ctx = Context(Settings.make(quick=True))
    run = ctx.analysis(problem, method_name)
    return descent.sweep_checks(problem, run, row_settings(METHODS[method_name], ctx.settings), ctx.settings.eta_factors)


def _failed(checks):
    return {c.id for c in checks if not c.passed}


def test_clean_optimizer_passes():
    for method_name in ("sam", "bqsam-ste", "bqsam-relax", "sam-hessian-exact"):
        assert _failed(_sweep_checks(method_name)) == set()


def test_perturbation_at_latent_point_caught(monkeypatch):
    # Bug: the SAM step is taken from the latent w_k instead of the quantized x_k = q(w_k).
    original = BinarySAM._sam_gradient

    def at_latent(self, closure, params, latent, x, grads):
        return original(self, closure, params, latent, latent, grads)

    monkeypatch.setattr(BinarySAM, "_sam_gradient", at_latent)
    failed = _failed(_sweep_checks("bqsam-ste"))
    assert "ALG/quadratic/bqsam-ste/eta=0.5L^-1,rho=0.1" in failed
    assert "ALG/quadratic/bqsam-ste/eta=1L^-1,rho=0.1" in failed


def test_descent_gradient_at_latent_point_caught(monkeypatch):
    # Bug: the descent gradient is taken at w_k instead of x_k + e_k (the perturbation is lost).
    original = BinarySAM._sam_gradient

    def at_w(self, closure, params, latent, x, grads):
        monkeypatch.setattr(self, "_perturbation", lambda points, g: [torch.zeros_like(p) for p in points])
        return original(self, closure, params, latent, latent, grads)

    monkeypatch.setattr(BinarySAM, "_sam_gradient", at_w)
    assert "ALG/quadratic/sam/eta=0.5L^-1,rho=0.1" in _failed(_sweep_checks("sam"))
    assert "ALG/quadratic/bqsam-ste/eta=1L^-1,rho=0.1" in _failed(_sweep_checks("bqsam-ste"))
    tight = _failed(tightness.run(Context(Settings.make(quick=True))))
    assert "T1/quadratic-1d/sam/eta=1L^-1,rho=0.1,w0=rho,tight" in tight
    assert "one-step/quadratic-1d/sam/eta=1L^-1,rho=0.1,w0=rho,tight" in tight


def test_unscaled_binarizer_caught(monkeypatch):
    # Bug: the optimizer binarizes to sgn(w) without the scale alpha = ||w||_1 / n.
    import bqsam.optim as optim_module

    real_binarize = optim_module.binarize
    monkeypatch.setattr(optim_module, "binarize", lambda t, scale=True, per_channel=False: real_binarize(t, False, per_channel))
    failed = _failed(_sweep_checks("bqsam-ste"))
    assert "ALG/quadratic/bqsam-ste/eta=0.5L^-1,rho=0.1" in failed
    assert "lemma-e/quadratic/bqsam-ste/eta=0.5L^-1,rho=0.1" in failed


def test_hessian_term_sign_caught(monkeypatch):
    # Bug: the Hessian correction is subtracted instead of added.
    original = BinarySAM._jacobian_direction

    def negated(self, grads, descent_grads):
        return [-v for v in original(self, grads, descent_grads)]

    monkeypatch.setattr(BinarySAM, "_jacobian_direction", negated)
    ctx = Context(Settings.make(quick=True))
    failed = _failed(sam._type2_checks(PROBLEM, ctx.analysis(PROBLEM, "sam-hessian-exact")))
    assert "S-type2/quadratic/sam-hessian-exact/eta=0.5L^-1,rho=0.1" in failed
    assert "ALG/quadratic/sam-hessian-exact/eta=0.5L^-1,rho=0.1" in _failed(_sweep_checks("sam-hessian-exact"))


def test_understated_smoothness_caught(monkeypatch):
    # Wrong constant: the run uses the true L, the bounds are evaluated with L/10.
    from verify.analysis import analyse

    ctx = Context(Settings.make(quick=True))
    trace = ctx.sweep(PROBLEM, "sam")
    problem = ctx.instances[PROBLEM].problem
    monkeypatch.setattr(problem, "L", problem.L / 10)
    run = analyse(trace)
    failed = _failed(descent.sweep_checks(PROBLEM, run, row_settings(METHODS["sam"], ctx.settings), ctx.settings.eta_factors))
    assert "one-step/quadratic/sam/eta=0.5L^-1,rho=0.1" in failed
    assert "one-step/quadratic/sam/eta=1L^-1,rho=0.1" in failed
    assert "S2/quadratic/sam/rho=0.1" in _failed(sam._s2_checks(PROBLEM, run))


def test_sign_of_zero_bug_caught(monkeypatch):
    # Bug: sgn(0) = 0 (torch.sign) in the binarizer; every start point has a zero coordinate.
    import bqsam.quantizers as quantizers

    monkeypatch.setattr(quantizers, "sgn", torch.sign)
    failed = _failed(_sweep_checks("bc"))
    assert "ALG/quadratic/bc/eta=0.5L^-1,rho=0" in failed
    assert "ALG/quadratic/bc/eta=1L^-1,rho=0" in failed
