"""Reporting, at the end of every epoch, the videos skipped as unreadable."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from videogen.data.base import VideoDataModule

log = logging.getLogger(__name__)


class SkippedVideoReport(pl.Callback):
    """Logs `<split>/skipped_videos` per epoch and warns when any video was skipped."""

    def report(self, trainer: pl.Trainer, task: pl.LightningModule, split: str) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, VideoDataModule):
            return
        skipped, attempted = datamodule.bad_videos.take_epoch(split)
        if not attempted:
            return
        task.log(f"{split}/skipped_videos", float(skipped), reduce_fx="sum", sync_dist=True)
        if skipped:
            log.warning(
                "%s epoch %d: skipped %d of %d videos as unreadable",
                split,
                trainer.current_epoch,
                skipped,
                attempted,
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.report(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report(trainer, pl_module, "test")
