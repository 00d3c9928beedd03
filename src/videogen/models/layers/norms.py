"""Normalisation layers and BatchNorm bookkeeping shared by the families."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class FrameLayerNorm(nn.Module):
    """LayerNorm over (C, H, W) of each frame: unlike BatchNorm it mixes no frames, so it is causal."""

    def __init__(self, channels: int, feature_size: tuple[int, int]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm((channels, *feature_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `module` that keep running statistics."""
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


@contextmanager
def kept_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Undo, on exit, any change to the running statistics of `module`'s BatchNorm layers."""
    buffers = [
        buffer
        for norm in batchnorms(module)
        for buffer in (norm.running_mean, norm.running_var, norm.num_batches_tracked)
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        for buffer, value in zip(buffers, saved, strict=True):
            buffer.copy_(value)
