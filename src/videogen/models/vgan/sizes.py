"""How VGAN's networks reach a clip size: a small seed volume doubled stage by stage.

The paper grows 2 x 4 x 4 to 32 x 64 x 64 in four stages that double time, height and width
together. Here the number of stages follows from the frame size (the shorter side is 4 x 2^s),
and time doubles in as many of the last stages as the frame count allows (its factors of two,
at most s); the other stages keep the frame count (a temporal kernel of 3, stride 1). The seed's
extent is what is left: (T, H, W) / (2^d, 2^s, 2^s). The discriminator mirrors the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from videogen.errors import ConfigError

# The seed's shorter side: VGAN's first layer makes a 4 x 4 map (its last discriminator layer
# reads one).
SEED_SIDE = 4


@dataclass(frozen=True)
class ClipPlan:
    """The shape of a clip and the doubling stages that build it (coarse to fine)."""

    num_frames: int
    height: int
    width: int
    stages: int  # spatial doublings
    temporal_stages: int  # of which the last ones also double time

    @property
    def seed(self) -> tuple[int, int, int]:
        """(frames, height, width) of the first layer's output (the discriminator's last input)."""
        scale = 2**self.stages
        return (self.num_frames >> self.temporal_stages, self.height // scale, self.width // scale)

    def doubles_time(self, stage: int) -> bool:
        """Whether upsampling stage `stage` (0: the coarsest) doubles the frame count."""
        return stage >= self.stages - self.temporal_stages

    def describe(self) -> str:
        return f"{self.num_frames} frames at {self.height}x{self.width}"


def factors_of_two(value: int) -> int:
    """How many times 2 divides `value` (> 0)."""
    return (value & -value).bit_length() - 1


def plan_clip(num_frames: int, img_size: int | tuple[int, int] | list[int]) -> ClipPlan:
    """The plan of clips of `num_frames` x `img_size`, or a ConfigError naming the size that
    does not fit."""
    height, width = (
        (img_size, img_size) if isinstance(img_size, int) else (int(s) for s in img_size)
    )
    if num_frames < 1:
        raise ConfigError(
            f"model.net.num_frames must be at least 1, got {num_frames}: set data.num_frames."
        )
    short = min(height, width)
    stages = (short // SEED_SIDE).bit_length() - 1
    if stages < 1 or short != SEED_SIDE * 2**stages or max(height, width) % 2**stages:
        raise ConfigError(
            f"VGAN cannot make {height}x{width} frames (model.net.img_size): the shorter side "
            f"must be 4 times a power of two (8, 16, 32, 64, 128, ...) and the longer a multiple "
            "of that power; set data.height and data.width to such sizes."
        )
    temporal = min(stages, factors_of_two(num_frames))
    return ClipPlan(num_frames, height, width, stages, temporal)


def stage_widths(stages: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels of each stage, coarse to fine: `base_channels` at the finest, doubling towards
    the coarsest, at most `max_channels` (the paper: 512, 256, 128, 64)."""
    if base_channels < 1 or max_channels < base_channels:
        raise ConfigError(
            f"VGAN widths need 1 <= base_channels <= max_channels, got {base_channels} and "
            f"{max_channels}: set model.net.base_channels / max_channels (and the "
            "discriminator's) accordingly."
        )
    return [min(base_channels * 2 ** (stages - 1 - i), max_channels) for i in range(stages)]
