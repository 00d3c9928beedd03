"""`python -m videogen.generate ckpt_path=PATH num_videos=8`: write example videos of a checkpoint.

A generative checkpoint (diffusion, GAN) makes new clips from noise, with no data:

    python -m videogen.generate ckpt_path=... num_videos=16 labels=[0,3] sampler=ddim steps=50 \
        eta=0 guidance=4 seed=0

writes one file per clip (its class in the name; `labels` are given to the clips in turn, all
classes when null; beside the clip, any panels the model adds, such as VGAN's background,
foreground and mask streams) and a grid of all the clips, reproducible from the seed, with a
progress bar over the sampling steps. `sampler`, `steps`, `eta` and `guidance` default to the model's settings.

Other checkpoints:
Each example is one video whose frames put the task's panels side by side (prediction:
ground truth | context + prediction; autoencoder: ground truth | reconstruction; synthesis:
semantic labels | output | ground truth), with a red
frame around generated frames, saved as mp4 and gif. Examples come from the run's test split
through `trainer.predict`, so devices, normalisation and the clip length follow the config.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import RichProgressBar
from rich.progress import track

from videogen.config import CONFIG_DIR, require_positive_int
from videogen.errors import CheckpointError, ConfigError
from videogen.evaluate import (
    apply_model_overrides,
    load_task,
    load_task_and_data,
    register_checkpoint_config,
)
from videogen.tasks.protocols import ExampleVideos, GeneratesFromNoise, Panels, SamplingOptions
from videogen.utils.build import build_trainer
from videogen.utils.cli import report_user_errors
from videogen.utils.video_io import grid, side_by_side, upscale_factor, write_video

log = logging.getLogger(__name__)


def sampling_options(task: GeneratesFromNoise, cfg: DictConfig) -> SamplingOptions:
    """The task's sampling settings with those given on the command line (not null) instead."""
    options = task.sampling_options()
    given = {
        "sampler": cfg.sampler,
        "steps": cfg.steps,
        "eta": cfg.eta,
        "guidance": cfg.guidance,
    }
    return replace(options, **{key: value for key, value in given.items() if value is not None})


def clip_labels(task: GeneratesFromNoise, cfg: DictConfig, count: int) -> torch.Tensor | None:
    """The class of each of `count` clips: `cfg.labels` in turn (all classes when null)."""
    if task.num_classes == 0:
        if cfg.labels:
            raise ConfigError(
                f"{cfg.ckpt_path} is an unconditional model: drop labels=... to sample it."
            )
        return None
    wanted = list(cfg.labels) if cfg.labels else list(range(task.num_classes))
    bad = [label for label in wanted if not 0 <= int(label) < task.num_classes]
    if bad:
        raise ConfigError(
            f"labels={wanted} holds {bad}, which are not classes of this model: give class "
            f"indices in [0, {task.num_classes - 1}]."
        )
    return torch.tensor([int(wanted[i % len(wanted)]) for i in range(count)])


def generate_from_noise(
    task: GeneratesFromNoise, cfg: DictConfig, formats: list[str], num_videos: int
) -> list[Path]:
    """Sample `num_videos` new clips, write each and a grid of them; returns the files."""
    device = torch.device(
        "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "cpu"
    )
    task.to(device).eval()
    labels = clip_labels(task, cfg, num_videos)
    options = sampling_options(task, cfg)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    batch_size = require_positive_int("batch_size", cfg.batch_size)
    clips = []
    for start in range(0, num_videos, batch_size):
        count = min(batch_size, num_videos - start)
        description = f"clips {start + 1}-{start + count} of {num_videos}"

        def progress(steps: Iterator, description: str = description) -> Iterator:
            return track(list(steps), description=description)

        batch_labels = None if labels is None else labels[start : start + count]
        panels = task.sample_panels(batch_labels, count, options, generator, progress)
        clips.append({name: video.float().cpu() for name, video in panels.videos.items()})
    streams = {name: torch.cat([chunk[name] for chunk in clips]) for name in clips[0]}
    videos = streams["generated"]
    output_dir = Path(cfg.output_dir)
    scale = upscale_factor(videos.shape[-2], cfg.min_height)
    written = []
    for index in range(num_videos):
        name = f"clip_{index:03d}" + ("" if labels is None else f"_class{int(labels[index])}")
        one = {panel: video[index] for panel, video in streams.items()}
        frames = side_by_side(one, videos.shape[1], scale)
        for suffix in formats:
            written.append(write_video(output_dir / f"{name}.{suffix}", frames, fps=cfg.fps))
    tiled = grid(videos, math.ceil(math.sqrt(num_videos)), scale)
    for suffix in formats:
        written.append(write_video(output_dir / f"grid.{suffix}", tiled, fps=cfg.fps))
    log.info(
        "Wrote %d clips (panels left to right: %s) and their grid (%s) to %s, seed %d%s",
        num_videos,
        " | ".join(streams),
        "/".join(formats),
        output_dir,
        int(cfg.seed),
        ", drawn in one pass" if task.one_pass else f", {options}",
    )
    return written


def generate(cfg: DictConfig) -> list[Path]:
    """Write `cfg.num_videos` examples of `cfg.ckpt_path` to `cfg.output_dir`; returns the files."""
    num_videos = require_positive_int("num_videos", cfg.num_videos)
    formats = list(cfg.formats)
    unknown = sorted(set(formats) - {"mp4", "gif"})
    if unknown:
        raise ConfigError(f"formats may hold mp4 and gif, got {unknown}: set formats=[mp4,gif].")
    task, stored = load_task(cfg.ckpt_path)
    if isinstance(task, GeneratesFromNoise):
        apply_model_overrides(task, cfg, stored)
        return generate_from_noise(task, cfg, formats, num_videos)
    task, datamodule = load_task_and_data(cfg, (task, stored))
    if not isinstance(task, ExampleVideos):
        raise CheckpointError(
            f"{cfg.ckpt_path} is a {type(task).__name__} checkpoint, which makes no videos: "
            "generate works with prediction, synthesis and generation checkpoints."
        )
    batches = math.ceil(num_videos / datamodule.batch_size)
    trainer = build_trainer(cfg, [RichProgressBar()], [])
    trainer.limit_predict_batches = batches
    # A batch whose every clip was unreadable gives None (its files are logged as skipped).
    outputs: list[Panels] = [
        output
        for output in trainer.predict(task, datamodule=datamodule) or []
        if output is not None
    ]

    written: list[Path] = []
    output_dir = Path(cfg.output_dir)
    index = 0
    for panels in outputs:
        for example in range(next(iter(panels.videos.values())).shape[0]):
            if index == num_videos:
                break
            one = {name: video[example] for name, video in panels.videos.items()}
            height = next(iter(one.values())).shape[-2]
            scale = upscale_factor(height, cfg.min_height)
            frames = side_by_side(one, panels.first_generated, scale)
            for suffix in formats:
                written.append(
                    write_video(output_dir / f"example_{index:03d}.{suffix}", frames, fps=cfg.fps)
                )
            index += 1
    log.info(
        "Wrote %d examples (%s, panels left to right: %s) to %s",
        index,
        "/".join(formats),
        " | ".join(outputs[0].videos) if outputs else "-",
        output_dir,
    )
    return written


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
def run(cfg: DictConfig) -> Any:
    with report_user_errors():
        generate(cfg)


def main() -> None:
    """Console entry point of `python -m videogen.generate`."""
    with report_user_errors():
        register_checkpoint_config(sys.argv[1:], command="videogen.generate")
    run()


if __name__ == "__main__":
    main()
