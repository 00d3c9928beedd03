"""VGAN's discriminator: 3D convolutions over the whole clip, real or fake.

The paper's: 3 -> 64 -> 128 -> 256 -> 512 channels with 4x4x4 kernels of stride 2 (BatchNorm on
all but the first, LeakyReLU 0.2), then a 2-way output (real / fake) trained with softmax
cross-entropy. The layers mirror the generator's plan (`sizes.plan_clip`), so the last one
reads the seed volume whole; a clip of another size is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from videogen.errors import ConfigError
from videogen.models.layers import init_weights, norm_layer
from videogen.models.vgan.sizes import ClipPlan, plan_clip, stage_widths

# Output classes: index 1 is "real" (so softmax cross-entropy with target 1 asks for real).
FAKE, REAL = 0, 1


def downsampling(in_channels: int, out_channels: int, halves_time: bool, bias: bool) -> nn.Module:
    """A 3D conv halving height and width, and time if `halves_time` (else a temporal kernel
    of 3 keeps the frame count)."""
    kernel, stride, padding = (4, 2, 1) if halves_time else ((3, 4, 4), (1, 2, 2), 1)
    return nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=bias)


class ClipDiscriminator(nn.Module):
    """Clips (B, T, C, H, W) [+ labels (B,)] -> logits (B, 2) of (fake, real).

    The paper's 2-way softmax is kept: its cross-entropy equals a binary cross-entropy on the
    logit difference real - fake (`real_logit`). `num_classes` > 0 broadcasts a learned
    `label_dim`-d label embedding over the clip as extra input channels (0: unconditional).
    """

    def __init__(
        self,
        num_frames: int = 32,
        img_size: int | tuple[int, int] | list[int] = 64,
        in_channels: int = 3,
        base_channels: int = 64,
        max_channels: int = 512,
        num_classes: int = 0,
        label_dim: int = 4,
        init: str = "gan",
    ) -> None:
        super().__init__()
        self.plan: ClipPlan = plan_clip(num_frames, img_size)
        self.in_channels = in_channels
        self.num_classes = num_classes
        # Fine to coarse: the generator's widths in reverse (64, 128, 256, 512).
        widths = stage_widths(self.plan.stages, base_channels, max_channels)[::-1]
        self.label_embedding = nn.Embedding(num_classes, label_dim) if num_classes else None
        extra = label_dim if num_classes else 0
        stages = self.plan.stages
        # Layer j halves time where generator stage (stages - 1 - j) doubles it.
        halves = [self.plan.doubles_time(stages - 1 - j) for j in range(stages)]
        # No BatchNorm on the first layer: it would erase the input's scale (DCGAN).
        layers: list[nn.Module] = [
            downsampling(in_channels + extra, widths[0], halves[0], bias=True),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for j in range(1, stages):
            layers += [
                downsampling(widths[j - 1], widths[j], halves[j], bias=False),
                norm_layer("batch", widths[j], dims=3),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv3d(widths[-1], 2, self.plan.seed)
        init_weights(self, init)

    def check_clip(self, video: torch.Tensor) -> None:
        """Refuse clips of another size than the network was built for, in one sentence."""
        plan = self.plan
        built = (plan.num_frames, self.in_channels, plan.height, plan.width)
        if video.dim() != 5 or tuple(video.shape[1:]) != built:
            got = tuple(video.shape[1:]) if video.dim() == 5 else tuple(video.shape)
            raise ConfigError(
                f"this VGAN was built for clips of {plan.describe()} with {self.in_channels} "
                f"channels (T, C, H, W = {built}), but was given {got}: give it clips of that "
                "size (data.num_frames, data.height, data.width) or train a model for these."
            )

    def forward(self, video: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.check_clip(video)
        x = video.transpose(1, 2)  # B, C, T, H, W for the 3D convs
        if self.label_embedding is not None:
            if labels is None:
                raise ConfigError(
                    f"this VGAN is class-conditional (model.net.num_classes={self.num_classes}): "
                    "give a label for every clip."
                )
            embedded = self.label_embedding(labels).to(x.dtype)[:, :, None, None, None]
            x = torch.cat([x, embedded.expand(-1, -1, *x.shape[2:])], dim=1)
        return self.head(self.features(x)).flatten(1)


def real_logit(logits: torch.Tensor) -> torch.Tensor:
    """The 2-way output as one logit of "real": softmax(logits)[REAL] = sigmoid(real - fake)."""
    return logits[:, REAL] - logits[:, FAKE]
