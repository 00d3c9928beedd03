"""Learning-rate schedules, built once the trainer knows how many steps the run has."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up over `warmup_epochs`, then cosine decay to `min_lr_ratio` x the base lr."""
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / decay_steps, 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: float) -> LambdaLR:
    """Keep the base learning rate for the whole run."""
    return LambdaLR(optimizer, lambda step: 1.0)
