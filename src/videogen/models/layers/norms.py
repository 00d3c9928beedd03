"""Normalisation layers and BatchNorm bookkeeping shared by the families."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class FrameLayerNorm(nn.Module):
    """LayerNorm over (C, H, W) of each frame: unlike BatchNorm it mixes no frames, so it is causal."""

    def __init__(self, channels: int, feature_size: tuple[int, int]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm((channels, *feature_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W) -> the same shape and memory layout.

        A channels-last x (the layout VidHRFormer's conv FFN runs in) is normalised as the
        (N, H, W, C) tensor it is in memory: LayerNorm would otherwise copy it to NCHW, and
        every conv after it would run on that layout (VidHRFormer's conv FFN on 10 frames at
        paper size: 39.4 ms, 37.5 ms so, on 2 CPU cores).
        """
        if (
            x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            channels_last = x.permute(0, 2, 3, 1)
            out = F.layer_norm(
                channels_last,
                channels_last.shape[1:],
                self.norm.weight.permute(1, 2, 0),
                self.norm.bias.permute(1, 2, 0),
                self.norm.eps,
            )
            return out.permute(0, 3, 1, 2)
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
