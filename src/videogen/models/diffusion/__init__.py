"""Diffusion models: the networks (Latte, U-ViT) and the process they are trained and sampled
with (`process.GaussianDiffusion`), kept apart so any network works with any sampler."""

from typing import Protocol, runtime_checkable

import torch

from videogen.models.diffusion.latte import Latte
from videogen.models.diffusion.process import SAMPLERS, SPACINGS, GaussianDiffusion
from videogen.models.diffusion.uvit import UViT


@runtime_checkable
class VideoDenoiser(Protocol):
    """What the diffusion task needs of a network: `forward(x_t, t, labels)` on (B, T, C, H, W)
    inputs, and the sizes and class set it was built for."""

    num_frames: int
    img_size: tuple[int, int]
    in_channels: int
    learn_sigma: bool
    num_classes: int

    @property
    def null_label(self) -> int | None: ...

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor: ...


__all__ = ["SAMPLERS", "SPACINGS", "GaussianDiffusion", "Latte", "UViT", "VideoDenoiser"]
