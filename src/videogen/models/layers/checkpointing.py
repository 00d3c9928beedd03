"""Activation checkpointing, one way for every family: `run_blocks(..., checkpointing=True)`."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from videogen.models.layers.norms import batchnorms, kept_batchnorm_statistics


def recompute_options(block: nn.Module) -> dict[str, Any]:
    """`checkpoint` options for `block`: its BatchNorm running statistics are put back after the
    backward pass's recompute, so that they are updated once per step, as without checkpointing.

    Compiled, the recompute is part of a functional backward graph that updates no statistics
    (and dynamo cannot trace a `context_fn`), so nothing is needed.
    """
    if not batchnorms(block) or torch.compiler.is_compiling():
        return {}
    return {"context_fn": lambda: (nullcontext(), kept_batchnorm_statistics(block))}


def run_blocks(
    blocks: Iterable[nn.Module], x: torch.Tensor, *args: Any, checkpointing: bool = False
) -> torch.Tensor:
    """`x = block(x, *args)` for each block in turn.

    With `checkpointing` (and gradients enabled), each block's activations are not kept for the
    backward pass but recomputed there: less memory for about one more forward pass. Gradients
    are those of the plain run, dropout included (its random state is replayed), and so are
    BatchNorm running statistics.
    """
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, *args, use_reentrant=False, **recompute_options(block))
        else:
            x = block(x, *args)
    return x
