"""VPTR's frame autoencoder (trained first, then frozen) and its PatchGAN discriminator.

The encoder has no skip connections to the decoder on purpose: the transformer must predict
everything the decoder needs in the feature space. Paper sizes: 7x7 conv to 64 channels, three
stride-2 convs 64 -> 128 -> 256 -> 528, nine ResNet blocks at 528 channels (64x64 -> 8x8x528);
the decoder mirrors it with transposed convs and ends in Sigmoid (Moving MNIST) or Tanh.
"""

from __future__ import annotations

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import PatchDiscriminator as PatchGAN
from videogen.models.layers import ResidualBlock, conv_norm_act

OUTPUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class ResNetEncoder(nn.Module):
    """Image (N, C, H, W) -> non-negative features (N, feature_dim, H / 2**n, W / 2**n)."""

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 64,
        feature_dim: int = 528,
        num_downsampling: int = 3,
        num_res_blocks: int = 9,
    ) -> None:
        super().__init__()
        layers = conv_norm_act(in_channels, base_channels, 7, padding="reflect", bias=False)
        channels = base_channels
        for level in range(num_downsampling):
            out = feature_dim if level == num_downsampling - 1 else channels * 2
            layers += conv_norm_act(channels, out, 3, stride=2, bias=False)
            channels = out
        layers += [ResidualBlock(channels, norm="batch") for _ in range(num_res_blocks)]
        # Features stay non-negative; the transformers end in a ReLU to predict the same range.
        layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ResNetDecoder(nn.Module):
    """Features (N, feature_dim, h, w) -> image (N, C, h * 2**n, w * 2**n) in the output range."""

    def __init__(
        self,
        out_channels: int,
        base_channels: int = 64,
        feature_dim: int = 528,
        num_downsampling: int = 3,
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ConfigError(
                f"model.net.output_activation must be one of {sorted(OUTPUT_ACTIVATIONS)}, got "
                f"{output_activation!r}."
            )
        layers: list[nn.Module] = []
        channels = feature_dim
        for level in reversed(range(num_downsampling)):
            out = base_channels * 2**level
            layers += conv_norm_act(channels, out, 3, stride=2, bias=False, transposed=True)
            channels = out
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, out_channels, 7),
            OUTPUT_ACTIVATIONS[output_activation](),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class VPTRAutoencoder(nn.Module):
    """Frame-wise encoder/decoder for videos (B, T, C, H, W) <-> features (B, T, D, h, w).

    `output_activation` fixes the pixel range the decoder produces and is trained against:
    [0, 1] for "sigmoid", [-1, 1] for "tanh".
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: tuple[int, int] | list[int] = (64, 64),
        base_channels: int = 64,
        feature_dim: int = 528,
        num_downsampling: int = 3,
        num_res_blocks: int = 9,
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        factor = 2**num_downsampling
        height, width = (int(s) for s in img_size)
        if height % factor or width % factor:
            raise ConfigError(
                f"the autoencoder halves frames model.net.num_downsampling={num_downsampling} "
                f"times, so data.height={height} and data.width={width} must be multiples of "
                f"{factor}: change the frame size or model.net.num_downsampling."
            )
        self.in_channels = in_channels
        self.img_size = (height, width)
        self.feature_dim = feature_dim
        self.feature_size = (height // factor, width // factor)
        self.output_activation = output_activation
        self.encoder = ResNetEncoder(
            in_channels, base_channels, feature_dim, num_downsampling, num_res_blocks
        )
        self.decoder = ResNetDecoder(
            in_channels, base_channels, feature_dim, num_downsampling, output_activation
        )

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        batch = video.shape[0]
        return self.encoder(video.flatten(0, 1)).unflatten(0, (batch, -1))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        batch = features.shape[0]
        return self.decoder(features.flatten(0, 1)).unflatten(0, (batch, -1))

    def to_output_range(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the decoder's output range."""
        return pixels * 2 - 1 if self.output_activation == "tanh" else pixels

    def to_unit_range(self, output: torch.Tensor) -> torch.Tensor:
        """Decoder output -> pixels in [0, 1]."""
        return (output + 1) / 2 if self.output_activation == "tanh" else output

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(video))


class PatchDiscriminator(PatchGAN):
    """VPTR's frame discriminator: pix2pix's PatchGAN as pix2pix builds it (padding 1, batch
    norm, PyTorch's default initialisation); frames (N, C, H, W) -> patch logits."""

    def __init__(self, in_channels: int = 1, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__(in_channels, base_channels, num_layers, norm="batch", padding=1, init=None)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(image)[-1]
