"""Two gloo processes on 127.0.0.1 against a one-process reference of local SAM.

The reference splits every global batch into the same two halves as the two ranks. It
takes each half's SAM perturbation from that half's own gradient, averages the two descent
gradients and applies torch.optim.SGD. It is written here from bqsam.quantizers and
bqsam.perturbation, without the trainer.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn import functional as F

from bqsam.perturbation import sam_perturbation
from bqsam.quantizers import binarize
from bqsam.train.checkpoint import load_checkpoint
from bqsam.train.config import TrainConfig
from bqsam.train.data import BatchLoader, load_dataset
from bqsam.train.models import build_model

MODEL_SEED = 11
SETTINGS = {
    "sgd": dict(method="sgd"),
    "bqsam": dict(method="bqsam", rho=0.5, quantizer="ste"),
}
COMMON = dict(
    model="smallcnn", epochs=2, batch_size=32, eval_batch_size=16, lr=0.05, momentum=0.9,
    weight_decay=5e-4, schedule="constant", threads=1, log_every=1000,
)
BINARIZED = ("conv2.weight", "fc1.weight")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fresh_model():
    torch.manual_seed(MODEL_SEED)
    return build_model("smallcnn")


def replica(rank: int, port: int, data, out_dir: str) -> None:
    """Entry point of one spawned process: train every method of SETTINGS as one rank."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
        LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    from bqsam.train.loop import train

    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for name, settings in SETTINGS.items():
            config = TrainConfig(**COMMON, **settings, out=os.path.join(out_dir, name))
            train(config, model=fresh_model(), data=data)
    finally:
        dist.destroy_process_group()


def reference_weights(name: str, data, shared_perturbation: bool = False) -> dict[str, torch.Tensor]:
    """One process, each global batch split in two halves with local SAM perturbations."""
    settings = {**COMMON, **SETTINGS[name]}
    config = TrainConfig(**settings).resolved()
    train_images, train_labels = data[0], data[1]
    model = fresh_model()
    params = dict(model.named_parameters())
    names = list(params)
    optimizer = torch.optim.SGD(
        params.values(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    loader = BatchLoader(train_images, train_labels, batch_size=config.batch_size, dataset="cifar10",
                         train=True, seed=config.seed, augment=True)

    def gradient_at(point, x, y):
        with torch.no_grad():
            for n in names:
                params[n].copy_(point[n])
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return [params[n].grad.detach().clone() for n in names]

    for epoch in range(config.epochs):
        for x, y in loader.batches(epoch):
            latent = {n: params[n].detach().clone() for n in names}
            quantized = config.quantizer is not None
            point = {n: binarize(w) if quantized and n in BINARIZED else w for n, w in latent.items()}
            half = len(y) // 2
            halves = [(x[:half], y[:half]), (x[half:], y[half:])]
            if config.rho == 0:
                grads = [gradient_at(point, hx, hy) for hx, hy in halves]
            else:
                ascent = [gradient_at(point, hx, hy) for hx, hy in halves]
                if shared_perturbation:
                    mean = [(a + b) / 2 for a, b in zip(*ascent)]
                    ascent = [mean, mean]
                grads = []
                for (hx, hy), g in zip(halves, ascent):
                    e = sam_perturbation(g, config.rho)
                    grads.append(gradient_at({n: point[n] + ei for n, ei in zip(names, e)}, hx, hy))
            with torch.no_grad():
                for n in names:
                    params[n].copy_(latent[n])
            for n, g0, g1 in zip(names, *grads):
                params[n].grad = (g0 + g1) / 2
            optimizer.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="module")
def small_data(cifar10_dir):
    train_images, train_labels = load_dataset("cifar10", cifar10_dir, "train", subset=64, seed=0)
    test_images, test_labels = load_dataset("cifar10", cifar10_dir, "test", subset=40, seed=0)
    return tuple(torch.from_numpy(a) for a in (train_images, train_labels, test_images, test_labels))


@pytest.fixture(scope="module")
def two_process_runs(small_data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(replica, args=(free_port(), small_data, str(out_dir)), nprocs=2, join=True)
    return out_dir


@pytest.mark.parametrize("name", list(SETTINGS))
def test_two_processes_match_split_batch_reference(name, two_process_runs, small_data):
    expected = reference_weights(name, small_data)
    trained = load_checkpoint(two_process_runs / name / "checkpoint.pt")
    assert trained["epoch"] == 2
    for n, value in expected.items():
        torch.testing.assert_close(trained["model"][n], value, rtol=1e-5, atol=1e-6, msg=n)


def test_shared_perturbation_would_be_detected(small_data):
    # The check above can fail: a perturbation from the all-reduced ascent gradient moves
    # the weights far beyond its tolerance.
    local = reference_weights("bqsam", small_data)
    shared = reference_weights("bqsam", small_data, shared_perturbation=True)
    largest = max((local[n] - shared[n]).abs().max().item() for n in local)
    assert largest > 1e-3


def test_two_processes_write_one_run_directory(two_process_runs):
    import json

    config = json.loads((two_process_runs / "bqsam" / "config.json").read_text())
    assert config["world_size"] == 2
    rows = (two_process_runs / "bqsam" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    assert json.loads(rows[-1])["deployed_test_acc"] is not None
