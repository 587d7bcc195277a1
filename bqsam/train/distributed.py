"""Data-parallel training with torch.distributed, SAM style.

Each replica computes its SAM perturbation from its own minibatch gradient, as Foret et al.
(2021) do: no all-reduce of the ascent gradient. Only the final descent gradient is
averaged over the R replicas before the base optimizer step,

    G = (1/R) sum_r G_r,    G_r = g_r(x_k + e_r),    e_r = rho g_r(x_k) / ||g_r(x_k)||,

so R processes equal one process that splits each global batch into the same R shards,
perturbs each shard on its own and averages the shard gradients.

The average is taken inside the base optimizer: :func:`all_reduce_optimizer` returns a
subclass of ``torch.optim.SGD`` or ``Adam`` whose ``step`` first averages ``p.grad``
across replicas. BinarySAM calls the base step exactly once per iteration, after it has
placed the final gradient (first-order or Hessian-corrected) in ``p.grad``. So every
gradient type is averaged once and the ascent passes stay local.

NOTE: the equivalence with one process is tested for first-order SAM and SGD on CPU (gloo);
the Hessian-corrected gradients and NCCL were not run with several processes.

Launch with torchrun (NCCL on GPUs, gloo on CPU):

    torchrun --nproc-per-node 2 -m bqsam train --method bqsam --data-dir DIR --out runs/a
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "init_distributed",
    "shutdown_distributed",
    "all_reduce_optimizer",
    "average_gradients",
    "average_buffers",
    "all_reduce_sum",
    "broadcast_parameters",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Rank, world size and backend of this process (world size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False  # whether init_distributed created the group (and shutdown ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised. The backend is
    NCCL for CUDA devices and gloo otherwise. A process group that the caller initialised
    already is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
            backend=dist.get_backend(),
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    backend = "nccl" if device_type == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    context = DistributedContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=backend,
        owned=True,
    )
    logger.info("joined process group: rank %d of %d, backend %s", context.rank, context.world_size, backend)
    return context


def shutdown_distributed(context: DistributedContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if context.owned and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace every ``p.grad`` by its mean over all replicas (one flat all-reduce)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(dist.get_world_size())
    offset = 0
    for grad in grads:
        count = grad.numel()
        grad.copy_(flat[offset : offset + count].view_as(grad))
        offset += count


_REDUCING_CLASSES: dict[type, type] = {}


def all_reduce_optimizer(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """Return a subclass of ``base`` whose ``step`` averages gradients across replicas first.

    The subclass has the same hyperparameters and ``state_dict`` layout as ``base``, so a
    checkpoint written by a distributed run loads into a single-process run and back.
    """
    if base in _REDUCING_CLASSES:
        return _REDUCING_CLASSES[base]

    def step(self, closure=None):
        for group in self.param_groups:
            average_gradients(group["params"])
        return base.step(self, closure)

    reducing = type(f"AllReduce{base.__name__}", (base,), {"step": step, "__module__": __name__})
    _REDUCING_CLASSES[base] = reducing
    return reducing


def average_buffers(model: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over all replicas.

    Each replica updates its running statistics from its own shard; averaging them before
    evaluation and checkpointing keeps every replica's model identical.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(dist.get_world_size())


def broadcast_parameters(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every replica."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for tensor in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(tensor.data, src=0)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Return the sum of ``values`` over all replicas (``values`` itself without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
