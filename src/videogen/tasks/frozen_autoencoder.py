"""A frozen autoencoder inside a task: frames in [0, 1] to features and back, never trained.

Used by video prediction (VPTR's stage-2 transformers work on a stage-1 autoencoder's features)
and meant for any task that works in a learned feature space (latent diffusion). The network
is built from its stored config and weights, so a task checkpoint holds it whole.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.build import build_network


class FrozenAutoencoder(nn.Module):
    """Holds an autoencoder network (`encode`, `decode`, `to_output_range`, `to_unit_range`,
    `img_size`, `in_channels`) frozen: no gradients to its weights, always in eval mode (its
    BatchNorm statistics never move). Gradients still flow through `decode` to its input."""

    def __init__(self, config: dict[str, Any], weights: dict[str, torch.Tensor] | None) -> None:
        super().__init__()
        self.net = build_network(config)
        if weights is not None:
            self.net.load_state_dict(weights)
        self.net.requires_grad_(False)
        self.net.eval()

    def train(self, mode: bool = True) -> FrozenAutoencoder:
        """Stay in eval mode whatever the owner asks."""
        return super().train(False)

    @property
    def feature_shape(self) -> tuple[int, tuple[int, int]]:
        """(feature channels, feature map size) of the encoder's output."""
        return self.net.feature_dim, tuple(self.net.feature_size)

    def check_frames(self, pixels: torch.Tensor) -> None:
        """Refuse frames of another size or channel count than the autoencoder was trained on."""
        channels, size = self.net.in_channels, tuple(self.net.img_size)
        if tuple(pixels.shape[-2:]) != size or pixels.shape[2] != channels:
            raise ConfigError(
                f"the autoencoder was trained on {channels}-channel {size[0]}x{size[1]} frames "
                f"but the data gives {pixels.shape[2]}-channel {pixels.shape[-2]}x"
                f"{pixels.shape[-1]}: set data.height, data.width and data.channels to match it."
            )

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Video (B, T, C, H, W) in [0, 1] -> features (B, T, D, h, w)."""
        return self.net.encode(self.net.to_output_range(pixels))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> video in the decoder's output range (what reconstruction losses compare)."""
        return self.net.decode(features)

    def to_output_range(self, pixels: torch.Tensor) -> torch.Tensor:
        """Video in [0, 1] -> the decoder's output range."""
        return self.net.to_output_range(pixels)

    def decode_pixels(self, features: torch.Tensor) -> torch.Tensor:
        """Features -> video in [0, 1]."""
        return self.net.to_unit_range(self.net.decode(features))

    def refine(self, features: torch.Tensor) -> torch.Tensor:
        """Decode then re-encode features, as predicted features are fed back at inference."""
        return self.encode(self.decode_pixels(features).clamp(0, 1))
