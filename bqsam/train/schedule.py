"""Learning-rate schedules, stepped once per optimizer step.

The rate at global step ``t`` of ``T = epochs * steps_per_epoch`` steps is ``eta_t = eta_0 m(t)``:

    cosine:    m(t) = (1 + cos(pi t / T)) / 2
    step:      m(t) = 0.1 ** (number of the milestones 0.5 T and 0.75 T that t has reached)
    constant:  m(t) = 1

The schedules are ``torch.optim.lr_scheduler.LambdaLR`` objects built on the BinarySAM
optimizer itself, whose param groups the base optimizer shares.

Example:
    >>> import torch
    >>> from bqsam.train.schedule import lr_multiplier
    >>> lr_multiplier("cosine", step=50, total_steps=100)
    0.5
"""

from __future__ import annotations

import math

import torch

__all__ = ["lr_multiplier", "build_scheduler"]


def lr_multiplier(schedule: str, step: int, total_steps: int) -> float:
    """Return ``m(t)`` for ``schedule`` at global step ``step`` of ``total_steps``."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = min(step, total_steps) / max(total_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "step":
        milestones = (0.5 * total_steps, 0.75 * total_steps)
        return 0.1 ** sum(step >= milestone for milestone in milestones)
    raise ValueError(f"schedule={schedule!r} is invalid; valid choices: cosine, step, constant")


class _Multiplier:
    """The multiplier as an object: LambdaLR saves its attributes in ``state_dict``."""

    def __init__(self, schedule: str, total_steps: int) -> None:
        self.schedule = schedule
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        return lr_multiplier(self.schedule, step, self.total_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Return a LambdaLR that applies ``schedule`` over ``total_steps`` optimizer steps."""
    lr_multiplier(schedule, 0, total_steps)  # raises ValueError for an unknown schedule
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps} is invalid; expected an integer >= 1")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Multiplier(schedule, total_steps))
