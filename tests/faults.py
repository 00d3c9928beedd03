"""Callbacks that stop a training run at an exact step, the way a cluster would."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl


class SignalAtStep(pl.Callback):
    """Send `signal_name` to this very process while the step after `step` completed optimiser
    steps runs, as a cluster's signal arrives: SIGKILL is a node failure (nothing runs after
    it), SIGTERM / SIGUSR2 a scheduler's stop or requeue warning."""

    def __init__(self, step: int, signal_name: str = "SIGKILL") -> None:
        self.step = step
        self.signum = getattr(signal, signal_name)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
