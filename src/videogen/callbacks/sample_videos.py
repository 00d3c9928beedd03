"""Example videos in the loggers during training: every N validation runs, on rank zero only.

What an example shows comes from the task: prediction and synthesis tasks give the panels that
`videogen.generate` writes (`generation_panels`: truth | prediction, labels | output | truth),
laid out side by side with generated frames framed in red; a classifier gives its input clip with
the predicted and the true class in the caption (`labelled_clips`).

Both loggers get encoded files rather than raw frames: `wandb.Video` and TensorBoard's
`add_video` only encode raw frames through moviepy, which is not a dependency (and moviepy 2
breaks `add_video`), while PyAV and Pillow already write our mp4 and GIF files.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.strategies import FSDPStrategy
from pytorch_lightning.utilities import move_data_to_device, rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import Summary

from videogen.config import require_non_negative_int, require_positive_int
from videogen.errors import ConfigError
from videogen.tasks.protocols import ExampleVideos, LabelledClips, Panels
from videogen.utils.video_io import encode_video, side_by_side, upscale_factor

VIDEO_FORMATS = ("gif", "mp4")
KEY_PREFIX = "callbacks.sample_videos"


@dataclass
class VideoSample:
    """One example to log: uint8 frames (T, H, W, 3) and what they show."""

    frames: np.ndarray
    caption: str


def first_examples(batch: Any, count: int) -> dict[str, Any] | None:
    """The first `count` examples of a batch dict, detached copies on the CPU.

    Copies, not views: a view would keep the whole device batch alive until the epoch ends.
    """
    if not isinstance(batch, dict):
        return None
    kept: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            kept[key] = value[:count].detach().to("cpu", copy=True)
        elif isinstance(value, list):
            kept[key] = value[:count]
        else:
            kept[key] = value
    return kept


def class_names(datamodule: Any) -> list[str] | None:
    """The datamodule's class names (a `classes` list or method, as Kinetics has), if any."""
    names = getattr(datamodule, "classes", None)
    if callable(names):
        names = names()
    return [str(name) for name in names] if names else None


def panel_samples(panels: Panels, min_height: int) -> list[VideoSample]:
    """Videos from a task's `generation_panels`: one per example, panels side by side."""
    first = next(iter(panels.videos.values()))
    scale = upscale_factor(first.shape[-2], min_height)
    layout = " | ".join(panels.videos)
    samples = []
    for i in range(first.shape[0]):
        example = {name: video[i] for name, video in panels.videos.items()}
        samples.append(
            VideoSample(
                side_by_side(example, panels.first_generated, scale),
                f"example {i}: {layout} (red border: generated frames)",
            )
        )
    return samples


def clip_samples(
    clips: torch.Tensor,
    predicted: torch.Tensor,
    labels: torch.Tensor | None,
    names: Sequence[str] | None,
    min_height: int,
) -> list[VideoSample]:
    """Videos from a classifier's `labelled_clips`: each clip, its predicted and true class."""
    scale = upscale_factor(clips.shape[-2], min_height)

    def name(index: int) -> str:
        return names[index] if names and 0 <= index < len(names) else str(index)

    samples = []
    for i in range(clips.shape[0]):
        caption = f"example {i}: predicted {name(int(predicted[i]))}"
        if labels is not None:
            caption += f", true {name(int(labels[i]))}"
        samples.append(VideoSample(side_by_side({"clip": clips[i]}, 0, scale), caption))
    return samples


