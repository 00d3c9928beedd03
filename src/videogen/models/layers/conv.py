"""Convolutional building blocks: conv-norm-activation, the residual block, and the PatchGAN
discriminator, in 2D (frames) or 3D (clips), with what the families do differently as arguments."""

from __future__ import annotations

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers.init import init_weights

NORMS = ("instance", "batch", "none")
ACTIVATIONS = ("relu", "leaky_relu", "none")


def check_norm(norm: str, key: str = "model.discriminator.norm") -> None:
    """Refuse a norm name other than "instance", "batch" or "none", naming its config `key`."""
    if norm not in NORMS:
        raise ConfigError(f"{key} must be one of {list(NORMS)}, got {norm!r}.")


def norm_layer(norm: str, channels: int, dims: int = 2) -> nn.Module:
    """The normalisation named by `norm` ("instance", "batch" or "none") for `channels`.

    Instance norm has no affine parameters (pix2pix); batch norm has them.
    """
    check_norm(norm)
    if norm == "instance":
        return nn.InstanceNorm2d(channels) if dims == 2 else nn.InstanceNorm3d(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    return nn.Identity()


def activation(name: str) -> nn.Module:
    """ReLU, LeakyReLU(0.2) (GAN discriminators) or nothing."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}: choose one of {list(ACTIVATIONS)}.")


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: str = "zeros",
    norm: str = "batch",
    act: str = "relu",
    bias: bool = True,
    transposed: bool = False,
    dims: int = 2,
) -> list[nn.Module]:
    """[pad,] conv, norm, activation, as a list for the caller to place in its Sequential.

    `padding="reflect"` pads by kernel_size // 2 with a reflection layer before an unpadded conv
    (no border artefacts in generators); "zeros" lets the conv pad by kernel_size // 2.
    `transposed` makes a x`stride` upsampling transposed conv (output_padding = stride - 1).
    """
    conv_cls = {
        (2, False): nn.Conv2d,
        (3, False): nn.Conv3d,
        (2, True): nn.ConvTranspose2d,
        (3, True): nn.ConvTranspose3d,
    }[(dims, transposed)]
    layers: list[nn.Module] = []
    pad = kernel_size // 2
    if padding == "reflect":
        if transposed or dims != 2:
            raise ValueError("reflection padding is for 2D convolutions that are not transposed.")
        layers.append(nn.ReflectionPad2d(pad))
        pad = 0
    extra = {"output_padding": stride - 1} if transposed else {}
    layers += [
        conv_cls(in_channels, out_channels, kernel_size, stride, pad, bias=bias, **extra),
        norm_layer(norm, out_channels, dims),
        activation(act),
    ]
    return layers


class ResidualBlock(nn.Module):
    """Two reflection-padded 3x3 convs with a norm (and a ReLU between) and an identity skip."""

    def __init__(self, channels: int, norm: str = "batch", bias: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_norm_act(channels, channels, 3, padding="reflect", norm=norm, bias=bias),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PatchDiscriminator(nn.Module):
    """pix2pix NLayer PatchGAN: images (N, C, H, W), or clips (N, C, T, H, W) with `dims=3`,
    -> the output of every block, the last one a map of real / fake logits (one per patch).

    `num_layers` stride-2 4x4 convs (the first without a norm: it would erase the input's
    scale), one stride-1 conv, then a 4x4 conv to one channel. What the families choose:
    `padding` (1 in pix2pix; 2 in pix2pixHD / vid2vid, which keeps maps of small frames larger
    than 1x1 for instance norm), `norm`, and `init` (a scheme of `layers.init`, or None for
    PyTorch's default). The intermediate outputs feed pix2pixHD's feature matching loss.
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 64,
        num_layers: int = 3,
        norm: str = "instance",
        padding: int = 2,
        init: str | None = "gan",
        dims: int = 2,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ConfigError(
                f"a discriminator's num_layers must be at least 1, got {num_layers}: set "
                "model.*discriminator.num_layers to 1 or more."
            )
        check_norm(norm)  # here too: with one layer no norm layer is built to refuse it
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        blocks: list[nn.Module] = [
            nn.Sequential(
                conv(in_channels, base_channels, 4, 2, padding), nn.LeakyReLU(0.2, inplace=True)
            )
        ]
        channels = base_channels
        for level in range(1, num_layers + 1):
            out = base_channels * min(2**level, 8)
            stride = 2 if level < num_layers else 1
            blocks.append(
                nn.Sequential(
                    # A bias before a normalisation is wasted: the norm subtracts it again.
                    conv(channels, out, 4, stride, padding, bias=norm == "none"),
                    norm_layer(norm, out, dims),
                    nn.LeakyReLU(0.2, inplace=True),
                )
            )
            channels = out
        blocks.append(conv(channels, 1, 4, 1, padding))
        self.blocks = nn.ModuleList(blocks)
        if init is not None:
            init_weights(self, init)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, in order; the last one is the patch logits."""
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs
