"""vid2vid's sequential generator: each frame from the current and previous semantic maps and the
previous generated frames, composed as (1 - m) * warp(x_prev, w) + m * h.

The network reads top to bottom as the paper's Figure/Section 3:

- two encoders, one for the semantic maps s_{t-L..t} and one for the generated frames
  x_{t-L..t-1}, whose bottleneck features are summed;
- a shared residual trunk, then an image branch (hallucinated frame h, tanh), a flow branch
  with two heads (flow w in pixels, and a sigmoid occlusion mask m), and an optional foreground
  branch h_F for the classes in `foreground_classes`, whose pixels it makes outright:
  x_t = fg * h_F + (1 - fg) * ((1 - m) * warp(x_prev, w) + m * h), so the background comes from
  warping and moving objects are hallucinated (the official foreground/background prior);
- coarse to fine: `num_spatial_scales` levels, a global generator working at 1 / 2^(S-1) of the
  frame size, and local enhancers that each add a full-resolution front end to the coarser level's
  features (pix2pixHD). The global level has the same shape whatever S is, so a finer model starts
  from a coarser checkpoint's weights (`load_coarser`).

The first frame comes from the same network in single-image mode: no previous frame (zeros) and a
mask of ones, so x_0 = h_0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import ResidualBlock, compose_masked, conv_norm_act, warp


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
) -> nn.Sequential:
    """Conv (reflection padded when stride 1) + InstanceNorm + ReLU."""
    padding = "reflect" if stride == 1 else "zeros"
    return nn.Sequential(
        *conv_norm_act(in_channels, out_channels, kernel_size, stride, padding, norm="instance")
    )


def upsample_norm_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """x2 transposed conv + InstanceNorm + ReLU."""
    return nn.Sequential(
        *conv_norm_act(in_channels, out_channels, 3, 2, norm="instance", transposed=True)
    )


def encoder(in_channels: int, channels: int, num_downsampling: int) -> nn.Sequential:
    """7x7 conv to `channels`, then `num_downsampling` stride-2 convs doubling the width."""
    layers = [conv_norm_relu(in_channels, channels, kernel_size=7)]
    for i in range(num_downsampling):
        layers.append(conv_norm_relu(channels * 2**i, channels * 2 ** (i + 1), stride=2))
    return nn.Sequential(*layers)


def branch(channels: int, num_res_blocks: int, num_upsampling: int) -> nn.Sequential:
    """Residual blocks at `channels`, then `num_upsampling` x2 upsamplings halving the width."""
    layers: list[nn.Module] = [
        ResidualBlock(channels, norm="instance", bias=True) for _ in range(num_res_blocks)
    ]
    for i in range(num_upsampling):
        layers.append(upsample_norm_relu(channels // 2**i, channels // 2 ** (i + 1)))
    return nn.Sequential(*layers)


def head(channels: int, out_channels: int) -> nn.Sequential:
    """The 7x7 output conv of a branch (activation applied by the caller)."""
    return nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(channels, out_channels, 7))


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve the resolution of an input for a coarser level (3x3 average, as pix2pixHD)."""
    return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)


class GeneratorLevel(nn.Module):
    """One resolution level: encoders, branches and output heads.

    The global level (`coarser_channels=None`) downsamples `num_downsampling` times and has a
    shared residual trunk; a local enhancer downsamples once, adds the coarser level's branch
    features, and upsamples once.
    """

    def __init__(
        self,
        label_inputs: int,
        frame_inputs: int,
        channels: int,
        num_downsampling: int,
        num_res_blocks: int,
        temporal: bool,
        foreground: bool,
        coarser_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.is_global = coarser_channels is None
        downs = num_downsampling if self.is_global else 1
        bottleneck = channels * 2**downs
        if not self.is_global and bottleneck != coarser_channels:
            raise ValueError(
                f"a local enhancer of width {channels} needs a coarser level of width "
                f"{bottleneck}, got {coarser_channels}."
            )
        self.label_encoder = encoder(label_inputs, channels, downs)
        self.frame_encoder = encoder(frame_inputs, channels, downs) if temporal else None
        trunk_blocks = num_res_blocks // 2 if self.is_global else 0
        branch_blocks = num_res_blocks - trunk_blocks
        self.trunk = nn.Sequential(
            *[ResidualBlock(bottleneck, norm="instance", bias=True) for _ in range(trunk_blocks)]
        )
        names = ["image"] + (["foreground"] if foreground else []) + (["flow"] if temporal else [])
        self.branches = nn.ModuleDict(
            {name: branch(bottleneck, branch_blocks, downs) for name in names}
        )
        self.out_channels = channels

    def features(
        self,
        labels: torch.Tensor,
        frames: torch.Tensor | None,
        coarser: dict[str, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """Each branch's last feature map, at this level's input resolution."""
        x = self.label_encoder(labels)
        if self.frame_encoder is not None and frames is not None:
            x = x + self.frame_encoder(frames)
        x = self.trunk(x)
        return {
            name: layers(x if coarser is None else x + coarser[name])
            for name, layers in self.branches.items()
        }


@dataclass
class GeneratedFrame:
    """One generated frame and how it was made (all (B, ., H, W))."""

    frame: torch.Tensor  # composed output x_t in [-1, 1]
    hallucinated: torch.Tensor  # h_t (foreground and background combined)
    flow: torch.Tensor  # w_t in pixels, previous output -> this frame
    mask: torch.Tensor  # occlusion mask m_t in [0, 1]: 1 = hallucinate, 0 = warp


class SequentialGenerator(nn.Module):
    """vid2vid generator G(s_{t-L..t}, x_{t-L..t-1}) -> x_t, coarse to fine.

    `num_previous_frames=0` makes the same network a per-frame image-to-image generator
    (pix2pixHD-style): no frame encoder, no flow branch, x_t = h_t.
    """

    def __init__(
        self,
        num_classes: int,
        frame_channels: int = 3,
        num_previous_frames: int = 2,
        base_channels: int = 128,
        num_downsampling: int = 3,
        num_res_blocks: int = 9,
        num_local_res_blocks: int = 3,
        num_spatial_scales: int = 1,
        instance_edges: bool = True,
        feature_channels: int = 0,
        foreground_classes: tuple[int, ...] | list[int] = (),
        flow_scale: float = 20.0,
    ) -> None:
        super().__init__()
        if num_spatial_scales < 1:
            raise ConfigError(
                f"model.net.num_spatial_scales must be >= 1, got {num_spatial_scales}."
            )
        if base_channels % 2 ** (num_spatial_scales - 1):
            raise ConfigError(
                f"model.net.base_channels={base_channels} must be divisible by "
                f"2^(model.net.num_spatial_scales - 1) = {2 ** (num_spatial_scales - 1)}: each local "
                "enhancer halves the width."
            )
        self.num_classes = num_classes
        self.frame_channels = frame_channels
        self.num_previous_frames = num_previous_frames
        self.instance_edges = instance_edges
        self.feature_channels = feature_channels
        self.foreground_classes = tuple(int(c) for c in foreground_classes)
        self.flow_scale = flow_scale
        self.num_spatial_scales = num_spatial_scales
        self.num_downsampling = num_downsampling
        # Input channels of one frame's semantic map: one-hot classes, instance edges, and the
        # instance-level style features of the feature encoder E.
        self.label_channels = num_classes + int(instance_edges) + feature_channels
        temporal = num_previous_frames > 0
        foreground = bool(self.foreground_classes)

        self.levels = nn.ModuleList()
        coarser: int | None = None
        for level in range(num_spatial_scales):
            channels = base_channels // 2**level
            self.levels.append(
                GeneratorLevel(
                    label_inputs=self.label_channels * (num_previous_frames + 1),
                    frame_inputs=frame_channels * num_previous_frames,
                    channels=channels,
                    num_downsampling=num_downsampling,
                    num_res_blocks=num_res_blocks if level == 0 else num_local_res_blocks,
                    temporal=temporal,
                    foreground=foreground,
                    coarser_channels=coarser,
                )
            )
            coarser = channels
        # Output heads on the finest level's features.
        finest = self.levels[-1].out_channels
        self.image_head = head(finest, frame_channels)
        self.foreground_head = head(finest, frame_channels) if foreground else None
        self.flow_head = head(finest, 2) if temporal else None
        self.mask_head = head(finest, 1) if temporal else None
        if self.flow_head is not None:
            # Start from "copy the previous frame in place": zero flow, so early training is not
            # spent undoing random displacements of up to flow_scale pixels.
            nn.init.zeros_(self.flow_head[1].weight)
            nn.init.zeros_(self.flow_head[1].bias)

    # ----- inputs -----------------------------------------------------------------------------
    def semantic_input(
        self,
        segmentation: torch.Tensor,
        instance: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Maps (..., H, W) -> generator input (..., label_channels, H, W).

        One-hot classes (ids outside [0, num_classes), e.g. Cityscapes' 255, are all zeros), an
        instance-boundary channel (from the instance map, or from the classes without one) and
        the optional style features (..., feature_channels, H, W).
        """
        valid = (segmentation >= 0) & (segmentation < self.num_classes)
        one_hot = F.one_hot(segmentation.clamp(0, self.num_classes - 1), self.num_classes)
        one_hot = (one_hot * valid.unsqueeze(-1)).movedim(-1, -3).float()
        parts = [one_hot]
        if self.instance_edges:
            ids = instance if instance is not None else segmentation
            parts.append(boundaries(ids).unsqueeze(-3).float())
        if self.feature_channels:
            if features is None:
                features = one_hot.new_zeros(
                    *one_hot.shape[:-3], self.feature_channels, *one_hot.shape[-2:]
                )
            parts.append(features.float())
        return torch.cat(parts, dim=-3)

    def foreground_mask(self, segmentation: torch.Tensor) -> torch.Tensor | None:
        """(..., 1, H, W) float mask of the foreground classes, or None without a foreground branch."""
        if not self.foreground_classes:
            return None
        classes = torch.tensor(self.foreground_classes, device=segmentation.device)
        return torch.isin(segmentation, classes).unsqueeze(-3).float()

    # ----- one frame --------------------------------------------------------------------------
    def forward(
        self,
        labels: torch.Tensor,
        previous: torch.Tensor | None,
        foreground: torch.Tensor | None = None,
    ) -> GeneratedFrame:
        """One frame.

        labels: (B, L+1, label_channels, H, W), the current map last.
        previous: (B, L, C, H, W) generated frames, the latest last; None = single-image mode.
        foreground: (B, 1, H, W) foreground-class mask (with `foreground_classes`).
        """
        batch, _, _, height, width = labels.shape
        factor = 2 ** (self.num_spatial_scales - 1 + self.num_downsampling)
        if height % factor or width % factor:
            raise ConfigError(
                f"frames of data.height={height} x data.width={width} cannot go through "
                f"model.net.num_spatial_scales={self.num_spatial_scales} spatial scales and "
                f"model.net.num_downsampling={self.num_downsampling} downsamplings: use a "
                f"height and width divisible by {factor}."
            )
        single_image = previous is None
        if self.num_previous_frames and single_image:
            previous = labels.new_zeros(
                batch, self.num_previous_frames, self.frame_channels, height, width
            )
        label_input = labels.flatten(1, 2)
        frame_input = previous.flatten(1, 2) if self.num_previous_frames else None

        # Inputs for every level, finest first, then features coarsest first.
        pyramid = [(label_input, frame_input)]
        for _ in range(self.num_spatial_scales - 1):
            lab, fr = pyramid[-1]
            pyramid.append((downsample(lab), None if fr is None else downsample(fr)))
        features: dict[str, torch.Tensor] | None = None
        for level, (lab, fr) in zip(self.levels, reversed(pyramid), strict=True):
            features = level.features(lab, fr, features)
        assert features is not None

        hallucinated = torch.tanh(self.image_head(features["image"]))
        if self.flow_head is None or single_image:
            frame = hallucinated
            flow = hallucinated.new_zeros(batch, 2, height, width)
            mask = hallucinated.new_ones(batch, 1, height, width)
        else:
            assert previous is not None and self.mask_head is not None
            flow = self.flow_head(features["flow"]) * self.flow_scale
            mask = torch.sigmoid(self.mask_head(features["flow"]))
            frame = compose(previous[:, -1], flow, mask, hallucinated)
        if self.foreground_head is not None and foreground is not None:
            # Foreground objects (cars, people) move on their own: their pixels are always
            # hallucinated by the foreground branch; only the background is warped.
            h_foreground = torch.tanh(self.foreground_head(features["foreground"]))
            frame = compose_masked(foreground, h_foreground, frame)
            hallucinated = compose_masked(foreground, h_foreground, hallucinated)
        return GeneratedFrame(frame, hallucinated, flow, mask)

    # ----- a sequence -------------------------------------------------------------------------
    def rollout(
        self,
        labels: torch.Tensor,
        foreground: torch.Tensor | None = None,
        previous: torch.Tensor | None = None,
    ) -> list[GeneratedFrame]:
        """Generate frames one after the other.

        labels: (B, P + T, label_channels, H, W): P frames of history, then the T frames to make.
        previous: (B, P, C, H, W) frames already generated for the history (None or P = 0: the
        first frame is made in single-image mode). Missing history at the start of a video is
        padded by repeating the earliest frame, as the official implementation does.
        foreground: (B, P + T, 1, H, W) foreground masks, or None.
        Returns the T new frames.
        """
        history = 0 if previous is None else previous.shape[1]
        frames: list[torch.Tensor] = [] if previous is None else list(previous.unbind(1))
        outputs: list[GeneratedFrame] = []
        L = self.num_previous_frames
        for t in range(history, labels.shape[1]):
            window = [max(i, 0) for i in range(t - L, t + 1)]
            label_window = labels[:, window]
            if frames and L:
                available = len(frames)
                past = torch.stack([frames[max(available - L + i, 0)] for i in range(L)], 1)
            else:
                past = None
            fg = foreground[:, t] if foreground is not None else None
            out = self(label_window, past, fg)
            outputs.append(out)
            frames.append(out.frame)
        return outputs

    def load_coarser(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Start from the generator weights of a model with fewer spatial scales.

        Copies every level the coarser model has (the global level and its enhancers keep their
        shapes); the output heads are new, because they move to the new finest level. Returns
        the names of the copied tensors.
        """
        own = self.state_dict()
        copied = {k: v for k, v in state_dict.items() if k.startswith("levels.") and k in own}
        mismatched = [k for k, v in copied.items() if v.shape != own[k].shape]
        if mismatched:
            raise ConfigError(
                f"the model.coarse_ckpt generator does not match this one at {mismatched[0]} "
                f"({tuple(copied[mismatched[0]].shape)} vs {tuple(own[mismatched[0]].shape)}): "
                "keep model.net.base_channels, model.net.num_downsampling and the class "
                "settings of the coarser run."
            )
        self.load_state_dict(copied, strict=False)
        return sorted(copied)


def compose(
    previous: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor, hallucinated: torch.Tensor
) -> torch.Tensor:
    """x_t = (1 - m) * warp(x_{t-1}, w) + m * h."""
    return compose_masked(mask, hallucinated, warp(previous, flow))


def boundaries(ids: torch.Tensor) -> torch.Tensor:
    """Bool (..., H, W): pixels whose id differs from a 4-neighbour (both sides of each edge)."""
    edge = torch.zeros_like(ids, dtype=torch.bool)
    horizontal = ids[..., :, 1:] != ids[..., :, :-1]
    vertical = ids[..., 1:, :] != ids[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge
