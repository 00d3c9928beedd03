"""`python -m videogen.generate ckpt_path=PATH num_videos=8`: write example videos of a checkpoint.

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
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from pytorch_lightning.callbacks import RichProgressBar

from videogen.config import CONFIG_DIR, require_positive_int
from videogen.errors import CheckpointError, ConfigError
from videogen.evaluate import load_task_and_data, register_checkpoint_config
from videogen.tasks.protocols import ExampleVideos, Panels
from videogen.utils.build import build_trainer
from videogen.utils.cli import report_user_errors
from videogen.utils.video_io import side_by_side, upscale_factor, write_video

log = logging.getLogger(__name__)


def generate(cfg: DictConfig) -> list[Path]:
    """Write `cfg.num_videos` examples of `cfg.ckpt_path` to `cfg.output_dir`; returns the files."""
    num_videos = require_positive_int("num_videos", cfg.num_videos)
    formats = list(cfg.formats)
    unknown = sorted(set(formats) - {"mp4", "gif"})
    if unknown:
        raise ConfigError(f"formats may hold mp4 and gif, got {unknown}: set formats=[mp4,gif].")
    task, datamodule = load_task_and_data(cfg)
    if not isinstance(task, ExampleVideos):
        raise CheckpointError(
            f"{cfg.ckpt_path} is a {type(task).__name__} checkpoint, which makes no videos: "
            "generate works with prediction and synthesis checkpoints."
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
