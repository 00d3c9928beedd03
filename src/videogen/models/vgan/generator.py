"""VGAN's two-stream generator (Vondrick, Pirsiavash & Torralba, NeurIPS 2016).

A code z (100-d, with a label embedding appended for a class-conditional model) feeds two
streams of transposed convolutions with BatchNorm and ReLU:

- background: 2D, one image b for the whole clip (tanh), repeated over time by broadcasting;
- foreground: 3D, a moving video f (tanh) and a mask m (sigmoid) from two heads on one trunk.

The clip is m * f + (1 - m) * b (`layers.compose_masked`, the composition vid2vid uses too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import compose_masked, init_weights, norm_layer
from videogen.models.vgan.sizes import ClipPlan, plan_clip, stage_widths


@dataclass
class TwoStreamOutput:
    """A generated clip and the streams it is composed of, each (B, T, C, H, W): `video` and
    `foreground` in [-1, 1], `background` in [-1, 1] (the same frame at every t: a broadcast
    view of one image), `mask` in [0, 1] with one channel."""

    video: torch.Tensor
    foreground: torch.Tensor
    background: torch.Tensor
    mask: torch.Tensor


UPSAMPLING = ("transposed", "resize")
# The mask head's squashing: the paper's sigmoid, or the hard sigmoid clamp(x / 6 + 1/2, 0, 1),
# which reaches 0 exactly, so a closed mask lets none of the foreground through.
MASK_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid}


def upsampling(
    in_channels: int,
    out_channels: int,
    doubles_time: bool,
    bias: bool,
    mode: str = "transposed",
    dims: int = 3,
) -> nn.Module:
    """A layer doubling height and width, and (3D) time if `doubles_time`.

    "transposed" (the paper's): a stride-2 transposed conv, kernel 4 (a temporal kernel of 3
    keeps the frame count). "resize": nearest-neighbour upsampling then a kernel-3 conv, which
    cannot draw the checkerboard that overlapping transposed kernels draw (Odena et al. 2016);
    in time that checkerboard is flicker between even and odd frames.
    """
    if mode == "resize":
        scale = (2 if doubles_time else 1, 2, 2) if dims == 3 else 2
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        return nn.Sequential(
            nn.Upsample(scale_factor=scale, mode="nearest"),
            conv(in_channels, out_channels, 3, 1, 1, bias=bias),
        )
    if dims == 2:
        return nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=bias)
    kernel, stride, padding = (4, 2, 1) if doubles_time else ((3, 4, 4), (1, 2, 2), 1)
    return nn.ConvTranspose3d(in_channels, out_channels, kernel, stride, padding, bias=bias)


class TwoStreamGenerator(nn.Module):
    """z (B, latent_dim) [+ labels (B,)] -> `TwoStreamOutput` of (num_frames, img_size) clips.

    The paper's network is the default: z in R^100, 32 frames of 64x64, widths 512 -> 64
    (`base_channels` at the finest stage, doubling towards the coarsest, at most
    `max_channels`). Other sizes follow `sizes.plan_clip`. `num_classes` > 0 appends a learned
    `label_dim`-d embedding of the label to z (0: unconditional, as in the paper). `mask_bias`:
    the mask head's initial bias (0: the paper's initialisation). `upsample`: "transposed"
    convs (the paper's) or "resize" (nearest upsampling and a conv, see `upsampling`) in every
    doubling of both streams. `mask_activation`: "sigmoid" (the paper's) or "hard_sigmoid"
    (`MASK_ACTIVATIONS`).
    """

    def __init__(
        self,
        num_frames: int = 32,
        img_size: int | tuple[int, int] | list[int] = 64,
        out_channels: int = 3,
        latent_dim: int = 100,
        base_channels: int = 64,
        max_channels: int = 512,
        num_classes: int = 0,
        label_dim: int = 16,
        mask_bias: float = 0.0,
        init: str = "gan",
        upsample: str = "transposed",
        mask_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        for key, value, choices in (
            ("upsample", upsample, UPSAMPLING),
            ("mask_activation", mask_activation, tuple(MASK_ACTIVATIONS)),
        ):
            if value not in choices:
                raise ConfigError(
                    f"model.net.{key}={value!r} is not one of {', '.join(choices)}: pick one "
                    "of them."
                )
        if latent_dim < 1 or num_classes < 0 or (num_classes and label_dim < 1):
            raise ConfigError(
                f"model.net.latent_dim ({latent_dim}) and, for a class-conditional model, "
                f"label_dim ({label_dim}) must be positive and num_classes ({num_classes}) "
                "at least 0: set them so."
            )
        self.plan: ClipPlan = plan_clip(num_frames, img_size)
        self.num_frames = num_frames
        self.img_size = (self.plan.height, self.plan.width)
        self.out_channels = out_channels
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        widths = stage_widths(self.plan.stages, base_channels, max_channels)
        code_dim = latent_dim + (label_dim if num_classes else 0)
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None
        frames, height, width = self.plan.seed

        # Background: a 1x1 code to the seed map, then 2D doublings. Convs before a BatchNorm
        # have no bias (the norm would subtract it again).
        background: list[nn.Module] = [
            nn.ConvTranspose2d(code_dim, widths[0], (height, width), bias=False),
            norm_layer("batch", widths[0], dims=2),
            nn.ReLU(inplace=True),
        ]
        foreground: list[nn.Module] = [
            nn.ConvTranspose3d(code_dim, widths[0], (frames, height, width), bias=False),
            norm_layer("batch", widths[0], dims=3),
            nn.ReLU(inplace=True),
        ]
        for stage in range(1, self.plan.stages):
            background += [
                upsampling(widths[stage - 1], widths[stage], True, False, upsample, dims=2),
                norm_layer("batch", widths[stage], dims=2),
                nn.ReLU(inplace=True),
            ]
            doubles = self.plan.doubles_time(stage - 1)
            foreground += [
                upsampling(widths[stage - 1], widths[stage], doubles, False, upsample),
                norm_layer("batch", widths[stage], dims=3),
                nn.ReLU(inplace=True),
            ]
        background += [
            upsampling(widths[-1], out_channels, True, True, upsample, dims=2),
            nn.Tanh(),
        ]
        self.background = nn.Sequential(*background)
        self.foreground = nn.Sequential(*foreground)
        last_doubles = self.plan.doubles_time(self.plan.stages - 1)
        self.video_head = nn.Sequential(
            upsampling(widths[-1], out_channels, last_doubles, True, upsample), nn.Tanh()
        )
        self.mask_head = nn.Sequential(
            upsampling(widths[-1], 1, last_doubles, True, upsample),
            MASK_ACTIVATIONS[mask_activation](),
        )
        init_weights(self, init)
        # The mask's starting logit: 0 (the paper's init) opens it halfway everywhere; a
        # negative value starts it mostly closed, so that the static background explains the
        # scene first and the foreground opens the mask only where something moves.
        mask_conv = [m for m in self.mask_head.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        nn.init.constant_(mask_conv[-1].bias, mask_bias)

    def code(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z with the label embedding appended (class-conditional models) -> (B, code_dim)."""
        if self.label_embedding is None:
            if labels is not None:
                raise ConfigError(
                    "this VGAN is unconditional (model.net.num_classes=0): give no labels."
                )
            return z
        if labels is None:
            raise ConfigError(
                f"this VGAN is class-conditional (model.net.num_classes={self.num_classes}): "
                "give a label for every clip."
            )
        return torch.cat([z, self.label_embedding(labels).to(z.dtype)], dim=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> TwoStreamOutput:
        code = self.code(z, labels)
        image = self.background(code[:, :, None, None])  # B, C, H, W
        trunk = self.foreground(code[:, :, None, None, None])
        # The heads work in (B, C, T, H, W); videos here are (B, T, C, H, W).
        foreground = self.video_head(trunk).transpose(1, 2)
        mask = self.mask_head(trunk).transpose(1, 2)
        # One image for every frame: a view with stride 0 along time, no copies.
        background = image.unsqueeze(1).expand(-1, self.num_frames, -1, -1, -1)
        video = compose_masked(mask, foreground, background)
        return TwoStreamOutput(video, foreground, background, mask)
