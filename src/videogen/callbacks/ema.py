"""Exponential moving-average weights: Lightning's `EMAWeightAveraging`, with the raw weights of
a checkpoint written after training ends kept raw."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging


class EMA(EMAWeightAveraging):
    """`EMAWeightAveraging` (checkpoints hold the average as `state_dict` and the raw weights
    as `current_model_state`), fixed for the checkpoint written after training ends.

    Lightning copies the average over the model's weights in `on_train_end`, and
    `ModelCheckpoint.on_train_end` runs after it: a run stopped mid-epoch (`max_steps`,
    `max_time`) then wrote `last.ckpt` with the average as its raw weights too, and resuming
    from it restarted from the average. The raw weights are kept before that copy and put back
    in such a checkpoint.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_at_end: dict[str, torch.Tensor] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.raw_at_end = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.raw_at_end = {
            name: value.detach().clone() for name, value in pl_module.state_dict().items()
        }
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self.raw_at_end is not None and "current_model_state" in checkpoint:
            checkpoint["current_model_state"] = self.raw_at_end
