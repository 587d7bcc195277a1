"""BinarySAM against hand-written steps, exact SAM gradients and the reliability rules."""

import copy
import math

import pytest
import torch
from torch import nn

from bqsam import BinarySAM, binarizable_param_groups, binarize, relax
from bqsam.perturbation import sam_perturbation

pytestmark = pytest.mark.usefixtures("float64_default")


def quadratic_problem(n=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator))
    a = q @ torch.diag(torch.linspace(0.5, 4.0, n)) @ q.T
    b = torch.randn(n, generator=generator)
    w0 = torch.randn(n, generator=generator)
    return a, b, w0


def quartic_loss(w, a, b):
    """A smooth nonquadratic test function with a non-constant Hessian."""
    return 0.5 * w @ a @ w + b @ w + 0.25 * (w**4).sum()


def make_closure(opt, params, loss_fn):
    def closure():
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward(create_graph=opt.create_graph)
        return loss

    return closure


def grad_at(loss_fn, point):
    x = point.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x), [x])
    return g


# ---------------------------------------------------------------- reductions to known methods


@pytest.mark.parametrize(
    "base, kwargs",
    [
        (torch.optim.SGD, dict(lr=0.1)),
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
        (torch.optim.Adam, dict(lr=0.01)),
    ],
)
def test_rho_zero_equals_base_optimizer(base, kwargs):
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731

    w_ref = w0.clone().requires_grad_(True)
    ref = base([w_ref], **kwargs)
    w_sam = w0.clone().requires_grad_(True)
    opt = BinarySAM([w_sam], base, rho=0.0, **kwargs)

    for _ in range(3):
        ref.zero_grad()
        loss_fn(w_ref).backward()
        ref.step()
        opt.step(make_closure(opt, [w_sam], loss_fn))
    assert torch.allclose(w_sam, w_ref, rtol=0, atol=1e-12)


def test_rho_positive_equals_hand_written_sam_step():
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    rho, lr, momentum = 0.2, 0.05, 0.9

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], torch.optim.SGD, rho=rho, lr=lr, momentum=momentum)
    expected = w0.clone()
    buffer = None
    for _ in range(3):
        g = grad_at(loss_fn, expected)
        e = rho * g / g.norm()
        descent = grad_at(loss_fn, expected + e)
        buffer = descent.clone() if buffer is None else momentum * buffer + descent
        expected = expected - lr * buffer
        opt.step(make_closure(opt, [w], loss_fn))
    assert torch.allclose(w, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_quantizer_with_rho_zero_equals_binaryconnect(clip):
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    lr = 0.3

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=0.0, quantizer="ste", clip=clip, lr=lr)
    expected = w0.clone()
    for _ in range(4):
        expected = expected - lr * grad_at(loss_fn, binarize(expected))
        if clip is not None:
            expected = expected.clamp(-clip, clip)
        opt.step(make_closure(opt, [w], loss_fn))
    assert torch.allclose(w, expected, rtol=0, atol=1e-12)


def test_relax_schedule_equals_hand_written_binaryrelax():
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    lr, lam0, gamma = 0.2, 0.5, 2.0

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=0.0, quantizer="relax", lam=lam0, lam_growth=gamma, lr=lr)
    expected = w0.clone()
    for k in range(5):
        expected = expected - lr * grad_at(loss_fn, relax(expected, lam0 * gamma**k))
        opt.step(make_closure(opt, [w], loss_fn))
    assert torch.allclose(w, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("quantizer", ["ste", "relax"])
def test_bqsam_step_perturbs_the_quantized_point(quantizer):
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    rho, lr, lam = 0.1, 0.2, 3.0

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=rho, quantizer=quantizer, lam=lam, lr=lr)
    expected = w0.clone()
    for _ in range(3):
        x = binarize(expected) if quantizer == "ste" else relax(expected, lam)
        g = grad_at(loss_fn, x)
        expected = expected - lr * grad_at(loss_fn, x + rho * g / g.norm())
        opt.step(make_closure(opt, [w], loss_fn))
    assert torch.allclose(w, expected, rtol=0, atol=1e-12)


def test_latent_perturbation_quantizes_after_perturbing():
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    rho, lr = 0.3, 0.2

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=rho, quantizer="ste", perturb="latent", lr=lr)
    x = binarize(w0)
    g = grad_at(loss_fn, x)
    expected = w0 - lr * grad_at(loss_fn, binarize(w0 + rho * g / g.norm()))
    opt.step(make_closure(opt, [w], loss_fn))
    assert torch.allclose(w, expected, rtol=0, atol=1e-12)


def test_latent_perturbation_below_min_weight_keeps_signs():
    # Perturbation diminishment: rho < min |w_i| cannot flip a sign of w + e, so the descent
    # point q(w + e) has the same signs as q(w).
    generator = torch.Generator().manual_seed(3)
    for _ in range(50):
        w = torch.randn(20, generator=generator)
        g = torch.randn(20, generator=generator)
        rho = 0.99 * float(w.abs().min())
        (e,) = sam_perturbation([g], rho)
        assert torch.equal(torch.sign(binarize(w + e)), torch.sign(binarize(w)))


