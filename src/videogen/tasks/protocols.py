"""What a task can show: the explicit interfaces `generate` and the sample-video callback use."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch


@dataclass
class Panels:
    """Videos (B, T, C, H, W) in [0, 1] to show side by side, by name (left to right), and the
    index of the first generated frame (framed in red; 0: every frame is generated)."""

    videos: dict[str, torch.Tensor]
    first_generated: int = 0


class ExampleVideos(abc.ABC):
    """A task that makes videos (prediction, synthesis, generation): `generate` writes its panels.

    List it before the LightningModule base: its `predict_step` (what `generate` runs) gives
    the panels.
    """

    @abc.abstractmethod
    def generation_panels(self, batch: dict[str, torch.Tensor]) -> Panels:
        """The panels of `batch`'s examples."""

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> Panels | None:
        """The panels of a batch; None for a batch whose every clip was unreadable."""
        if "video" not in batch:
            return None
        return self.generation_panels(batch)


class LabelledClips(abc.ABC):
    """A task that labels clips (classification): the callback shows each input clip with its
    predicted class."""

    @abc.abstractmethod
    def labelled_clips(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's clips as the task received them and the predicted class of each (B,)."""


@dataclass
class SamplingOptions:
    """How a generator draws clips: `sampler` ("ddpm" or "ddim") over `steps` timesteps, DDIM's
    `eta`, the classifier-free `guidance` scale (1: none) and the timestep `spacing`. Models
    that draw in one pass (GANs) ignore them."""

    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    guidance: float = 1.0
    spacing: str = "linspace"


class GeneratesFromNoise(abc.ABC):
    """A task that makes new clips from noise (diffusion, GANs): `generate` asks it for clips
    of given classes, with no data. `num_classes` is 0 for an unconditional model.
    `one_pass`: the clips come from one forward pass (GANs), so sampler settings do not apply."""

    one_pass: ClassVar[bool] = False

    num_classes: int

    def sampling_options(self) -> SamplingOptions:
        """The model's own sampling settings (what `generate` starts from)."""
        return SamplingOptions()

    @abc.abstractmethod
    def sample_clips(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[Iterator], Iterator] | None = None,
    ) -> torch.Tensor:
        """`count` clips (count, T, C, H, W) in [0, 1], of the classes `labels` (count,) (None:
        unconditional), every random draw from `generator`; `progress` wraps the step loop."""

    def sample_panels(
        self,
        labels: torch.Tensor | None,
        count: int,
        options: SamplingOptions | None = None,
        generator: torch.Generator | None = None,
        progress: Callable[[Iterator], Iterator] | None = None,
    ) -> Panels:
        """What `generate` writes for `count` new clips, panels side by side: "generated" (the
        clips of `sample_clips`, always first), and in a model that has more to show (VGAN's
        background, foreground and mask streams) panels of the same draw after it."""
        return Panels({"generated": self.sample_clips(labels, count, options, generator, progress)})
