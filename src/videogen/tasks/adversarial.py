"""Shared stepping of the GAN tasks: players updated in turn, each by its own optimiser.

A GAN step is several backward passes per batch: the generator's loss goes through the
discriminator (whose weights must not move), then the discriminator's loss goes through
detached generator outputs. Two things make that work, alike with one process or many:

- `player(optimizer)` toggles the other players' weights to `requires_grad=False` while one
  player's loss is built and back-propagated, so the generator's update computes no gradient
  for the discriminator's weights (work saved, nothing left dangling).
- DDP all-reduces gradients in every backward pass and, by default, expects every trainable
  parameter to receive one. Each player's pass reaches only its own weights, so these tasks set
  `find_unused_parameters`: DDP then walks the autograd graph from each loss and marks the other
  players' parameters ready without a gradient (theirs are left untouched). The walk is cheap
  next to a conv net's backward pass; the alternative, a zero-weighted term of every parameter
  in every loss, would have to be kept in step with each network by hand.

`step` decides whether to update together with the other ranks: a non-finite loss on any rank
skips the update on every rank, so no rank waits in an all-reduce the others never join.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager

import torch

from videogen.tasks.base import VideoTask

log = logging.getLogger(__name__)


class AdversarialTask(VideoTask):
    """Base of the manual-optimisation tasks with several players (generator, discriminators)."""

    find_unused_parameters = True
    # Norm at which `step` clips the updated player's gradients; None does not clip.
    grad_clip_norm: float | None = None
    # Updates skipped because a loss was non-finite (on this rank or another).
    skipped_steps: int = 0

    def player(self, optimizer: torch.optim.Optimizer) -> AbstractContextManager[None]:
        """While open, only `optimizer`'s parameters require gradients (Lightning's toggle)."""
        return self.toggled_optimizer(optimizer)

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> bool:
        """Backward, clip and step `optimizer`; skipped (and counted) when `loss` is non-finite
        on any rank. Returns whether the update was made."""
        optimizer.zero_grad(set_to_none=True)
        if not self.finite_on_every_rank(loss):
            self.skipped_steps += 1
            log.warning(
                "Skipped an update with a non-finite loss on at least one rank (%d so far).",
                self.skipped_steps,
            )
            return False
        self.manual_backward(loss)
        if self.grad_clip_norm:
            self.clip_gradients(optimizer, self.grad_clip_norm, "norm")
        optimizer.step()
        return True