def render_samples(
    task: pl.LightningModule,
    batch: dict[str, Any],
    min_height: int,
    names: Sequence[str] | None = None,
    to_unit_range: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[VideoSample]:
    """What `task` shows for `batch` (no videos for a task that has no way to show any).

    `to_unit_range` maps a classifier's input clips back to [0, 1] (they are shown clamped to
    it without one).
    """
    if isinstance(task, ExampleVideos):
        return panel_samples(task.generation_panels(batch), min_height)
    if isinstance(task, LabelledClips):
        clips, predicted = task.labelled_clips(batch)
        clips = to_unit_range(clips) if to_unit_range else clips.clamp(0, 1)
        return clip_samples(clips, predicted, batch.get("label"), names, min_height)
    return []


def log_to_wandb(
    logger: WandbLogger,
    key: str,
    samples: list[VideoSample],
    step: int,
    fps: int,
    video_format: str,
) -> None:
    """All examples under one key, each a `wandb.Video` with its caption."""
    videos = [io.BytesIO(encode_video(sample.frames, fps, video_format)) for sample in samples]
    logger.log_video(
        key,
        videos,
        step=step,
        caption=[sample.caption for sample in samples],
        format=[video_format] * len(samples),
    )


def log_to_tensorboard(
    logger: TensorBoardLogger,
    key: str,
    samples: list[VideoSample],
    step: int,
    fps: int,
    video_format: str,
) -> None:
    """One animated GIF per example (`<key>/<i>`, what `add_video` writes) and the captions
    as text (`<key>/captions`). TensorBoard plays only GIFs, so `video_format` is not used."""
    writer = logger.experiment
    for index, sample in enumerate(samples):
        height, width = sample.frames.shape[1:3]
        image = Summary.Image(
            height=height,
            width=width,
            colorspace=3,
            encoded_image_string=encode_video(sample.frames, fps, "gif"),
        )
        summary = Summary(value=[Summary.Value(tag=f"{key}/{index}", image=image)])
        # SummaryWriter has no public call for an encoded image; add_video writes it this way.
        writer._get_file_writer().add_summary(summary, step)
    writer.add_text(f"{key}/captions", "  \n".join(s.caption for s in samples), step)


VideoWriter = Callable[[Any, str, list[VideoSample], int, int, str], None]
VIDEO_WRITERS: tuple[tuple[type[Logger], VideoWriter], ...] = (
    (WandbLogger, log_to_wandb),
    (TensorBoardLogger, log_to_tensorboard),
)


def video_writer(logger: Logger) -> VideoWriter | None:
    """How to log videos to `logger`, or None for loggers that take no videos (CSV)."""
    for kind, writer in VIDEO_WRITERS:
        if isinstance(logger, kind):
            return writer
    return None


class SampleVideoLogger(pl.Callback):
    """Log example videos of the first validation batch to wandb and TensorBoard.

    Every `every_n_epochs` validation runs (0 disables), rank zero takes the first `num_videos`
    examples of validation batch 0, renders them with the task in eval mode and logs them under
    `key` at the trainer's global step. Nothing is kept or computed on other validation runs,
    on other ranks, in the sanity check, or when no logger takes videos.

    Args:
        every_n_epochs: validation runs between two logs; 0 disables the callback.
        num_videos: examples logged each time (at most one batch).
        fps: frame rate of the encoded videos.
        video_format: "gif" or "mp4" for wandb; TensorBoard always gets GIFs.
        min_height: small frames are enlarged (nearest neighbour) to at least this height.
        key: the logged name (`val/samples`; TensorBoard adds `/<example>`).
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        num_videos: int = 4,
        fps: int = 4,
        video_format: str = "gif",
        min_height: int = 64,
        key: str = "val/samples",
    ) -> None:
        super().__init__()
        self.every_n_epochs = require_non_negative_int(
            f"{KEY_PREFIX}.every_n_epochs", every_n_epochs
        )
        self.num_videos = require_positive_int(f"{KEY_PREFIX}.num_videos", num_videos)
        self.fps = require_positive_int(f"{KEY_PREFIX}.fps", fps)
        self.min_height = require_non_negative_int(f"{KEY_PREFIX}.min_height", min_height)
        if video_format not in VIDEO_FORMATS:
            raise ConfigError(
                f"{KEY_PREFIX}.video_format must be one of {VIDEO_FORMATS}, got {video_format!r}."
            )
        self.video_format = video_format
        self.key = key
        self.active = every_n_epochs > 0
        # Counted on every rank and checkpointed, so a resumed run keeps the same schedule.
        self.validation_runs = 0
        self.due = False
        self.batch: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"validation_runs": self.validation_runs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validation_runs = int(state_dict.get("validation_runs", 0))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.active:
            return
        if not isinstance(pl_module, (ExampleVideos, LabelledClips)):
            rank_zero_warn(f"{type(pl_module).__name__} shows no videos: no samples are logged.")
            self.active = False
        elif isinstance(trainer.strategy, FSDPStrategy) and trainer.world_size > 1:
            # Sharded weights: a forward pass on rank zero alone would wait for the other ranks.
            rank_zero_warn("Sample videos are not logged under FSDP (the weights are sharded).")
            self.active = False

    def is_due(self, trainer: pl.Trainer) -> bool:
        """Whether this validation run logs videos (checked once, before its first batch)."""
        return (
            self.active
            and trainer.is_global_zero
            and not trainer.sanity_checking
            and (self.validation_runs + 1) % self.every_n_epochs == 0
            and any(video_writer(logger) for logger in trainer.loggers)
        )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch = None
        self.due = self.is_due(trainer)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.due and batch_idx == 0 and dataloader_idx == 0:
            self.batch = first_examples(batch, self.num_videos)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.validation_runs += 1
        batch, self.batch, self.due = self.batch, None, False
        if batch is None or "video" not in batch:  # not due, or every clip was unreadable
            return
        samples = self.render(trainer, pl_module, batch)
        for logger in trainer.loggers:
            writer = video_writer(logger)
            if writer is not None and samples:
                writer(logger, self.key, samples, trainer.global_step, self.fps, self.video_format)

    def render(
        self, trainer: pl.Trainer, task: pl.LightningModule, batch: dict[str, Any]
    ) -> list[VideoSample]:
        """The task's videos of `batch`, made in eval mode without gradients."""
        batch = move_data_to_device(batch, task.device)
        was_training = task.training
        task.eval()
        try:
            datamodule = trainer.datamodule
            pixel_range = getattr(task, "pixel_range", "standardized")

            def to_unit_range(clips: torch.Tensor) -> torch.Tensor:
                return datamodule.to_unit_range(clips, pixel_range)

            with torch.no_grad(), trainer.precision_plugin.forward_context():
                return render_samples(
                    task,
                    batch,
                    self.min_height,
                    class_names(datamodule),
                    to_unit_range if hasattr(datamodule, "to_unit_range") else None,
                )
        finally:
            task.train(was_training)
