"""vid2vid's discriminators: a multi-scale conditional PatchGAN on single frames (D_I) and a
video discriminator on short clips of frames plus the flows between them (D_V).

Every discriminator returns the output of each of its blocks, not only the patch logits, so the
generator can be trained with pix2pixHD's feature matching loss. D_V judges clips of K
consecutive frames at several temporal scales: scale s takes every 3**s-th frame, so coarse
scales see long-range motion while scale 0 sees frame-to-frame consistency.
"""

from __future__ import annotations

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import PatchDiscriminator, check_norm

# Flows are in pixels (tens of pixels for fast motion) while frames lie in [-1, 1]; dividing
# keeps both inputs in a similar range so neither dominates the first convolution.
FLOW_SCALE = 20.0


# The config keys of the discriminators' shared settings, for error messages.
NORM_KEYS = (
    "the discriminators' norm (model.image_discriminator.norm, model.video_discriminator.norm)"
)


class MultiscaleDiscriminator(nn.Module):
    """`num_scales` PatchGANs; scale i judges the input average-pooled i times (pix2pixHD).

    Coarser scales have a larger receptive field relative to the image and judge global
    structure, the finest one judges texture.
    """

    def __init__(
        self,
        in_channels: int,
        num_scales: int = 2,
        base_channels: int = 64,
        num_layers: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        check_norm(norm, NORM_KEYS)
        if num_layers < 1:
            raise ConfigError(
                f"the discriminators' num_layers (model.image_discriminator.num_layers, "
                f"model.video_discriminator.num_layers) must be at least 1, got {num_layers}."
            )
        if num_scales < 1:
            raise ConfigError(
                f"the discriminators' num_scales (model.image_discriminator.num_scales, "
                f"model.video_discriminator.num_scales) must be at least 1, got {num_scales}."
            )
        self.scales = nn.ModuleList(
            # pix2pixHD pads by 2: maps of small frames stay larger than 1x1 for instance norm.
            PatchDiscriminator(in_channels, base_channels, num_layers, norm, padding=2, init="gan")
            for _ in range(num_scales)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """One list of block outputs per scale, finest scale first."""
        outputs = []
        for index, discriminator in enumerate(self.scales):
            if index > 0:
                x = self.downsample(x)
            outputs.append(discriminator(x))
        return outputs


def temporal_stride(scale: int) -> int:
    """Frame step of temporal scale `scale`: 1, 3, 9, ... (vid2vid's frame skipping)."""
    if scale < 0:
        raise ValueError(f"temporal scale must be non-negative, got {scale}.")
    return 3**scale


def clip_start_indices(num_frames: int, frames_per_clip: int, stride: int) -> list[int]:
    """Every start s such that frames s, s + stride, ..., s + (K - 1) * stride exist.

    Empty when a clip of `frames_per_clip` frames at this stride is longer than the video.
    """
    if frames_per_clip < 1 or stride < 1:
        raise ValueError(
            f"frames_per_clip and stride must be at least 1, got {frames_per_clip} and {stride}."
        )
    span = (frames_per_clip - 1) * stride
    return list(range(max(0, num_frames - span)))


class VideoDiscriminator(nn.Module):
    """D_V: judges K frames and the K - 1 flows between them, one multi-scale D per temporal
    scale.

    The flows let the discriminator check that the motion of the frames is plausible and
    consistent with the flow the generator warps with, not only that each frame looks real.
    """

    def __init__(
        self,
        frame_channels: int,
        frames_per_clip: int = 3,
        num_temporal_scales: int = 2,
        num_scales: int = 2,
        base_channels: int = 64,
        num_layers: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if frames_per_clip < 2:
            raise ConfigError(
                f"model.video_discriminator.frames_per_clip must be at least 2 (there are no "
                f"flows otherwise), got {frames_per_clip}."
            )
        if num_temporal_scales < 1:
            raise ConfigError(
                f"model.video_discriminator.num_temporal_scales must be at least 1, got "
                f"{num_temporal_scales}."
            )
        self.frame_channels = frame_channels
        self.frames_per_clip = frames_per_clip
        self.in_channels = frames_per_clip * frame_channels + (frames_per_clip - 1) * 2
        self.temporal_scales = nn.ModuleList(
            MultiscaleDiscriminator(self.in_channels, num_scales, base_channels, num_layers, norm)
            for _ in range(num_temporal_scales)
        )

    @property
    def num_temporal_scales(self) -> int:
        """How many temporal scales (frame strides 1, 3, 9, ...) this discriminator judges."""
        return len(self.temporal_scales)

    def check_shapes(self, frames: torch.Tensor, flows: torch.Tensor, temporal_scale: int) -> None:
        """Raise a ValueError that says what is wrong with the inputs of `forward`."""
        k, c = self.frames_per_clip, self.frame_channels
        if frames.dim() != 5 or frames.shape[1] != k or frames.shape[2] != c:
            raise ValueError(
                f"frames must be (B, {k}, {c}, H, W) (clips of {k} frames of {c} channels), got "
                f"{tuple(frames.shape)}."
            )
        batch, _, _, height, width = frames.shape
        expected = (batch, k - 1, 2, height, width)
        if tuple(flows.shape) != expected:
            raise ValueError(
                f"flows must be {expected} (the {k - 1} flows between the frames, at the frames' "
                f"size), got {tuple(flows.shape)}."
            )
        if not 0 <= temporal_scale < self.num_temporal_scales:
            raise ValueError(
                f"temporal_scale must be in [0, {self.num_temporal_scales}), got {temporal_scale}."
            )

    def forward(
        self, frames: torch.Tensor, flows: torch.Tensor, temporal_scale: int
    ) -> list[list[torch.Tensor]]:
        """Frames (B, K, C, H, W) and flows (B, K - 1, 2, H, W) -> per-scale block outputs."""
        self.check_shapes(frames, flows, temporal_scale)
        x = torch.cat([frames.flatten(1, 2), flows.flatten(1, 2) / FLOW_SCALE], dim=1)
        return self.temporal_scales[temporal_scale](x)