# ---------------------------------------------------------------- Hessian-corrected gradients


def exact_sam_gradient(loss_fn, x, rho, normalize=True):
    """grad of F(x) = f(x + e(x)) by autograd through e(x)."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(x), [x], create_graph=True)
    e = rho * g / g.norm() if normalize else rho * g
    (grad_f,) = torch.autograd.grad(loss_fn(x + e), [x])
    return grad_f


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("sam_grad, rtol", [("hessian-exact", 1e-12), ("hessian-fd", 1e-6)])
def test_hessian_corrected_gradient_is_exact_sam_gradient(normalize, sam_grad, rtol):
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    rho, lr = 0.15, 0.1

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=rho, sam_grad=sam_grad, normalize=normalize, fd_delta=1e-4, lr=lr)
    opt.step(make_closure(opt, [w], loss_fn))
    expected = w0 - lr * exact_sam_gradient(loss_fn, w0, rho, normalize)
    # The central difference has an O(delta^2) truncation error on this quartic.
    assert torch.allclose(w, expected, rtol=rtol, atol=1e-12)


def test_hessian_corrected_gradient_at_quantized_point():
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    rho, lr = 0.15, 0.1

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=rho, quantizer="ste", sam_grad="hessian-exact", lr=lr)
    opt.step(make_closure(opt, [w], loss_fn))
    expected = w0 - lr * exact_sam_gradient(loss_fn, binarize(w0), rho)
    assert torch.allclose(w, expected, rtol=0, atol=1e-12)


def test_hessian_exact_rejects_closure_without_graph():
    w = torch.ones(3, requires_grad=True)
    opt = BinarySAM([w], rho=0.1, sam_grad="hessian-exact", lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**3).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="create_graph"):
        opt.step(closure)


# ---------------------------------------------------------------- zero gradient, batched rows


@pytest.mark.parametrize("sam_grad", ["first-order", "hessian-exact", "hessian-fd"])
@pytest.mark.parametrize("rho", [0.0, 0.1])
def test_base_step_runs_once_per_step(sam_grad, rho, monkeypatch):
    # Distributed training averages gradients inside the base step, so it must run exactly
    # once per BinarySAM step, after the final gradient is in p.grad.
    a, b, w0 = quadratic_problem()
    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([w], rho=rho, quantizer="ste", sam_grad=sam_grad, lr=0.1)
    seen = []
    original = opt.base_optimizer.step

    def counting_step(*args, **kwargs):
        seen.append(w.grad.detach().clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(opt.base_optimizer, "step", counting_step)
    opt.step(make_closure(opt, [w], lambda v: quartic_loss(v, a, b)))
    assert len(seen) == 1
    assert torch.allclose(w, w0 - 0.1 * seen[0], rtol=0, atol=1e-12)


def test_zero_gradient_gives_finite_step():
    w = torch.zeros(4, requires_grad=True)
    opt = BinarySAM([w], rho=0.5, sam_grad="hessian-exact", lr=0.1)
    opt.step(make_closure(opt, [w], lambda v: (v**2).sum()))
    assert torch.isfinite(w).all()
    assert torch.equal(w, torch.zeros(4))


@pytest.mark.parametrize("quantizer, sam_grad", [(None, "first-order"), ("ste", "hessian-exact"), ("relax", "first-order")])
def test_batched_rows_equal_separate_runs(quantizer, sam_grad):
    a, b, _ = quadratic_problem()
    generator = torch.Generator().manual_seed(7)
    w0 = torch.randn(3, 5, generator=generator)
    rho = torch.tensor([0.0, 0.1, 0.4])
    lam = torch.tensor([0.0, 1.0, math.inf])
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    batched_loss = lambda w: sum(loss_fn(w[i]) for i in range(w.shape[0]))  # noqa: E731

    w = w0.clone().requires_grad_(True)
    opt = BinarySAM(
        [{"params": [w], "batched": True, "rho": rho, "lam": lam}],
        quantizer=quantizer, sam_grad=sam_grad, lr=0.1,
    )
    for _ in range(3):
        opt.step(make_closure(opt, [w], batched_loss))

    for i in range(3):
        wi = w0[i].clone().requires_grad_(True)
        single = BinarySAM([wi], quantizer=quantizer, sam_grad=sam_grad, rho=float(rho[i]), lam=float(lam[i]), lr=0.1)
        for _ in range(3):
            single.step(make_closure(single, [wi], loss_fn))
        assert torch.allclose(w[i], wi, rtol=0, atol=1e-12), i


# ---------------------------------------------------------------- training-loop integration


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.bn(self.conv2(x)))
        return self.fc(x.flatten(1))


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 8, 8, generator=generator), torch.randint(0, 3, (6,), generator=generator)


def net_closure(opt, model, x, y):
    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def test_batchnorm_statistics_updated_once_per_step():
    torch.manual_seed(0)
    model = SmallNet()
    reference = copy.deepcopy(model)
    x, y = batch()
    opt = BinarySAM(binarizable_param_groups(model), quantizer="ste", rho=0.1, lr=0.1, model=model)
    opt.step(net_closure(opt, model, x, y))

    # One forward pass at q(w) in training mode is what the statistics must reflect.
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name == "conv2.weight":
                p.copy_(binarize(p))
        reference(x)
    assert model.bn.num_batches_tracked.item() == 1
    assert torch.equal(model.bn.running_mean, reference.bn.running_mean)
    assert torch.equal(model.bn.running_var, reference.bn.running_var)


def test_deployed_context_restores_latent_weights_bitwise():
    torch.manual_seed(0)
    model = SmallNet()
    opt = BinarySAM(binarizable_param_groups(model), quantizer="ste", rho=0.1, lr=0.1, model=model)
    opt.step(net_closure(opt, model, *batch()))
    before = {k: v.clone() for k, v in model.state_dict().items()}

    with opt.deployed():
        w = model.conv2.weight
        assert torch.equal(w.abs(), torch.full_like(w, float(w.detach().abs()[0, 0, 0, 0])))
        assert torch.equal(model.conv1.weight, before["conv1.weight"])
    with pytest.raises(KeyError):
        with opt.deployed():
            raise KeyError("boom")
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = SmallNet()
    opt = BinarySAM(binarizable_param_groups(model), quantizer="relax", lam_growth=1.5, rho=0.1, lr=0.1, momentum=0.9, model=model)
    for seed in range(2):
        opt.step(net_closure(opt, model, *batch(seed)))

    clone = copy.deepcopy(model)
    opt2 = BinarySAM(binarizable_param_groups(clone), quantizer="relax", lam_growth=1.5, rho=0.1, lr=0.1, momentum=0.9, model=clone)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.param_groups[0]["k"] == 2

    for seed in range(2, 4):
        opt.step(net_closure(opt, model, *batch(seed)))
        opt2.step(net_closure(opt2, clone, *batch(seed)))
    for (name, p), q in zip(model.named_parameters(), clone.parameters()):
        assert torch.equal(p, q), name


def test_lr_scheduler_on_binarysam_changes_rate_used():
    w = torch.ones(2, requires_grad=True)
    opt = BinarySAM([w], rho=0.0, lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loss_fn = lambda v: v.sum()  # noqa: E731  gradient is 1 everywhere

    steps = []
    for _ in range(3):
        before = w.detach().clone()
        opt.step(make_closure(opt, [w], loss_fn))
        steps.append(float((before - w.detach())[0]))
        scheduler.step()
    assert steps == [1.0, 0.5, 0.25]
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.125


def test_binarizable_param_groups_keeps_first_and_last():
    model = SmallNet()
    groups = binarizable_param_groups(model)
    binarized = {id(p) for p in groups[0]["params"]}
    assert binarized == {id(model.conv2.weight)}
    all_groups = binarizable_param_groups(model, keep_first_and_last=False)
    assert {id(p) for p in all_groups[0]["params"]} == {id(model.conv1.weight), id(model.conv2.weight), id(model.fc.weight)}


# ---------------------------------------------------------------- invalid usage


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rho=-0.1), "rho must be"),
        (dict(rho=math.inf), "rho must be"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr=-1.0), "lr must be > 0"),
        (dict(quantizer="ternary"), "quantizer must be one of"),
        (dict(sam_grad="second-order"), "sam_grad must be one of"),
        (dict(perturb="somewhere"), "perturb must be one of"),
        (dict(perturb="latent"), "needs a quantizer"),
        (dict(quantizer="relax", lam=-1.0), "lam must be"),
        (dict(quantizer="relax", lam_growth=0.0), "lam_growth must be"),
        (dict(quantizer="ste", clip=0.0), "clip must be"),
        (dict(fd_delta=0.0), "fd_delta must be"),
        (dict(adaptive=True, sam_grad="hessian-exact"), "adaptive=True supports"),
        (dict(base_optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)), "base_optimizer must be"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, match):
    w = torch.ones(3, requires_grad=True)
    kwargs = {"lr": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        BinarySAM([w], **kwargs)


def test_row_tensor_rho_needs_batched_group():
    w = torch.ones(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="batched=True"):
        BinarySAM([{"params": [w], "rho": torch.tensor([0.1, 0.2])}], lr=0.1)


def test_binarize_flag_without_quantizer_is_plain_sgd():
    a, b, w0 = quadratic_problem()
    loss_fn = lambda w: quartic_loss(w, a, b)  # noqa: E731
    w = w0.clone().requires_grad_(True)
    opt = BinarySAM([{"params": [w], "binarize": True, "clip": 0.1}], rho=0.0, lr=0.1)
    opt.step(make_closure(opt, [w], loss_fn))
    assert torch.allclose(w, w0 - 0.1 * grad_at(loss_fn, w0), rtol=0, atol=1e-12)
    after_step = w.detach().clone()
    with opt.deployed():
        assert torch.equal(w, after_step)


def test_step_without_closure_needs_plain_setting():
    w = torch.ones(3, requires_grad=True)
    opt = BinarySAM([w], rho=0.1, lr=0.1)
    with pytest.raises(ValueError, match="needs a closure"):
        opt.step()
